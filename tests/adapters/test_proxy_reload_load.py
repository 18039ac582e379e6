"""Issue #5: a hitless L7 reload under load loses no request (two drain paths that did).

A draining worker closes its listeners and waits for its connections. (1) A connection
the loop accepted in the same turn as the SIGTERM is made (`connection_made`) on a later
turn than the drain's first step: the drain must wait for it, or the worker exits under
it and the client sees `Remote end closed connection without response` (what a CI run
of tests/netns/test_daemon_nginx.py hit once on a loaded box). (2) A connection whose
client has not sent its first request yet must not be closed by the 1 s grace given to
idle keep-alive connections (nginx keeps it until client_header_timeout). Both orders
are built deterministically on one engine (uvloop and the stdlib loop for the first);
the last tests run `Master` with two workers under their own bounded CPU contention,
several daemon-style reloads, new-connection and keep-alive clients, and count failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from test_proxy_support import Backend, make_config, run, wait_for
from test_proxy_workers import LOAD_BOUND, BackendThread, _keepalive_client, _wait

from hakeeper.proxy.client_state import DRAIN_GRACE
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


async def _silent_then_request() -> None:
    """A client that connected before the drain but sends its request only after the
    drain grace of idle keep-alive connections has passed (a slow client on a loaded box)."""
    backend = await Backend().start()
    engine = Engine(make_config([backend.peer]))
    await engine.start_listening("127.0.0.1", 0)
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.ports()[0])
        await wait_for(lambda: engine.stats.accepted == 1)
        drained = asyncio.create_task(engine.drain(10.0))
        start = engine.loop.time()
        # sweeps ran past the grace (engine.now is the sweep's clock)
        late = start + DRAIN_GRACE + 3 * engine.config.timer_resolution
        await wait_for(lambda: engine.now > late, limit=5.0)
        assert not drained.done()  # it waits for this connection...
        writer.write(REQUEST)  # ...which is still open and served
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close" in head.lower()
        assert await asyncio.wait_for(drained, 5) is True
        assert engine.stats.client_timeouts == 0
    finally:
        if writer is not None:
            writer.close()
        engine.close()
        await backend.stop()
        await asyncio.sleep(0)


def test_drain_keeps_a_connection_without_its_first_request() -> None:
    run(_silent_then_request())


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


Client = Callable[[int, threading.Event, list[str], list[int]], object]


def _reload_under_load(clients: list[Client], reloads: int = RELOADS) -> tuple[int, list[str]]:
    """`reloads` daemon-style reloads of a 2-worker Master while `clients` (threads) load
    it and 2 busy loops load the CPUs; returns (requests answered, failures)."""
    backend = BackendThread()
    # the daemon's timer_resolution (0.5 s): the drain grace is swept that coarsely
    config = make_config([Peer("127.0.0.1", backend.port)], timer_resolution=0.5)
    master = Master(config, workers=2)
    master.start()
    backend.start()  # threads only after the fork
    stop = threading.Event()
    failures: list[str] = []
    counts: list[list[int]] = [[] for _ in clients]
    threads = [
        threading.Thread(target=client, args=(master.port, stop, failures, done))
        for client, done in zip(clients, counts, strict=True)
    ]
    retired: list[int] = []
    try:
        with _cpu_hogs(2):
            for t in threads:
                t.start()
            _wait(lambda: all(len(c) >= 5 for c in counts), "requests before the reloads")
            for i in range(reloads):
                seen = [len(c) for c in counts]
                # as the daemon does: new workers serve, the old ones drain on their own
                retired += master.replace_workers()
                _wait(
                    lambda s=seen: all(len(c) > n + 3 for c, n in zip(counts, s, strict=True)),  # type: ignore[misc]
                    f"requests after reload {i + 1}",
                    detail=lambda: f"failures {failures[:3]}",
                )
            stop.set()
            for t in threads:
                t.join(30)
        Master._reap(retired, 30.0)
        return sum(len(c) for c in counts), failures
    finally:
        stop.set()
        master.stop()
        Master._reap(retired, 10.0)
        backend.stop()


@pytest.mark.slow
def test_reloads_under_cpu_contention_lose_no_new_connection() -> None:
    """The netns test's load (a new connection per request), three clients at once."""
    answered, failures = _reload_under_load([_new_connections] * 3)
    assert failures == [], (
        f"{len(failures)} of {answered} failed over {RELOADS} reloads: {failures[:5]}"
    )


@pytest.mark.slow
def test_reloads_under_cpu_contention_lose_no_keepalive_request() -> None:
    answered, failures = _reload_under_load([_keepalive_client, _new_connections])
    assert failures == [], (
        f"{len(failures)} of {answered} failed over {RELOADS} reloads: {failures[:5]}"
    )
