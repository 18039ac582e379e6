"""Flow control across keep-alive reuse: upstream connections go back to the pool clean.

A response can complete while the proxy is holding a side back: the client is slow (its
write buffer passed high-water, so the upstream's reading was paused) or the upstream is
slow to read the request body (its write buffer passed high-water, so the client's
reading was paused). Each test drives one of these on real loopback sockets, made
deterministic by small socket buffers and lowered transport high-water marks (the
protocol objects are reached through `engine.clients` / `engine.upstreams`), then checks
what reuses the connections next: the upstream connection is pooled reading and idle
(or, with request bytes still unsent, closed as nginx does: `request_body_sent`), the
client keeps its keep-alive timeout and its next requests are answered promptly.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httptools
from test_proxy_support import (
    Backend,
    BackendConn,
    Proxy,
    Seen,
    proxy_with,
    read_response,
    run,
    simple_response,
    wait_for,
)

from hakeeper.proxy.client_state import C_IDLE, C_SEND
from hakeeper.proxy.config import Timeouts
from hakeeper.proxy.http1 import ClientProtocol
from hakeeper.proxy.upstream import K_IDLE, Pool, UpstreamProtocol

SMALL_BUF = 4096
BIG = 60_000  # with head, one loopback segment: the proxy reads it in one piece
HIGH_WATER = 16_384


def _answer(conn: BackendConn, seen: Seen) -> None:
    size = BIG if seen.target.startswith(b"/big") else 5
    conn.send(simple_response(body=b"b" * size))


class _PoolSpy(Pool):
    """Records, for each connection put back, whether its client was still paused."""

    def __init__(self, size: int, engine: Any) -> None:
        super().__init__(size)
        self.engine = engine
        self.puts: list[bool] = []

    def put(self, conn: UpstreamProtocol, now: float) -> bool:
        paused = any(c.send_paused for c in self.engine.clients)
        self.puts.append(paused)
        return super().put(conn, now)


async def _slow_client(
    px: Proxy,
) -> tuple[_PoolSpy, ClientProtocol, asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that takes only a few KiB (kernel and stream buffer) until it reads,
    whose proxy-side transport has a small send buffer and a low high-water mark; the
    engine's pool records whether the client was paused at each put."""
    engine = px.engine
    spy = engine.pool = _PoolSpy(16, engine)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUF)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", px.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=SMALL_BUF)
    await wait_for(lambda: len(engine.clients) == 1)
    client = _only_client(engine)
    assert client.transport is not None
    _shrink(client.transport)
    return spy, client, reader, writer


def _only_client(engine: Any) -> ClientProtocol:
    (client,) = engine.clients
    assert isinstance(client, ClientProtocol)
    return client


def _shrink(transport: Any) -> None:
    """Small kernel send buffer and a low high-water mark on one of the proxy's sockets."""
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)
    transport.set_write_buffer_limits(high=HIGH_WATER)


def test_response_completing_while_client_is_slow_pools_upstream_reading() -> None:
    """A response ends in the read that made the slow client's buffer pass high-water:
    the upstream is pooled reading and reused, and the client keeps its idle timeout."""

    async def main() -> None:
        backend = Backend(_answer)
        timeouts = Timeouts(
            client_header=5, client_body=5, proxy_connect=2, proxy_read=5, keepalive=1
        )
        async with proxy_with([backend], timeouts=timeouts) as px:
            engine = px.engine
            spy, client, reader, writer = await _slow_client(px)
            for i in range(2):
                writer.write(b"GET /big%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                # the whole response went through while the client had not read: pooled
                # with the client's writing still paused
                await wait_for(lambda n=i: len(spy.puts) == 2 * n + 1)
                assert spy.puts[-1], f"not completed while paused: round {i}, {spy.puts}"
                (up,) = engine.upstreams
                assert up.transport is not None
                assert up.transport.is_reading()
                assert up.kind == K_IDLE
                assert up.deadline > 0
                resp = await read_response(reader)
                assert resp.status == 200
                assert len(resp.body) == BIG
                # once the client took it all, the idle keep-alive timeout runs
                await wait_for(lambda: not client.send_paused)
                assert client.kind == C_IDLE
                assert client.deadline > 0
                # the next request is answered at once on the same upstream connection
                writer.write(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
                small = await asyncio.wait_for(read_response(reader), 2)
                assert small.body == b"bbbbb"
            assert backend.opened == 1
            assert engine.stats.upstream_reused == 3
            # the big response completes paused again; once read, the idle client is
            # closed after keepalive_timeout (1 s), not kept forever
            writer.write(b"GET /big-last HTTP/1.1\r\nHost: x\r\n\r\n")
            resp = await read_response(reader)
            assert len(resp.body) == BIG
            assert await asyncio.wait_for(reader.read(), 5) == b""
            assert engine.stats.client_timeouts == 1
            writer.close()

    run(main())


def test_pipelined_response_is_not_read_while_client_is_slow() -> None:
    """A client that sends its next request before taking the previous response: the
    next response is read from upstream only as the client drains (bounded buffering)."""

    async def main() -> None:
        backend = Backend(_answer)
        async with proxy_with([backend]) as px:
            spy, client, reader, writer = await _slow_client(px)
            writer.write(
                b"GET /big1 HTTP/1.1\r\nHost: x\r\n\r\nGET /big2 HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            # the second request goes out on the pooled connection once the first
            # response is through, and its answer waits in the kernel: the proxy holds
            # about one response, not two
            await wait_for(lambda: len(backend.seen) == 2)
            assert spy.puts == [True]
            up = client.up
            assert up is not None and up.transport is not None
            assert client.kind == C_SEND
            assert not up.transport.is_reading()
            assert client.transport.get_write_buffer_size() < BIG
            for _ in range(2):
                resp = await read_response(reader)
                assert resp.status == 200
                assert len(resp.body) == BIG
            assert backend.opened == 1
            writer.close()

    run(main())


class _EarlyAnswer(asyncio.Protocol):
    """An upstream that answers a POST before reading its body (it reads the rest later,
    discarding it, then serves the next requests normally)."""

    def __init__(self, server: _EarlyServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.conns.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.lost += 1

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_headers_complete(self) -> None:
        if self.parser.get_method() == b"POST":
            assert self.transport is not None
            self.transport.pause_reading()  # the body waits in the socket buffers
            self.server.posted.set()

    def on_message_complete(self) -> None:
        if self.parser.get_method() != b"POST":
            assert self.transport is not None
            self.transport.write(simple_response(body=b"get " + self.url))
        self.url = b""

    def answer_early(self) -> None:
        assert self.transport is not None
        self.transport.write(simple_response(body=b"early"))
        self.transport.resume_reading()


class _EarlyServer:
    def __init__(self) -> None:
        self.conns: list[_EarlyAnswer] = []
        self.lost = 0
        self.posted = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUF)  # inherited
        sock.bind(("127.0.0.1", 0))
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _EarlyAnswer(self), sock=sock)
        return int(sock.getsockname()[1])


def test_response_completing_with_request_body_unsent_closes_upstream() -> None:
    """The upstream answered before reading the body and the client's reading was paused
    (upstream write buffer over high-water): the connection still holds unsent request
    bytes and a paused-writing transport, so it is closed, not pooled (nginx:
    `request_body_sent`); the client's reading resumes and its next request works."""

    async def main() -> None:
        early = _EarlyServer()
        port = await early.start()
        backend = Backend()  # only for proxy_with's bookkeeping; peers are replaced
        backend.port = port
        backend.server = early.server
        async with proxy_with([backend]) as px:
            engine = px.engine
            reader, writer = await asyncio.open_connection("127.0.0.1", px.port)
            # first request opens the upstream connection; shrink its buffers once pooled
            writer.write(b"GET /warm HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader)).body == b"get /warm"
            (up,) = engine.upstreams
            assert up.transport is not None
            _shrink(up.transport)
            client = _only_client(engine)
            body = b"p" * 48_000  # head + body in one segment: read in one piece
            head = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
            writer.write(head + body)
            await early.posted.wait()
            active = client.active
            await wait_for(lambda: active is not None and active.complete and client.blocked != 0)
            assert up.transport.get_write_buffer_size() > 0
            early.conns[0].answer_early()
            resp = await read_response(reader)
            assert resp.body == b"early"
            # not pooled: it still owed request bytes; the client reads again
            await wait_for(lambda: early.lost == 1)
            assert engine.pool.idle() == 0
            writer.write(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            nxt = await asyncio.wait_for(read_response(reader), 2)
            assert nxt.body == b"get /next"
            assert len(early.conns) == 2
            assert client.blocked == 0
            writer.close()

    run(main())
