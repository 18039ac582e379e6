"""Client side of the proxy, request path: the HTTP/1.1 server protocol the listeners create.

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

This module owns the request path: the asyncio callbacks, the httptools request
callbacks up to the end of the head (limits, Host and framing checks, the upstream head)
and bad requests (400/413/414/431-like answers, in order behind pipelined requests).
The rest is split by concern and joined by class inheritance (no indirection on the hot
path: methods resolve through the class MRO): `client_state` (state, flow control,
lifecycle), `client_forward` (upstream pick/attach, body streaming, 100-continue),
`client_response` (response relay, retries, errors, tunnels).
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
)

from hakeeper.proxy.client_response import RespondingClient
from hakeeper.proxy.client_state import (
    _TE_CHUNKED,
    ALL_HEADERS,
    B_ERROR,
    B_QUEUE,
    B_UPGRADE,
    C_HEADER,
    C_IDLE,
    C_NONE,
    C_SEND,
    C_TUNNEL,
    DRAIN_GRACE,
    Request,
    _RejectError,
    _remember_host,
)
from hakeeper.proxy.framing import (
    CRLF,
    error_response,
    origin_form,
    request_status,
)

__all__ = [  # what routed.py builds on
    "ALL_HEADERS",
    "B_QUEUE",
    "_TE_CHUNKED",
    "ClientProtocol",
    "Request",
    "_RejectError",
    "_remember_host",
]

log = logging.getLogger(__name__)

# request fields on_header remembers (defined here, not imported: CPython 3.11 compiles
# `imported_name.get(...)` as attribute load + call instead of LOAD_METHOD, ~70 ns more)
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


class ClientProtocol(RespondingClient):
    """A downstream connection: parse, validate, relay to an upstream, answer in order."""

    __slots__ = ()

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
        self.send_paused = True
        self.kind = C_SEND
        self.deadline = self.engine.now + self.engine.t_send

    def resume_writing(self) -> None:
        self.send_paused = False
        up = self.up
        engine = self.engine
        if up is not None and up.transport is not None:
            up.transport.resume_reading()
            up.deadline = engine.now + engine.t_read
        kind = self.kind
        if kind == C_SEND and self.tunnel:
            self.kind = C_TUNNEL
            self.deadline = engine.now + engine.t_read
        elif kind == C_IDLE or (kind == C_SEND and self.active is None and self.cur is None):
            # the last response completed while the client was slow to take it (resp_done
            # made the connection idle): its keep-alive time starts now that it has it all
            self.kind = C_IDLE
            idle = engine.t_keepalive
            self.deadline = engine.now + (min(idle, DRAIN_GRACE) if self.draining else idle)
        elif kind == C_SEND:
            self.kind = C_NONE  # the response goes on; the upstream's read timeout runs
            self.deadline = 0.0
        # any other state (next request's header, connect, body) keeps its own deadline

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
        # shared by RoutedClientProtocol: what differs is data set per connection (`home`,
        # `keep`, `drop`, `drop_some`), so neither path pays a call or a test per field
        req = self.cur
        assert req is not None
        if req.headers_done:
            return  # trailer fields of a chunked body: dropped, like nginx 1.22
        home = self.home
        size = len(name) + len(value)
        if size > home.header_line:
            raise _RejectError(400)
        req.hsize += size + 4
        if req.hsize > home.header_total:
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
        keep = self.keep
        if keep is not None and (keep is ALL_HEADERS or low in keep):
            if req.extra is None:
                req.extra = []
            req.extra.append((low, value))
        if low in self.drop:
            some = self.drop_some
            if some is None or low not in some:
                return
            # dropped by some locations only: removed once the route is known
            if req.maybe is None:
                req.maybe = []
            req.maybe.append((len(req.lines), low))
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
