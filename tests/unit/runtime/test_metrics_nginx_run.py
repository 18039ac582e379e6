"""`hakeeper run --nginx FILE` alone: control socket (`status`, `metrics`) and GET /metrics.

One child process with two workers on 127.0.0.1 and an upstream with `health_check` whose
server is an asyncio backend in this test; switching the backend to 503 must bring the
server down in `status`, in the control socket's `metrics` and over HTTP; a SIGHUP reload
is counted; SIGTERM removes the socket. Every wait is a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from promtext import parse, value

from hakeeper.runtime.control import ControlError, query

CONF = """
worker_processes 2;
events {{ }}
http {{
    upstream app {{ server 127.0.0.1:{backend}; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            health_check interval=200ms fails=1 passes=1 uri=/hc;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Backend:
    def __init__(self) -> None:
        self.status = 200
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.write(
                f"HTTP/1.1 {self.status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                .encode()
            )  # fmt: skip
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()


async def ask(path: str, command: str) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, query, path, command, 3.0)


async def http_metrics(port: int) -> str:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 3)
    try:
        writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 3)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    return body.decode()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            if await check():
                return
        except (ControlError, OSError):
            pass  # not up yet
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_run_nginx_status_and_metrics(tmp_path: Path) -> None:
    async def go() -> None:
        backend = Backend()
        await backend.start()
        port, mport = free_port(), free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(CONF.format(backend=backend.port, port=port))
        sock = str(tmp_path / "ctl.sock")
        argv = [sys.executable, "-m", "hakeeper", "run", "--nginx", str(conf)]
        proc = subprocess.Popen(
            [*argv, "--control", sock, "--metrics", f"127.0.0.1:{mport}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        loop = asyncio.get_running_loop()
        try:
            server = {"upstream": "app", "server": f"127.0.0.1:{backend.port}"}
            status: dict[str, Any] = {}

            async def health_is(state: str) -> bool:
                nonlocal status
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                status = await ask(sock, "status")
                rows = status["l7"]["health"]
                return bool(rows) and rows[0]["state"] == state and rows[0]["checks"] > 0

            await eventually(lambda: health_is("up"), "the control socket and a passing check")
            assert status["mode"] == "nginx" and status["pid"] == proc.pid
            (listener,) = status["l7"]["listeners"]
            assert listener["listen"] == f"127.0.0.1:{port}"
            assert len(listener["workers"]) == 2 and proc.pid not in listener["workers"]
            assert status["l7"]["serving"] is True

            text = await ask(sock, "metrics")
            fams = parse(text)
            assert value(fams, "hakeeper_l7_upstream_server_up", **server) == 1
            listen = {"listen": f"127.0.0.1:{port}"}
            assert value(fams, "hakeeper_l7_listener_workers", **listen) == 2
            assert value(fams, "hakeeper_info", mode="nginx") == 1
            fams = parse(await http_metrics(mport))
            assert value(fams, "hakeeper_l7_upstream_server_state", **server, state="up") == 1

            backend.status = 503  # the check fails from now on: down after fails=1

            async def down_over_http() -> bool:
                fams = parse(await http_metrics(mport))
                return value(fams, "hakeeper_l7_upstream_server_up", **server) == 0

            await eventually(down_over_http, "the server down over HTTP")
            fams = parse(await ask(sock, "metrics"))
            assert value(fams, "hakeeper_l7_upstream_server_state", **server, state="down") == 1
            failures = value(fams, "hakeeper_l7_health_check_failures_total", **server)
            assert failures is not None and failures >= 1

            # `hakeeper status` prints it readably
            out = await loop.run_in_executor(None, _status_cli, sock)
            assert f"listen 127.0.0.1:{port}: 2 worker(s)" in out
            assert any("app" in line and "down" in line for line in out.splitlines()), out
            out = await loop.run_in_executor(None, _status_cli, sock, "--metrics")
            assert value(parse(out), "hakeeper_l7_upstream_server_up", **server) == 0

            proc.send_signal(signal.SIGHUP)

            async def reloaded() -> bool:
                fams = parse(await ask(sock, "metrics"))
                ok = value(fams, "hakeeper_reloads_total", config="nginx", result="ok")
                return ok == 1

            await eventually(reloaded, "the reload to be counted")
            proc.send_signal(signal.SIGTERM)
            assert await loop.run_in_executor(None, proc.wait, 20) == 0
            assert not os.path.exists(sock)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            if proc.stderr is not None:
                proc.stderr.close()
            assert backend.server is not None
            backend.server.close()

    asyncio.run(asyncio.wait_for(go(), 90))


def _status_cli(sock: str, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "hakeeper", "status", "--control", sock, *extra],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    return done.stdout
