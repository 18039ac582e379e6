"""The VRRP daemon's metrics over its control socket and over HTTP (no root).

One daemon over the fake wire (`fakewire`) with a control socket in tmp, the metrics
endpoint on a 127.0.0.1 port and a userspace `virtual_server` on 127.0.0.1 whose real
server is an asyncio listener in this test, checked by TCP_CHECK. Both answers parse with
the strict parser; the real server's series go from up to down when the listener closes.
Every wait is a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from promtext import ParsedFamily, parse, value
from test_runtime_daemon import A_IP, Harness, conf, inst, run_scenario, until

from hakeeper.runtime.control import query
from hakeeper.runtime.daemon import Daemon, DaemonOptions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


VS = """
virtual_server 127.0.0.1 {vport} {{
    delay_loop 0.2
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 127.0.0.1 {rport} {{
        TCP_CHECK {{
            connect_timeout 1
        }}
    }}
}}
"""


async def scrape(port: int) -> tuple[str, str]:
    """GET /metrics: (head, body)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 3)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 3)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode(), body.decode()


async def over_control(path: str, command: str) -> object:
    return await asyncio.get_running_loop().run_in_executor(None, query, path, command)


def test_daemon_metrics_over_control_and_http(tmp_path: Path) -> None:
    rport, vport = free_port(), free_port()
    sock_path = str(tmp_path / "ctl.sock")

    async def body(h: Harness) -> None:
        async def accept(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.close()

        backend = await asyncio.start_server(accept, "127.0.0.1", rport)
        path = tmp_path / "k.conf"
        path.write_text(conf(inst(prio=150), extra=VS.format(vport=vport, rport=rport)))
        options = DaemonOptions(
            config_file=str(path), control_path=sock_path, use_netlink=False,
            status_file=str(tmp_path / "s.json"), dataplane="userspace",
            metrics_addr=("127.0.0.1", 0),
        )  # fmt: skip
        daemon = Daemon(options, socket_factory=h.wire.factory(A_IP), exec_fn=h.exec_fn)
        h.daemons["a"] = daemon
        h.tasks["a"] = asyncio.get_running_loop().create_task(daemon.run())
        try:
            await until(lambda: daemon.metrics_http is not None, what="the metrics endpoint")
            await until(lambda: daemon.metrics_http.port != 0, what="its port")
            port = daemon.metrics_http.port
            rs = {"virtual_server": f"127.0.0.1 {vport}", "real_server": f"127.0.0.1:{rport}"}
            latest: dict[str, ParsedFamily] = {}

            async def http_says(metric: str, want: float, **labels: str) -> bool:
                nonlocal latest
                head, text = await scrape(port)
                assert head.startswith("HTTP/1.1 200 OK"), head
                assert "Content-Type: text/plain; version=0.0.4" in head
                latest = parse(text)
                return value(latest, metric, **labels) == want

            await wait_async(lambda: http_says("hakeeper_vrrp_state_code", 2, instance="VI_1"))
            # alive from the start (keepalived without `alpha`), then a first check passes
            await wait_async(lambda: http_says("hakeeper_lvs_real_server_last_check_ok", 1, **rs))
            assert value(latest, "hakeeper_lvs_real_server_up", **rs) == 1
            sent = value(latest, "hakeeper_vrrp_adverts_sent_total", instance="VI_1")
            assert sent is not None and sent >= 1
            assert value(latest, "hakeeper_vrrp_transitions_total", instance="VI_1") == 2
            assert value(latest, "hakeeper_vrrp_state", instance="VI_1", state="MASTER") == 1

            # the same text over the control socket (a JSON string)
            text = await over_control(sock_path, "metrics")
            assert isinstance(text, str)
            fams = parse(text)
            assert value(fams, "hakeeper_lvs_real_server_up", **rs) == 1
            assert value(fams, "hakeeper_info", mode="daemon") == 1

            # one client through the userspace data plane: counted per real server
            _r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", vport), 3)
            w.close()
            l4 = {"service": f"tcp 127.0.0.1:{vport}", "real_server": rs["real_server"]}
            await wait_async(lambda: http_says("hakeeper_l4_connections_total", 1, **l4))

            backend.close()  # refused from now on: TCP_CHECK fails, the server goes down
            await backend.wait_closed()
            await wait_async(lambda: http_says("hakeeper_lvs_real_server_up", 0, **rs))
            assert value(latest, "hakeeper_lvs_real_server_last_check_ok", **rs) == 0
            assert value(latest, "hakeeper_lvs_virtual_server_backends", **rs_vs(rs)) == 0
            after = value(latest, "hakeeper_vrrp_adverts_sent_total", instance="VI_1")
            assert after is not None and after > sent
        finally:
            backend.close()
        await h.stop_all()
        assert not os.path.exists(sock_path)  # unlinked on exit

    run_scenario(tmp_path, body)


def rs_vs(rs: dict[str, str]) -> dict[str, str]:
    return {"virtual_server": rs["virtual_server"]}


async def wait_async(check: object, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("timed out waiting for the metrics to say so")
        await asyncio.sleep(0.05)


NGINX = """
worker_processes 2;
events {{ }}
http {{
    upstream app {{ server 127.0.0.1:{backend}; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://app; health_check interval=200ms uri=/hc; }}
    }}
}}
"""


def test_embedded_l7_status_renders(tmp_path: Path) -> None:
    """`run -f K --nginx N`: the L7 part of the daemon's status, from a real `L7Service`
    (two forked workers, the health hub on this loop), goes through the renderer."""
    from hakeeper.runtime.l7 import L7Service
    from hakeeper.runtime.metrics import render_status

    async def go() -> None:
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
                w.write(answer)
                await w.drain()
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                pass
            finally:
                w.close()

        backend = await asyncio.start_server(handle, "127.0.0.1", 0)
        bport = backend.sockets[0].getsockname()[1]
        port = free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(NGINX.format(backend=bport, port=port))
        svc = L7Service(str(conf))
        try:
            assert await svc.start()
            server = {"upstream": "app", "server": f"127.0.0.1:{bport}"}

            def checked() -> bool:
                rows = svc.status()["health"]
                return bool(rows) and rows[0]["checks"] > 0

            await until(checked, timeout=15, what="a health check")
            fams = parse(render_status({"uptime": 1.0, "l7": svc.status()}, now=0.0))
            assert value(fams, "hakeeper_l7_upstream_server_up", **server) == 1
            assert value(fams, "hakeeper_l7_listener_workers", listen=f"127.0.0.1:{port}") == 2
            assert value(fams, "hakeeper_l7_serving") == 1
            assert value(fams, "hakeeper_reloads_total", config="nginx", result="ok") == 0
        finally:
            await svc.stop()
            backend.close()

    run_scenario(tmp_path, lambda _h: go())
