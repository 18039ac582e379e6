"""Raw relay to a client that asked to close: only the final head is rewritten."""

from __future__ import annotations

import asyncio

from hakeeper.proxy.config import Limits, Peer, ProxyConfig, keepalive_headers
from hakeeper.proxy.engine import Engine
from hakeeper.proxy.framing import closing_head
from hakeeper.proxy.upstream import UpstreamProtocol

PEER = Peer("127.0.0.1", 9)


class FakeTransport:
    """Records writes; enough of asyncio.Transport for the protocols."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 5555)

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))

    def writelines(self, parts: list[bytes]) -> None:
        self.out.extend(bytes(p) for p in parts)

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def test_closing_head_rewrites_only_the_final_head() -> None:
    buf = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.0 200 OK\r\nServer: x\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    )
    split = closing_head(buf)
    assert split is not None
    head, rest = split
    assert head == (
        b"HTTP/1.1 200 OK\r\nServer: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    assert rest == b"3\r\nabc\r\n"
    assert closing_head(
        b"HTTP/1.1 204\r\nupgrade: h2\r\nX-Connection: 1\r\nTE-x: 1\r\nte: t\r\n\r\n"
    ) == (b"HTTP/1.1 204 \r\nX-Connection: 1\r\nTE-x: 1\r\nConnection: close\r\n\r\n", b"")
    assert closing_head(b"HTTP/1.1 200 OK\r\nA: b\r\n") is None
    assert closing_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n") is None


def _exchange(request: bytes, pieces: list[bytes]) -> tuple[bytes, bool, Engine]:
    async def main() -> tuple[bytes, bool, Engine]:
        config = ProxyConfig(
            peers=(PEER,),
            http_version="1.1",
            headers=keepalive_headers(),
            upstream_keepalive=8,
            limits=Limits(keepalive_requests=1000),
        )
        engine = Engine(config)
        up = UpstreamProtocol(engine, PEER)
        up_t = FakeTransport()
        up.connection_made(up_t)  # type: ignore[arg-type]
        engine.pool.put(up, engine.now)
        client_t = FakeTransport()
        client = engine.protocol_factory()
        client.connection_made(client_t)  # type: ignore[arg-type]
        client.data_received(request)
        assert up_t.out, "the request went upstream"
        for piece in pieces:
            up.data_received(piece)
        closed = client_t.closing
        engine.close()
        return b"".join(client_t.out), closed, engine

    return asyncio.run(main())


def test_close_client_gets_raw_body_and_rewritten_head_across_reads() -> None:
    head = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\n"
    out, closed, engine = _exchange(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        [b"HTTP/1.1 100 Continue\r\n\r\n" + head[:21], head[21:] + b"he", b"llo"],
    )
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    assert closed
    assert engine.stats.responses == 1
    assert engine.pool.idle() == 0  # engine.close() emptied it; the response reused it


def test_close_client_eof_delimited_response_falls_back_to_chunks() -> None:
    out, closed, _ = _exchange(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-"],
    )
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Transfer-Encoding: chunked\r\n" in out
    assert b"Connection: close\r\n" in out
    assert out.endswith(b"6\r\nuntil-\r\n")
    assert not closed  # still relaying until the upstream closes


def test_close_client_oversized_head_is_502_not_relayed() -> None:
    big = b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 300_000 + b"\r\n"
    out, closed, engine = _exchange(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", [big]
    )
    assert out.startswith(b"HTTP/1.1 502")
    assert closed
    assert engine.stats.upstream_invalid == 1
