"""Issue #5: a hitless L7 reload under load loses no request (the drain/accept race).

A draining worker closes its listeners and waits for its connections. A connection the
loop accepted in the same turn as the SIGTERM is made (`connection_made`) on a later
turn than the drain's first step: the drain must wait for it, or the worker exits under
it and the client sees `Remote end closed connection without response` (what a CI run
of tests/netns/test_daemon_nginx.py hit once on a loaded box). The first tests build
that order deterministically on one engine (uvloop and the stdlib loop); the last runs
`Master` with two workers under its own bounded CPU contention, several reloads, a
new-connection client and a keep-alive client, and counts failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from test_proxy_support import Backend, make_config, run
from test_proxy_workers import LOAD_BOUND, BackendThread, _keepalive_client, _wait

from hakeeper.proxy.config import Peer, ProxyConfig
from hakeeper.proxy.engine import Engine
from hakeeper.proxy.server import Master

REQUEST = b"GET /raced HTTP/1.1\r\nHost: x\r\n\r\n"


class _DrainOnAccept(Engine):
    """Starts the worker's drain from inside the first accept: the drain's first step is
    queued before that connection's `connection_made`, the order a worker sees when the
    loop turn that handles SIGTERM also accepted a connection."""

    def __init__(self, config: ProxyConfig) -> None:
        super().__init__(config)
        self.drained: asyncio.Task[tuple[bool, int, int]] | None = None

    def protocol_factory(self):  # type: ignore[no-untyped-def]
        proto = super().protocol_factory()
        if self.drained is None:
            self.drained = self.loop.create_task(self._worker_exit())
        return proto

    async def _worker_exit(self) -> tuple[bool, int, int]:
        """What `server.serve` does on SIGTERM; returns what was done when drain returned."""
        ok = await self.drain(5.0)
        seen = (ok, self.stats.accepted, self.stats.responses)
        self.close()  # then the worker's loop ends and the process exits
        return seen


async def _accepted_then_drained() -> None:
    backend = await Backend().start()
    engine = _DrainOnAccept(make_config([backend.peer]))
    await engine.start_listening("127.0.0.1", 0)
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.ports()[0])
        writer.write(REQUEST)
        assert engine.drained is not None
        ok, accepted, responses = await asyncio.wait_for(engine.drained, 10)
        # the drain waited for the connection accepted before it: served, then closed
        assert (ok, accepted, responses) == (True, 1, 1)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close" in head.lower()
    finally:
        if writer is not None:
            writer.close()
        await asyncio.sleep(0)
        engine.close()  # again: a connection made after the first close (the bug)
        await backend.stop()
        await asyncio.sleep(0)


def test_drain_waits_for_a_connection_accepted_in_the_same_turn_uvloop() -> None:
    run(_accepted_then_drained())


def test_drain_waits_for_a_connection_accepted_in_the_same_turn_asyncio() -> None:
    # the stdlib loop makes the transport in a task after the accept: one turn more
    asyncio.run(asyncio.wait_for(_accepted_then_drained(), 20))


# -- Master, two workers, reloads under CPU contention ----------------------------------
RELOADS = 6
HOG_SECONDS = 40.0  # each busy loop ends by itself after this (and is killed at the end)


@contextlib.contextmanager
def _cpu_hogs(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` busy-loop processes (one per CPU): the box as loaded as the CI run was."""
    code = (
        f"import time\nend = time.monotonic() + {HOG_SECONDS}\nwhile time.monotonic() < end: pass"
    )
    hogs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]
    try:
        yield hogs
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait(10)


def _new_connections(
    port: int, stop: threading.Event, failures: list[str], done: list[int]
) -> None:
    """What the netns test's client does: http.client, a new connection per request."""
    deadline = time.monotonic() + LOAD_BOUND
    while not stop.is_set() and time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/new")
            reply = conn.getresponse()
            reply.read()
            if reply.status != 200:
                failures.append(f"HTTP {reply.status}")
        except OSError as exc:  # RemoteDisconnected, ConnectionResetError, timeouts
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()
        done.append(1)


@pytest.mark.slow
def test_reloads_under_cpu_contention_lose_no_request() -> None:
    backend = BackendThread()
    # the daemon's timer_resolution (0.5 s): the drain grace is swept that coarsely
    config = make_config([Peer("127.0.0.1", backend.port)], timer_resolution=0.5)
    master = Master(config, workers=2)
    master.start()
    backend.start()  # threads only after the fork
    stop = threading.Event()
    failures: list[str] = []
    fresh: list[int] = []
    kept: list[int] = []
    threads = [
        threading.Thread(target=_new_connections, args=(master.port, stop, failures, fresh)),
        threading.Thread(target=_keepalive_client, args=(master.port, stop, failures, kept)),
    ]
    retired: list[int] = []
    try:
        with _cpu_hogs(2):
            for t in threads:
                t.start()
            _wait(lambda: len(fresh) >= 5 and len(kept) >= 5, "requests before the reloads")
            for i in range(RELOADS):
                seen = len(fresh), len(kept)
                # as the daemon does: new workers serve, the old ones drain on their own
                retired += master.replace_workers()
                _wait(
                    lambda s=seen: len(fresh) > s[0] + 3 and len(kept) > s[1] + 3,  # type: ignore[misc]
                    f"requests after reload {i + 1}",
                    detail=lambda: f"failures {failures[:3]}",
                )
            stop.set()
            for t in threads:
                t.join(30)
        Master._reap(retired, 30.0)
        assert failures == [], (
            f"{len(failures)} of {len(fresh) + len(kept)} requests failed over {RELOADS} "
            f"reloads: {failures[:5]}"
        )
    finally:
        stop.set()
        master.stop()
        Master._reap(retired, 10.0)
        backend.stop()
