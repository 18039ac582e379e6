"""The daemon's embedded L7 proxy (runtime.l7) with `health_check`: the checks run on the
daemon's loop, the forked workers follow them through the shared table.

Two backends on 127.0.0.1 in this process; `b` answers 500 to everything. `fails=4` at
300 ms: a worker that started checking afresh would send b traffic for about a second, so
"40 requests on new connections, none reached b" right after a respawn or a reload shows
the new workers started from the current state. Waits are conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import pytest

from hakeeper.proxy.health_shared import POLL_S
from hakeeper.runtime import l7 as l7mod
from hakeeper.runtime.l7 import L7Service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Named:
    def __init__(self, name: str) -> None:
        self.name = name
        self.status = 200
        self.clients = 0
        self.probes = 0
        self.port = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> Named:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /hc "):
                self.probes += 1
            else:
                self.clients += 1
            body = self.name.encode()
            writer.write(
                b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (self.status, len(body), body)
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def names(port: int, n: int) -> list[str]:
    out = []
    for _ in range(n):
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 3)
        try:
            writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = await asyncio.wait_for(reader.read(), 3)
        finally:
            writer.close()
        status = data.split(b" ", 2)[1].decode()
        out.append(data.split(b"\r\n\r\n", 1)[1].decode() if status == "200" else status)
    return out


async def until(pred: object, what: str, timeout: float = 10.0) -> None:
    assert callable(pred)
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def conf(a: Named, b: Named, port: int) -> str:
    return f"""worker_processes 2;
events {{ }}
http {{
    upstream app {{ server 127.0.0.1:{a.port}; server 127.0.0.1:{b.port}; }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{ proxy_pass http://app; health_check interval=300ms fails=4 uri=/hc; }}
    }}
}}
"""


def test_daemon_checks_once_and_new_workers_start_from_the_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(l7mod, "RESPAWN_BACKOFF", 0.0)
    path = tmp_path / "nginx.conf"
    port = free_port()

    async def main() -> None:
        a, b = await Named("a").start(), await Named("b").start()
        b.status = 500
        path.write_text(conf(a, b, port))
        svc = L7Service(str(path))
        seen: list[int] = []

        def row_b() -> dict[str, object]:
            rows = svc.status()["health"]
            return next(r for r in rows if r["server"] == f"127.0.0.1:{b.port}")

        def state_b() -> str:
            return str(row_b()["state"])

        try:
            assert await svc.start()
            seen += svc.pids()
            await until(lambda: state_b() == "down", "b down")
            deadline = asyncio.get_running_loop().time() + 5
            while "500" in await names(port, 10):  # the workers look every 50 ms
                assert asyncio.get_running_loop().time() < deadline, "workers kept b"
            assert await names(port, 40) == ["a"] * 40
            # a worker dies: its replacements (the whole listener's) start with b down
            master = svc.masters[("127.0.0.1", port)]
            old = set(master.pids)
            os.kill(master.pids[0], signal.SIGKILL)
            # the supervision poll (1 s) replaces the listener's workers (all of them)
            await until(lambda: len(master.pids) == 2 and not old & set(master.pids), "respawn")
            seen += svc.pids()
            before = b.clients
            assert await names(port, 40) == ["a"] * 40
            assert b.clients == before
            # a reload with the same check: the state and the probe task are kept
            task = next(iter(svc.health.checks.values())).task if svc.health else None
            assert await svc.reload()
            seen += svc.pids()
            assert svc.health is not None
            assert next(iter(svc.health.checks.values())).task is task
            assert await names(port, 40) == ["a"] * 40
            # b heals: back in every worker
            b.status = 200
            await until(lambda: state_b() == "up", "b up")
            # every worker has applied it once the change is older than a few table polls
            await until(lambda: float(row_b()["since"]) >= 3 * POLL_S, "the workers' poll")
            got = await names(port, 40)
            assert got.count("b") >= 16, got
            # one checker: 5 more probes take 4+ intervals (one checker per worker: ~2)
            p0 = a.probes
            await until(lambda: a.probes >= p0 + 1, "a probe")
            t0 = asyncio.get_running_loop().time()
            await until(lambda: a.probes >= p0 + 6, "5 more probes")
            assert asyncio.get_running_loop().time() - t0 >= 4 * 0.3 * 0.9
        finally:
            await svc.stop()
            a.close()
            b.close()
        assert svc.pids() == []
        assert not [p for p in seen if os.path.exists(f"/proc/{p}") and _running(p)]

    asyncio.run(main())


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
