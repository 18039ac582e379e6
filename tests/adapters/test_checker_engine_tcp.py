"""The engine's TCP_CHECK fast path on a real loop: a closed port fails at once (RST), a
connect that cannot complete (a listener whose accept queue is full drops our SYN) fails
at connect_timeout through the timer wheel, a connect that completes later is seen
through the engine's epoll set, and stop() leaves no socket behind."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterator

import pytest
from uvloop_support import wait_until

from hakeeper.check.engine import CheckerEngine
from hakeeper.conf.model import CheckerCommon, RealServer, TcpCheck, VirtualServer

LOCAL = ipaddress.IPv4Address("127.0.0.1")


def vs_for(port: int, connect_timeout: float, delay_loop: float = 0.2) -> VirtualServer:
    common = CheckerCommon(connect_timeout=connect_timeout, delay_loop=delay_loop, retry=0,
                           warmup=0)  # fmt: skip
    real = RealServer(LOCAL, port, checkers=(TcpCheck(common),))
    vip = ipaddress.IPv4Address("198.18.0.1")
    return VirtualServer(vip, 80, delay_loop=delay_loop, lvs_sched="rr", real_servers=(real,))


@pytest.fixture
def full_listener() -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    """A listener with backlog 0 whose one queue slot is taken: further SYNs are dropped."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    filler = socket.create_connection(lsock.getsockname(), timeout=2)
    extra: list[socket.socket] = [filler]
    try:
        yield lsock, extra
    finally:
        for s in extra:
            s.close()
        lsock.close()


def test_closed_port_fails_fast_not_at_connect_timeout() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there: connect() gets a RST

    async def go() -> tuple[float, str]:
        engine = CheckerEngine([vs_for(port, connect_timeout=5.0)])
        engine.start()
        t0 = time.monotonic()
        try:
            await wait_until(lambda: not engine.status()[0].real_servers[0].alive, 3, "down")
            return time.monotonic() - t0, engine.status()[0].real_servers[0].checkers[0].detail
        finally:
            await engine.stop()

    took, detail = asyncio.run(asyncio.wait_for(go(), 10))
    assert took < 1.0 + 0.2 + 0.5  # bootstrap + one tick, far from the 5 s connect_timeout
    assert "refused" in detail.lower()


def test_unanswered_connect_times_out_at_connect_timeout(
    full_listener: tuple[socket.socket, list[socket.socket]],
) -> None:
    lsock, _extra = full_listener
    port = lsock.getsockname()[1]

    async def go() -> tuple[float, str, int]:
        engine = CheckerEngine([vs_for(port, connect_timeout=0.4, delay_loop=5.0)])
        engine.start()
        t0 = time.monotonic()
        try:
            await wait_until(lambda: engine.probes_started >= 1, 3, "first probe")
            started = time.monotonic()
            await wait_until(lambda: engine._connects, 1, "the connect handed to epoll")
            pending = len(engine._connects)
            await wait_until(lambda: not engine.status()[0].real_servers[0].alive, 3, "down")
            took = time.monotonic() - started
            assert t0 < started
            return took, engine.status()[0].real_servers[0].checkers[0].detail, pending
        finally:
            await engine.stop()
            assert not engine._connects

    took, detail, pending = asyncio.run(asyncio.wait_for(go(), 10))
    assert pending == 1  # still connecting after a tick: it waited in the engine's epoll set
    assert detail == "connect timeout"
    assert 0.4 - 0.02 <= took < 0.4 + 0.5


def test_connect_completing_later_is_reported_through_epoll(
    full_listener: tuple[socket.socket, list[socket.socket]],
) -> None:
    """Our SYN is dropped while the queue is full; once it is drained the kernel's SYN
    retransmit (1 s) completes the handshake and the server stays up."""
    lsock, extra = full_listener
    port = lsock.getsockname()[1]

    async def go() -> tuple[bool, str, int]:
        engine = CheckerEngine([vs_for(port, connect_timeout=3.0, delay_loop=5.0)])
        engine.start()
        try:
            await wait_until(lambda: engine._connects, 3, "a pending connect")
            lsock.setblocking(False)
            loop = asyncio.get_running_loop()
            loop.add_reader(lsock.fileno(), lambda: extra.append(lsock.accept()[0]))
            extra.append(lsock.accept()[0])  # the filler: frees the queue slot
            await wait_until(lambda: not engine._connects, 3, "connect completed")
            loop.remove_reader(lsock.fileno())
            rs = engine.status()[0].real_servers[0]
            return rs.alive, rs.checkers[0].detail, engine.probes_started
        finally:
            await engine.stop()

    alive, detail, started = asyncio.run(asyncio.wait_for(go(), 10))
    assert alive
    assert detail == "connected"
    assert started == 1


def test_stop_closes_pending_connects(
    full_listener: tuple[socket.socket, list[socket.socket]],
) -> None:
    lsock, _extra = full_listener
    port = lsock.getsockname()[1]

    async def go() -> int:
        vss = [vs_for(port, connect_timeout=3.0, delay_loop=5.0)]
        engine = CheckerEngine(vss)
        engine.start()
        await wait_until(lambda: engine._connects, 3, "a pending connect")
        await engine.stop()
        assert engine._epoll is None
        return len(engine._connects)

    assert asyncio.run(asyncio.wait_for(go(), 10)) == 0
