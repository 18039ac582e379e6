"""The proxy's fallback round-robin (nginx passive health) and the keep-alive pool rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hakeeper.proxy.balancer import RoundRobin
from hakeeper.proxy.config import Peer, ProxyConfig, Timeouts
from hakeeper.proxy.upstream import K_IDLE, Pool

A, B, C = Peer("10.0.0.1", 80), Peer("10.0.0.2", 80), Peer("10.0.0.3", 80)


def test_round_robin_order_and_tried_set() -> None:
    rr = RoundRobin([A, B, C])
    assert [rr.pick("k", (), 0.0) for _ in range(4)] == [A, B, C, A]
    assert rr.pick("k", [B], 0.0) == C
    assert rr.pick("k", [A, B, C], 0.0) is None
    assert rr.count() == 3


def test_passive_health_max_fails_fail_timeout() -> None:
    rr = RoundRobin([A, B], max_fails=2, fail_timeout=10.0)
    rr.report(A, False, 1.0)
    assert rr.pick("k", (), 1.5) == A  # one failure of two: still used
    rr.report(A, False, 2.0)
    assert [rr.pick("k", (), 3.0) for _ in range(3)] == [B, B, B]
    assert rr.pick("k", [B], 3.0) is None  # no live upstreams
    assert rr.pick("k", [B], 12.5) == A  # fail_timeout over: A probed again
    rr.report(A, True, 12.6)
    assert rr.fails(A) == 0


def test_single_peer_is_never_marked_down() -> None:
    rr = RoundRobin([A], max_fails=1)
    for t in range(5):
        rr.report(A, False, float(t))
    assert rr.pick("k", (), 5.0) == A


def test_max_fails_zero_disables_accounting() -> None:
    rr = RoundRobin([A, B], max_fails=0)
    for _ in range(3):
        rr.report(A, False, 0.0)
    assert rr.pick("k", (), 0.0) == A


@dataclass
class FakeTransport:
    closing: bool = False
    reading: bool = True

    def is_closing(self) -> bool:
        return self.closing

    def resume_reading(self) -> None:
        self.reading = True


@dataclass
class FakeEngine:
    config: ProxyConfig = field(
        default_factory=lambda: ProxyConfig(peers=(A,), timeouts=Timeouts(upstream_keepalive=60.0))
    )


class FakeConn:
    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.transport = FakeTransport()
        self.engine: Any = FakeEngine()
        self.closed = False
        self.deadline = 0.0
        self.kind = 0
        self.idle_since = 0.0

    def close(self) -> None:
        self.closed = True
        self.transport.closing = True


def test_pool_is_lifo_per_peer() -> None:
    pool = Pool(8)
    a1, a2, b1 = FakeConn(A), FakeConn(A), FakeConn(B)
    for c in (a1, a2, b1):
        assert pool.put(c, 5.0)  # type: ignore[arg-type]
    assert a2.kind == K_IDLE and a2.deadline == 65.0
    assert pool.get(A) is a2
    assert pool.get(A) is a1
    assert pool.get(A) is None
    assert pool.get(B) is b1
    assert pool.idle() == 0


def test_pool_bound_evicts_oldest_and_skips_closed() -> None:
    pool = Pool(2)
    c1, c2, c3 = FakeConn(A), FakeConn(B), FakeConn(A)
    pool.put(c1, 0.0)  # type: ignore[arg-type]
    pool.put(c2, 0.0)  # type: ignore[arg-type]
    pool.put(c3, 0.0)  # type: ignore[arg-type]
    assert c1.closed and not c3.closed
    assert pool.idle() == 2
    c3.transport.closing = True  # closed by the server while idle
    assert pool.get(A) is None
    pool.remove(c2)  # type: ignore[arg-type]
    assert pool.get(B) is None


def test_pool_resumes_reading_of_a_connection_paused_for_a_slow_client() -> None:
    # the response completed while the client's write buffer was full (reading paused):
    # an idle pooled connection must read again, or its next request times out (504)
    pool = Pool(4)
    conn = FakeConn(A)
    conn.transport.reading = False
    assert pool.put(conn, 0.0)  # type: ignore[arg-type]
    assert conn.transport.reading
    assert pool.get(A) is conn


def test_pool_size_zero_keeps_nothing() -> None:
    pool = Pool(0)
    assert not pool.put(FakeConn(A), 0.0)  # type: ignore[arg-type]
    pool.close_all()
