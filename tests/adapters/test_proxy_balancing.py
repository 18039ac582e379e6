"""The proxy with nginx's balancers: SWRR order end to end, and every pick settled once.

`UpstreamGroup` (hakeeper.balance.upstream) plugs nginx's algorithms into the engine's
`pick`/`report` seam. least_conn and max_conns depend on each pick being reported exactly
once, whatever happens to the request (success, 502, retry, client abort, bad body,
timeout, tunnel), so a counting wrapper checks the balance after each scenario.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from test_proxy_support import (
    Backend,
    BackendConn,
    Seen,
    connect,
    proxy_with,
    read_response,
    request,
    run,
    simple_response,
    wait_for,
)

from hakeeper.balance.nginx import UpstreamServer
from hakeeper.balance.upstream import UpstreamGroup
from hakeeper.proxy.balancer import Balancer, RoundRobin
from hakeeper.proxy.config import Limits, Peer, Timeouts, forwarding_headers


class Counting:
    """Wraps a balancer; `outstanding` = picks not yet reported."""

    def __init__(self, inner: Balancer) -> None:
        self.inner = inner
        self.outstanding = 0
        self.reports: list[bool] = []

    def pick(self, key: str, tried: Collection[Peer], now: float) -> Peer | None:
        peer = self.inner.pick(key, tried, now)
        if peer is not None:
            self.outstanding += 1
        return peer

    def report(self, peer: Peer, ok: bool, now: float) -> None:
        self.outstanding -= 1
        self.reports.append(ok)
        self.inner.report(peer, ok, now)

    def count(self) -> int:
        return self.inner.count()


def test_smooth_weighted_round_robin_order_through_the_proxy() -> None:
    async def main() -> None:
        backends = [await Backend().start() for _ in range(3)]
        entries = [
            (b.peer, UpstreamServer(name=f"s{i}", weight=w))
            for i, (b, w) in enumerate(zip(backends, (5, 1, 1), strict=True))
        ]
        group: UpstreamGroup[Peer] = UpstreamGroup("round_robin", entries)
        async with proxy_with(backends, balancer=group) as px:
            reader, writer = await connect(px.port)
            order = []
            for _ in range(14):
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await read_response(reader)).status == 200
                order.append(next(i for i, b in enumerate(backends) if b.seen and b.seen[-1]))
                for b in backends:
                    b.seen.clear()
            writer.close()
        names = "".join("abc"[i] for i in order)
        assert names == "aabacaa" * 2  # nginx: weights 5,1,1 give a a b a c a a

    run(main())


def test_least_conn_spreads_concurrent_requests() -> None:
    gate = asyncio.Event()

    async def held(conn: BackendConn, seen: Seen) -> None:
        await gate.wait()
        conn.send(simple_response())

    async def main() -> None:
        backends = [await Backend(held).start() for _ in range(2)]
        entries = [(b.peer, UpstreamServer(name=f"s{i}")) for i, b in enumerate(backends)]
        group: UpstreamGroup[Peer] = UpstreamGroup("least_conn", entries)
        counting = Counting(group)
        async with proxy_with(backends, balancer=counting) as px:
            tasks = [
                asyncio.create_task(request(px.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
                for _ in range(6)
            ]
            await wait_for(lambda: sum(len(b.seen) for b in backends) == 6)
            assert sorted(len(b.seen) for b in backends) == [3, 3]
            assert counting.outstanding == 6
            gate.set()
            assert [r.status for r in await asyncio.gather(*tasks)] == [200] * 6
            await wait_for(lambda: counting.outstanding == 0)

    run(main())


def test_every_pick_is_reported_once_whatever_happens() -> None:
    async def handler(conn: BackendConn, seen: Seen) -> None:
        if seen.target == b"/hang":
            return  # never answers
        if seen.target == b"/drop":
            assert conn.transport is not None
            conn.transport.close()
            return
        if seen.target == b"/ws":
            conn.send(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n"
            )
            return
        if seen.target == b"/slowbody":
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            return
        conn.send(simple_response())

    async def main() -> None:
        backends = [await Backend(handler).start() for _ in range(2)]
        counting = Counting(RoundRobin([b.peer for b in backends], max_fails=0))
        async with proxy_with(
            backends,
            balancer=counting,
            headers=forwarding_headers(),
            timeouts=Timeouts(proxy_read=0.3, client_body=0.3),
            limits=Limits(max_body=10),
        ) as px:
            engine = px.engine
            port = px.port

            async def settled() -> None:
                await wait_for(lambda: counting.outstanding == 0 and not engine.clients)

            assert (await request(port, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")).status == 200
            await settled()
            # upstream drops: retried on the other (two picks, two reports), then 502
            assert (await request(port, b"GET /drop HTTP/1.1\r\nHost: x\r\n\r\n")).status == 502
            await settled()
            # upstream read timeout
            assert (await request(port, b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")).status == 504
            await settled()
            # client aborts while the upstream is still sending the body
            reader, writer = await connect(port)
            writer.write(b"GET /slowbody HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.readuntil(b"partial")
            writer.transport.abort()
            await settled()
            # body over client_max_body_size after the request was sent upstream
            reader, writer = await connect(port)
            writer.write(b"POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"5\r\nhello\r\n")
            await asyncio.sleep(0.05)
            writer.write(b"9\r\n123456789\r\n")
            assert (await read_response(reader)).status == 413
            writer.close()
            await settled()
            # a tunnel, closed by the client
            reader, writer = await connect(port)
            writer.write(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n"
            )
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            writer.close()
            await settled()
            assert False in counting.reports and True in counting.reports

    run(main())
