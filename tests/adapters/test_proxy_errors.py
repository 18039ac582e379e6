"""The proxy's error paths on loopback: smuggling rejections, limits, 502/504, retries, timeouts.

The smuggling cases check both sides: the client gets 400 and the connection closes, and
the backend never sees the smuggled request. Retries follow nginx's `proxy_next_upstream`:
connect errors always move on; once a request was sent, only idempotent ones do.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from test_proxy_support import (
    Backend,
    BackendConn,
    Seen,
    connect,
    proxy_with,
    read_response,
    read_until_closed,
    request,
    run,
    simple_response,
    wait_for,
)
from uvloop_support import hanging_port

from hakeeper.proxy.balancer import RoundRobin
from hakeeper.proxy.config import Limits, Peer, RetryPolicy, Timeouts

SMUGGLING = {
    "cl_te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "te_cl": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 4\r\n\r\n5c\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n",
    "dup_cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 36\r\n\r\n"
    b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "same_dup_cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
    b"Content-Length: 3\r\n\r\nabc",
    "obs_fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\r\n",
    "space_before_colon": b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
    "ctl_in_value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    "bare_cr": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "bad_name": b"GET / HTTP/1.1\r\nHost: x\r\nX(A): b\r\n\r\n",
    "te_not_chunked_last": b"POST / HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked, gzip\r\n\r\n",
    "te_gzip_only": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    "cl_plus_sign": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "cl_list": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
    "no_host_11": b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "bad_host": b"GET / HTTP/1.1\r\nHost: a/../b\r\n\r\n",
    "lf_only": b"GET / HTTP/1.1\nHost: x\n\n",
    "bad_chunk_size": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_ambiguous_framing_is_rejected_before_the_backend(name: str) -> None:
    async def main() -> None:
        backend = Backend()
        async with proxy_with([backend]) as px:
            reader, writer = await connect(px.port)
            writer.write(SMUGGLING[name])
            resp = await read_response(reader)
            assert resp.status == 400
            assert resp.header(b"Connection") == b"close"
            assert await read_until_closed(reader) == b""
            writer.close()
            assert all(s.target != b"/smuggled" for s in backend.seen)
            assert px.engine.stats.bad_requests == 1
            await wait_for(lambda: not px.engine.clients)

    run(main())


def test_bad_request_after_good_pipelined_one_answers_in_order() -> None:
    async def main() -> None:
        backend = Backend()
        async with proxy_with([backend]) as px:
            reader, writer = await connect(px.port)
            writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLING["cl_te"])
            first = await read_response(reader)
            second = await read_response(reader)
            assert (first.status, first.body) == (200, b"ok /ok")
            assert second.status == 400
            assert [s.target for s in backend.seen] == [b"/ok"]
            writer.close()

    run(main())


def test_size_limits() -> None:
    async def main() -> None:
        backend = Backend()
        limits = Limits(header_line=1024, header_total=4096, max_body=100)
        async with proxy_with([backend], limits=limits) as px:
            long_uri = b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
            assert (await request(px.port, long_uri)).status == 414
            big_header = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 2000 + b"\r\n\r\n"
            assert (await request(px.port, big_header)).status == 400
            many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 200) for i in range(40))
            assert (await request(px.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + many)).status == 400
            too_big = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n" + b"x" * 101
            assert (await request(px.port, too_big)).status == 413
            chunked = (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"40\r\n" + b"y" * 64 + b"\r\n40\r\n" + b"y" * 64 + b"\r\n0\r\n\r\n"
            )
            assert (await request(px.port, chunked)).status == 413
            ok = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 100
            assert (await request(px.port, ok)).status == 200
            assert b"/" + b"a" * 2000 not in [s.target for s in backend.seen]
            assert (await request(px.port, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")).status == 505
            assert (
                await request(px.port, b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n")
            ).status == 405

    run(main())


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def test_502_when_no_upstream_answers() -> None:
    async def main() -> None:
        dead = Peer("127.0.0.1", _closed_port())
        async with proxy_with([], balancer=RoundRobin([dead])) as px:
            reader, writer = await connect(px.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            resp = await read_response(reader)
            assert resp.status == 502
            assert resp.keep_alive  # like nginx: the client connection stays usable
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader)).status == 502
            writer.close()
            assert px.engine.stats.upstream_errors == 2

    run(main())


def test_502_when_all_peers_marked_down() -> None:
    async def main() -> None:
        dead = [Peer("127.0.0.1", _closed_port()), Peer("127.0.0.1", _closed_port())]
        balancer = RoundRobin(dead, max_fails=1, fail_timeout=30)
        async with proxy_with([], balancer=balancer) as px:
            assert (await request(px.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")).status == 502
            assert px.engine.stats.no_live_upstream == 0
            assert (await request(px.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")).status == 502
            assert px.engine.stats.no_live_upstream == 1  # nginx "no live upstreams"

    run(main())


def test_504_on_upstream_read_timeout_then_recovers() -> None:
    def silent(conn: BackendConn, seen: Seen) -> None:
        if seen.target != b"/slow":
            conn.send(simple_response())

    async def main() -> None:
        backend = Backend(silent)
        timeouts = Timeouts(proxy_read=0.3, proxy_connect=1)
        async with proxy_with([backend], timeouts=timeouts) as px:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            resp = await request(px.port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            assert resp.status == 504
            assert 0.25 < loop.time() - t0 < 3.0
            assert (await request(px.port, b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")).status == 200

    run(main())


def test_504_on_connect_timeout() -> None:
    async def main() -> None:
        # a listener that never accepts, with its backlog filled: connects hang
        async with hanging_port(fillers=8) as stuck_port:
            peer = Peer("127.0.0.1", stuck_port)
            timeouts = Timeouts(proxy_connect=0.3)
            async with proxy_with([], balancer=RoundRobin([peer]), timeouts=timeouts) as px:
                resp = await request(px.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert resp.status == 504
                assert px.engine.stats.upstream_timeouts == 1

    run(main())


def _hangup(conn: BackendConn, seen: Seen) -> None:
    """Read the whole request, then drop the connection without answering."""
    assert conn.transport is not None
    conn.transport.close()


def test_retry_on_next_upstream_for_idempotent_requests_only() -> None:
    async def main() -> None:
        bad, good = await Backend(_hangup).start(), await Backend().start()
        # max_fails=0: the bad peer stays in rotation, so every request tries it first
        balancer = RoundRobin([bad.peer, good.peer], max_fails=0)
        async with proxy_with([bad, good], balancer=balancer, retry=RetryPolicy()) as px:
            for _ in range(3):
                resp = await request(px.port, b"GET /g HTTP/1.1\r\nHost: x\r\n\r\n")
                assert resp.status == 200
            assert len(bad.seen) == 3  # each GET was sent to bad, then repeated on good
            statuses = []
            for _ in range(3):
                resp = await request(
                    px.port, b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz"
                )
                statuses.append(resp.status)
            # round-robin alternates; a POST that was sent to bad is never repeated
            assert statuses == [502, 200, 502]
            assert [s.method for s in bad.seen].count(b"POST") == 2
            assert [s.method for s in good.seen] == [b"GET"] * 3 + [b"POST"]
            assert px.engine.stats.retries == 3

    run(main())


def test_retry_on_connect_error_even_for_post_and_tries_limit() -> None:
    async def main() -> None:
        good = await Backend().start()
        dead = Peer("127.0.0.1", _closed_port())
        balancer = RoundRobin([dead, good.peer], max_fails=0)
        async with proxy_with([good], balancer=balancer) as px:
            for _ in range(2):
                resp = await request(
                    px.port, b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz"
                )
                assert resp.status == 200  # nothing was sent to the dead one
        balancer = RoundRobin([dead, good.peer], max_fails=0)
        good2 = await Backend().start()
        balancer = RoundRobin([dead, good2.peer], max_fails=0)
        async with proxy_with([good2], balancer=balancer, retry=RetryPolicy(tries=1)) as px:
            statuses = sorted(
                [
                    (await request(px.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")).status
                    for _ in range(2)
                ]
            )
            assert statuses == [200, 502]  # proxy_next_upstream_tries 1: no second try

    run(main())


def test_retry_on_status_when_configured() -> None:
    def unavailable(conn: BackendConn, seen: Seen) -> None:
        conn.send(simple_response(503, b"busy"))

    async def main() -> None:
        busy, good = Backend(unavailable), Backend()
        policy = RetryPolicy(on=frozenset({"error", "timeout", "http_503"}))
        async with proxy_with([busy, good], retry=policy) as px:
            for _ in range(3):
                resp = await request(px.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert resp.status == 200
        async with proxy_with([Backend(unavailable)]) as px:
            resp = await request(px.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (resp.status, resp.body) == (503, b"busy")  # passed through by default

    run(main())


def test_slowloris_client_cut_after_client_header_timeout() -> None:
    async def main() -> None:
        backend = Backend()
        timeouts = Timeouts(client_header=0.4)
        async with proxy_with([backend], timeouts=timeouts) as px:
            reader, writer = await connect(px.port)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            closed = False
            for i in range(100):  # one header byte every 20 ms, never finishing
                try:
                    writer.write(b"GET / HTTP/1.1\r\nX-Trickle-%d: " % i if i == 0 else b"a")
                    await writer.drain()
                except ConnectionError:
                    closed = True
                    break
                if reader.at_eof():
                    closed = True
                    break
                try:
                    data = await asyncio.wait_for(reader.read(100), 0.02)
                except TimeoutError:
                    continue
                if not data:
                    closed = True
                    break
            assert closed
            assert loop.time() - t0 < 1.5
            assert px.engine.stats.client_timeouts == 1
            assert backend.seen == []
            writer.close()

    run(main())


def test_idle_keepalive_and_body_timeouts() -> None:
    async def main() -> None:
        backend = Backend()
        timeouts = Timeouts(keepalive=0.3, client_body=0.3)
        async with proxy_with([backend], timeouts=timeouts) as px:
            reader, writer = await connect(px.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader)).status == 200
            assert await read_until_closed(reader) == b""  # idle: closed after 0.3 s
            writer.close()
            reader, writer = await connect(px.port)
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            assert await read_until_closed(reader) == b""  # body stalls: cut
            writer.close()
            await wait_for(lambda: not px.engine.clients and not backend.conns)

    run(main())


def test_upstream_bytes_beyond_the_response_are_never_relayed() -> None:
    def desync(conn: BackendConn, seen: Seen) -> None:
        # a second, unsolicited response glued to the first: response splitting
        conn.send(simple_response(body=b"ok") + simple_response(body=b"evil"))

    async def main() -> None:
        backend = Backend(desync)
        async with proxy_with([backend]) as px:
            reader, writer = await connect(px.port)
            writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            data = await read_until_closed(reader)
            assert b"evil" not in data  # the client connection is cut instead
            writer.close()
            assert px.engine.stats.upstream_invalid == 1
            await wait_for(lambda: not px.engine.clients and px.engine.pool.idle() == 0)

    run(main())


def test_invalid_upstream_response_is_502() -> None:
    def broken(conn: BackendConn, seen: Seen) -> None:
        conn.send(b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok")

    async def main() -> None:
        async with proxy_with([Backend(broken)]) as px:
            resp = await request(px.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert resp.status == 502

    run(main())
