"""Client-connection state of the HTTP/1.1 proxy: per-request record, flow control, lifecycle.

Owns what every part of the client protocol shares: the `Request` record (one per
request, RFC 9112 message), the connection's slots (`ClientBase`), the deadline kinds
and the reasons reading is paused (asyncio flow control: one bit per reason, reading
resumes when none is left), the balancer report owed for a pick, and the end of a
connection (timeouts, graceful drain, close, abort). Timeouts follow nginx's
`client_header_timeout`, `client_body_timeout`, `send_timeout` and `keepalive_timeout`:
deadlines stored as floats and enforced by the engine's sweep. The request path
(`http1`), forwarding (`client_forward`) and the response path (`client_response`)
build on this class; `http1.ClientProtocol` is the protocol the listeners create.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from httptools import HttpRequestParser

from hakeeper.proxy.framing import valid_host

if TYPE_CHECKING:
    from hakeeper.proxy.config import Peer
    from hakeeper.proxy.engine import Engine
    from hakeeper.proxy.routes import RequestView, Return
    from hakeeper.proxy.upstream import UpstreamProtocol


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

_TE_CHUNKED = b"Transfer-Encoding: chunked\r\n"
ALL_HEADERS: frozenset[bytes] = frozenset({b"*"})  # `keep`: every (name, value) pair
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


class ClientBase(asyncio.Protocol):
    """A downstream connection's state; the request/forward/response parts subclass it."""

    __slots__ = (
        "active",
        "blocked",
        "body_out",
        "chunk_out",
        "closed",
        "connecting",
        "cur",
        "deadline",
        "draining",
        "drop",
        "drop_some",
        "early",
        "engine",
        "error",
        "held",
        "home",
        "keep",
        "key",
        "kind",
        "parser",
        "picked",
        "queue",
        "remote_addr",
        "remote_port",
        "send_paused",
        "served",
        "transport",
        "tunnel",
        "up",
        "upgrading",
    )

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.home = engine  # the listener's engine (`engine` may switch to a location's)
        # what http1.on_header does with each field (RoutedClientProtocol sets its own):
        self.keep: frozenset[bytes] | None = engine.http_vars or None  # (name, value) kept
        self.drop: frozenset[bytes] = engine.drop  # names not relayed upstream...
        self.drop_some: frozenset[bytes] | None = None  # ...except these: marked, decided later
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
        self.send_paused = False  # between pause_writing and resume_writing
        self.body_out = False  # request body bytes were written to an upstream

    if TYPE_CHECKING:  # provided by the subclasses (resolved through the class MRO)

        def upstream_failed(self, up: UpstreamProtocol | None, kind: str) -> None: ...

        def _respond_error(self, status: int) -> None: ...

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            transport.write(data)

    def _report(self, ok: bool) -> None:
        """Settle the pending pick with the balancer (least_conn counts, passive health)."""
        peer = self.picked
        if peer is not None:
            self.picked = None
            self.engine.balancer.report(peer, ok, self.engine.now)

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
        if kind == C_SEND or self.send_paused:
            self.abort()  # close() would wait for a client that does not read
        else:
            self.close()

    def drain(self, grace: float = DRAIN_GRACE) -> None:
        """Graceful stop: every connection ends after its next response (sent with
        `Connection: close`); one idle for `grace` seconds is closed. Closing idle
        keep-alive connections at once (nginx's way) races with clients that are just
        sending their next request: those requests would be lost. A connection that has
        not begun its first request keeps its header timeout, as in nginx (only keep-alive
        connections count as idle there): its client connected to send one, and on a
        loaded box that can take longer than `grace` (issue #5)."""
        self.draining = True
        if self.active is None and self.cur is None and not self.tunnel and self.served:
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
