"""Upstream side of the proxy: one asyncio Protocol per backend connection, and the pool.

`UpstreamProtocol` parses responses with httptools (llhttp), relays head and body pieces
to the client connection it is lent to without buffering them, swallows interim 1xx
answers (nginx strips `Expect` and answers `100 Continue` itself), and switches to a
raw byte tunnel after `101 Switching Protocols` (nginx `u->upgrade`).
`Pool` is nginx's `keepalive N` cache (`ngx_http_upstream_keepalive_module.c`): idle
connections per peer, LIFO, bounded in total (the oldest is closed when full), closed
after `keepalive_timeout` idle or `keepalive_requests` uses, never reused after an
error, an unfinished request, a HEAD answer or a response that was not keep-alive.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from hakeeper.proxy.config import Peer
from hakeeper.proxy.framing import RESPONSE_HOP_BY_HOP, closing_head, response_framing

if TYPE_CHECKING:
    from hakeeper.proxy.engine import Engine
    from hakeeper.proxy.http1 import ClientProtocol

log = logging.getLogger(__name__)

# deadline kinds
K_NONE = 0
K_READ = 1
K_SEND = 2
K_IDLE = 3

# a raw relay to a closing client holds back at most this much before the final head
# ends (nginx: `proxy_buffer_size`, 4k/8k, "upstream sent too big header" -> 502)
MAX_HELD_HEAD = 256 * 1024


class UpstreamProtocol(asyncio.Protocol):
    """A connection to one backend; lent to one client request at a time."""

    __slots__ = (
        "chunked",
        "client",
        "complete",
        "deadline",
        "engine",
        "failed",
        "framing",
        "garbage",
        "got_head",
        "has_length",
        "head_request",
        "idle_since",
        "kind",
        "lines",
        "parser",
        "peer",
        "pending",
        "raw",
        "raw_parser",
        "reason",
        "requests",
        "reusable",
        "rewrite",
        "status",
        "transport",
        "tunnel",
        "upgrade_ok",
    )

    def __init__(self, engine: Engine, peer: Peer) -> None:
        self.engine = engine
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.raw_parser: HttpResponseParser | None = None
        self.raw = False
        self.rewrite = False  # raw relay to a closing client: the final head is rewritten
        self.pending = b""  # bytes held until that head is complete
        self.complete = False
        self.garbage = False
        self.reusable = False
        self.client: ClientProtocol | None = None
        self.lines: list[bytes] = []
        self.status = 0
        self.reason = b""
        self.framing = "none"
        self.has_length = False
        self.chunked = False
        self.got_head = False
        self.head_request = False
        self.upgrade_ok = False
        self.tunnel = False
        self.failed = False
        self.requests = 0
        self.deadline = 0.0
        self.kind = K_NONE
        self.idle_since = 0.0

    # -- asyncio callbacks --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.engine.upstreams.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        engine = self.engine
        engine.upstreams.discard(self)
        engine.pool.remove(self)
        self.parser = None  # type: ignore[assignment]  # break parser <-> self cycles
        self.raw_parser = None
        client = self.client
        self.client = None
        self.failed = True
        if client is None:
            return
        if self.tunnel:
            client.close()
        elif self.got_head and self.framing == "close":
            client.resp_done(self, False)
        else:
            client.upstream_failed(self, "error")

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        client = self.client
        if client is not None:
            client.block(2)
            self.kind = K_SEND
            self.deadline = self.engine.now + self.engine.t_psend

    def resume_writing(self) -> None:
        client = self.client
        if client is not None:
            client.unblock(2)
            self.kind = K_READ
            self.deadline = self.engine.now + self.engine.t_read

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            # an idle pooled connection must stay silent; anything else is garbage
            self.close()
            return
        if self.tunnel:
            client.tunnel_out(data)
            return
        engine = self.engine
        self.deadline = engine.now + engine.t_read
        if self.raw:
            # fast path: llhttp only delimits the response; its bytes go out unmodified
            try:
                self.raw_parser.feed_data(data)  # type: ignore[union-attr]
            except HttpParserError as exc:
                if exc.__context__ is not None:
                    log.error("proxy: internal error while relaying", exc_info=exc.__context__)
                    engine.stats.internal_errors += 1
                self._garbage(client)
                return
            if self.client is not client:
                return  # discarded for a retry (proxy_next_upstream http_5xx)
            if self.garbage:
                self._garbage(client)  # bytes beyond the response: never relay them
                return
            if self.rewrite:
                if self.pending:
                    data = self.pending + data
                    self.pending = b""
                if not self.got_head:  # the final head is not complete yet: hold it
                    if len(data) > MAX_HELD_HEAD:
                        self._garbage(client)
                    else:
                        self.pending = data
                    return
                self.rewrite = False
                if self.framing != "length":
                    # EOF-delimited or from a closing upstream: the parsed path re-frames
                    # it in chunks like nginx (the raw parser is mid-message: dropped)
                    self.raw = False
                    self.raw_parser = None
                    self.got_head = False
                    self.status = 0
                    self.framing = "none"
                    self._parse(client, data)
                    return
                split = closing_head(data)
                if split is None:  # not expected once llhttp accepted the head
                    self._garbage(client)
                    return
                data = split[0] + split[1]
            transport = client.transport
            if transport is not None:
                transport.write(data)
                if client.kind == 4:  # C_SEND: the client is slow, watch the buffer
                    stats = engine.stats
                    stats.peak_buffered = max(
                        stats.peak_buffered, transport.get_write_buffer_size()
                    )
            if self.complete:
                self.complete = False
                self.client = None
                client.resp_done(self, self.reusable)
            return
        self._parse(client, data)

    def _parse(self, client: ClientProtocol, data: bytes) -> None:
        """The parsed path: head rebuilt by the client, body re-framed when needed."""
        try:
            self.parser.feed_data(data)
            if client.held:
                client.flush_head()
        except HttpParserUpgrade as exc:
            offset = int(exc.args[0])
            if self.upgrade_ok and self.client is client:
                self.tunnel = True
                client.start_tunnel(self, data[offset:])
            else:
                self._garbage(client)
        except HttpParserError as exc:
            if exc.__context__ is not None:
                log.error("proxy: internal error while relaying", exc_info=exc.__context__)
                self.engine.stats.internal_errors += 1
            self._garbage(client)

    # raw-mode parser callbacks (installed on a _RawCallbacks proxy object)
    def raw_message_begin(self) -> None:
        if self.complete:
            self.garbage = True

    def raw_headers_complete(self) -> None:
        parser = self.raw_parser
        assert parser is not None
        status = parser.get_status_code()
        if status < 200:
            return  # interim answers pass through as they are
        client = self.client
        if client is None:
            return
        keep = parser.should_keep_alive()
        self.status = status
        self.got_head = True
        self.framing = "length" if keep else "close"
        req = client.active
        if req is None:
            return
        if status in self.engine.retry_statuses or not keep or not req.complete:
            client.raw_head(self, status, keep)
        else:
            req.responded = True

    def raw_message_complete(self) -> None:
        parser = self.raw_parser
        assert parser is not None
        if self.got_head:
            self.complete = True
            self.reusable = parser.should_keep_alive()

    def _garbage(self, client: ClientProtocol) -> None:
        self.engine.stats.upstream_invalid += 1
        if self.client is client:
            self.client = None
            self.failed = True
            # after the head went out the client is cut (upstream_failed aborts it)
            client.upstream_failed(self, "invalid_header")
        self.close()

    # -- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.lines = []
        self.has_length = False
        self.chunked = False
        self.reason = b""

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.got_head:
            return  # trailers are dropped (nginx 1.22 does not pass them)
        low = name.lower()
        if low in RESPONSE_HOP_BY_HOP:
            if low == b"transfer-encoding":
                self.chunked = True
            elif self.upgrade_ok and low in (b"upgrade", b"connection"):
                status = self.parser.get_status_code()
                if status == 101:
                    self.lines.append(name + b": " + value + b"\r\n")
            return
        if low == b"content-length":
            self.has_length = True
        self.lines.append(name + b": " + value + b"\r\n")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200 and status != 101:
            self.lines = []
            return  # interim 1xx: swallowed
        client = self.client
        if client is None:
            return
        self.status = status
        self.got_head = True
        if status == 101:
            self.framing = "none"
        else:
            self.framing = response_framing(
                status, self.head_request, self.has_length, self.chunked
            )
        if not client.resp_head(self, status, self.reason, self.lines, self.framing):
            return  # the client retries elsewhere (proxy_next_upstream http_5xx)
        if self.framing == "none" and self.head_request:
            # llhttp does not know this answered a HEAD; finish now, never reuse
            self.failed = True
            self.client = None
            client.resp_done(self, False)

    def on_body(self, body: bytes) -> None:
        client = self.client
        if client is not None:
            client.resp_body(body)

    def on_message_complete(self) -> None:
        if not self.got_head or self.tunnel or self.status == 101:
            return
        client = self.client
        if client is None:
            return
        self.client = None
        reusable = self.parser.should_keep_alive() and self.framing != "close"
        client.resp_done(self, reusable)

    # -- engine API ---------------------------------------------------------------------
    def lend(
        self,
        client: ClientProtocol,
        head_request: bool,
        upgrade: bool,
        raw: bool = False,
        closing: bool = False,
    ) -> None:
        """Bind to one request: the client's head and body follow via `transport`.

        `raw`: relay the response bytes unmodified (the client speaks HTTP/1.1 with
        keep-alive and the request is neither HEAD nor Upgrade, so the upstream's
        framing, chunked included, is valid for it as is). `closing` (with `raw`): the
        same for an HTTP/1.1 client that asked to close, except that the final head is
        held until complete and rewritten (`framing.closing_head`: `Connection: close`,
        no hop-by-hop connection fields, interim 1xx dropped); the body still passes
        as received.
        """
        self.client = client
        self.raw = raw
        self.rewrite = closing
        self.pending = b""
        if raw and self.raw_parser is None:
            self.raw_parser = HttpResponseParser(_RawCallbacks(self))
        if closing or not raw:  # a closing relay may fall back to the parsed path
            self.head_request = head_request
            self.upgrade_ok = upgrade
        self.got_head = False
        self.status = 0
        self.framing = "none"
        self.requests += 1
        self.kind = K_READ
        self.deadline = self.engine.now + self.engine.t_read

    def detach(self) -> None:
        """The client gave up on this request; the connection cannot be reused."""
        self.client = None
        self.failed = True
        self.close()

    def close(self) -> None:
        self.client = None
        self.deadline = 0.0
        if self.transport is not None:
            self.transport.close()

    def on_timeout(self) -> None:
        client = self.client
        self.client = None
        self.failed = True
        if self.transport is not None:
            self.transport.abort()
        if client is not None:
            self.engine.stats.upstream_timeouts += 1
            client.upstream_failed(self, "timeout")


class _RawCallbacks:
    """The few llhttp callbacks the raw path needs (no per-header or body callbacks)."""

    __slots__ = ("on_headers_complete", "on_message_begin", "on_message_complete")

    def __init__(self, up: UpstreamProtocol) -> None:
        self.on_message_begin = up.raw_message_begin
        self.on_headers_complete = up.raw_headers_complete
        self.on_message_complete = up.raw_message_complete


class Pool:
    """Idle keep-alive upstream connections per peer; LIFO; at most `size` in total."""

    __slots__ = ("_idle", "count", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.count = 0
        self._idle: dict[Peer, list[UpstreamProtocol]] = {}

    def get(self, peer: Peer) -> UpstreamProtocol | None:
        stack = self._idle.get(peer)
        while stack:
            conn = stack.pop()
            self.count -= 1
            transport = conn.transport
            if transport is not None and not transport.is_closing():
                return conn
        return None

    def put(self, conn: UpstreamProtocol, now: float) -> bool:
        """Keep `conn` idle; False (and the caller closes it) when pooling is off."""
        if self.size <= 0:
            return False
        stack = self._idle.get(conn.peer)
        if stack is None:
            stack = self._idle[conn.peer] = []
        if self.count >= self.size:
            # full: close the longest-idle connection (bottom of a stack)
            victim_stack = stack or max(self._idle.values(), key=len)
            victim = victim_stack.pop(0)
            self.count -= 1
            victim.close()
        transport = conn.transport
        if transport is not None:
            # the response may have completed while a slow client had reading paused
            # (ClientProtocol.pause_writing); its resume_writing no longer reaches this
            # connection, and a paused pooled connection would time out its next request
            transport.resume_reading()
        conn.idle_since = now
        conn.kind = K_IDLE
        conn.deadline = now + conn.engine.config.timeouts.upstream_keepalive
        conn.complete = False
        conn.garbage = False
        stack.append(conn)
        self.count += 1
        return True

    def remove(self, conn: UpstreamProtocol) -> None:
        stack = self._idle.get(conn.peer)
        if stack and conn in stack:
            stack.remove(conn)
            self.count -= 1

    def idle(self) -> int:
        return self.count

    def close_all(self) -> None:
        conns = [c for stack in self._idle.values() for c in stack]
        self._idle.clear()
        self.count = 0
        for conn in conns:
            conn.close()
