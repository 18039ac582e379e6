"""The daemon's embedded L7 proxy (runtime.l7) on loopback, and its built-in tracker.

`L7Service` runs real proxy workers on 127.0.0.1 (forked from this process, answering
`return 200 TEXT`); reload, a refused reload, listeners added/removed, workers killed and
replaced, stop leaving no process. Then a whole daemon over the fake wire (no root) whose
instance tracks `script "hakeeper-proxy"`: FAULT while the proxy does not serve.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from test_runtime_daemon import A_IP, Harness, conf, inst, run_scenario, state, until

from hakeeper.runtime import l7 as l7mod
from hakeeper.runtime.daemon import Daemon, DaemonOptions
from hakeeper.runtime.l7 import L7Service, read


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def nginx(text: str, *ports: int, workers: int = 2) -> str:
    servers = "".join(
        f'    server {{ listen 127.0.0.1:{p}; location / {{ return 200 "{text}"; }} }}\n'
        for p in ports
    )
    return f"worker_processes {workers};\nevents {{ }}\nhttp {{\n{servers}}}\n"


async def get(port: int) -> str:
    """One request on a new connection: the body, or the error's name."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 3)
    except OSError as exc:
        return type(exc).__name__
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 3)
    finally:
        writer.close()
    return data.split(b"\r\n\r\n", 1)[-1].decode()


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "Z" not in _stat(pid)


def _stat(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "gone"


async def serves(port: int, text: str, timeout: float = 10.0) -> bool:
    """Until `port` answers `text` (old workers may take a last connection after a reload,
    until they see their SIGTERM: that is the hitless handover, not an error)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (body := await get(port)) != text:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"port {port} answers {body!r}, not {text!r}")
        await asyncio.sleep(0.05)
    return True


async def wait_for(pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    await until(pred, timeout=timeout, what=what)


def test_read_refuses_bad_files(tmp_path: Path) -> None:
    missing, diags = read(str(tmp_path / "nope.conf"))
    assert missing is None and diags.has_errors
    empty = tmp_path / "empty.conf"
    empty.write_text("events { }\nhttp { }\n")
    loaded, diags = read(str(empty))
    assert loaded is None and any("no listen" in d.format() for d in diags.sorted())


def test_status_lists_the_peers_of_every_upstream_a_routed_listener_uses(tmp_path: Path) -> None:
    path = tmp_path / "nginx.conf"
    path.write_text(
        "events { }\nhttp {\n"
        "  upstream app { server 127.0.0.1:9001; server 127.0.0.1:9002; }\n"
        "  upstream api { server 127.0.0.1:9003; }\n"
        "  server { listen 127.0.0.1:8088;\n"
        "    location / { proxy_pass http://app; }\n"
        "    location /api/ { proxy_pass http://api/v1/; } }\n"
        "}\n"
    )
    loaded, diags = read(str(path))
    assert loaded is not None, [d.format() for d in diags.sorted()]
    (route,) = loaded.routes.values()
    peers = [row["peer"] for row in l7mod._upstreams(route)]
    assert peers == ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]


def test_l7_service_lifecycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(l7mod, "RESPAWN_BACKOFF", 0.0)
    p1, p2 = free_port(), free_port()
    path = tmp_path / "nginx.conf"
    path.write_text(nginx("one", p1))

    async def main() -> None:
        svc = L7Service(str(path))
        seen: list[int] = []
        try:
            assert await svc.start()
            assert svc.serving()
            first = svc.pids()
            seen += first
            assert len(first) == 2
            assert await get(p1) == "one"

            # reload: new text, a second listener; old workers drain and exit
            path.write_text(nginx("two", p1, p2))
            assert await svc.reload()
            assert await serves(p1, "two") and await serves(p2, "two")
            seen += svc.pids()
            await wait_for(lambda: not any(alive(p) for p in first), "old workers gone")
            await wait_for(lambda: (svc._reap(), not svc._draining)[1], "draining reaped")

            # a bad file keeps everything
            before = svc.pids()
            path.write_text("http { nonsense; }\n")
            assert not await svc.reload()
            assert svc.stats.reloads_failed == 1 and "nonsense" in svc.stats.last_error
            assert svc.pids() == before and await get(p2) == "two"

            # every worker of p1 killed: not serving, then replaced by the poll
            victims = list(svc.masters[("127.0.0.1", p1)].pids)
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            await wait_for(lambda: not svc.serving(), "p1 seen without workers")
            await svc._poll_once()
            seen += svc.pids()
            assert svc.serving() and svc.stats.respawns == 1 and svc.stats.worker_exits == 2
            assert await get(p1) == "two"

            # reload dropping p2: its listener closes
            path.write_text(nginx("three", p1))
            assert await svc.reload()
            assert await serves(p1, "three")
            refused = False
            for _ in range(100):  # its workers close the socket once they see SIGTERM
                if refused := await get(p2) == "ConnectionRefusedError":
                    break
                await asyncio.sleep(0.05)
            assert refused
            status = svc.status()
            assert [x["listen"] for x in status["listeners"]] == [f"127.0.0.1:{p1}"]
            assert status["serving"]
            assert status["reloads"] == {"ok": 2, "failed": 1, "last_error": ""}
            seen += svc.pids()
        finally:
            await svc.stop()
        assert svc.pids() == []
        assert not [p for p in seen if alive(p)]

    asyncio.run(main())


def test_listener_that_cannot_open_is_not_serving_and_retried(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "nginx.conf"
    path.write_text(nginx("x", port, workers=1))
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))  # no SO_REUSEPORT: the proxy cannot bind
    blocker.listen()

    async def main() -> None:
        svc = L7Service(str(path))
        try:
            assert await svc.start()
            assert not svc.serving() and ("127.0.0.1", port) in svc.failed
            assert svc.status()["listeners"][0]["error"]
            blocker.close()
            svc._last_respawn.clear()
            await svc._poll_once()
            assert svc.serving()
            assert await get(port) == "x"
        finally:
            await svc.stop()

    try:
        asyncio.run(main())
    finally:
        blocker.close()


TRACKED = """
vrrp_script chk_proxy {
    script "hakeeper-proxy"
    interval 0.05
    fall 1
    rise 1
}
"""


def test_builtin_tracker_faults_the_instance_while_the_proxy_does_not_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    nconf = tmp_path / "nginx.conf"
    nconf.write_text(nginx("x", port, workers=1))
    serving = {"on": True}

    async def body(h: Harness) -> None:
        kconf = tmp_path / "k.conf"
        kconf.write_text(
            conf(
                inst(prio=150, body="track_script {\n        chk_proxy\n    }\n"),
                extra=TRACKED,
            )
        )
        options = DaemonOptions(
            config_file=str(kconf), control_path=None, use_netlink=False,
            status_file=str(tmp_path / "s.json"), nginx_file=str(nconf),
        )  # fmt: skip
        d = Daemon(options, socket_factory=h.wire.factory(A_IP), exec_fn=h.exec_fn)
        h.daemons["a"] = d
        h.tasks["a"] = asyncio.get_running_loop().create_task(d.run())
        await until(lambda: state(d) == "MASTER", what="MASTER with the proxy serving")
        assert d.l7 is not None and await get(port) == "x"
        real = d.l7.serving
        monkeypatch.setattr(d.l7, "serving", lambda: serving["on"] and real())
        serving["on"] = False
        await until(lambda: state(d) == "FAULT", what="FAULT while not serving")
        serving["on"] = True
        await until(lambda: state(d) == "MASTER", what="back to MASTER")
        status = d.status()
        assert status["l7"]["serving"] and status["l7"]["listeners"][0]["workers"]
        assert not any("hakeeper-proxy" in argv for argv in h.ran)  # answered in-process
        # any other script still runs through exec_fn
        assert await d._track_exec(["/bin/true"], 1.0) == 0 and ("/bin/true",) in h.ran
        pids = d.l7.pids()
        d.request("term")
        assert await asyncio.wait_for(h.tasks["a"], 15) == 0
        assert d.l7 is None and not [p for p in pids if alive(p)]

    run_scenario(tmp_path, body)


def test_builtin_check_without_nginx_fails(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        d = h.start("a", A_IP, conf(inst(prio=150)))
        await until(lambda: state(d) == "MASTER", what="MASTER")
        argv: Sequence[str] = ["hakeeper-proxy"]
        assert await d._track_exec(argv, 1.0) == 1

    run_scenario(tmp_path, body)


def test_bad_nginx_conf_refuses_to_start(tmp_path: Path) -> None:
    nconf = tmp_path / "nginx.conf"
    nconf.write_text("http { nonsense; }\n")
    kconf = tmp_path / "k.conf"
    kconf.write_text(conf(inst(prio=150)))

    async def body(h: Harness) -> None:
        options = DaemonOptions(
            config_file=str(kconf), control_path=None, use_netlink=False,
            nginx_file=str(nconf),
        )  # fmt: skip
        d = Daemon(options, socket_factory=h.wire.factory(A_IP), exec_fn=h.exec_fn)
        assert await asyncio.wait_for(d.run(), 10) == 1

    run_scenario(tmp_path, body)
