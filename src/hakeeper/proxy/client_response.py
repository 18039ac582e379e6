"""Client protocol, response path: relay to the client, retries, errors, keep-alive and tunnels.

The methods `upstream.UpstreamProtocol` calls while a response arrives: a rebuilt head
(hop-by-hop fields dropped, `Connection` set, EOF-delimited bodies re-framed as chunks
for HTTP/1.1 clients; RFC 9112 6, 9.6, RFC 9110 7.6.1) or the raw relay's bytes as
received, the body pieces, the end of the response (upstream connection back to the
keep-alive pool or closed, the client's next pipelined request started in order, or the
connection idled/closed per RFC 9112 9.3 persistence), failures and retries
(`proxy_next_upstream` only while nothing unrepeatable was sent, nginx 1.22), error
answers (502/504 like nginx) and the Upgrade tunnel after `101 Switching Protocols`
(RFC 9110 7.8, nginx `u->upgrade`: bytes spliced both ways until either side closes).
"""

from __future__ import annotations

from hakeeper.proxy.client_forward import ForwardingClient
from hakeeper.proxy.client_state import (
    _TE_CHUNKED,
    B_ATTACH,
    B_QUEUE,
    B_UPGRADE,
    B_UPSTREAM_FULL,
    C_BODY,
    C_HEADER,
    C_IDLE,
    C_TUNNEL,
    DRAIN_GRACE,
    Request,
)
from hakeeper.proxy.config import IDEMPOTENT_METHODS
from hakeeper.proxy.framing import (
    CRLF,
    LAST_CHUNK,
    chunk_header,
    error_response,
    status_line,
)
from hakeeper.proxy.upstream import UpstreamProtocol


class RespondingClient(ForwardingClient):
    """Relays the active request's response and settles its outcome."""

    __slots__ = ()

    # -- called by UpstreamProtocol -----------------------------------------------------
    def resp_head(
        self, up: UpstreamProtocol, status: int, reason: bytes, lines: list[bytes], framing: str
    ) -> bool:
        req = self.active
        if req is None or up is not self.up:
            return False
        engine = self.engine
        if status in engine.retry_statuses and self._retried(req, up, status):
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
        if status in self.engine.retry_statuses and self._retried(req, up, status):
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
            and not (self.body_out and self._owes_request(up))
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
    def _retried(self, req: Request, up: UpstreamProtocol, status: int) -> bool:
        """`proxy_next_upstream http_NNN`: drop `up` and try the next peer, if allowed."""
        if not self._can_retry(req, f"http_{status}"):
            return False
        self._report(status in (403, 404))  # nginx: NGX_PEER_NEXT, not a failure
        self.up = None
        up.detach()
        self.engine.stats.retries += 1
        self._try(req)
        return True

    def _owes_request(self, up: UpstreamProtocol) -> bool:
        """nginx `request_body_sent`: an upstream that answered before taking the whole
        body still has request bytes to send (and may be paused for writing): not reused.
        Asked only after a body went out (`body_out`, a slot: bodiless requests pay one
        read, not a class-default lookup or a transport call)."""
        self.body_out = False
        transport = up.transport
        return transport is not None and transport.get_write_buffer_size() > 0

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
