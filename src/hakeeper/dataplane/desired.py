"""Desired L4 data-plane state: services and weighted backends, from config + health pools.

Pure (no I/O). One `Service` per keepalived `virtual_server` (LVS semantics as ipvsadm(8)
and keepalived.conf(5) describe them): it matches one or more `Frontend`s (VIP:port, a
`virtual_server_group`'s address ranges and fwmarks, or a fwmark), balances with an LVS
scheduler name, optionally persists clients (`persistence_timeout`, granularity as a prefix
length) and forwards to `Backend`s (NAT/DR/TUN, weight; weight 0 = quiesced: no new
connections, existing and persistent ones stay, as IPVS does).

The backends come from the checker engine's pool per virtual server, `[(real server,
weight)]`; a virtual server with no pool entry gets every configured real server at its
configured weight (keepalived's start-up assumption without `alpha`). Pool entries may name a
real server by model object, by `(ip, port)` key or by "ip:port" text (sorry servers too).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from hakeeper.conf.model import (
    IPAddress,
    KeepalivedConfig,
    LvsMethod,
    RealServer,
    SorryServer,
    VirtualServer,
    VirtualServerGroup,
)

#: Most addresses one group range may expand to (bigger ranges are truncated with a note).
MAX_RANGE_ADDRESSES = 256
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}

ServiceKey = tuple[str, ...]
PoolEntry = tuple[object, int]
Pools = Mapping[object, Sequence[PoolEntry]]


@dataclass(frozen=True, slots=True)
class Frontend:
    """One thing a service matches: address + port (port None = every port) or a fwmark."""

    address: IPAddress | None = None
    port: int | None = None
    fwmark: int | None = None

    @property
    def family(self) -> int:
        return self.address.version if self.address is not None else 0


@dataclass(frozen=True, slots=True)
class Backend:
    """One real server as the data plane sees it. `port` None = keep the client's port."""

    address: IPAddress
    port: int | None
    weight: int
    method: str = "NAT"

    @property
    def key(self) -> str:
        return endpoint_text(self.address, self.port)

    @property
    def ident(self) -> tuple[IPAddress, int | None]:
        return (self.address, self.port)


@dataclass(frozen=True, slots=True)
class Service:
    """One virtual service: frontends, scheduling, persistence and its current backends."""

    key: ServiceKey
    name: str
    protocol: str = "tcp"
    family: int = 4
    frontends: tuple[Frontend, ...] = ()
    scheduler: str = "wlc"
    sched_flags: tuple[str, ...] = ()
    method: str = "NAT"
    persistence_timeout: int | None = None
    persistence_prefix: int | None = None
    ops: bool = False
    backends: tuple[Backend, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def settings(self) -> tuple[object, ...]:
        """Everything but the backends: a change here is an UpdateService."""
        return (
            self.protocol,
            self.family,
            self.frontends,
            self.scheduler,
            self.sched_flags,
            self.method,
            self.persistence_timeout,
            self.persistence_prefix,
            self.ops,
        )

    @property
    def persistent(self) -> bool:
        return bool(self.persistence_timeout)

    def backend(self, ident: tuple[IPAddress, int | None]) -> Backend | None:
        return next((b for b in self.backends if b.ident == ident), None)


@dataclass(frozen=True, slots=True)
class DesiredState:
    services: tuple[Service, ...] = ()

    def get(self, key: ServiceKey) -> Service | None:
        return next((s for s in self.services if s.key == key), None)

    @property
    def keys(self) -> tuple[ServiceKey, ...]:
        return tuple(s.key for s in self.services)


def endpoint_text(address: IPAddress, port: int | None) -> str:
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{host}:{port}" if port is not None else host


def parse_endpoint(text: str) -> tuple[IPAddress, int | None]:
    """ "a.b.c.d:port", "[v6]:port", "a.b.c.d", "a.b.c.d port" -> (address, port or None)."""
    text = text.strip()
    if " " in text:
        host, _, port = text.partition(" ")
        return ipaddress.ip_address(host), int(port) if port.strip() else None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return ipaddress.ip_address(host), int(rest[1:]) if rest.startswith(":") else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return ipaddress.ip_address(host), int(port)
    return ipaddress.ip_address(text), None


def prefix_of(granularity: str | None, family: int) -> int | None:
    """persistence_granularity (a netmask or prefix length) -> prefix length; None = host."""
    full = 32 if family == 4 else 128
    if granularity is None:
        return None
    g = granularity.strip().lstrip("/")
    n = int(g) if g.isdigit() else ipaddress.ip_network(f"0.0.0.0/{g}").prefixlen
    return None if n >= full else max(n, 0)


def _method(m: LvsMethod | None, default: str) -> str:
    return m.method.upper() if m is not None else default


def _frontends(
    vs: VirtualServer, groups: Mapping[str, VirtualServerGroup], notes: list[str]
) -> tuple[Frontend, ...]:
    if vs.group is not None:
        group = groups.get(vs.group)
        if group is None:
            notes.append(f"virtual_server_group {vs.group} is not defined")
            return ()
        out: list[Frontend] = []
        for e in group.entries:
            if e.fwmark is not None:
                out.append(Frontend(fwmark=e.fwmark))
                continue
            if e.first is None:
                continue
            last = e.last if e.last is not None else e.first
            first_i, last_i = int(e.first), int(last)
            if last_i - first_i + 1 > MAX_RANGE_ADDRESSES:
                notes.append(f"range {e.first}-{last} truncated to {MAX_RANGE_ADDRESSES}")
                last_i = first_i + MAX_RANGE_ADDRESSES - 1
            for i in range(first_i, last_i + 1):
                addr = ipaddress.ip_address(i) if e.first.version == 4 else ipaddress.IPv6Address(i)
                out.append(Frontend(address=addr, port=e.port or None))
        return tuple(out)
    if vs.fwmark is not None:
        return (Frontend(fwmark=vs.fwmark),)
    return (Frontend(address=vs.address, port=vs.port or None),)


def _family(vs: VirtualServer, frontends: Sequence[Frontend]) -> int:
    for f in frontends:
        if f.address is not None:
            return f.address.version
    if vs.ip_family in ("inet6", "ipv6"):
        return 6
    for rs in vs.real_servers:
        return rs.ip.version
    return 4


def _backend_from(obj: object, weight: int, vs: VirtualServer, default_method: str) -> Backend:
    """Turn one pool entry's server reference into a Backend (raises ValueError if unusable)."""
    if isinstance(obj, RealServer):
        return Backend(obj.ip, obj.port, weight, _method(obj.lvs_method, default_method))
    if isinstance(obj, SorryServer):
        return Backend(obj.ip, obj.port, weight, _method(obj.lvs_method, default_method))
    if isinstance(obj, tuple) and len(obj) == 2:
        addr, port = ipaddress.ip_address(str(obj[0])), obj[1]
        port = int(port) if port is not None else None
    elif isinstance(obj, str):
        addr, port = parse_endpoint(obj)
    else:
        raise ValueError(f"unusable pool entry {obj!r}")
    for rs in vs.real_servers:
        if rs.ip == addr and rs.port == port:
            return Backend(addr, port, weight, _method(rs.lvs_method, default_method))
    sorry = vs.sorry_server
    if sorry is not None and sorry.ip == addr and sorry.port == port:
        return Backend(addr, port, weight, _method(sorry.lvs_method, default_method))
    return Backend(addr, port, weight, default_method)


def service_from(
    vs: VirtualServer,
    pool: Sequence[PoolEntry] | None,
    groups: Mapping[str, VirtualServerGroup] | None = None,
) -> Service:
    """The desired Service for one virtual server given its health pool (None = all up)."""
    notes: list[str] = []
    frontends = _frontends(vs, groups or {}, notes)
    family = _family(vs, frontends)
    method = vs.lvs_method.method.upper()
    backends: list[Backend] = []
    seen: set[tuple[IPAddress, int | None]] = set()
    entries: Iterable[PoolEntry] = (
        pool if pool is not None else [(rs, rs.weight) for rs in vs.real_servers]
    )
    for obj, weight in entries:
        try:
            b = _backend_from(obj, max(int(weight), 0), vs, method)
        except (ValueError, TypeError) as exc:
            notes.append(f"pool entry dropped: {exc}")
            continue
        if b.address.version != family:
            notes.append(f"{b.key}: address family differs from the service's; dropped")
            continue
        if b.ident in seen:
            notes.append(f"{b.key}: listed twice; first kept")
            continue
        seen.add(b.ident)
        backends.append(b)
    return Service(
        key=vs.key,
        name=vs.label,
        protocol=PROTOCOLS.get(vs.protocol.upper(), vs.protocol.lower()),
        family=family,
        frontends=frontends,
        scheduler=vs.lvs_sched.lower(),
        sched_flags=tuple(vs.sched_flags),
        method=method,
        persistence_timeout=vs.persistence_timeout or None,
        persistence_prefix=prefix_of(vs.persistence_granularity, family)
        if vs.persistence_timeout
        else None,
        ops=vs.ops,
        backends=tuple(backends),
        notes=tuple(notes),
    )


def _pool_for(vs: VirtualServer, pools: Pools | None) -> Sequence[PoolEntry] | None:
    if pools is None:
        return None
    for k in (vs.key, vs.label):
        if k in pools:
            return pools[k]
    return None


ServiceCache = dict[ServiceKey, tuple[VirtualServer, object, object, "Service"]]


def desired_state(
    config: KeepalivedConfig | Sequence[VirtualServer],
    pools: Pools | None = None,
    cache: ServiceCache | None = None,
) -> DesiredState:
    """Desired state for every virtual server; `pools` keyed by VirtualServer.key or label.

    `cache` (owned by the caller, e.g. LvsService) keeps each virtual server's Service while
    its model, pool and groups are unchanged, so one pool change rebuilds one Service.
    """
    if isinstance(config, KeepalivedConfig):
        servers: Sequence[VirtualServer] = config.virtual_servers
        groups = {g.name: g for g in config.virtual_server_groups}
    else:
        servers, groups = config, {}
    out: list[Service] = []
    seen: set[ServiceKey] = set()
    for vs in servers:
        if vs.key in seen:  # keepalived refuses duplicates at parse time; never crash on one
            continue
        seen.add(vs.key)
        pool = _pool_for(vs, pools)
        group = groups.get(vs.group) if vs.group is not None else None
        hit = cache.get(vs.key) if cache is not None else None
        if (
            hit is not None
            and (hit[0] is vs or hit[0] == vs)
            and hit[1] == pool
            and hit[2] == group
        ):
            out.append(hit[3])
            continue
        service = service_from(vs, pool, groups)
        if cache is not None:
            cache[vs.key] = (vs, None if pool is None else list(pool), group, service)
        out.append(service)
    if cache is not None and len(cache) > len(seen):
        for key in [k for k in cache if k not in seen]:
            del cache[key]
    return DesiredState(_unique_frontends(out))


def _unique_frontends(services: list[Service]) -> tuple[Service, ...]:
    """A frontend claimed by two services (e.g. a group range overlapping a VIP) stays with
    the first one; the later service loses it, with a note (one packet, one service)."""
    owner: dict[tuple[object, ...], str] = {}
    out: list[Service] = []
    for s in services:
        keep: list[Frontend] = []
        dropped: list[str] = []
        for f in s.frontends:
            k = (f.address, f.port, f.fwmark, None if f.fwmark is not None else s.protocol)
            if k in owner:
                dropped.append(
                    f"{f.address or f'fwmark {f.fwmark}'} {f.port or ''}".strip()
                    + f" already served by {owner[k]}"
                )
                continue
            owner[k] = s.name
            keep.append(f)
        out.append(replace(s, frontends=tuple(keep), notes=(*s.notes, *dropped)) if dropped else s)
    return tuple(out)


__all__ = [
    "Backend",
    "DesiredState",
    "Frontend",
    "Service",
    "ServiceKey",
    "desired_state",
    "endpoint_text",
    "parse_endpoint",
    "prefix_of",
    "service_from",
]
