"""One worker's proxy engine: shared state of all its connections and the deadline sweep.

Owns what every connection of a worker shares: the immutable `ProxyConfig` and its
compiled header rules, the balancer (anything implementing `balancer.Balancer`), the
upstream keep-alive `Pool`, the live connection sets, counters, and one periodic sweep
that enforces all timeouts (client header/body/send/keep-alive, upstream connect/read/
send, pool idle). A sweep every `timer_resolution` seconds replaces per-request timer
handles, like nginx's timer tree with `timer_resolution`: the hot path only stores a
float deadline. `start_listening` attaches the engine to listening sockets (inherited,
passed over SCM_RIGHTS, or freshly bound) and `drain` stops accepting and waits for
in-flight requests, the hook hitless reloads use.

A listener with a routing table (`config.routes`: several servers or locations) gets
one child engine per proxied location: the child holds that location's settings,
compiled rules, balancer (shared between locations of one upstream) and keep-alive
pool, and shares the parent's counters, connection sets and clock; the client protocol
switches to the child of the request it is relaying. A plain listener has no children
and runs exactly as before.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from hakeeper.proxy.balancer import Balancer, RoundRobin
from hakeeper.proxy.config import Peer, ProxyConfig, routed_only
from hakeeper.proxy.framing import REQUEST_HOP_BY_HOP, CompiledRules
from hakeeper.proxy.upstream import K_IDLE, Pool, UpstreamProtocol

if TYPE_CHECKING:
    from hakeeper.proxy.http1 import ClientProtocol
    from hakeeper.proxy.routes import Proxied

# loop turns between an accept and its `connection_made`: 1 on uvloop, 2 on the stdlib
# loop (accept, then a task that makes the transport, then the call)
ACCEPT_TURNS = 2


@dataclass(slots=True)
class Stats:
    """Worker counters (mutable on purpose: incremented on the hot path)."""

    accepted: int = 0
    requests: int = 0
    responses: int = 0
    bad_requests: int = 0
    client_timeouts: int = 0
    upstream_connects: int = 0
    upstream_reused: int = 0
    upstream_errors: int = 0
    upstream_timeouts: int = 0
    upstream_invalid: int = 0
    retries: int = 0
    no_live_upstream: int = 0
    tunnels: int = 0
    peak_buffered: int = 0
    internal_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Engine:
    """Shared state for the client and upstream protocols of one worker process."""

    def __init__(
        self,
        config: ProxyConfig,
        balancer: Balancer | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        parent: Engine | None = None,
    ) -> None:
        self.config = config
        self.rules = CompiledRules(config)
        self.balancer: Balancer = balancer if balancer is not None else RoundRobin(config.peers)
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.pool = Pool(config.upstream_keepalive)
        self.clients: set[ClientProtocol] = set() if parent is None else parent.clients
        self.upstreams: set[UpstreamProtocol] = set() if parent is None else parent.upstreams
        self.stats: Stats = Stats() if parent is None else parent.stats
        self.routes = config.routes
        # a header rule reads $uri, $args, $arg_*, $server_port...: routed rendering only
        self.routed_headers = any(routed_only(rule) for rule in config.headers)
        self.children: dict[Proxied, Engine] = {}
        if self.routes is not None:
            for proxied in self.routes.proxied():
                self.children[proxied] = Engine(
                    proxied.config, proxied.balancer, self.loop, parent=self
                )
        self.servers: list[asyncio.Server] = []
        self.up_version = b" HTTP/" + config.http_version.encode("ascii") + b"\r\n"
        self.up_keepalive = config.http_version == "1.1" and config.upstream_keepalive > 0
        self.retry_statuses = config.retry.statuses()
        # hot-path copies of settings (one attribute read instead of three)
        t, lim = config.timeouts, config.limits
        self.t_header, self.t_body, self.t_send = t.client_header, t.client_body, t.send
        self.t_keepalive, self.t_read, self.t_psend = t.keepalive, t.proxy_read, t.proxy_send
        self.header_line, self.header_total = lim.header_line, lim.header_total
        self.max_body = lim.max_body or (1 << 62)
        self.ka_requests = lim.keepalive_requests
        self.up_ka_requests = lim.upstream_keepalive_requests
        self.drop = self.rules.drop
        self.http_vars = self.rules.http_vars
        self.static_rules = self.rules.static if not self.rules.dynamic else b""
        # a cached clock like nginx's, refreshed only by the sweep (every timer_resolution):
        # deadlines set from it expire up to one resolution late, never early (`_sweep`)
        self.now = self.loop.time()
        # the client address is only needed by dynamic header rules or a keyed balancer
        self.needs_addr = (
            bool(self.rules.dynamic)
            or getattr(self.balancer, "uses_key", True)
            or self.routes is not None
        )
        self.hosts_ok: dict[bytes, bool] = {}  # Host values already validated
        # routed listener: request headers every location drops are dropped on arrival,
        # those only some drop are marked and removed once the route is known
        drops = [child.drop for child in self.children.values()]
        self.drop_all: frozenset[bytes] = (
            frozenset.intersection(*drops) if drops else REQUEST_HOP_BY_HOP
        )
        self.drop_some: frozenset[bytes] = frozenset().union(*drops) - self.drop_all
        # all (name, value) pairs are kept only if a variable may read them
        self.keep_headers = self.routes is not None and (
            self.routes.reads_headers() or any(c.http_vars for c in self.children.values())
        )
        from hakeeper.proxy.http1 import ClientProtocol  # noqa: PLC0415 (import cycle)
        from hakeeper.proxy.routed import RoutedClientProtocol  # noqa: PLC0415

        self._client_class: type[ClientProtocol] = (
            RoutedClientProtocol if self.routes is not None else ClientProtocol
        )
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        if parent is None:
            self._schedule_sweep()

    # -- connections --------------------------------------------------------------------
    def protocol_factory(self) -> ClientProtocol:
        return self._client_class(self)

    async def connect(self, peer: Peer) -> UpstreamProtocol:
        """Open a new upstream connection (the caller bounds it with a deadline)."""
        self.stats.upstream_connects += 1
        tls = self.config.upstream_tls
        if tls is not None:  # proxy_pass https:// (the caller's deadline covers the handshake)
            _, proto = await self.loop.create_connection(
                lambda: UpstreamProtocol(self, peer),
                peer.host,
                peer.port,
                ssl=tls.context,
                server_hostname=tls.server_hostname,
            )
            return proto
        _, proto = await self.loop.create_connection(
            lambda: UpstreamProtocol(self, peer), peer.host, peer.port
        )
        return proto

    async def start_listening(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
        reuse_port: bool = False,
        backlog: int = 511,
    ) -> asyncio.Server:
        """Serve on `sock` (inherited/passed) or on a new socket bound to host:port."""
        if sock is not None:
            server = await self.loop.create_server(
                self.protocol_factory, sock=sock, backlog=backlog
            )
        else:
            server = await self.loop.create_server(
                self.protocol_factory, host, port, reuse_port=reuse_port, backlog=backlog
            )
        self.servers.append(server)
        return server

    def ports(self) -> list[int]:
        out: list[int] = []
        for server in self.servers:
            for s in server.sockets:
                out.append(s.getsockname()[1])
        return out

    # -- deadlines ----------------------------------------------------------------------
    def _schedule_sweep(self) -> None:
        if not self._closed:
            self._sweeper = self.loop.call_later(self.config.timer_resolution, self._sweep)

    def _sweep(self) -> None:
        try:
            self.now = now = self.loop.time()
            for child in self.children.values():
                child.now = now
            # deadlines were set from the cached clock (up to one resolution stale), so
            # they expire one resolution late rather than early
            limit = now - self.config.timer_resolution
            for client in [c for c in self.clients if c.deadline and c.deadline <= limit]:
                client.on_timeout()
            for up in [u for u in self.upstreams if u.deadline and u.deadline <= limit]:
                if up.kind == K_IDLE:
                    up.engine.pool.remove(up)
                    up.close()
                else:
                    up.on_timeout()
        finally:
            self._schedule_sweep()

    # -- shutdown -----------------------------------------------------------------------
    async def drain(self, timeout: float = 30.0) -> bool:
        """Stop accepting, let in-flight requests finish; True if all ended in time.

        Listening sockets owned by someone else (the master, for a hitless reload) stay
        open there, so connections queued in the kernel are accepted by the new workers.
        """
        for server in self.servers:
            server.close()
        # A connection accepted in the loop turn that handled the stop signal is made
        # (`connection_made`, then in `clients`) on a later turn than this step: uvloop
        # queues it behind us, the stdlib loop makes its transport in a task first. Let
        # those turns run, or it is neither drained nor waited for and the worker exits
        # under it (the client: "closed without response"; issue #5).
        for _ in range(ACCEPT_TURNS):
            await asyncio.sleep(0)
        for client in list(self.clients):
            client.drain()
        deadline = self.loop.time() + timeout
        while self.clients and self.loop.time() < deadline:
            await asyncio.sleep(min(0.05, self.config.timer_resolution))
            for client in self.clients:  # made late (e.g. a TLS handshake that finished)
                if not client.draining:
                    client.drain()
        return not self.clients

    def close(self) -> None:
        """Hard stop: close every connection and the sweep."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self.servers:
            server.close()
        for client in list(self.clients):
            client.abort()
        self.pool.close_all()
        for child in self.children.values():
            child.pool.close_all()
        for up in list(self.upstreams):
            up.close()
