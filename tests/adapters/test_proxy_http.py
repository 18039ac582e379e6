"""The proxy engine against real loopback backends: keep-alive, headers, streaming, order.

Each test starts loopback backends (asyncio servers in test_proxy_support) and one
engine on 127.0.0.1:0, talks raw HTTP/1.1 to it, and asserts what the client received
and what the backend saw.
"""

from __future__ import annotations

import asyncio

import httptools
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

from hakeeper.proxy.config import forwarding_headers, nginx_default_headers


def test_keepalive_both_sides_reuses_one_upstream_connection() -> None:
    async def main() -> None:
        backend = Backend()
        async with proxy_with([backend]) as px:
            for _ in range(2):  # two client connections in turn
                reader, writer = await connect(px.port)
                for i in range(5):
                    writer.write(b"GET /r%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                    resp = await read_response(reader)
                    assert resp.status == 200
                    assert resp.body == b"ok /r%d" % i
                    assert resp.keep_alive
                writer.close()
            assert backend.opened == 1
            assert {s.conn_id for s in backend.seen} == {1}
            assert px.engine.stats.upstream_reused == 9
            # keepalive_headers(): Host $proxy_host, no Connection header upstream
            assert backend.seen[0].header(b"Host") == b"backend"
            assert backend.seen[0].header(b"Connection") is None

    run(main())


def test_nginx_defaults_send_http10_connection_close_and_do_not_pool() -> None:
    async def main() -> None:
        backend = Backend()
        async with proxy_with(
            [backend], http_version="1.0", headers=nginx_default_headers(), proxy_host="up"
        ) as px:
            reader, writer = await connect(px.port)
            for _ in range(3):
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nKeep-Alive: 5\r\nTE: trailers\r\n\r\n")
                resp = await read_response(reader)
                assert resp.status == 200
            writer.close()
            assert backend.opened == 3
            seen = backend.seen[0]
            assert seen.header(b"Connection") == b"close"
            assert seen.header(b"Host") == b"up"
            assert seen.header(b"Keep-Alive") is None
            assert seen.header(b"TE") is None

    run(main())


def test_forwarding_headers_like_proxy_set_header_idiom() -> None:
    async def main() -> None:
        backend = Backend()
        async with proxy_with([backend], headers=forwarding_headers()) as px:
            resp = await request(
                px.port,
                b"GET /p?q=1 HTTP/1.1\r\nHost: Example.COM:8080\r\n"
                b"X-Forwarded-For: 203.0.113.7\r\nX-Real-IP: 1.2.3.4\r\nAccept: */*\r\n\r\n",
            )
            assert resp.status == 200
            seen = backend.seen[0]
            assert seen.target == b"/p?q=1"
            assert seen.header(b"Host") == b"example.com"
            assert seen.header(b"X-Real-IP") == b"127.0.0.1"
            assert seen.header(b"X-Forwarded-For") == b"203.0.113.7, 127.0.0.1"
            assert seen.header(b"X-Forwarded-Proto") == b"http"
            assert seen.header(b"Accept") == b"*/*"
            assert seen.header(b"Upgrade") is None  # empty value: not sent
            assert seen.header(b"Connection") == b"close"  # $connection_upgrade

    run(main())


def test_pipelined_requests_answered_in_order() -> None:
    async def slow_first(conn: BackendConn, seen: Seen) -> None:
        delay = {b"/0": 0.2, b"/1": 0.0, b"/2": 0.1}.get(seen.target, 0.0)
        await asyncio.sleep(delay)
        conn.send(simple_response(body=b"ok " + seen.target))

    async def main() -> None:
        backends = [Backend(slow_first), Backend(slow_first)]
        async with proxy_with(backends) as px:
            reader, writer = await connect(px.port)
            writer.write(
                b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(4))
                + b"POST /4 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            )
            bodies = [(await read_response(reader)).body for _ in range(5)]
            assert bodies == [b"ok /0", b"ok /1", b"ok /2", b"ok /3", b"ok /4"]
            posted = [s for b in backends for s in b.seen if s.method == b"POST"]
            assert posted[0].body == b"abc"
            writer.close()

    run(main())


def test_expect_100_continue_answered_by_proxy_and_stripped() -> None:
    async def main() -> None:
        backend = Backend()
        async with proxy_with([backend]) as px:
            reader, writer = await connect(px.port)
            writer.write(
                b"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            )
            interim = await read_response(reader)
            assert interim.status == 100
            writer.write(b"hello")
            resp = await read_response(reader)
            assert resp.status == 200
            assert backend.seen[0].body == b"hello"
            assert backend.seen[0].header(b"Expect") is None
            writer.close()

    run(main())


def test_websocket_upgrade_tunnels_both_ways() -> None:
    def upgrade(conn: BackendConn, seen: Seen) -> None:
        assert seen.header(b"Upgrade") == b"websocket"
        conn.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\nhello-from-backend"
        )

    async def main() -> None:
        backend = Backend(upgrade)
        async with proxy_with([backend], headers=forwarding_headers()) as px:
            reader, writer = await connect(px.port)
            writer.write(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\nearly"
            )
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 ")
            assert b"Upgrade: websocket" in head
            got = b""
            want = b"hello-from-backendearly"
            while len(got) < len(want):
                got += await reader.read(100)
            assert got == want
            for i in range(3):
                msg = b"frame-%d" % i
                writer.write(msg)
                assert await reader.readexactly(len(msg)) == msg
            assert px.engine.stats.tunnels == 1
            writer.close()
            await wait_for(lambda: not px.engine.clients and not backend.conns)

    run(main())


def test_chunked_response_streams_with_bounded_buffering() -> None:
    total = 16 * 1024 * 1024
    piece = b"z" * 65536

    async def stream(conn: BackendConn, seen: Seen) -> None:
        assert conn.transport is not None
        conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent = 0
        while sent < total:
            conn.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
            sent += len(piece)
            # the backend honours TCP flow control like any server would
            while conn.transport.get_write_buffer_size() > 256 * 1024:
                await asyncio.sleep(0.002)
        conn.send(b"0\r\n\r\n")

    async def main() -> None:
        backend = Backend(stream)
        async with proxy_with([backend]) as px:
            reader, writer = await connect(px.port)
            writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            counter = _BodyCounter()
            parser = httptools.HttpResponseParser(counter)
            while not counter.done:
                data = await reader.read(65536)
                assert data, "proxy closed mid-body"
                parser.feed_data(data)
                if counter.received < 2 * 1024 * 1024:
                    await asyncio.sleep(0.002)  # a slow reader at first
            received = counter.received
            assert counter.chunked
            assert received == total
            # the proxy never held more than a few socket buffers of the 16 MiB body
            assert px.engine.stats.peak_buffered < 1024 * 1024
            writer.write(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader)).status == 200
            writer.close()

    run(main(), limit=60)


class _BodyCounter:
    def __init__(self) -> None:
        self.received = 0
        self.done = False
        self.chunked = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"transfer-encoding" and value == b"chunked":
            self.chunked = True

    def on_body(self, body: bytes) -> None:
        self.received += len(body)

    def on_message_complete(self) -> None:
        self.done = True


def test_chunked_request_body_streams_to_backend() -> None:
    total = 8 * 1024 * 1024
    piece = b"u" * 32768

    async def main() -> None:
        backend = Backend(keep_bodies=False)
        async with proxy_with([backend], limits=_unlimited_body()) as px:
            reader, writer = await connect(px.port)
            writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            sent = 0
            while sent < total:
                writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                sent += len(piece)
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            resp = await read_response(reader)
            assert resp.status == 200
            assert backend.body_bytes == total
            writer.close()

    run(main(), limit=60)


def _unlimited_body():  # type: ignore[no-untyped-def]
    from hakeeper.proxy.config import Limits

    return Limits(max_body=0)


def test_head_and_close_delimited_and_no_content_responses() -> None:
    def handler(conn: BackendConn, seen: Seen) -> None:
        if seen.method == b"HEAD":
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        elif seen.target == b"/eof":
            conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-close")
            assert conn.transport is not None
            conn.transport.close()
        else:
            conn.send(b"HTTP/1.1 204 No Content\r\n\r\n")

    async def main() -> None:
        backend = Backend(handler)
        async with proxy_with([backend]) as px:
            reader, writer = await connect(px.port)
            writer.write(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 1234" in head
            writer.write(b"GET /nc HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader)).status == 204
            # raw relay: the upstream's own framing (EOF) holds, so the client is closed too
            writer.write(b"GET /eof HTTP/1.1\r\nHost: x\r\n\r\n")
            resp = await read_response(reader)
            assert resp.body == b"until-close"
            assert await read_until_closed(reader) == b""
            writer.close()
            # rebuilt head (client asked for close): EOF-delimited body re-framed as chunks
            resp = await request(
                px.port, b"GET /eof HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert resp.body == b"until-close"
            assert resp.header(b"Transfer-Encoding") == b"chunked"

    run(main())


def test_http10_client_keepalive_and_close() -> None:
    async def main() -> None:
        async with proxy_with([Backend()]) as px:
            reader, writer = await connect(px.port)
            writer.write(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            resp = await read_response(reader)
            assert resp.header(b"Connection") == b"keep-alive"
            writer.write(b"GET /b HTTP/1.0\r\n\r\n")
            resp = await read_response(reader)
            assert resp.body == b"ok /b"
            assert await read_until_closed(reader) == b""
            writer.close()

    run(main())


def test_absolute_form_target_is_sent_in_origin_form() -> None:
    async def main() -> None:
        backend = Backend()
        async with proxy_with([backend]) as px:
            raw = b"GET http://evil.example/x?y HTTP/1.1\r\nHost: x\r\n\r\n"
            assert (await request(px.port, raw)).status == 200
            assert backend.seen[0].target == b"/x?y"
            bad = b"GET x/y HTTP/1.1\r\nHost: x\r\n\r\n"
            assert (await request(px.port, bad)).status == 400
            assert px.engine.stats.internal_errors == 0

    run(main())
