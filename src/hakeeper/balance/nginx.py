"""nginx upstream balancing: smooth weighted round-robin, passive health, least_conn, random.

Follows nginx's src/http/ngx_http_upstream_round_robin.c and modules/ngx_http_upstream_
least_conn_module.c / _random_module.c (read for facts, not copied); the hash methods are in
`nginx_hash.py`. The shapes match nginx so that selection sequences can be compared with a
real nginx:

* per peer: `weight`, `effective_weight` (starts at weight), `current_weight` (starts at 0),
  `fails`, `accessed`, `checked`, `conns`; time is `ngx_time()`, i.e. whole seconds, so `now`
  is truncated to an int before any comparison;
* SWRR: every eligible peer adds its effective weight to its current weight, the largest
  current weight wins and gives back the total (weights 5,1,1 give a a b a c a a); each
  selection raises a reduced effective weight by 1 towards `weight`;
* a failure (`free(..., failed=True)`) counts `fails`, stamps `accessed`/`checked`, cuts the
  effective weight by `weight // max_fails` (not below 0); a peer with `fails >= max_fails`
  is skipped while `now - checked <= fail_timeout`; a later success after it was retried
  (`accessed < checked`) clears `fails`;
* an upstream with a single peer (and no backup) never counts failures;
* `backup` peers are tried only when no primary peer can be chosen; when nothing at all can
  be chosen the request gets None (nginx's NGX_BUSY: 502, "no live upstreams") and the
  peers stay disabled until their fail_timeout runs out. (Old nginx reset every `fails`
  here, "mark them as live for quick recovery"; the differential test shows 1.22 does not.)
* `down` peers are never chosen; `max_conns` skips a peer with that many connections.

Beyond open-source nginx (nginx Plus semantics, `ngx_http_upstream_module` docs):

* a peer's `down` is the union of the configured/administrative flag (`set_down`) and the
  active health check's verdict (`set_health`); either keeps it out of every method, and the
  hash methods still count its weight, so `hash ... consistent` moves only its keys;
* `slow_start=T` (round_robin and least_conn only, like nginx Plus): a peer that comes back
  (health check up, or a passive failure cleared by a successful try, or `start_ramp` for a
  server added by a reload) has its weight ramped linearly from 0 to nominal over T seconds
  of the injected clock. SWRR then adds `effective_weight * f` (f = elapsed / T) instead of
  `effective_weight`; least_conn compares conns against the ramped weight. Ramps never start
  at process start. When the last ramp of a list ends, fractional current weights are reset
  to 0 so later sequences are nginx's integer SWRR again.

One `UpstreamBalancer` is the shared (per worker) state; `begin()` makes the per-request
object whose `get(now)` / `free(peer, now, failed)` mirror nginx's peer.get / peer.free,
including the request's `tried` set and its `tries` budget for proxy_next_upstream.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

IPAddress = IPv4Address | IPv6Address

#: Methods that accept `slow_start=` (nginx Plus rejects it with hash, ip_hash and random).
SLOW_START_METHODS = frozenset({"round_robin", "least_conn"})

#: Retries of ip_hash / hash / random before they fall back to round-robin.
HASH_MAX_TRIES = 20


@dataclass(frozen=True, slots=True)
class UpstreamServer:
    """One `server` line of an upstream block, after name resolution (one address)."""

    name: str
    weight: int = 1
    max_fails: int = 1
    fail_timeout: float = 10.0
    backup: bool = False
    down: bool = False
    max_conns: int = 0
    server: str = ""  # the configured text ("backend:8080"); ketama hashes it; "" = name
    slow_start: float = 0.0  # seconds; 0 = off (nginx Plus `slow_start=`)

    def __post_init__(self) -> None:
        if self.weight < 1:
            raise ValueError(f"server {self.name}: weight must be >= 1")
        if self.max_fails < 0 or self.max_conns < 0 or self.fail_timeout < 0:
            raise ValueError(f"server {self.name}: negative max_fails/max_conns/fail_timeout")
        if self.slow_start < 0:
            raise ValueError(f"server {self.name}: negative slow_start")


class Peer:
    """Run-time state of one upstream address (nginx's ngx_http_upstream_rr_peer_t)."""

    __slots__ = (
        "accessed",
        "admin_down",
        "backup",
        "checked",
        "conns",
        "current_weight",
        "down",
        "effective_weight",
        "fail_timeout",
        "fails",
        "hc_down",
        "index",
        "max_conns",
        "max_fails",
        "name",
        "ramp_until",
        "server",
        "slow_start",
        "weight",
    )

    def __init__(self, cfg: UpstreamServer, index: int) -> None:
        self.name = cfg.name
        self.server = cfg.server or cfg.name
        self.weight = cfg.weight
        self.max_fails = cfg.max_fails
        self.fail_timeout = int(cfg.fail_timeout)
        self.admin_down = cfg.down
        self.hc_down = False  # the active health check's verdict (set_health)
        self.down = cfg.down  # admin_down or hc_down: what every method tests
        self.slow_start = float(cfg.slow_start)
        self.ramp_until = 0.0  # > 0 while the weight ramps (ends at this clock value)
        self.backup = cfg.backup
        self.max_conns = cfg.max_conns
        self.index = index
        self.current_weight: float = 0
        self.effective_weight = cfg.weight
        self.fails = 0
        self.accessed = 0
        self.checked = 0
        self.conns = 0

    def __repr__(self) -> str:
        return (
            f"Peer({self.name!r}, w={self.weight}, ew={self.effective_weight}, "
            f"cw={self.current_weight}, fails={self.fails}, conns={self.conns})"
        )

    def failed(self, now: int) -> bool:
        """Temporarily disabled by max_fails within fail_timeout."""
        return (
            self.max_fails > 0
            and self.fails >= self.max_fails
            and now - self.checked <= self.fail_timeout
        )

    def ramp_factor(self, now: float) -> float:
        """How much of its weight a slow-starting peer has at `now` (1.0 when not ramping)."""
        if not self.ramp_until:
            return 1.0
        left = self.ramp_until - now
        return 1.0 if left <= 0 else max(0.0, 1.0 - left / self.slow_start)

    def full(self) -> bool:
        return self.max_conns > 0 and self.conns >= self.max_conns

    def eligible(self, now: int) -> bool:
        return not self.down and not self.failed(now) and not self.full()


_Filter = Callable[[Peer], bool]
_Getter = Callable[[int], "Peer | None"]


class PeerList:
    """A primary or backup list (nginx's ngx_http_upstream_rr_peers_t)."""

    def __init__(self, peers: list[Peer], single: bool) -> None:
        self.peers = peers
        self.single = single
        self.total_weight = sum(p.weight for p in peers)
        self.tries = sum(1 for p in peers if not p.down)
        self.ramping = 0  # peers with a slow-start ramp in progress

    def end_ramp(self, peer: Peer) -> None:
        peer.ramp_until = 0.0
        self.ramping -= 1
        if self.ramping <= 0:
            self.ramping = 0
            if any(p.current_weight != int(p.current_weight) for p in self.peers):
                for p in self.peers:
                    p.current_weight = 0

    def __len__(self) -> int:
        return len(self.peers)


class UpstreamBalancer:
    """Shared state of one upstream block; `begin()` starts a request."""

    method = "round_robin"
    allows_backup = True

    def __init__(self, servers: Sequence[UpstreamServer], *, rng: random.Random | None = None):
        primary = [s for s in servers if not s.backup]
        backup = [s for s in servers if s.backup]
        if not primary:
            raise ValueError("no servers in upstream")
        if backup and not self.allows_backup:
            raise ValueError(f'balancing method "{self.method}" does not support "backup"')
        if self.method not in SLOW_START_METHODS and any(s.slow_start for s in servers):
            raise ValueError(f'balancing method "{self.method}" does not support "slow_start"')
        self.primary = PeerList([Peer(s, i) for i, s in enumerate(primary)], len(primary) == 1)
        self.backup = (
            PeerList([Peer(s, i) for i, s in enumerate(backup)], False) if backup else None
        )
        if self.backup is not None:
            self.primary.single = False
        self.rng = rng if rng is not None else random.Random()

    @property
    def peers(self) -> list[Peer]:
        """Every peer, primaries first (for status output)."""
        return self.primary.peers + (self.backup.peers if self.backup else [])

    def peer(self, name: str) -> Peer:
        return next(p for p in self.peers if p.name == name)

    def _list(self, peer: Peer) -> PeerList:
        return self.backup if peer.backup and self.backup is not None else self.primary

    def set_down(self, name: str, down: bool) -> None:
        """Administratively take a peer out of (or back into) rotation, like the config's
        `down` flag (its weight still counts for the hash methods; `tries` follows it)."""
        peer = self.peer(name)
        peer.admin_down = down
        peer.down = down or peer.hc_down
        plist = self._list(peer)
        plist.tries = sum(1 for p in plist.peers if not p.admin_down)

    def set_health(self, name: str, healthy: bool, now: float, *, ramp: bool = True) -> bool:
        """The active health check's verdict on a peer; True when it changed. A peer coming
        back starts its slow-start ramp (if it has one and `ramp`; not for the first pass of
        a `mandatory` check at start-up). `tries` is not changed: like nginx Plus it counts
        configured peers; unhealthy ones are skipped like failed ones."""
        peer = self.peer(name)
        if peer.hc_down == (not healthy):
            return False
        peer.hc_down = not healthy
        peer.down = peer.admin_down or peer.hc_down
        if healthy and ramp:
            self.start_ramp(name, now)
        return True

    def start_ramp(self, name: str, now: float) -> None:
        """Start (or restart) the slow-start ramp of a peer, e.g. one a reload added."""
        peer = self.peer(name)
        if not peer.slow_start:
            return
        if not peer.ramp_until:
            self._list(peer).ramping += 1
        peer.ramp_until = now + peer.slow_start

    def weight_now(self, name: str, now: float) -> float:
        """The weight a peer balances with at `now` (0 when down; ramped while slow-starting)."""
        peer = self.peer(name)
        return 0.0 if peer.down else peer.effective_weight * peer.ramp_factor(now)

    def begin(self, *, client: IPAddress | None = None, key: bytes | str = b"") -> UpstreamRequest:
        return UpstreamRequest(self)


class UpstreamRequest:
    """Per-request picker: round-robin with backup fallback (the base for all methods)."""

    def __init__(self, balancer: UpstreamBalancer) -> None:
        self.balancer = balancer
        self.peers = balancer.primary
        self.tried: set[int] = set()
        self.tries = balancer.primary.tries + (balancer.backup.tries if balancer.backup else 0)
        self.current: Peer | None = None
        self.clock = 0.0  # the un-truncated `now` of get(), for slow-start ramps

    # -- nginx peer.get ----------------------------------------------------------------
    def get(self, now: float) -> Peer | None:
        """Choose a peer (its `conns` goes up) or None when no upstream is live."""
        self.clock = now
        return self._get_rr(int(now))

    def _found(self, peer: Peer, now: int) -> Peer:
        self.current = peer
        self.tried.add(peer.index)
        if now - peer.checked > peer.fail_timeout:
            peer.checked = now
        peer.conns += 1
        return peer

    def _get_rr(self, now: int) -> Peer | None:
        peers = self.peers
        if peers.single:
            peer = peers.peers[0]
            if not peer.down and not peer.full():
                self.current = peer
                peer.conns += 1
                return peer
        else:
            best = self._swrr(now)
            if best is not None:
                return self._found(best, now)
        return self._failed(now, self._get_rr)

    def _failed(self, now: int, retry: _Getter) -> Peer | None:
        peers = self.peers
        backup = self.balancer.backup
        if backup is not None and peers is not backup:
            self.peers = backup
            self.tried.clear()
            peer = retry(now)
            if peer is not None:
                return peer
        return None

    def _swrr(self, now: int, accept: _Filter | None = None) -> Peer | None:
        """One smooth-weighted round over the eligible peers (the hot path: kept inline)."""
        best: Peer | None = None
        best_cw: float = 0
        total: float = 0
        ended: list[Peer] | None = None
        tried = self.tried
        for peer in self.peers.peers:
            if peer.down or (tried and peer.index in tried):
                continue
            if (
                peer.max_fails
                and peer.fails >= peer.max_fails
                and now - peer.checked <= peer.fail_timeout
            ):
                continue
            if peer.max_conns and peer.conns >= peer.max_conns:
                continue
            if accept is not None and not accept(peer):
                continue
            ew: float = peer.effective_weight
            if ew < peer.weight:
                peer.effective_weight += 1
            if peer.ramp_until:
                f = peer.ramp_factor(self.clock)
                if f < 1.0:
                    ew *= f
                else:
                    ended = [*(ended or ()), peer]
            cw = peer.current_weight + ew
            peer.current_weight = cw
            total += ew
            if best is None or cw > best_cw:
                best, best_cw = peer, cw
        if best is not None:
            best.current_weight -= total
        if ended:
            for peer in ended:
                self.peers.end_ramp(peer)
        return best

    # -- nginx peer.free ---------------------------------------------------------------
    def free(self, peer: Peer, now: float, failed: bool = False) -> None:
        """The attempt on `peer` ended; `failed` per proxy_next_upstream's error classes."""
        t = int(now)
        single = self.peers.single and peer in self.peers.peers
        if single:
            peer.conns -= 1
            self.tries = 0
            return
        if failed:
            peer.fails += 1
            peer.accessed = t
            peer.checked = t
            if peer.max_fails:
                peer.effective_weight -= peer.weight // peer.max_fails
            peer.effective_weight = max(peer.effective_weight, 0)
        elif peer.accessed < peer.checked:
            if peer.slow_start and peer.max_fails and peer.fails >= peer.max_fails:
                self.balancer.start_ramp(peer.name, now)  # back after being disabled
            peer.fails = 0
        peer.conns -= 1
        if self.tries:
            self.tries -= 1


class LeastConnRequest(UpstreamRequest):
    """least_conn: fewest conns/weight (cross-multiplied); ties broken by SWRR among them."""

    def get(self, now: float) -> Peer | None:
        self.clock = now
        return self._get_lc(int(now))

    def _get_lc(self, now: int) -> Peer | None:
        if self.peers.single:
            return self._get_rr(now)
        if self.peers.ramping:
            return self._get_lc_ramped(now)
        best: Peer | None = None
        many = False
        tried = self.tried
        for peer in self.peers.peers:
            if peer.down or (tried and peer.index in tried):
                continue
            if (
                peer.max_fails
                and peer.fails >= peer.max_fails
                and now - peer.checked <= peer.fail_timeout
            ):
                continue
            if peer.max_conns and peer.conns >= peer.max_conns:
                continue
            if best is None:
                best, many = peer, False
                continue
            lhs, rhs = peer.conns * best.weight, best.conns * peer.weight
            if lhs < rhs:
                best, many = peer, False
            elif lhs == rhs:
                many = True
        if best is None:
            return self._failed(now, self._get_lc)
        if many:
            lead = best
            tied = self._swrr(
                now,
                lambda p: p.index >= lead.index and p.conns * lead.weight == lead.conns * p.weight,
            )
            best = tied if tied is not None else best
        return self._found(best, now)

    def _get_lc_ramped(self, now: int) -> Peer | None:
        """least_conn while a peer slow-starts: fewest conns per ramped weight."""
        scores: dict[int, float] = {}
        for peer in self.peers.peers:
            if peer.index in self.tried or not peer.eligible(now):
                continue
            w = max(peer.weight * peer.ramp_factor(self.clock), 1e-3)
            scores[peer.index] = peer.conns / w
        if not scores:
            return self._failed(now, self._get_lc)
        low = min(scores.values())
        tied = {i for i, s in scores.items() if s == low}
        best = self._swrr(now, lambda p: p.index in tied)
        if best is None:  # pragma: no cover - tied is never empty
            return self._failed(now, self._get_lc)
        return self._found(best, now)


class LeastConnBalancer(UpstreamBalancer):
    method = "least_conn"

    def begin(self, *, client: IPAddress | None = None, key: bytes | str = b"") -> UpstreamRequest:
        return LeastConnRequest(self)


def _peek_random(ranges: list[int], total: int, rng: random.Random) -> int:
    """Weighted random index: x in [0, total) against cumulative weights."""
    return bisect.bisect_right(ranges, rng.randrange(total))


class RandomRequest(UpstreamRequest):
    """`random`: weighted random over all primary peers, 20 misses then round-robin."""

    balancer: RandomBalancer

    def __init__(self, balancer: RandomBalancer) -> None:
        super().__init__(balancer)
        self.hash_tries = 0

    def get(self, now: float) -> Peer | None:
        t = int(now)
        peers = self.peers.peers
        if self.peers.single:
            return self._get_rr(t)
        while self.hash_tries <= HASH_MAX_TRIES:
            peer = peers[_peek_random(self.balancer.ranges, self.peers.total_weight, self._rng)]
            if peer.index not in self.tried and peer.eligible(t):
                return self._found(peer, t)
            self.hash_tries += 1
        return self._get_rr(t)

    @property
    def _rng(self) -> random.Random:
        return self.balancer.rng


class RandomTwoRequest(RandomRequest):
    """`random two [least_conn]`: two distinct eligible draws, fewer conns/weight wins
    (on a tie the second draw is kept)."""

    def get(self, now: float) -> Peer | None:
        t = int(now)
        peers = self.peers.peers
        if len(peers) < 2:
            return self._get_rr(t)
        prev: Peer | None = None
        while self.hash_tries <= HASH_MAX_TRIES:
            peer = peers[_peek_random(self.balancer.ranges, self.peers.total_weight, self._rng)]
            if peer is not prev and peer.index not in self.tried and peer.eligible(t):
                if prev is not None:
                    if peer.conns * prev.weight > prev.conns * peer.weight:
                        peer = prev
                    return self._found(peer, t)
                prev = peer
            self.hash_tries += 1
        return self._get_rr(t)


class RandomBalancer(UpstreamBalancer):
    method = "random"
    allows_backup = False
    two = False

    def __init__(self, servers: Sequence[UpstreamServer], *, rng: random.Random | None = None):
        super().__init__(servers, rng=rng)
        self.ranges: list[int] = []
        acc = 0
        for p in self.primary.peers:
            acc += p.weight
            self.ranges.append(acc)

    def begin(self, *, client: IPAddress | None = None, key: bytes | str = b"") -> UpstreamRequest:
        return RandomTwoRequest(self) if self.two else RandomRequest(self)


class RandomTwoBalancer(RandomBalancer):
    method = "random_two"
    two = True
