"""LVS persistence (keepalived `persistence_timeout` / `persistence_granularity`) as a pure table.

Follows IPVS persistence templates (ip_vs_core.c ip_vs_sched_persist, read for facts): the
key is the client address masked by the granularity netmask (plus the virtual port unless the
service is port 0 / fwmark, where one template covers all ports); a template lives until
`timeout` seconds after its last use *and* until no connection it created is still open.
A template whose real server was removed is dropped and the client is scheduled afresh. A
template pointing at a quiesced (weight 0) server is still honoured, as IPVS does with the
default `expire_quiescent_template = 0`; set `expire_quiescent=True` for the sysctl's 1.

keepalived gives `persistence_timeout` without a value 360 s (`PERSISTENCE_DEFAULT_TIMEOUT`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

from hakeeper.balance.lvs import NO_FLOW, Flow, IPAddress, RealServer, Scheduler

PERSISTENCE_DEFAULT_TIMEOUT = 360.0


@dataclass(slots=True)
class Template:
    """One persistence template: which server a masked client is pinned to."""

    server: str
    expires: float
    connections: int = 0


def parse_granularity(mask: str | int | None, ipv6: bool = False) -> int:
    """`persistence_granularity` as a prefix length: "255.255.255.0" -> 24, 64 -> 64."""
    if mask is None:
        return 128 if ipv6 else 32
    if isinstance(mask, int):
        return mask
    text = mask.strip()
    if text.isdigit():
        return int(text)
    net = ip_network(f"0.0.0.0/{text}", strict=False)
    return net.prefixlen


class PersistenceTable:
    """Client (masked) -> real server templates, with expiry driven by the caller's `now`."""

    def __init__(
        self,
        timeout: float = PERSISTENCE_DEFAULT_TIMEOUT,
        granularity: str | int | None = None,
        *,
        granularity6: int = 128,
        expire_quiescent: bool = False,
    ) -> None:
        if timeout <= 0:
            raise ValueError("persistence timeout must be positive")
        self.timeout = timeout
        self.prefix4 = parse_granularity(granularity)
        self.prefix6 = granularity6
        self.expire_quiescent = expire_quiescent
        self._templates: dict[tuple[IPv4Network | IPv6Network, int], Template] = {}

    def __len__(self) -> int:
        return len(self._templates)

    def key(self, client: IPAddress, vport: int = 0) -> tuple[IPv4Network | IPv6Network, int]:
        if isinstance(client, IPv6Address):
            return IPv6Network((client, self.prefix6), strict=False), vport
        assert isinstance(client, IPv4Address)
        return IPv4Network((client, self.prefix4), strict=False), vport

    def lookup(
        self,
        client: IPAddress,
        now: float,
        servers: Sequence[RealServer] | None = None,
        vport: int = 0,
    ) -> str | None:
        """The pinned server key, or None (absent, expired, or its server is gone)."""
        k = self.key(client, vport)
        t = self._templates.get(k)
        if t is None:
            return None
        if t.connections == 0 and now >= t.expires:
            del self._templates[k]
            return None
        if servers is not None:
            dest = next((s for s in servers if s.key == t.server), None)
            if dest is None or (self.expire_quiescent and dest.weight == 0):
                del self._templates[k]
                return None
        return t.server

    def bind(self, client: IPAddress, server: str, now: float, vport: int = 0) -> Template:
        """Create or refresh the template for `client` (each new connection calls this)."""
        k = self.key(client, vport)
        t = self._templates.get(k)
        if t is None or t.server != server:
            t = Template(server, now + self.timeout)
            self._templates[k] = t
        else:
            t.expires = now + self.timeout
        return t

    def connection_opened(self, client: IPAddress, vport: int = 0) -> None:
        t = self._templates.get(self.key(client, vport))
        if t is not None:
            t.connections += 1

    def connection_closed(self, client: IPAddress, now: float, vport: int = 0) -> None:
        """A connection controlled by the template ended; the timeout restarts from now."""
        t = self._templates.get(self.key(client, vport))
        if t is not None and t.connections > 0:
            t.connections -= 1
            t.expires = max(t.expires, now + self.timeout)

    def expire(self, now: float) -> int:
        """Drop templates that are past their time and control no connection."""
        stale = [k for k, t in self._templates.items() if t.connections == 0 and now >= t.expires]
        for k in stale:
            del self._templates[k]
        return len(stale)

    def next_deadline(self) -> float | None:
        idle = [t.expires for t in self._templates.values() if t.connections == 0]
        return min(idle) if idle else None

    def items(self) -> list[tuple[str, str, float]]:
        """(client network, server, expiry) for status output."""
        return [(str(k[0]), t.server, t.expires) for k, t in self._templates.items()]


class Persistent(Scheduler):
    """Wraps any scheduler with a persistence table (IPVS `-p`): pinned clients skip it."""

    def __init__(self, inner: Scheduler, table: PersistenceTable, *, per_port: bool = False):
        self.inner = inner
        self.table = table
        self.per_port = per_port
        self.name = inner.name

    def pick(self, servers: Sequence[RealServer], flow: Flow = NO_FLOW) -> RealServer | None:
        vport = flow.dport if self.per_port else 0
        pinned = self.table.lookup(flow.src, flow.now, servers, vport)
        if pinned is not None:
            kept = next(s for s in servers if s.key == pinned)
            self.table.bind(flow.src, kept.key, flow.now, vport)
            return kept
        dest = self.inner.pick(servers, flow)
        if dest is not None:
            self.table.bind(flow.src, dest.key, flow.now, vport)
        return dest
