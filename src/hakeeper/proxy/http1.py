"""Client side of the proxy: the HTTP/1.1 server protocol that relays to an upstream.

One `ClientProtocol` per accepted connection, parsing with httptools (llhttp, strict
mode: it already rejects CL+TE, duplicate Content-Length, obs-fold and bad characters,
RFC 9112 6.3 / 5.2; `framing.request_status` adds the Host/version/size checks nginx
does). Requests are served strictly in order (pipelined ones are read ahead and queued,
reading pauses meanwhile). Bodies are never gathered: each piece httptools hands over is
written to the upstream transport at once (re-framed as chunks when the client sent
chunked), and reading pauses while the other side's write buffer is above its high-water
mark (asyncio flow control). Behaviour follows nginx 1.22 `ngx_http_proxy_module` with
`proxy_request_buffering off`: 100-continue answered by the proxy, Upgrade tunnelled
after 101, retries (`proxy_next_upstream`) only while nothing unrepeatable was sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, cast

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpRequestParser,
)

from hakeeper.proxy.config import IDEMPOTENT_METHODS, Peer
from hakeeper.proxy.engine import Engine
from hakeeper.proxy.framing import (
    CONTINUE_100,
    CRLF,
    LAST_CHUNK,
    RequestFacts,
    chunk_header,
    error_response,
    origin_form,
    request_status,
    status_line,
    valid_host,
)
from hakeeper.proxy.upstream import UpstreamProtocol

if TYPE_CHECKING:
    from hakeeper.proxy.routes import RequestView, Return

log = logging.getLogger(__name__)

# client deadline kinds
C_NONE = 0
C_HEADER = 1
C_BODY = 2
C_IDLE = 3
C_SEND = 4
C_CONNECT = 5
C_TUNNEL = 6

# reasons reading from the client is paused (bit mask)
B_ATTACH = 1  # the active request waits for an upstream connection
B_UPSTREAM_FULL = 2  # the upstream's write buffer is above its high-water mark
B_UPGRADE = 4  # an Upgrade request waits for 101
B_ERROR = 8  # a bad request is pending behind earlier ones
B_QUEUE = 16  # pipelined requests are queued

H_HOST, H_XFF, H_UPGRADE, H_CONNECTION, H_EXPECT, H_CL, H_TE = range(7)
_SPECIAL = {
    b"host": H_HOST,
    b"x-forwarded-for": H_XFF,
    b"upgrade": H_UPGRADE,
    b"connection": H_CONNECTION,
    b"expect": H_EXPECT,
    b"content-length": H_CL,
    b"transfer-encoding": H_TE,
}
_TE_CHUNKED = b"Transfer-Encoding: chunked\r\n"
DRAIN_GRACE = 1.0  # seconds an idle keep-alive connection survives a drain


def _remember_host(cache: dict[bytes, bool], host: bytes) -> bool:
    """Validate a Host value once; hosts repeat, so later requests hit the cache."""
    ok = valid_host(host)
    if len(cache) > 4096:
        cache.clear()
    cache[host] = ok
    return ok


class _RejectError(Exception):
    """Raised inside a parser callback: answer `status` and close."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Request:
    """One request's parse results and relay state (the only per-request object).

    Immutable defaults live on the class so creating one costs three list allocations.
    """

    method = b""
    target = b""
    version = "1.1"
    host = b""
    host_count = 0
    xff = b""
    upgrade = b""
    connection = b""
    extra: list[tuple[bytes, bytes]] | None = None
    expect = False
    clen = -1
    chunked = False
    keep_alive = True
    head = b""
    received = 0
    hsize = 0
    headers_done = False
    complete = False
    sent = False
    body_sent = False
    buffer_all = False
    is_upgrade = False
    responded = False
    tries = 0
    start = 0.0
    # set only by RoutedClientProtocol (class defaults cost the plain path nothing)
    engine: Engine | None = None  # the location's child engine
    ret: Return | None = None  # a `return` location answers this request
    view: RequestView | None = None  # variables for `return` texts
    hkey: str | None = None  # the upstream `hash` key, when not the client address
    request_uri = b""  # the client's target when `target` was rewritten (URI part)
    maybe: list[tuple[int, bytes]] | None = None  # (index in lines, name) some routes drop

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.body: list[bytes] = []
        self.tried: list[Peer] = []


class ClientProtocol(asyncio.Protocol):
    """A downstream connection: parse, validate, relay to an upstream, answer in order."""

    __slots__ = (
        "active",
        "blocked",
        "chunk_out",
        "closed",
        "connecting",
        "cur",
        "deadline",
        "draining",
        "early",
        "engine",
        "error",
        "held",
        "key",
        "kind",
        "parser",
        "picked",
        "queue",
        "remote_addr",
        "remote_port",
        "served",
        "transport",
        "tunnel",
        "up",
        "upgrading",
    )

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.transport: asyncio.Transport | None = None
        self.parser = HttpRequestParser(self)
        self.cur: Request | None = None
        self.active: Request | None = None
        self.queue: deque[Request] = deque()
        self.up: UpstreamProtocol | None = None
        self.picked: Peer | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.early: list[bytes] = []
        self.held = b""
        self.deadline = 0.0
        self.kind = C_NONE
        self.blocked = 0
        self.error = 0
        self.served = 0
        self.chunk_out = False
        self.tunnel = False
        self.upgrading = False
        self.closed = False
        self.draining = False
        self.key = ""
        self.remote_addr = b""
        self.remote_port = b""

    # -- asyncio callbacks --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        engine = self.engine
        engine.clients.add(self)
        engine.stats.accepted += 1
        if engine.needs_addr:
            peer = transport.get_extra_info("peername")
            if isinstance(peer, tuple) and len(peer) >= 2:
                self.key = str(peer[0])
                self.remote_addr = self.key.encode("ascii")
                self.remote_port = str(peer[1]).encode("ascii")
        self.kind = C_HEADER
        self.deadline = engine.now + engine.t_header

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.engine.clients.discard(self)
        # break reference cycles (parser -> bound methods -> self) so plain reference
        # counting frees the connection; the cyclic GC stays out of the hot path
        self.parser = None  # type: ignore[assignment]
        self.transport = None
        self.deadline = 0.0
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        up = self.up
        self.up = None
        if up is not None:
            up.detach()
        self._report(True)  # the client went away: not the upstream's fault (nginx state 0)
        self.active = None
        self.cur = None
        self.queue.clear()
        self.early.clear()

    def eof_received(self) -> bool:
        if self.tunnel:
            return False
        active = self.active
        if active is not None and active.complete and self.cur is None:
            active.keep_alive = False
            for req in self.queue:
                req.keep_alive = False
            return True  # keep the write side to deliver the response
        return False  # nothing to answer, or a body that can never complete

    def pause_writing(self) -> None:
        up = self.up
        if up is not None and up.transport is not None:
            up.transport.pause_reading()
            up.deadline = 0.0
        self.kind = C_SEND
        self.deadline = self.engine.now + self.engine.t_send

    def resume_writing(self) -> None:
        up = self.up
        engine = self.engine
        if up is not None and up.transport is not None:
            up.transport.resume_reading()
            up.deadline = engine.now + engine.t_read
        if self.tunnel:
            self.kind = C_TUNNEL
            self.deadline = engine.now + engine.t_read
        else:
            self.kind = C_NONE
            self.deadline = 0.0

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            up = self.up
            if up is not None and up.transport is not None:
                up.transport.write(data)
                self.deadline = self.engine.now + self.engine.t_read
            return
        if self.error or self.closed:
            return
        if self.upgrading:
            # bytes after an Upgrade request belong to the tunnel (if it opens)
            self.early.append(data)
            self.block(B_UPGRADE)
            return
        status = 0
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            rest = data[int(exc.args[0]) :]
            self.upgrading = True
            if rest:
                self.early.append(rest)
                self.block(B_UPGRADE)
        except HttpParserCallbackError as exc:
            ctx = exc.__context__
            if isinstance(ctx, _RejectError):
                status = ctx.status
            else:
                log.error("proxy: internal error while parsing a request", exc_info=ctx)
                self.engine.stats.internal_errors += 1
                status = 400
        except HttpParserError:
            status = 400
        if status:
            self._bad_request(status)
            return
        cur = self.cur
        if cur is not None and not cur.headers_done:
            cur.hsize += len(data)
            if cur.hsize > self.engine.config.limits.header_total + 8192:
                self._bad_request(400)

    # -- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.cur = Request()
        self.served += 1
        if self.active is None:
            engine = self.engine
            self.kind = C_HEADER
            self.deadline = engine.now + engine.t_header

    def on_url(self, url: bytes) -> None:
        req = self.cur
        assert req is not None
        target = req.target + url if req.target else url
        req.target = target
        if len(target) > self.engine.header_line:
            raise _RejectError(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.cur
        assert req is not None
        if req.headers_done:
            return  # trailer fields of a chunked body: dropped, like nginx 1.22
        engine = self.engine
        size = len(name) + len(value)
        if size > engine.header_line:
            raise _RejectError(400)
        req.hsize += size + 4
        if req.hsize > engine.header_total:
            raise _RejectError(400)
        low = name.lower()
        special = _SPECIAL.get(low)
        if special is not None:
            if special == H_HOST:
                req.host = value
                req.host_count += 1
            elif special == H_CL:
                req.clen = int(value)
            elif special == H_TE:
                req.chunked = True
            elif special == H_XFF:
                req.xff = req.xff + b", " + value if req.xff else value
            elif special == H_UPGRADE:
                req.upgrade = value
            elif special == H_CONNECTION:
                req.connection = value
            elif special == H_EXPECT:
                req.expect = value.lower() == b"100-continue"
        if engine.http_vars and low in engine.http_vars:
            if req.extra is None:
                req.extra = []
            req.extra.append((low, value))
        if low not in engine.drop:
            req.lines.append(name + b": " + value + b"\r\n")

    def on_headers_complete(self) -> None:
        req = self.cur
        assert req is not None
        req.headers_done = True
        parser = self.parser
        engine = self.engine
        req.method = method = parser.get_method()
        req.version = version = parser.get_http_version()
        keep = parser.should_keep_alive()
        if parser.should_upgrade():
            if method == b"CONNECT":
                raise _RejectError(405)
            req.is_upgrade = True
        if req.target[:1] != b"/":
            try:
                req.target = origin_form(req.target, method)
            except ValueError:
                raise _RejectError(400) from None
        host = req.host
        if not (
            version == "1.1"
            and req.host_count == 1
            and req.clen <= engine.max_body
            and (engine.hosts_ok.get(host) or _remember_host(engine.hosts_ok, host))
        ):
            status = request_status(
                version, req.host_count, host, req.clen, engine.config.limits.max_body
            )
            if status:
                raise _RejectError(status)
        if self.served >= engine.ka_requests or self.draining:
            keep = False
        req.keep_alive = keep
        engine.stats.requests += 1
        if req.chunked:
            if engine.up_version.endswith(b"1.1\r\n"):
                req.head = self._build_head(req, _TE_CHUNKED)
            else:
                req.buffer_all = True  # HTTP/1.0 upstream: needs a Content-Length
        elif engine.static_rules or not engine.rules.dynamic:
            req.head = b"".join(
                (method, b" ", req.target, engine.up_version, engine.static_rules, *req.lines, CRLF)
            )
        else:
            req.head = self._build_head(req, b"")
        req.start = engine.now
        if self.active is None:
            self.active = req
            if req.expect:
                self._start(req)
            else:
                self._try(req)
        else:
            self.queue.append(req)
            self.block(B_QUEUE)

    def on_body(self, body: bytes) -> None:
        req = self.cur
        assert req is not None
        req.received += len(body)
        max_body = self.engine.config.limits.max_body
        if max_body and req.received > max_body:
            raise _RejectError(413)
        if req.buffer_all and req.received > (max_body or 1 << 20):
            raise _RejectError(413)
        active = req is self.active
        if active:
            self.deadline = self.engine.now + self.engine.t_body
        up = self.up
        if active and up is not None and req.sent and not req.buffer_all:
            transport = up.transport
            assert transport is not None
            if req.chunked:
                transport.writelines((chunk_header(len(body)), body, CRLF))
            else:
                transport.write(body)
            req.body_sent = True
        else:
            req.body.append(body)
            if not req.buffer_all:
                self.block(B_ATTACH if active else B_QUEUE)

    def on_message_complete(self) -> None:
        req = self.cur
        assert req is not None
        self.cur = None
        req.complete = True
        if req is not self.active:
            return
        if self.kind == C_BODY:
            self.kind = C_NONE
            self.deadline = 0.0
        up = self.up
        if up is None or up.transport is None:
            return
        if req.buffer_all:
            self._send_buffered(req, up)
        elif req.sent and req.chunked:
            up.transport.write(LAST_CHUNK)

    # -- relaying -----------------------------------------------------------------------
    def _build_head(self, req: Request, framing: bytes, engine: Engine | None = None) -> bytes:
        if engine is None:
            engine = self.engine
        rules = engine.rules
        dyn = b""
        if rules.dynamic:
            facts = RequestFacts(
                host=req.host,
                remote_addr=self.remote_addr,
                remote_port=self.remote_port,
                xff=req.xff,
                upgrade=req.upgrade,
                connection=req.connection,
                target=req.request_uri or req.target,
                extra=tuple(req.extra or ()),
            )
            dyn = rules.dynamic_block(facts)
        parts = [req.method, b" ", req.target, engine.up_version, rules.static, dyn]
        parts.extend(req.lines)
        parts.append(framing)
        parts.append(CRLF)
        return b"".join(parts)

    def _start(self, req: Request) -> None:
        self.active = req
        expects_body = req.clen > 0 or req.chunked
        if req.expect and expects_body and not req.complete and req.version == "1.1":
            self._write(CONTINUE_100)
        self._try(req)

    def _try(self, req: Request) -> None:
        engine = self.engine
        now = engine.now
        peer = engine.balancer.pick(self.key, req.tried, now)
        if peer is None:
            engine.stats.no_live_upstream += 1
            self._respond_error(502)
            return
        req.tried.append(peer)
        req.tries += 1
        self.picked = peer  # owes the balancer exactly one report()
        up = engine.pool.get(peer)
        if up is not None:
            engine.stats.upstream_reused += 1
            self._attach(up)
            return
        self.block(B_ATTACH)
        self.kind = C_CONNECT
        self.deadline = now + engine.config.timeouts.proxy_connect
        self.connecting = engine.loop.create_task(self._connect(req))

    async def _connect(self, req: Request) -> None:
        peer = req.tried[-1]
        try:
            up = await self.engine.connect(peer)
        except OSError:
            self.connecting = None
            if self.active is req and not self.closed:
                self.upstream_failed(None, "error")
            return
        self.connecting = None
        if self.active is not req or self.closed:
            up.close()
            return
        self._attach(up)

    def _attach(self, up: UpstreamProtocol) -> None:
        req = self.active
        assert req is not None
        transport = up.transport
        assert transport is not None
        self.up = up
        head_request = req.method == b"HEAD"
        upgrade = req.is_upgrade
        # raw relay when the upstream's framing is valid for this client unchanged
        # (only towards a keep-alive upstream: one that closes would make the raw relay
        # close the client connection too, where nginx keeps it)
        relay = (
            self.engine.up_keepalive and req.version == "1.1" and not head_request and not upgrade
        )
        raw = relay and req.keep_alive and not self.draining
        # a client that asked to close (Connection: close, keepalive_requests reached)
        # gets the raw relay too, with only the head rewritten (upstream.closing_head)
        closing = relay and not req.keep_alive
        up.lend(self, head_request, upgrade, raw or closing, closing)
        if req.complete:
            self.kind = C_NONE
            self.deadline = 0.0
        else:
            self.kind = C_BODY
            self.deadline = self.engine.now + self.engine.t_body
        if not (req.body or req.chunked or req.buffer_all):
            transport.write(req.head)  # the common case: a bodiless request
            req.sent = True
        elif req.buffer_all:
            if req.complete:
                self._send_buffered(req, up)
        else:
            if req.body:
                parts = [req.head]
                if req.chunked:
                    for piece in req.body:
                        parts += (chunk_header(len(piece)), piece, CRLF)
                else:
                    parts.extend(req.body)
                req.body = []
                req.body_sent = True
                if req.complete and req.chunked:
                    parts.append(LAST_CHUNK)
                transport.writelines(parts)
            elif req.complete and req.chunked:
                transport.writelines((req.head, LAST_CHUNK))
            else:
                transport.write(req.head)
            req.sent = True
        if self.blocked & B_ATTACH:
            self.unblock(B_ATTACH)

    def _send_buffered(self, req: Request, up: UpstreamProtocol) -> None:
        transport = up.transport
        assert transport is not None
        size = sum(len(p) for p in req.body)
        head = self._build_head(req, b"Content-Length: %d\r\n" % size)
        transport.writelines([head, *req.body])
        req.body = []
        req.sent = True
        req.body_sent = size > 0

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            transport.write(data)

    # -- called by UpstreamProtocol -----------------------------------------------------
    def resp_head(
        self, up: UpstreamProtocol, status: int, reason: bytes, lines: list[bytes], framing: str
    ) -> bool:
        req = self.active
        if req is None or up is not self.up:
            return False
        engine = self.engine
        if status in engine.retry_statuses and self._can_retry(req, f"http_{status}"):
            self._report(status in (403, 404))
            self.up = None
            up.detach()
            engine.stats.retries += 1
            self._try(req)
            return False
        req.responded = True
        keep = req.keep_alive and req.complete and not self.draining
        http11 = req.version == "1.1"
        chunk_out = False
        if status == 101:
            keep = True
        elif req.is_upgrade:
            keep = False
        if framing in ("chunked", "close"):
            if http11:
                chunk_out = True
            else:
                keep = False
        req.keep_alive = keep
        self.chunk_out = chunk_out
        parts = [status_line(b"", status, reason)]
        parts.extend(lines)
        if chunk_out:
            parts.append(_TE_CHUNKED)
        if status != 101:
            if not keep:
                parts.append(b"Connection: close\r\n")
            elif not http11:
                parts.append(b"Connection: keep-alive\r\n")
        parts.append(CRLF)
        # held back so that head and first body piece leave in one send (flush_head)
        self.held = b"".join(parts)
        return True

    def raw_head(self, up: UpstreamProtocol, status: int, keep: bool) -> None:
        """Raw path: a final response started; its head is relayed with its bytes."""
        req = self.active
        if req is None or up is not self.up:
            return
        engine = self.engine
        if status in engine.retry_statuses and self._can_retry(req, f"http_{status}"):
            self._report(status in (403, 404))
            self.up = None
            up.detach()
            engine.stats.retries += 1
            self._try(req)
            return
        req.responded = True
        if not keep or not req.complete:
            req.keep_alive = False  # upstream closes or is EOF-delimited: so do we

    def resp_raw(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        transport.write(data)
        stats = self.engine.stats
        stats.peak_buffered = max(stats.peak_buffered, transport.get_write_buffer_size())

    def flush_head(self) -> None:
        """Send a response head still held back (the upstream read ended without body)."""
        held = self.held
        if held:
            self.held = b""
            self._write(held)

    def resp_body(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        held = self.held
        if held:
            self.held = b""
            if self.chunk_out:
                transport.writelines((held, chunk_header(len(data)), data, CRLF))
            else:
                transport.writelines((held, data))
        elif self.chunk_out:
            transport.writelines((chunk_header(len(data)), data, CRLF))
        else:
            transport.write(data)
        size = transport.get_write_buffer_size()
        stats = self.engine.stats
        stats.peak_buffered = max(stats.peak_buffered, size)

    def resp_done(self, up: UpstreamProtocol, reusable: bool) -> None:
        req = self.active
        engine = self.engine
        if req is None or up is not self.up:
            up.close()
            return
        self.up = None
        if self.chunk_out:
            self.chunk_out = False
            self._write(self.held + LAST_CHUNK)
            self.held = b""
        elif self.held:
            self.flush_head()
        now = engine.now
        self.picked = None
        engine.balancer.report(up.peer, True, now)
        engine.stats.responses += 1
        if (
            reusable
            and req.complete
            and engine.up_keepalive
            and not up.failed
            and up.requests < engine.up_ka_requests
            and engine.pool.put(up, now)
        ):
            up.client = None
        else:
            up.close()
        # _finish, inlined for the common keep-alive case
        self.active = None
        if (
            req.keep_alive
            and not self.queue
            and not self.blocked
            and not self.error
            and not self.draining
            and self.cur is None
            and not self.closed
        ):
            self.kind = C_IDLE
            self.deadline = now + engine.t_keepalive
            return
        self._finish(req)

    def upstream_failed(self, up: UpstreamProtocol | None, kind: str) -> None:
        req = self.active
        if req is None or (up is not None and up is not self.up):
            return
        engine = self.engine
        self.up = None
        if up is not None:
            up.detach()
        engine.stats.upstream_errors += 1
        self._report(False)
        if req.responded:
            self.abort()
            return
        if self._can_retry(req, kind):
            engine.stats.retries += 1
            self._try(req)
            return
        self._respond_error(504 if kind == "timeout" else 502)

    def start_tunnel(self, up: UpstreamProtocol, rest: bytes) -> None:
        """After 101: splice bytes both ways until either side closes."""
        engine = self.engine
        engine.stats.tunnels += 1
        self.tunnel = True
        self.active = None
        self.flush_head()
        if rest:
            self._write(rest)
        transport = up.transport
        assert transport is not None
        if self.early:
            transport.writelines(self.early)
            self.early = []
        self.blocked = B_UPGRADE
        self.unblock(B_UPGRADE)
        self.kind = C_TUNNEL
        self.deadline = engine.now + engine.t_read

    def tunnel_out(self, data: bytes) -> None:
        self._write(data)
        self.deadline = self.engine.now + self.engine.t_read

    # -- request outcomes ---------------------------------------------------------------
    def _report(self, ok: bool) -> None:
        """Settle the pending pick with the balancer (least_conn counts, passive health)."""
        peer = self.picked
        if peer is not None:
            self.picked = None
            self.engine.balancer.report(peer, ok, self.engine.now)

    def _can_retry(self, req: Request, kind: str) -> bool:
        engine = self.engine
        policy = engine.config.retry
        if kind not in policy.on or "off" in policy.on:
            return False
        if req.body_sent or req.responded or self.closed:
            return False
        if policy.tries and req.tries >= policy.tries:
            return False
        if req.tries >= engine.balancer.count():
            return False
        if policy.timeout and engine.now - req.start >= policy.timeout:
            return False
        return not (
            req.sent and req.method not in IDEMPOTENT_METHODS and "non_idempotent" not in policy.on
        )

    def _respond_error(self, status: int) -> None:
        req = self.active
        assert req is not None
        req.responded = True
        keep = req.keep_alive and req.complete and not self.draining
        req.keep_alive = keep
        self._write(error_response(status, keep))
        self._finish(req)

    def _finish(self, req: Request) -> None:
        self.active = None
        if self.blocked:
            self.unblock(B_ATTACH | B_UPSTREAM_FULL)
        # while draining, req.keep_alive still True means the client was not told that we
        # close (raw relay): it may already be sending its next request, so that one is
        # served (with Connection: close) instead of being lost to a close right now
        keep = req.keep_alive and not self.closed
        if keep and self.queue:
            nxt = self.queue.popleft()
            if not self.queue:
                self.unblock(B_QUEUE)
            self._start(nxt)
            return
        if keep and self.error:
            self._write(error_response(self.error))
        if not keep or self.error:
            self.close()
            return
        engine = self.engine
        if self.cur is None:
            self.kind = C_IDLE
            idle = min(engine.t_keepalive, DRAIN_GRACE) if self.draining else engine.t_keepalive
            self.deadline = engine.now + idle
        else:
            self.kind = C_HEADER if not self.cur.headers_done else C_BODY
            self.deadline = engine.now + engine.t_header
        if self.blocked:
            self.unblock(B_QUEUE)

    def _bad_request(self, status: int) -> None:
        engine = self.engine
        engine.stats.bad_requests += 1
        cur = self.cur
        self.cur = None
        active = self.active
        if active is not None and (cur is active or cur is None):
            # the request being relayed broke (e.g. body over client_max_body_size)
            up = self.up
            self.up = None
            if up is not None:
                up.detach()
            self._report(True)
            if self.connecting is not None:
                self.connecting.cancel()
                self.connecting = None
            if not active.responded:
                self._write(error_response(status))
            self.close()
            return
        if active is not None:
            self.error = status  # answer after the earlier pipelined requests
            self.block(B_ERROR)
            return
        self._write(error_response(status))
        self.close()

    # -- flow control and lifecycle -----------------------------------------------------
    def block(self, bit: int) -> None:
        if not self.blocked and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.blocked |= bit

    def unblock(self, bit: int) -> None:
        if self.blocked & bit:
            self.blocked &= ~bit
            if not self.blocked and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def on_timeout(self) -> None:
        kind = self.kind
        self.deadline = 0.0
        if kind == C_CONNECT:
            task = self.connecting
            self.connecting = None
            if task is not None:
                task.cancel()
            self.kind = C_NONE
            self.engine.stats.upstream_timeouts += 1
            self.upstream_failed(None, "timeout")
            return
        self.engine.stats.client_timeouts += 1
        if kind == C_SEND:
            self.abort()
        else:
            self.close()

    def drain(self, grace: float = DRAIN_GRACE) -> None:
        """Graceful stop: every connection ends after its next response (sent with
        `Connection: close`); one idle for `grace` seconds is closed. Closing idle
        keep-alive connections at once (nginx's way) races with clients that are just
        sending their next request: those requests would be lost."""
        self.draining = True
        if self.active is None and self.cur is None and not self.tunnel:
            engine = self.engine
            self.kind = C_IDLE
            self.deadline = min(self.deadline or engine.now + grace, engine.now + grace)

    def close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()
        up = self.up
        if up is not None and self.tunnel:
            self.up = None
            up.close()

    def abort(self) -> None:
        transport = self.transport
        if transport is not None:
            transport.abort()
        up = self.up
        if up is not None:
            self.up = None
            up.detach()
