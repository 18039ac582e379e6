"""Client protocol, forwarding: upstream pick/connect/attach, request head and body streaming.

A request is bound to an upstream connection from the keep-alive pool or a new connect
(bounded by `proxy_connect_timeout`), its head is written in one piece, and its body
follows piece by piece as httptools hands it over, never gathered: re-framed as chunks
when the client sent chunked (RFC 9112 7.1), or buffered only for an HTTP/1.0 upstream,
which needs a Content-Length (RFC 9112 6.2). `Expect: 100-continue` is answered by the
proxy itself (RFC 9110 10.1.1, nginx strips the field and answers before reading the
body). Behaviour follows nginx 1.22 `ngx_http_proxy_module` with
`proxy_request_buffering off`; the choice of raw relay for the response is made here
(`_attach`) and carried out by `client_response` and `upstream.UpstreamProtocol`.
"""

from __future__ import annotations

from hakeeper.proxy.client_state import (
    B_ATTACH,
    B_QUEUE,
    C_BODY,
    C_CONNECT,
    C_NONE,
    C_SEND,
    ClientBase,
    Request,
    _RejectError,
)
from hakeeper.proxy.engine import Engine
from hakeeper.proxy.framing import (
    CONTINUE_100,
    CRLF,
    LAST_CHUNK,
    RequestFacts,
    chunk_header,
)
from hakeeper.proxy.upstream import UpstreamProtocol


class ForwardingClient(ClientBase):
    """Forwards the active request: binds an upstream, streams its head and body."""

    __slots__ = ()

    # -- request body (httptools callbacks) ---------------------------------------------
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
            self.body_out = True
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
            self.body_out = True

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
        # self is always an http1.ClientProtocol (this class is one of its parts)
        up.lend(self, head_request, upgrade, raw or closing, closing)  # type: ignore[arg-type]
        if self.send_paused:
            # the client has not taken the previous response yet (pipelined or eager next
            # request): read this one only as it drains, under the client's send_timeout
            transport.pause_reading()
            up.deadline = 0.0
            self.kind = C_SEND
            self.deadline = self.engine.now + self.engine.t_send
        elif req.complete:
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
            self.body_out = True
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
        self.body_out = True
