"""IPVS (LVS) schedulers as pure objects: rr, wrr, lc, wlc, sed, nq, fo, ovf, twos, lblc, lblcr.

Each scheduler follows the Linux kernel's `net/netfilter/ipvs/ip_vs_<name>.c` behaviour (read
for facts, not copied): the destination list is walked in configuration order, a weight of 0
means quiesced (never picked for a new connection), `overloaded` mirrors IP_VS_DEST_F_OVERLOAD
(upper threshold reached), and the connection-count family uses the kernel's overhead
`active * 256 + inactive` (sed/nq: `active + 1`) compared by cross-multiplication, so ties go
to the first destination in list order. The hash schedulers (sh, dh, mh) live in
`lvs_hash.py`; persistence lives in `persistence.py`; `LVS_SCHEDULERS` in `__init__` names them all.

Schedulers never touch sockets or clocks: `pick(servers, flow)` gets the current destination
list and a `Flow` (addresses, ports, and `now` in seconds for the table-keeping ones).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

IPAddress = IPv4Address | IPv6Address

#: IP_VS lblc/lblcr default expiration of an idle destination-address entry (24 h).
LBLC_DEFAULT_EXPIRATION = 24 * 60 * 60.0
_ANY4 = IPv4Address(0)


@dataclass(frozen=True, slots=True)
class RealServer:
    """One IPVS destination as a scheduler sees it.

    `key` identifies it (e.g. "10.0.0.1:80"); `active`/`inactive` are the IPVS connection
    counters; `overloaded` is the kernel's overload flag (u_threshold reached).
    """

    key: str
    weight: int = 1
    active: int = 0
    inactive: int = 0
    overloaded: bool = False

    @property
    def overhead(self) -> int:
        """ip_vs_dest_conn_overhead(): active connections dominate idle ones 256:1."""
        return self.active * 256 + self.inactive

    @property
    def usable(self) -> bool:
        """Eligible for a new connection: weight > 0 and not overloaded."""
        return self.weight > 0 and not self.overloaded


@dataclass(frozen=True, slots=True)
class Flow:
    """What a scheduler may look at for one new connection."""

    src: IPAddress = _ANY4
    sport: int = 0
    dst: IPAddress = _ANY4
    dport: int = 0
    now: float = 0.0


NO_FLOW = Flow()


class Scheduler:
    """Base: `pick` returns the chosen RealServer or None ("no destination available")."""

    name = ""

    def pick(self, servers: Sequence[RealServer], flow: Flow = NO_FLOW) -> RealServer | None:
        raise NotImplementedError


def _signature(servers: Sequence[RealServer]) -> tuple[tuple[str, int], ...]:
    return tuple((s.key, s.weight) for s in servers)


# ---------------------------------------------------------------------------- rr / wrr


class RoundRobin(Scheduler):
    """ip_vs_rr: continue after the last chosen destination, skip weight 0 and overloaded."""

    name = "rr"

    def __init__(self) -> None:
        self._last_key: str | None = None
        self._last_index = -1

    def pick(self, servers: Sequence[RealServer], flow: Flow = NO_FLOW) -> RealServer | None:
        n = len(servers)
        if n == 0:
            return None
        start = -1
        if self._last_key is not None:
            keys = [s.key for s in servers]
            if self._last_key in keys:
                start = keys.index(self._last_key)
            else:
                # The kernel moves its cursor to the previous list entry when the
                # destination it pointed at is deleted.
                start = min(self._last_index, n) - 1
        for step in range(1, n + 1):
            i = (start + step) % n
            if servers[i].usable:
                self._last_key = servers[i].key
                self._last_index = i
                return servers[i]
        return None


class WeightedRoundRobin(Scheduler):
    """ip_vs_wrr: the gcd / max-weight / current-weight walk (interleaved, not smooth).

    State is (cursor, cw, mw, di) exactly as the kernel keeps it; a change in the list or in
    any weight runs the kernel's dest_changed adjustment before the next pick.
    """

    name = "wrr"

    def __init__(self) -> None:
        self._sig: tuple[tuple[str, int], ...] | None = None
        self._cl = -1  # -1 is the list head
        self._cw = 0
        self._mw = 0
        self._di = 1

    def _recompute(self, servers: Sequence[RealServer], first: bool) -> None:
        g = 0
        for s in servers:
            if s.weight > 0:
                g = math.gcd(g, s.weight)
        self._di = g or 1
        max_weight = max((s.weight for s in servers), default=0)
        self._mw = max_weight - (self._di - 1)
        self._cl = -1
        if first or self._cw > self._mw or self._cw == 0:
            self._cw = self._mw
        elif self._di > 1:
            self._cw = (self._cw // self._di) * self._di + 1

    def pick(self, servers: Sequence[RealServer], flow: Flow = NO_FLOW) -> RealServer | None:
        sig = _signature(servers)
        if sig != self._sig:
            self._recompute(servers, first=self._sig is None)
            self._sig = sig
        if self._mw <= 0:
            return None
        n = len(servers)
        last = self._cl
        dest = last
        stop: int | None = None
        last_pass = restarted = False
        while True:
            for i in range(dest + 1, n):
                s = servers[i]
                if not s.overloaded and s.weight >= self._cw:
                    self._cl = i
                    return s
                if i == stop:
                    self._cl = i
                    return None
            dest = -1
            self._cw -= self._di
            if self._cw <= 0:
                self._cw = self._mw
                if last_pass or last == -1:
                    self._cl = -1
                    return None
                restarted = True
            last_pass = self._cw <= self._di
            if last_pass and restarted and last != -1:
                stop = last


# ----------------------------------------------------------------- connection count family


def _weighted_least(servers: Sequence[RealServer], sed: bool = False) -> RealServer | None:
    """First usable destination, then replace it while loh*dw > doh*lw (kernel wlc/sed)."""
    least: RealServer | None = None
    loh = 0
    for s in servers:
        if s.overloaded:
            continue
        doh = s.active + 1 if sed else s.overhead
        if least is None:
            if s.weight > 0:
                least, loh = s, doh
            continue
        if loh * s.weight > doh * least.weight:
            least, loh = s, doh
    return least


class LeastConnection(Scheduler):
    """ip_vs_lc: the smallest overhead; weights only matter as 0 = quiesced."""

    name = "lc"

    def pick(self, servers: Sequence[RealServer], flow: Flow = NO_FLOW) -> RealServer | None:
        least: RealServer | None = None
        for s in servers:
            if not s.usable:
                continue
            if least is None or s.overhead < least.overhead:
                least = s
        return least


class WeightedLeastConnection(Scheduler):
    """ip_vs_wlc (the keepalived default): smallest overhead / weight."""

    name = "wlc"

    def pick(self, servers: Sequence[RealServer], flow: Flow = NO_FLOW) -> RealServer | None:
        return _weighted_least(servers)


class ShortestExpectedDelay(Scheduler):
    """ip_vs_sed: smallest (active + 1) / weight."""

    name = "sed"

    def pick(self, servers: Sequence[RealServer], flow: Flow = NO_FLOW) -> RealServer | None:
        return _weighted_least(servers, sed=True)


class NeverQueue(Scheduler):
    """ip_vs_nq: the first idle usable destination, else sed."""

    name = "nq"

    def pick(self, servers: Sequence[RealServer], flow: Flow = NO_FLOW) -> RealServer | None:
        least: RealServer | None = None
        loh = 0
        for s in servers:
            if not s.usable:
                continue
            doh = s.active + 1
            if s.active == 0:
                return s
            if least is None or loh * s.weight > doh * least.weight:
                least, loh = s, doh
        return least


class WeightedFailover(Scheduler):
    """ip_vs_fo: the usable destination with the highest weight (first on ties)."""

    name = "fo"

    def pick(self, servers: Sequence[RealServer], flow: Flow = NO_FLOW) -> RealServer | None:
        best: RealServer | None = None
        for s in servers:
            if s.usable and (best is None or s.weight > best.weight):
                best = s
        return best


class WeightedOverflow(Scheduler):
    """ip_vs_ovf: highest weight among destinations whose active count does not exceed it."""

    name = "ovf"

    def pick(self, servers: Sequence[RealServer], flow: Flow = NO_FLOW) -> RealServer | None:
        best: RealServer | None = None
        for s in servers:
            if not s.usable or s.active > s.weight:
                continue
            if best is None or s.weight > best.weight:
                best = s
        return best


class WeightedTwoChoices(Scheduler):
    """ip_vs_twos: two weighted random draws, keep the one with the lower overhead/weight."""

    name = "twos"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random(0)

    def pick(self, servers: Sequence[RealServer], flow: Flow = NO_FLOW) -> RealServer | None:
        usable = [s for s in servers if s.usable]
        if not usable:
            return None
        total = sum(s.weight for s in usable) + 1
        r1 = self._rng.randrange(total)
        r2 = self._rng.randrange(total)
        c1: RealServer | None = None
        c2: RealServer | None = None
        for s in usable:
            r1 -= s.weight
            r2 -= s.weight
            if r1 <= 0 and c1 is None:
                c1 = s
            if r2 <= 0 and c2 is None:
                c2 = s
            if c1 is not None and c2 is not None:
                break
        # A draw of exactly `total - 1` can fall past the last weight: the kernel then keeps
        # the last usable destination it saw.
        c1 = c1 or usable[-1]
        c2 = c2 or usable[-1]
        if c2.weight * c1.overhead > c1.weight * c2.overhead:
            return c2
        return c1


# ------------------------------------------------------------------------ lblc / lblcr


def _lblc_overloaded(dest: RealServer, servers: Sequence[RealServer]) -> bool:
    """More active connections than weight while some destination is under half load."""
    if dest.active > dest.weight:
        return any(d.active * 2 < d.weight for d in servers)
    return False


@dataclass(slots=True)
class _LblcEntry:
    key: str
    lastuse: float


class LocalityLeastConnection(Scheduler):
    """ip_vs_lblc: remember destination IP -> server; reschedule (wlc) when it is unusable
    or overloaded relative to a half-loaded peer. Entries idle for `expiration` seconds go."""

    name = "lblc"

    def __init__(self, expiration: float = LBLC_DEFAULT_EXPIRATION) -> None:
        self.expiration = expiration
        self._table: dict[IPAddress, _LblcEntry] = {}

    def __len__(self) -> int:
        return len(self._table)

    def expire(self, now: float) -> int:
        """Drop entries not used for `expiration` seconds; returns how many went."""
        stale = [a for a, e in self._table.items() if now - e.lastuse >= self.expiration]
        for a in stale:
            del self._table[a]
        return len(stale)

    def pick(self, servers: Sequence[RealServer], flow: Flow = NO_FLOW) -> RealServer | None:
        en = self._table.get(flow.dst)
        if en is not None:
            en.lastuse = flow.now
            dest = next((s for s in servers if s.key == en.key), None)
            if dest is not None and dest.weight > 0 and not _lblc_overloaded(dest, servers):
                return dest
        dest = _weighted_least(servers)
        if dest is None:
            return None
        if en is None:
            self._table[flow.dst] = _LblcEntry(dest.key, flow.now)
        else:
            en.key = dest.key
        return dest


@dataclass(slots=True)
class _DestSet:
    keys: list[str] = field(default_factory=list)  # newest first, as the kernel list_add()s
    lastmod: float = 0.0
    lastuse: float = 0.0


class LocalityLeastConnectionReplicated(Scheduler):
    """ip_vs_lblcr: destination IP -> a *set* of servers. Use the least loaded member; when it
    is overloaded, add the wlc choice to the set. A set with more than one member that was not
    modified for `expiration` seconds loses its most loaded member."""

    name = "lblcr"

    def __init__(self, expiration: float = LBLC_DEFAULT_EXPIRATION) -> None:
        self.expiration = expiration
        self._table: dict[IPAddress, _DestSet] = {}

    def members(self, dst: IPAddress) -> tuple[str, ...]:
        en = self._table.get(dst)
        return tuple(en.keys) if en else ()

    def expire(self, now: float) -> int:
        stale = [a for a, e in self._table.items() if now - e.lastuse >= self.expiration]
        for a in stale:
            del self._table[a]
        return len(stale)

    @staticmethod
    def _set_min(members: Sequence[RealServer]) -> RealServer | None:
        least: RealServer | None = None
        loh = 0
        for s in members:
            if s.overloaded:
                continue
            if least is None:
                if s.weight > 0:
                    least, loh = s, s.overhead
                continue
            if loh * s.weight > s.overhead * least.weight:
                least, loh = s, s.overhead
        return least

    @staticmethod
    def _set_max(members: Sequence[RealServer]) -> RealServer | None:
        most: RealServer | None = None
        moh = 0
        for s in members:
            if most is None:
                if s.weight > 0:
                    most, moh = s, s.overhead
                continue
            if moh * s.weight < s.overhead * most.weight and s.weight > 0:
                most, moh = s, s.overhead
        return most

    def pick(self, servers: Sequence[RealServer], flow: Flow = NO_FLOW) -> RealServer | None:
        by_key = {s.key: s for s in servers}
        en = self._table.get(flow.dst)
        if en is not None:
            en.lastuse = flow.now
            members = [by_key[k] for k in en.keys if k in by_key]
            dest = self._set_min(members)
            if len(en.keys) > 1 and flow.now > en.lastmod + self.expiration:
                victim = self._set_max(members)
                if victim is not None:
                    en.keys.remove(victim.key)
                    en.lastmod = flow.now
            if dest is not None and not _lblc_overloaded(dest, servers):
                return dest
            dest = _weighted_least(servers)
            if dest is None:
                return None
            if dest.key not in en.keys:
                en.keys.insert(0, dest.key)
                en.lastmod = flow.now
            return dest
        dest = _weighted_least(servers)
        if dest is None:
            return None
        self._table[flow.dst] = _DestSet([dest.key], flow.now, flow.now)
        return dest
