"""Upstream side of the proxy: one asyncio Protocol per backend connection, and the pool.

`UpstreamProtocol` parses responses with httptools (llhttp), relays head and body pieces
to the client connection it is lent to without buffering them, swallows interim 1xx
answers (nginx strips `Expect` and answers `100 Continue` itself), and switches to a
raw byte tunnel after `101 Switching Protocols` (nginx `u->upgrade`).
`Pool` is nginx's `keepalive N` cache (`ngx_http_upstream_keepalive_module.c`): idle
connections per peer, LIFO, bounded in total (the oldest is closed when full), closed
after `keepalive_timeout` idle or `keepalive_requests` uses, never reused after an
error, an unfinished request, a HEAD answer or a response that was not keep-alive.
The location's `response_headers.ResponseRules` (nginx's hidden upstream fields, its own
`Server`/`Date`, `add_header`, `proxy_redirect`) apply on both paths: per field on the
parsed one, to the held final head on the raw one (`response_headers.filter_head`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from hakeeper.proxy.config import Peer
from hakeeper.proxy.framing import closing_head, response_framing
from hakeeper.proxy.response_headers import (
    A_DATE,
    A_DROP,
    A_HOP,
    A_LENGTH,
    A_LOCATION,
    A_SERVER,
    NO_RULES_ACTIONS,
    ResponseContext,
    ResponseRules,
    filter_head,
    keepalive_head,
)
from hakeeper.proxy.routes import RequestView, normalize_host

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


class _Clock:
    """The `Date: ...\\r\\n` line of the current second (nginx's cached http time).
    `line` is current while the monotonic clock is below `until` (the next wall-clock
    second), so the hot path reads one clock and compares; a step of the wall clock
    shows within a second."""

    __slots__ = ("line", "second", "until")

    def __init__(self) -> None:
        self.second = -1
        self.line = b""
        self.until = 0.0  # time.monotonic() at which the wall-clock second ends

    def date_line(self) -> bytes:
        if _monotonic() < self.until:
            return self.line
        return self.tick()

    def tick(self) -> bytes:
        now = time.time()
        second = int(now)
        self.until = _monotonic() + (second + 1 - now)
        if second != self.second:
            self.second = second
            self.line = b"Date: " + formatdate(second, usegmt=True).encode("ascii") + b"\r\n"
        return self.line


_monotonic = time.monotonic
CLOCK = _Clock()


class UpstreamProtocol(asyncio.Protocol):
    """A connection to one backend; lent to one client request at a time."""

    __slots__ = (
        "actions",
        "chunked",
        "client",
        "closing",
        "complete",
        "ctx",
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
        "loc_at",
        "parser",
        "peer",
        "pending",
        "raw",
        "raw_parser",
        "reason",
        "requests",
        "reusable",
        "rewrite",
        "rules",
        "seen",
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
        self.rewrite = False  # raw relay: the final head is held and rewritten
        self.closing = False  # ... for a client that asked to close
        self.pending = b""  # bytes held until that head is complete
        rules = engine.config.response
        self.rules = rules
        self.actions = rules.actions if rules is not None else NO_RULES_ACTIONS
        self.seen = 0  # parsed path: 1 = the upstream's Server passed, 2 = its Date
        self.loc_at = -1  # parsed path: the line of the last rewritten Location
        self.ctx: ResponseContext | None = None
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
                if self.closing:
                    filtered = self._closing_head(client, data)
                    if filtered is None:
                        return
                    data = filtered
                else:  # a keep-alive client and the location's rules: usually one pass
                    rules = self.rules
                    assert rules is not None
                    clock = CLOCK
                    date_line = clock.line if _monotonic() < clock.until else clock.tick()
                    try:
                        out = keepalive_head(data, rules, date_line)
                    except Exception:  # our bug: this response is lost, not the loop
                        log.exception("proxy: internal error while filtering a head")
                        engine.stats.internal_errors += 1
                        self._garbage(client)
                        return
                    if out is None:
                        out = self._filtered(client, data, rules, date_line)
                        if out is None:
                            return
                    data = out
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

    def _closing_head(self, client: ClientProtocol, data: bytes) -> bytes | None:
        """The held final head for a client that asked to close (`data`: the response
        from its start), rewritten; None when the response went elsewhere or failed."""
        if self.framing != "length":
            # EOF-delimited or from a closing upstream: the parsed path re-frames it in
            # chunks like nginx (the raw parser is mid-message: dropped)
            self.raw = False
            self.raw_parser = None
            self.got_head = False
            self.status = 0
            self.framing = "none"
            self._parse(client, data)
            return None
        rules = self.rules
        if rules is None:
            split = closing_head(data)
            if split is None:  # not expected once llhttp accepted the head
                self._garbage(client)
                return None
            return split[0] + split[1] if split[1] else split[0]
        return self._filtered(client, data, rules, CLOCK.date_line())

    def _filtered(
        self, client: ClientProtocol, data: bytes, rules: ResponseRules, date_line: bytes
    ) -> bytes | None:
        """`data` (the response from its start) with `response_headers.filter_head` applied
        to its final head; None (the response ended as invalid) if that failed."""
        try:
            split = filter_head(data, rules, self.closing, date_line, self._context)
        except Exception:  # our bug: this response is lost, not the loop
            log.exception("proxy: internal error while filtering a head")
            self.engine.stats.internal_errors += 1
            split = None
        if split is None:  # not expected once llhttp accepted the head
            self._garbage(client)
            return None
        return split[0] + split[1] if split[1] else split[0]

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
        self.seen = 0
        self.loc_at = -1
        self.ctx = None

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.got_head:
            return  # trailers are dropped (nginx 1.22 does not pass them)
        low = name.lower()
        action = self.actions.get(low)
        if action is not None:
            if action == A_HOP:
                if low == b"transfer-encoding":
                    self.chunked = True
                elif self.upgrade_ok and low in (b"upgrade", b"connection"):
                    status = self.parser.get_status_code()
                    if status == 101:
                        self.lines.append(name + b": " + value + b"\r\n")
                return
            if action == A_LENGTH:
                self.has_length = True
            elif action == A_DROP:
                return  # proxy_hide_header (nginx hides Server, Date, X-Accel-*...)
            elif action == A_SERVER:
                self.seen |= 1
            elif action == A_DATE:
                self.seen |= 2
            else:
                value = self._redirect(action, value)
        self.lines.append(name + b": " + value + b"\r\n")

    def _redirect(self, action: int, value: bytes) -> bytes:
        """A Location/Refresh value through `proxy_redirect` (parsed path)."""
        rules = self.rules
        assert rules is not None
        ctx = self.ctx
        if ctx is None:
            ctx = self.ctx = self._context(self.parser.get_status_code())
        new = rules.rewrite(action, value.strip(b" \t"), ctx)
        if new is None:
            return value
        if action == A_LOCATION:
            self.loc_at = len(self.lines)
        return new

    def _finish_head(self, status: int) -> None:
        """Parsed path: our Server/Date first, `add_header` last, the rewritten Location
        made absolute (nginx's header filter)."""
        rules = self.rules
        assert rules is not None
        lines = self.lines
        ctx = self.ctx
        if self.loc_at >= 0 and ctx is not None:
            line = lines[self.loc_at]
            colon = line.index(b":")
            value = ctx.absolute(line[colon + 2 : -2])
            lines[self.loc_at] = line[: colon + 2] + value + b"\r\n"
        own = rules.own_lines(bool(self.seen & 1), bool(self.seen & 2), CLOCK.date_line())
        if own:
            lines.insert(0, own)
        if rules.add:
            if ctx is None and rules.add_dynamic:
                ctx = self.ctx = self._context(status)
            lines.append(rules.add_lines(status, ctx or _nothing))

    def _context(self, status: int) -> ResponseContext:
        """The variables of the request this response answers (rewrites are rare: built
        on demand; a routed request may already carry its view)."""
        engine = self.engine
        client = self.client
        req = client.active if client is not None else None
        view = req.view if req is not None else None
        if view is None:
            target = b""
            host = b""
            method = b""
            headers: list[tuple[bytes, bytes]] = []
            if req is not None:
                target = req.request_uri or req.target
                host = normalize_host(req.host) if req.host else b""
                method = req.method
                headers = req.extra or []
            addr, port = b"", b""
            transport = client.transport if client is not None else None
            local = transport.get_extra_info("sockname") if transport is not None else None
            if isinstance(local, tuple) and len(local) >= 2:
                addr, port = str(local[0]).encode("ascii"), str(local[1]).encode("ascii")
            path, _, args = target.partition(b"?")
            view = RequestView(
                method=method,
                target=target,
                path=path,
                args=args,
                host=host,
                headers=headers,
                remote_addr=client.remote_addr if client is not None else b"",
                remote_port=client.remote_port if client is not None else b"",
                server_name=engine.config.server_name.encode("latin-1"),
                server_port=port,
                server_addr=addr,
            )
        return ResponseContext(view, engine.rules.proxy_host, status)

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
        if self.rules is not None:
            self._finish_head(status)
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
        self.rewrite = closing or (raw and self.rules is not None)
        self.closing = closing
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


def _nothing(name: str) -> bytes:
    return b""


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
