"""Stateless-per-call adapter from the nginx balancers to the proxy's `Balancer` seam.

The L7 engine (`hakeeper.proxy.balancer.Balancer`) asks `pick(key, tried, now)` once per
try and reports each try with `report(peer, ok, now)`; it keeps the request's `tried` list
itself. `UpstreamGroup` maps its peer objects (any hashable type) onto the nginx peers of
`nginx.py` / `nginx_hash.py` and replays the request from `tried`, which reproduces nginx's
retry order: the hash methods re-walk their chain from the start, meet the tried peers as
misses and go on exactly where nginx's per-request state would (only the 20-try cutoff
counts those replayed misses as well). `key` is the `hash` key, or the client address text
for `ip_hash`; other methods ignore it.

Every successful `pick` must be matched by one `report` (it holds a connection slot for
least_conn / random two / max_conns). Pure: `now` in seconds is injected.

`health_check` (nginx Plus, set by `use_health_check` from the location that has one; the
first one wins) tells `hakeeper.proxy.health` to probe the group's servers; their verdicts
go to `balancer.set_health`.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Hashable, Sequence
from ipaddress import ip_address
from typing import Generic, TypeVar

from hakeeper.balance import make_balancer
from hakeeper.balance.nginx import IPAddress, Peer, UpstreamRequest, UpstreamServer
from hakeeper.conf.nginx_health import HealthCheck

T = TypeVar("T", bound=Hashable)


class UpstreamGroup(Generic[T]):
    """One upstream block: `entries` pairs each proxy peer with its `server` parameters."""

    def __init__(
        self,
        method: str,
        entries: Sequence[tuple[T, UpstreamServer]],
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.method = method
        self.name = ""  # the upstream block's name (Host of health-check requests)
        self.health_check: HealthCheck | None = None
        #: how checks reach `proxy_pass https://` servers (a proxy.tls.UpstreamTls; None: plain)
        self.health_tls: object = None
        self.balancer = make_balancer(method, [s for _, s in entries], rng=rng)
        # only the hash methods read the client key (the proxy may skip computing it)
        self.uses_key = method in ("ip_hash", "hash", "hash_consistent")
        self._freer = UpstreamRequest(self.balancer)  # reused by report(): free() is stateless
        by_name = {p.name: p for p in self.balancer.peers}
        self._to_peer: dict[T, Peer] = {}
        self._from_peer: dict[int, T] = {}
        for item, server in entries:
            peer = by_name[server.name]
            self._to_peer[item] = peer
            self._from_peer[id(peer)] = item

    @property
    def peers(self) -> list[T]:
        """The proxy peers of this group, in `server` order (for status pages)."""
        return list(self._to_peer)

    def use_health_check(self, name: str, check: HealthCheck, tls: object = None) -> None:
        """Probe this group's servers as `check` says, over `tls` when the location proxies
        to https:// (a second health_check is ignored)."""
        if self.health_check is None:
            self.name = name
            self.health_check = check
            self.health_tls = tls

    def count(self) -> int:
        """How many tries a request may make (nginx: non-down primaries + backups)."""
        return self.balancer.begin().tries

    def _client(self, key: str) -> IPAddress | None:
        if self.method != "ip_hash" or not key:
            return None
        try:
            return ip_address(key)
        except ValueError:
            return None

    def pick(self, key: str, tried: Collection[T], now: float) -> T | None:
        """A live peer not in `tried`, or None (the proxy answers 502)."""
        req: UpstreamRequest = self.balancer.begin(client=self._client(key), key=key)
        if tried:
            tried_peers = [self._to_peer[t] for t in tried if t in self._to_peer]
            if any(p.backup for p in tried_peers) and self.balancer.backup is not None:
                req.peers = self.balancer.backup
                req.tried = {p.index for p in tried_peers if p.backup}
            else:
                req.tried = {p.index for p in tried_peers if not p.backup}
            req.tries = max(req.tries - len(tried_peers), 0)
        peer = req.get(now)
        return None if peer is None else self._from_peer[id(peer)]

    def report(self, item: T, ok: bool, now: float) -> None:
        """The try on `item` ended; `ok=False` counts a failure for passive health."""
        peer = self._to_peer.get(item)
        if peer is None:
            return
        req = self._freer
        backup = self.balancer.backup
        req.peers = backup if peer.backup and backup is not None else self.balancer.primary
        req.tries = 0
        req.free(peer, now, failed=not ok)

    def state(self) -> list[tuple[T, Peer]]:
        """(proxy peer, nginx peer state) pairs for status output."""
        return [(self._from_peer[id(p)], p) for p in self.balancer.peers]
