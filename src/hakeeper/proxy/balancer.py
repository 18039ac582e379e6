"""The upstream-selection contract the proxy engine calls, plus a plain round-robin.

`Balancer` is the seam between the hot path and the nginx algorithms (smooth WRR,
least_conn, ip_hash, hash, random in `hakeeper.balance.nginx`): the engine asks
`pick(key, tried, now)` once per try and reports the outcome with `report(peer, ok, now)`,
like nginx's `peer.get` / `peer.free` pair (`ngx_http_upstream_round_robin.c`).
`RoundRobin` is the engine's own fallback: equal weights, passive health with
`max_fails`/`fail_timeout` as in nginx 1.22 (a single peer is never marked down).
Pure: `now` is injected (seconds).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from hakeeper.proxy.config import Peer


class Balancer(Protocol):
    """What the proxy needs from an upstream group."""

    def pick(self, key: str, tried: Collection[Peer], now: float) -> Peer | None:
        """A live peer not in `tried`, or None (then the proxy answers 502)."""
        ...

    def report(self, peer: Peer, ok: bool, now: float) -> None:
        """The try on `peer` ended; `ok=False` counts a failure (connect error, timeout...)."""
        ...

    def count(self) -> int:
        """How many peers a request may try at most (nginx `peers.tries`)."""
        ...


class RoundRobin:
    """Unweighted round-robin with nginx's max_fails/fail_timeout passive health."""

    uses_key = False  # pick() ignores the client address (the engine may skip computing it)

    __slots__ = ("_checked", "_fails", "_index", "_next", "fail_timeout", "max_fails", "peers")

    def __init__(
        self, peers: Collection[Peer], max_fails: int = 1, fail_timeout: float = 10.0
    ) -> None:
        self.peers: tuple[Peer, ...] = tuple(peers)
        self.max_fails = max_fails
        self.fail_timeout = fail_timeout
        self._next = 0
        self._fails = [0] * len(self.peers)
        self._checked = [0.0] * len(self.peers)
        self._index = {p: i for i, p in enumerate(self.peers)}

    def count(self) -> int:
        return len(self.peers)

    def _usable(self, i: int, now: float) -> bool:
        if len(self.peers) == 1 or self.max_fails == 0:
            return True
        return not (
            self._fails[i] >= self.max_fails and now - self._checked[i] <= self.fail_timeout
        )

    def pick(self, key: str, tried: Collection[Peer], now: float) -> Peer | None:
        peers = self.peers
        fails = self._fails
        n = len(peers)
        i = self._next
        for _ in range(n):
            j = i
            peer = peers[j]
            i = i + 1 if i + 1 < n else 0
            if tried and peer in tried:
                continue
            if fails[j]:
                if not self._usable(j, now):
                    continue
                if now - self._checked[j] > self.fail_timeout:
                    self._checked[j] = now  # the one request that probes a recovered peer
            self._next = i
            return peer
        return None

    def report(self, peer: Peer, ok: bool, now: float) -> None:
        i = self._index.get(peer)
        if i is None:
            return
        if ok:
            if self._fails[i]:
                self._fails[i] = 0
        else:
            self._fails[i] += 1
            self._checked[i] = now

    def fails(self, peer: Peer) -> int:
        return self._fails[self.peers.index(peer)]
