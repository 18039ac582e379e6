"""Discrete-event simulator: N VRRP machines on one fake L2 link, under fake time.

Owns the fake link (loss, delay, jitter, partitions), node crashes/restarts/graceful stops
and a timeline of state changes and VIP ownership. Adverts go through the real codec
(``packet.encode``/``decode``) so the simulator also exercises the wire format. Time jumps
from one deadline or delivery to the next: nothing sleeps, a 60 s scenario runs in
milliseconds. Randomness comes from an injected object with ``random()`` (e.g.
``random.Random(seed)``), so runs are reproducible.

Used by tests/sim (property tests: exactly one master per VRID after the link heals;
preempt/nopreempt) and usable by benchmarks to compare timer policies.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from hakeeper.vrrp.machine import (
    Action,
    AddVips,
    RemoveVips,
    SendAdvert,
    SendGratuitous,
    State,
    StateChanged,
    VrrpMachine,
    VrrpParams,
)
from hakeeper.vrrp.packet import MCAST_GROUP4, MCAST_GROUP6, Advert, decode, encode


class Rng(Protocol):
    def random(self) -> float: ...


@dataclass(slots=True)
class Link:
    """The shared segment: per-delivery loss probability, base delay and uniform jitter."""

    loss: float = 0.0
    delay: float = 0.0005
    jitter: float = 0.0
    partitions: tuple[frozenset[str], ...] = ()  # empty: everybody hears everybody

    def connected(self, a: str, b: str) -> bool:
        if not self.partitions:
            return True
        return any(a in group and b in group for group in self.partitions)


@dataclass(frozen=True, slots=True)
class Event:
    time: float
    node: str
    vrid: int
    what: str  # "state" | "advert" | "garp" | "vips+" | "vips-"
    detail: str


@dataclass(slots=True)
class Node:
    """One router: its instances (one machine per VRID) and what it holds."""

    name: str
    machines: dict[int, VrrpMachine]
    alive: bool = True
    vips: dict[int, bool] = field(default_factory=dict)  # vrid -> VIPs installed


class Simulator:
    """N nodes on one link. Build with params per node; then ``start`` and ``run_until``."""

    def __init__(
        self, nodes: dict[str, Sequence[VrrpParams]], rng: Rng, link: Link | None = None
    ) -> None:
        self.rng = rng
        self.link = link or Link()
        self.now = 0.0
        self.nodes: dict[str, Node] = {
            name: Node(name, {p.vrid: VrrpMachine(p) for p in params})
            for name, params in nodes.items()
        }
        self.events: list[Event] = []
        self.sent = 0
        self.lost = 0
        self._queue: list[tuple[float, int, str, bytes, Advert]] = []
        self._seq = itertools.count()

    # ---------------------------------------------------------------- control

    def start(self, names: Iterable[str] | None = None) -> None:
        for name in names if names is not None else list(self.nodes):
            node = self.nodes[name]
            node.alive = True
            for vrid, m in node.machines.items():
                self._apply(node, vrid, m.start(self.now))

    def crash(self, name: str) -> None:
        """Kill -9 of the daemon on a lost node: no goodbye, VIPs vanish with the node."""
        node = self.nodes[name]
        node.alive = False
        for vrid, m in node.machines.items():
            node.machines[vrid] = VrrpMachine(m.params)
            node.vips[vrid] = False

    def stop(self, name: str) -> None:
        """Graceful stop (SIGTERM): masters send priority 0 and remove their VIPs."""
        node = self.nodes[name]
        for vrid, m in node.machines.items():
            self._apply(node, vrid, m.shutdown(self.now))
            node.machines[vrid] = VrrpMachine(m.params)
        node.alive = False

    def set_priority(self, name: str, vrid: int, priority: int) -> None:
        node = self.nodes[name]
        self._apply(node, vrid, node.machines[vrid].set_effective_priority(self.now, priority))

    def set_fault(self, name: str, vrid: int, faulted: bool, source: str = "interface") -> None:
        node = self.nodes[name]
        self._apply(node, vrid, node.machines[vrid].set_fault(self.now, faulted, source))

    def partition(self, *groups: Iterable[str]) -> None:
        self.link.partitions = tuple(frozenset(g) for g in groups)

    def heal(self) -> None:
        self.link.partitions = ()

    # ---------------------------------------------------------------- queries

    def machine(self, name: str, vrid: int) -> VrrpMachine:
        return self.nodes[name].machines[vrid]

    def masters(self, vrid: int) -> list[str]:
        return sorted(
            n.name
            for n in self.nodes.values()
            if n.alive and vrid in n.machines and n.machines[vrid].state is State.MASTER
        )

    def vip_holders(self, vrid: int) -> list[str]:
        return sorted(n.name for n in self.nodes.values() if n.alive and n.vips.get(vrid))

    def vrids(self) -> set[int]:
        return {vrid for n in self.nodes.values() for vrid in n.machines}

    def transitions(self, vrid: int | None = None) -> list[Event]:
        return [e for e in self.events if e.what == "state" and vrid in (None, e.vrid)]

    # ---------------------------------------------------------------- the clock

    def _next_time(self) -> float | None:
        times = [self._queue[0][0]] if self._queue else []
        for node in self.nodes.values():
            if not node.alive:
                continue
            for m in node.machines.values():
                d = m.next_deadline()
                if d is not None:
                    times.append(d)
        return min(times) if times else None

    def run_until(self, end: float, *, max_steps: int = 1_000_000) -> None:
        """Process deliveries and timers in time order up to ``end``, then set now = end."""
        for _ in range(max_steps):
            t = self._next_time()
            if t is None or t > end:
                self.now = max(self.now, end)
                return
            self.now = max(self.now, t)
            if self._queue and self._queue[0][0] <= self.now:
                _, _, dst, _raw, adv = heapq.heappop(self._queue)
                node = self.nodes[dst]
                if node.alive and adv.vrid in node.machines:
                    self._apply(node, adv.vrid, node.machines[adv.vrid].on_advert(self.now, adv))
                continue
            for node in self.nodes.values():
                if not node.alive:
                    continue
                for vrid, m in node.machines.items():
                    d = m.next_deadline()
                    if d is not None and d <= self.now:
                        self._apply(node, vrid, m.on_timer(self.now))
        raise RuntimeError("simulation did not reach the end time (event storm?)")

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    # ---------------------------------------------------------------- actions

    def _apply(self, node: Node, vrid: int, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, SendAdvert):
                self._broadcast(node, a.advert)
            elif isinstance(a, StateChanged):
                self._log(node, vrid, "state", f"{a.old}->{a.new} ({a.reason})")
            elif isinstance(a, AddVips):
                node.vips[vrid] = True
                self._log(node, vrid, "vips+", ",".join(map(str, a.vips)))
            elif isinstance(a, RemoveVips):
                node.vips[vrid] = False
                self._log(node, vrid, "vips-", ",".join(map(str, a.vips)))
            elif isinstance(a, SendGratuitous):
                self._log(node, vrid, "garp", f"{a.count}x {a.reason}")

    def _log(self, node: Node, vrid: int, what: str, detail: str) -> None:
        self.events.append(Event(self.now, node.name, vrid, what, detail))

    def _broadcast(self, sender: Node, adv: Advert) -> None:
        src = adv.source
        assert src is not None
        dst = MCAST_GROUP4 if src.version == 4 else MCAST_GROUP6
        raw = encode(adv, src=src, dst=dst)
        self.sent += 1
        self._log(sender, adv.vrid, "advert", str(adv.priority))
        for other in self.nodes.values():
            if other is sender or not self.link.connected(sender.name, other.name):
                continue
            if self.link.loss and self.rng.random() < self.link.loss:
                self.lost += 1
                continue
            decoded = decode(raw, src=src, dst=dst, ttl=255)
            if not isinstance(decoded, Advert):
                raise AssertionError(f"our own advert did not decode: {decoded}")
            at = self.now + self.link.delay + self.link.jitter * self.rng.random()
            heapq.heappush(self._queue, (at, next(self._seq), other.name, raw, decoded))
