"""The userspace L4 data plane: a TCP/UDP proxy on uvloop that runs every IPVS scheduler.

It plays the role IPVS plays for keepalived (LVS-NAT seen from the client: one listener per
virtual service, each new connection scheduled onto a real server). Behaviour follows IPVS
where it is observable: `lc/wlc/sed/nq/lblc/lblcr` see live per-server counts (`active` =
established both ways, `inactive` = connecting or half-closed, as IPVS counts ESTABLISHED vs
other TCP states; UDP flows are inactive, as `ipvsadm -L` shows them); a weight of 0 quiesces
a server (no new connections, existing ones continue); a removed server's connections run to
their end; `persistence_timeout`/`persistence_granularity` pin clients through
`balance.PersistenceTable`. A failed backend connect (refused or `connect_timeout`) counts
as a failed pick and the connection is scheduled again without that server, like
HAProxy's `redispatch`.

TCP relay: `relay.py` (raw non-blocking sockets on loop readers, flow control both ways,
half-close propagation). UDP relay: `userspace_udp.py`.

`UserspaceDataplane.apply(services)` is the reconcile step: listeners are opened, kept or
closed by service key; for a kept service the backend list, weights and scheduler are
swapped in place without touching established connections.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import ip_address
from typing import TYPE_CHECKING

from hakeeper.balance import LVS_SCHEDULERS, PersistenceTable, Persistent
from hakeeper.balance.lvs import (
    NO_FLOW,
    Flow,
    LocalityLeastConnection,
    LocalityLeastConnectionReplicated,
    RealServer,
    Scheduler,
    WeightedTwoChoices,
)
from hakeeper.balance.lvs_hash import MaglevHash, SourceHash
from hakeeper.dataplane.relay import TcpService, open_listener
from hakeeper.dataplane.userspace_udp import UdpService

if TYPE_CHECKING:
    from hakeeper.conf.model import VirtualServer

log = logging.getLogger(__name__)

#: Schedulers that look at the Flow (addresses, `now`); the others get NO_FLOW (cheaper).
FLOW_SCHEDULERS = frozenset({"sh", "dh", "mh", "lblc", "lblcr"})
#: Schedulers whose pick depends on live connection counts (the server list is rebuilt per pick).
COUNT_SCHEDULERS = frozenset({"lc", "wlc", "sed", "nq", "lblc", "lblcr", "ovf", "twos"})
#: Seconds between sweeps of expired persistence templates and lblc/lblcr entries.
SWEEP_INTERVAL = 10.0
#: IPVS' default UDP timeout (`ipvsadm --set`'s third value) for idle UDP flows.
UDP_IDLE_TIMEOUT = 300.0


# ------------------------------------------------------------------------------ desired state


@dataclass(frozen=True, slots=True)
class Backend:
    """One real server of a service: where to connect and its scheduler weight (0 = quiesced)."""

    host: str
    port: int
    weight: int = 1

    @property
    def key(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class L4Service:
    """One virtual service: listen on host:port/protocol and balance over `backends`."""

    host: str
    port: int
    protocol: str = "TCP"
    scheduler: str = "wlc"
    backends: tuple[Backend, ...] = ()
    sched_flags: tuple[str, ...] = ()
    persistence_timeout: float | None = None
    persistence_granularity: str | None = None
    connect_timeout: float = 5.0
    udp_idle_timeout: float = UDP_IDLE_TIMEOUT
    freebind: bool = True

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.protocol.upper(), self.host, self.port)


def service_from_model(
    vs: VirtualServer, weights: dict[str, int] | None = None, *, connect_timeout: float = 5.0
) -> L4Service:
    """A keepalived `virtual_server` (address form) as an L4Service.

    `weights` (backend key -> weight) overrides configured weights, e.g. 0 for servers the
    checkers took out; a real server without a port uses the virtual port.
    """
    if vs.address is None or vs.port is None:
        raise ValueError("the userspace data plane serves ip:port virtual servers only")
    backends = []
    for rs in vs.real_servers:
        b = Backend(str(rs.ip), rs.port if rs.port is not None else vs.port, rs.weight)
        if weights is not None and b.key in weights:
            b = Backend(b.host, b.port, weights[b.key])
        backends.append(b)
    return L4Service(
        host=str(vs.address),
        port=vs.port,
        protocol=vs.protocol.upper(),
        scheduler=vs.lvs_sched,
        backends=tuple(backends),
        sched_flags=vs.sched_flags,
        persistence_timeout=vs.persistence_timeout,
        persistence_granularity=vs.persistence_granularity,
        connect_timeout=connect_timeout,
    )


# ---------------------------------------------------------------------------- live counters


class BackendState:
    """Live state of one real server: the counts schedulers read, plus totals for status."""

    __slots__ = (
        "active",
        "addr",
        "bytes_in",
        "bytes_out",
        "connections",
        "failed",
        "inactive",
        "key",
        "removed",
        "weight",
    )

    def __init__(self, backend: Backend) -> None:
        self.addr = (backend.host, backend.port)
        self.key = backend.key
        self.weight = backend.weight
        self.active = 0
        self.inactive = 0
        self.connections = 0  # total scheduled onto it
        self.failed = 0  # connects that failed (refused, timeout)
        self.bytes_in = 0  # client -> backend
        self.bytes_out = 0  # backend -> client
        self.removed = False


@dataclass(frozen=True, slots=True)
class BackendStats:
    key: str
    weight: int
    active: int
    inactive: int
    connections: int
    failed: int
    bytes_in: int
    bytes_out: int
    removed: bool


@dataclass(frozen=True, slots=True)
class ServiceStats:
    key: tuple[str, str, int]
    scheduler: str
    sockname: tuple[str, int]
    backends: tuple[BackendStats, ...]
    no_backend: int
    persistence_templates: int


def make_scheduler(spec: L4Service, rng: random.Random) -> Scheduler:
    """The IPVS scheduler for `spec` (with sched_flags), wrapped for persistence if configured."""
    name = spec.scheduler
    flags = set(spec.sched_flags)
    inner: Scheduler
    if name == "sh":
        inner = SourceHash(
            port="sh-port" in flags or "flag-2" in flags,
            fallback="sh-fallback" in flags or "flag-1" in flags,
        )
    elif name == "mh":
        inner = MaglevHash(
            port="mh-port" in flags or "flag-2" in flags,
            fallback="mh-fallback" in flags or "flag-1" in flags,
        )
    elif name == "twos":
        inner = WeightedTwoChoices(rng)
    else:
        try:
            inner = LVS_SCHEDULERS[name]()
        except KeyError:
            raise ValueError(f"unknown LVS scheduler {name!r}") from None
    if spec.persistence_timeout:
        table = PersistenceTable(spec.persistence_timeout, spec.persistence_granularity)
        return Persistent(inner, table)
    return inner


class ServiceCore:
    """Scheduling state of one service, shared by its TCP and UDP relays.

    Keeps the ordered BackendState list the scheduler sees, rebuilt into `RealServer`s per
    pick only for count-based schedulers (the others reuse a cached list).
    """

    def __init__(self, spec: L4Service, rng: random.Random) -> None:
        self.rng = rng
        self.spec = spec
        self.by_key: dict[str, BackendState] = {}
        self.order: list[BackendState] = []
        self.no_backend = 0
        self.scheduler: Scheduler = make_scheduler(spec, rng)
        self.persistence: PersistenceTable | None = None
        self._configure(spec, first=True)

    def _configure(self, spec: L4Service, first: bool) -> None:
        if not first and (
            spec.scheduler != self.spec.scheduler
            or spec.sched_flags != self.spec.sched_flags
            or spec.persistence_timeout != self.spec.persistence_timeout
            or spec.persistence_granularity != self.spec.persistence_granularity
        ):
            self.scheduler = make_scheduler(spec, self.rng)
        sched = self.scheduler
        self.persistence = sched.table if isinstance(sched, Persistent) else None
        self.spec = spec
        self.needs_counts = spec.scheduler in COUNT_SCHEDULERS
        self.needs_flow = spec.scheduler in FLOW_SCHEDULERS or self.persistence is not None
        try:
            self.vip = ip_address(spec.host)
        except ValueError:
            self.vip = ip_address("0.0.0.0")
        order: list[BackendState] = []
        keep: dict[str, BackendState] = {}
        for b in spec.backends:
            st = self.by_key.get(b.key)
            if st is None:
                st = BackendState(b)
            st.weight = b.weight
            st.removed = False
            order.append(st)
            keep[b.key] = st
        for key, st in self.by_key.items():
            if key not in keep:
                st.removed = True  # live connections keep their reference and finish
        self.by_key = keep
        self.order = order
        self._cached: list[RealServer] | None = None

    def update(self, spec: L4Service) -> None:
        self._configure(spec, first=False)

    #: True in subclasses that implement the two hooks below (kept off the IPVS hot path).
    hooks = False

    def released(self, backend: BackendState, failed: bool, now: float) -> None:
        """Hook: a connection scheduled onto `backend` ended, or (`failed`) its connect
        did; nginx's passive health counts these (`hakeeper.proxy.stream`)."""

    def may_retry(self, tries: int, started: float, now: float) -> bool:
        """Hook: after `tries` failed connects since `started`, may another server be
        tried? (nginx's proxy_next_upstream, _tries, _timeout)"""
        return True

    def servers(self, exclude: frozenset[str] | set[str] = frozenset()) -> list[RealServer]:
        if not self.needs_counts and not exclude:
            if self._cached is None:
                self._cached = [RealServer(s.key, s.weight) for s in self.order]
            return self._cached
        return [
            RealServer(s.key, s.weight, s.active, s.inactive)
            for s in self.order
            if s.key not in exclude
        ]

    def pick(
        self,
        client: tuple[str, int] | None,
        now: float,
        exclude: frozenset[str] | set[str] = frozenset(),
    ) -> BackendState | None:
        """Schedule one new connection/flow from `client`; None when no server is usable."""
        flow = NO_FLOW
        if self.needs_flow and client is not None:
            try:
                src = ip_address(client[0].partition("%")[0])
            except ValueError:
                src = self.vip
            flow = Flow(src, client[1], self.vip, self.spec.port, now)
        chosen = self.scheduler.pick(self.servers(exclude), flow)
        if chosen is None:
            self.no_backend += 1
            return None
        st = self.by_key[chosen.key]
        st.connections += 1
        return st

    def expire(self, now: float) -> int:
        """Drop stale persistence templates and locality entries (bounded memory)."""
        gone = self.persistence.expire(now) if self.persistence is not None else 0
        sched = self.scheduler.inner if isinstance(self.scheduler, Persistent) else self.scheduler
        if isinstance(sched, LocalityLeastConnection | LocalityLeastConnectionReplicated):
            gone += sched.expire(now)
        return gone

    def forget_pin(self, client: tuple[str, int]) -> None:
        """Drop the persistence template after its pinned server failed to connect."""
        table = self.persistence
        if table is None:
            return
        try:
            src = ip_address(client[0].partition("%")[0])
        except ValueError:
            return
        table._templates.pop(table.key(src, 0), None)

    def stats(self) -> tuple[BackendStats, ...]:
        return tuple(
            BackendStats(
                s.key,
                s.weight,
                s.active,
                s.inactive,
                s.connections,
                s.failed,
                s.bytes_in,
                s.bytes_out,
                s.removed,
            )
            for s in self.order
        )


# ---------------------------------------------------------------------------- the data plane


class UserspaceDataplane:
    """All userspace virtual services of one process; `apply()` reconciles to a desired set."""

    name = "userspace"

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None = None, *, rng: random.Random | None = None
    ) -> None:
        self._loop = loop
        self._rng = rng if rng is not None else random.Random()
        self.services: dict[tuple[str, str, int], ServiceCore] = {}
        self._tcp: dict[tuple[str, str, int], TcpService] = {}
        self._udp: dict[tuple[str, str, int], UdpService] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        #: services whose listener could not be opened at the last apply(), with the reason
        self.errors: dict[tuple[str, str, int], str] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def apply(self, services: Iterable[L4Service]) -> None:
        """Make the running services match `services` (by key); keep connections alive.

        A listener that cannot be opened is recorded in `errors` (and retried by the next
        call) instead of failing the others; an unknown protocol or scheduler raises.
        """
        wanted = {s.key: s for s in services}
        for key in [k for k in self.errors if k not in wanted]:
            del self.errors[key]
        for key in [k for k in self.services if k not in wanted]:
            await self._remove(key)
        for key, spec in wanted.items():
            if spec.protocol.upper() not in ("TCP", "UDP"):
                raise ValueError(f"unsupported protocol {spec.protocol!r}")
            core = self.services.get(key)
            if core is not None:
                core.update(spec)
                continue
            core = ServiceCore(spec, self._rng)
            try:
                if key[0] == "TCP":
                    tcp = TcpService(core, self.loop)
                    await tcp.start()
                    self._tcp[key] = tcp
                else:
                    udp = UdpService(core, self.loop)
                    await udp.start(open_listener(spec, socket.SOCK_DGRAM))
                    self._udp[key] = udp
            except OSError as e:
                # one unbindable address (in use, no such VIP without freebind) must not
                # stop the other services; the next apply() tries it again
                self.errors[key] = str(e)
                log.error("userspace %s %s:%d: cannot listen: %s", *key, e)
                continue
            self.errors.pop(key, None)
            self.services[key] = core
        if self._sweeper is None and self.services:
            self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep_tick)

    async def _remove(self, key: tuple[str, str, int], drop: bool = False) -> None:
        self.services.pop(key, None)
        tcp = self._tcp.pop(key, None)
        if tcp is not None:
            await tcp.stop(drop=drop)
        udp = self._udp.pop(key, None)
        if udp is not None:
            udp.stop()

    async def close(self) -> None:
        """Stop every listener and drop relayed connections (daemon exit)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for key in list(self.services):
            await self._remove(key, drop=True)

    def sweep(self) -> int:
        """Drop expired persistence templates and lblc/lblcr entries; returns how many."""
        now = self.loop.time()
        gone = 0
        for core in self.services.values():
            gone += core.expire(now)
        return gone

    def _sweep_tick(self) -> None:
        self.sweep()
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep_tick)

    def sockname(self, key: tuple[str, str, int]) -> tuple[str, int]:
        """Where a service's listener is bound (useful with port 0)."""
        if key in self._tcp:
            return self._tcp[key].sockname
        return self._udp[key].sockname

    def stats(self) -> list[ServiceStats]:
        out = []
        for key, core in self.services.items():
            table = core.persistence
            out.append(
                ServiceStats(
                    key,
                    core.spec.scheduler,
                    self.sockname(key),
                    core.stats(),
                    core.no_backend,
                    len(table) if table is not None else 0,
                )
            )
        return out


__all__ = [
    "Backend",
    "BackendState",
    "BackendStats",
    "L4Service",
    "ServiceCore",
    "ServiceStats",
    "UserspaceDataplane",
    "make_scheduler",
    "open_listener",
    "service_from_model",
]
