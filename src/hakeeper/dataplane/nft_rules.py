"""nftables ruleset for LVS services as libnftables JSON commands (pure renderer, no I/O).

Layout (readable with `nft list table inet hakeeper`), after nftlb's model and the facts in
anchors/dataplane.md §3 (numgen/jhash maps, dynamic sets with timeouts, netdev ingress):

* table `inet hakeeper` (NAT services): verdict maps `vs4`/`vs6` (daddr . l4proto . dport),
  `vs4any`/`vs6any` (port-less frontends) and `vsmark` (fwmark) dispatch from the nat
  prerouting and output hooks into one chain `vs_<service>` per service; `postrouting`
  masquerades flows DNATed to addresses in `masq4`/`masq6` (full-NAT option).
* a service chain schedules with `numgen inc mod N` (rr; wrr as one IPVS wrr cycle of
  `sum(w)/gcd` slots, ranges merged), `jhash` over the source (sh, mh with a precomputed
  Maglev table) or destination (dh), each into a 256/prime-sized map. Weight 0 is quiesced:
  out of the scheduling map, still reachable through persistence.
* persistence: one dynamic set `p_<service>_<backend>` per backend, keyed by the (masked)
  client address with the persistence timeout; a client found in one goes to that backend,
  a new one is scheduled and recorded (IPVS persistence templates, granularity as a mask).
* DR (table `netdev hakeeper`): an ingress chain per device dispatches by VIP to the
  service chain, which keeps per-backend flow sets (client addr . port, so a TCP flow sticks to
  the backend chosen for its SYN), then rewrites the ethernet addresses and `fwd`s the
  frame; conntrack never sees it. Real servers hold the VIP on lo (seed 001).

Connection-count schedulers (lc, wlc, sed, nq, lblc, lblcr, ovf, twos) cannot be expressed in
nftables; they are rendered as wrr over the same weights and the service carries a note.
Only services named in a plan are touched; the others keep their chains and sets.
"""

from __future__ import annotations

import ipaddress
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hakeeper.balance import CONNECTION_COUNT_SCHEDULERS
from hakeeper.balance.lvs import RealServer as SchedServer
from hakeeper.balance.lvs import WeightedRoundRobin
from hakeeper.balance.lvs_hash import MaglevHash, SourceHash
from hakeeper.conf.model import IPAddress
from hakeeper.dataplane.desired import Backend, Service

TABLE = "hakeeper"
HASH_BUCKETS = 256
MAGLEV_TABLE = 251  # a prime IPVS offers; small enough to stay readable in `nft list`
MAX_WRR_SLOTS = 4096
FLOW_TIMEOUT = 300  # seconds a DR flow stays pinned to its backend without packets
SET_SIZE = 65536

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class L2Peer:
    """How to reach a DR backend: the egress device, its MAC and our MAC on that device."""

    dev: str
    mac: str
    own_mac: str


def supported(service: Service) -> str | None:
    """None if nftables can carry the service, else why not."""
    if service.method == "TUN":
        return "LVS-TUN needs ip tunnels, which this data plane does not build"
    if service.method not in ("NAT", "DR"):
        return f"unknown forwarding method {service.method}"
    if service.method == "DR" and any(f.fwmark is not None for f in service.frontends):
        return "DR with fwmark frontends is not supported at netdev ingress"
    if not service.frontends:
        return "no frontends"
    return None


def approximations(service: Service) -> tuple[str, ...]:
    """What the rendering of `service` changes from IPVS semantics (for status/logs)."""
    out: list[str] = []
    if service.scheduler in CONNECTION_COUNT_SCHEDULERS:
        out.append(f"{service.scheduler} needs connection counts; scheduled as wrr")
    if service.ops:
        out.append("ops (one-packet scheduling) ignored")
    for b in service.backends:
        if b.method != service.method:
            out.append(f"{b.key}: lvs_method {b.method} ignored, service uses {service.method}")
    return tuple(out)


# ----------------------------------------------------------------------------- names


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def service_id(service: Service) -> str:
    """Readable, stable chain-name part: `198_18_0_10_80_tcp`, `fwmark_1`, `group_web_tcp`."""
    key = service.key
    if key[0] == "addr":
        return _slug(f"{key[1]}_{key[2]}_{key[3]}")
    return _slug("_".join(key))


def backend_id(backend: Backend) -> str:
    return _slug(f"{backend.address}_{backend.port or 0}")


def chain_name(service: Service) -> str:
    return f"vs_{service_id(service)}"


def backend_chain(service: Service, backend: Backend) -> str:
    return f"{chain_name(service)}__{backend_id(backend)}"


def persist_set(service: Service, backend: Backend) -> str:
    return f"p_{service_id(service)}__{backend_id(backend)}"


def flow_set(service: Service, backend: Backend) -> str:
    return f"f_{service_id(service)}__{backend_id(backend)}"


# ------------------------------------------------------------------------ expressions


def _ipfam(family: int) -> str:
    return "ip" if family == 4 else "ip6"


def _payload(proto: str, fld: str) -> Json:
    return {"payload": {"protocol": proto, "field": fld}}


def _saddr(service: Service, masked: bool) -> Json:
    expr = _payload(_ipfam(service.family), "saddr")
    if masked and service.persistence_prefix is not None:
        width = 32 if service.family == 4 else 128
        mask = ((1 << width) - 1) ^ ((1 << (width - service.persistence_prefix)) - 1)
        text = str(ipaddress.ip_address(mask if service.family == 4 else mask.to_bytes(16, "big")))
        return {"&": [expr, text]}
    return expr


def _match(left: Any, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _l4(service: Service) -> Json:
    return _match({"meta": {"key": "l4proto"}}, service.protocol)


def _target(b: Backend, service: Service) -> Any:
    port = b.port if b.port is not None else _single_port(service)
    if port is None:
        return str(b.address)
    return {"concat": [str(b.address), port]}


def _single_port(service: Service) -> int | None:
    ports = {f.port for f in service.frontends}
    return ports.pop() if len(ports) == 1 else None


def _elems(slots: Sequence[int], values: Sequence[Any]) -> list[list[Any]]:
    """(slot -> value index) list merged into ranges of equal consecutive values."""
    out: list[list[Any]] = []
    i = 0
    while i < len(slots):
        j = i
        while j + 1 < len(slots) and slots[j + 1] == slots[i]:
            j += 1
        key: Any = i if i == j else {"range": [i, j]}
        out.append([key, values[slots[i]]])
        i = j + 1
    return out


# ------------------------------------------------------------------------- scheduling


def needs_backend_chains(service: Service) -> bool:
    """Per-backend chains exist for persistence and DR; plain NAT is one dnat map."""
    return service.persistent or service.method == "DR"


def eligible(service: Service) -> list[Backend]:
    return [b for b in service.backends if b.weight > 0]


def _wrr_cycle(backends: Sequence[Backend]) -> list[int]:
    weights = [b.weight for b in backends]
    g = 0
    for w in weights:
        g = math.gcd(g, w)
    length = sum(weights) // max(g, 1)
    if length > MAX_WRR_SLOTS:  # proportional ranges instead of one IPVS cycle
        total = sum(weights)
        out: list[int] = []
        for i, w in enumerate(weights):
            out += [i] * max(1, w * MAX_WRR_SLOTS // total)
        return out
    servers = [SchedServer(key=str(i), weight=w) for i, w in enumerate(weights)]
    sched = WeightedRoundRobin()
    seq: list[int] = []
    for _ in range(length):
        pick = sched.pick(servers)
        if pick is None:
            break
        seq.append(int(pick.key))
    return seq


def schedule(service: Service) -> tuple[Json, list[int]] | None:
    """(key expression, slot -> index into eligible(service)) or None when nobody is eligible.

    A single-slot result (fo, or one backend) is returned with a `None`-free key of
    numgen mod 1 replaced by the caller with a direct jump.
    """
    backends = eligible(service)
    if not backends:
        return None
    s = service.scheduler
    fam = _ipfam(service.family)
    seed = zlib.crc32(repr(service.key).encode()) & 0x7FFFFFFF
    servers = [SchedServer(key=str(i), weight=b.weight) for i, b in enumerate(backends)]
    port_flag = "sh-port" in service.sched_flags or "mh-port" in service.sched_flags
    src: Json = _payload(fam, "saddr")
    if port_flag:
        src = {"concat": [src, _payload("th", "sport")]}
    if s == "fo":
        best = max(range(len(backends)), key=lambda i: (backends[i].weight, -i))
        return {"numgen": {"mode": "inc", "mod": 1}}, [best]
    if s == "sh":
        table = SourceHash().bucket_keys(servers)
        slots = [int(k) if k is not None else 0 for k in table]
        return {"jhash": {"expr": src, "mod": HASH_BUCKETS, "seed": seed}}, slots
    if s == "dh":
        slots = [i % len(backends) for i in range(HASH_BUCKETS)]
        key = {"jhash": {"expr": _payload(fam, "daddr"), "mod": HASH_BUCKETS, "seed": seed}}
        return key, slots
    if s == "mh":
        mtab = MaglevHash(table_size=MAGLEV_TABLE).table(servers)
        slots = [int(k) if k is not None else 0 for k in mtab]
        return {"jhash": {"expr": src, "mod": MAGLEV_TABLE, "seed": seed}}, slots
    if s == "rr":
        return {"numgen": {"mode": "inc", "mod": len(backends)}}, list(range(len(backends)))
    cycle = _wrr_cycle(backends)  # wrr and the connection-count approximations
    return {"numgen": {"mode": "inc", "mod": len(cycle)}}, cycle


# ----------------------------------------------------------------------------- rules


def _add(kind: str, body: Json) -> Json:
    return {"add": {kind: body}}


class Renderer:
    """Builds the commands for one batch; `family` is "inet" (NAT) or "netdev" (DR)."""

    def __init__(self, l2: Mapping[IPAddress, L2Peer] | None = None) -> None:
        self.l2 = dict(l2 or {})
        self.cmds: list[Json] = []

    # -- base objects ------------------------------------------------------------------
    def base_inet(self) -> list[Json]:
        t = {"family": "inet", "table": TABLE}
        cmds: list[Json] = [_add("table", {"family": "inet", "name": TABLE})]
        for fam, addr in ((4, "ipv4_addr"), (6, "ipv6_addr")):
            cmds.append(
                _add(
                    "map",
                    {
                        **t,
                        "name": f"vs{fam}",
                        "type": [addr, "inet_proto", "inet_service"],
                        "map": "verdict",
                    },
                )
            )
            cmds.append(
                _add(
                    "map",
                    {**t, "name": f"vs{fam}any", "type": [addr, "inet_proto"], "map": "verdict"},
                )
            )
            cmds.append(_add("set", {**t, "name": f"masq{fam}", "type": addr}))
        cmds.append(_add("map", {**t, "name": "vsmark", "type": "mark", "map": "verdict"}))
        for name, hook, prio in (("prerouting", "prerouting", -100), ("output", "output", -100)):
            cmds.append(
                _add(
                    "chain",
                    {
                        **t,
                        "name": name,
                        "type": "nat",
                        "hook": hook,
                        "prio": prio,
                        "policy": "accept",
                    },
                )
            )
            for fam in (4, 6):
                ipf = _ipfam(fam)
                l4 = {"meta": {"key": "l4proto"}}
                key = {"concat": [_payload(ipf, "daddr"), l4, _payload("th", "dport")]}
                cmds.append(
                    _add(
                        "rule",
                        {**t, "chain": name, "expr": [{"vmap": {"key": key, "data": f"@vs{fam}"}}]},
                    )
                )
                key2 = {"concat": [_payload(ipf, "daddr"), l4]}
                cmds.append(
                    _add(
                        "rule",
                        {
                            **t,
                            "chain": name,
                            "expr": [{"vmap": {"key": key2, "data": f"@vs{fam}any"}}],
                        },
                    )
                )
            mark = {"vmap": {"key": {"meta": {"key": "mark"}}, "data": "@vsmark"}}
            cmds.append(_add("rule", {**t, "chain": name, "expr": [mark]}))
        cmds.append(
            _add(
                "chain",
                {
                    **t,
                    "name": "postrouting",
                    "type": "nat",
                    "hook": "postrouting",
                    "prio": 100,
                    "policy": "accept",
                },
            )
        )
        for fam in (4, 6):
            expr = [
                _match({"ct": {"key": "status"}}, "dnat", op="in"),
                _match(_payload(_ipfam(fam), "daddr"), f"@masq{fam}"),
                {"masquerade": None},
            ]
            cmds.append(_add("rule", {**t, "chain": "postrouting", "expr": expr}))
        return cmds

    def base_netdev(self, devices: Sequence[str]) -> list[Json]:
        t = {"family": "netdev", "table": TABLE}
        cmds: list[Json] = [_add("table", {"family": "netdev", "name": TABLE})]
        for fam, addr in ((4, "ipv4_addr"), (6, "ipv6_addr")):
            cmds.append(
                _add(
                    "map",
                    {
                        **t,
                        "name": f"dr{fam}",
                        "type": [addr, "inet_proto", "inet_service"],
                        "map": "verdict",
                    },
                )
            )
            cmds.append(
                _add(
                    "map",
                    {**t, "name": f"dr{fam}any", "type": [addr, "inet_proto"], "map": "verdict"},
                )
            )
        for dev in devices:
            cmds += self.ingress_chain(dev)
        return cmds

    @staticmethod
    def ingress_chain(dev: str) -> list[Json]:
        t = {"family": "netdev", "table": TABLE}
        name = f"ingress_{_slug(dev)}"
        cmds = [
            _add(
                "chain",
                {
                    **t,
                    "name": name,
                    "type": "filter",
                    "hook": "ingress",
                    "dev": dev,
                    "prio": 0,
                    "policy": "accept",
                },
            )
        ]
        # only frames sent to our MAC: a flooded frame for another director (unknown
        # unicast, a failed peer's MAC) must not be forwarded a second time
        not_ours = _match({"meta": {"key": "pkttype"}}, "host", op="!=")
        cmds.append(_add("rule", {**t, "chain": name, "expr": [not_ours, {"accept": None}]}))
        for fam in (4, 6):
            ipf = _ipfam(fam)
            l4 = {"meta": {"key": "l4proto"}}
            key = {"concat": [_payload(ipf, "daddr"), l4, _payload("th", "dport")]}
            vmap = {"vmap": {"key": key, "data": f"@dr{fam}"}}
            cmds.append(_add("rule", {**t, "chain": name, "expr": [vmap]}))
            key2 = {"concat": [_payload(ipf, "daddr"), l4]}
            vmap2 = {"vmap": {"key": key2, "data": f"@dr{fam}any"}}
            cmds.append(_add("rule", {**t, "chain": name, "expr": [vmap2]}))
        return cmds

    # -- per service ---------------------------------------------------------------------
    @staticmethod
    def _family(service: Service) -> str:
        return "netdev" if service.method == "DR" else "inet"

    def _dispatch(self, service: Service, op: str) -> list[Json]:
        fam = self._family(service)
        prefix = "dr" if fam == "netdev" else "vs"
        t = {"family": fam, "table": TABLE}
        verdict = {"jump": {"target": chain_name(service)}}
        groups: dict[str, list[Any]] = {}
        for f in service.frontends:
            if f.fwmark is not None:
                groups.setdefault("vsmark", []).append(f.fwmark)
            elif f.address is not None and f.port is not None:
                k = {"concat": [str(f.address), service.protocol, f.port]}
                groups.setdefault(f"{prefix}{f.family}", []).append(k)
            elif f.address is not None:
                k = {"concat": [str(f.address), service.protocol]}
                groups.setdefault(f"{prefix}{f.family}any", []).append(k)
        cmds = []
        for name, keys in groups.items():
            elem = [[k, verdict] for k in keys] if op == "add" else keys
            cmds.append({op: {"element": {**t, "name": name, "elem": elem}}})
        return cmds

    def _backend_objects(self, service: Service, b: Backend, op: str) -> list[Json]:
        fam = self._family(service)
        t = {"family": fam, "table": TABLE}
        addr = "ipv4_addr" if service.family == 4 else "ipv6_addr"
        cmds: list[Json] = []
        if op == "add" and needs_backend_chains(service):
            cmds.append(_add("chain", {**t, "name": backend_chain(service, b)}))
        if service.persistent:
            body = {
                **t,
                "name": persist_set(service, b),
                "type": addr,
                "flags": ["timeout"],
                "timeout": service.persistence_timeout,
                "size": SET_SIZE,
            }
            cmds.append({op: {"set": body if op == "add" else {**t, "name": body["name"]}}})
        if fam == "netdev":
            body = {
                **t,
                "name": flow_set(service, b),
                "type": [addr, "inet_service"],
                "flags": ["timeout"],
                "timeout": FLOW_TIMEOUT,
                "size": SET_SIZE,
            }
            cmds.append({op: {"set": body if op == "add" else {**t, "name": body["name"]}}})
        if op == "delete" and needs_backend_chains(service):
            cmds.insert(0, {"delete": {"chain": {**t, "name": backend_chain(service, b)}}})
        return cmds

    def _backend_rules(self, service: Service, b: Backend) -> list[Json]:
        if not needs_backend_chains(service):
            return []
        fam = self._family(service)
        t = {"family": fam, "table": TABLE, "chain": backend_chain(service, b)}
        expr: list[Json] = []
        ipf = _ipfam(service.family)
        if fam == "netdev":
            peer = self.l2.get(b.address)
            if peer is None:
                return []
            flow = {"concat": [_payload(ipf, "saddr"), _payload("th", "sport")]}
            expr.append({"set": {"op": "update", "elem": flow, "set": "@" + flow_set(service, b)}})
        if service.persistent:
            expr.append(
                {
                    "set": {
                        "op": "update",
                        "elem": _saddr(service, True),
                        "set": "@" + persist_set(service, b),
                    }
                }
            )
        if fam == "netdev":
            peer = self.l2[b.address]
            expr += [
                {"mangle": {"key": _payload("ether", "saddr"), "value": peer.own_mac}},
                {"mangle": {"key": _payload("ether", "daddr"), "value": peer.mac}},
                {"fwd": {"dev": peer.dev}},
            ]
        else:
            port = b.port if b.port is not None else _single_port(service)
            nat: Json = {"family": ipf, "addr": str(b.address)}
            if port is not None:
                expr.insert(0, _l4(service))
                nat["port"] = port
            expr.append({"dnat": nat})
        return [_add("rule", {**t, "expr": expr})]

    def _usable(self, service: Service, b: Backend) -> bool:
        return service.method != "DR" or b.address in self.l2

    def _service_rules(self, service: Service) -> list[Json]:
        fam = self._family(service)
        t = {"family": fam, "table": TABLE, "chain": chain_name(service)}
        ipf = _ipfam(service.family)
        cmds: list[Json] = []
        usable = [b for b in service.backends if self._usable(service, b)]
        if fam == "netdev":
            flow = {"concat": [_payload(ipf, "saddr"), _payload("th", "sport")]}
            for b in usable:
                cmds.append(
                    _add(
                        "rule",
                        {
                            **t,
                            "expr": [
                                _match(flow, "@" + flow_set(service, b)),
                                {"goto": {"target": backend_chain(service, b)}},
                            ],
                        },
                    )
                )
        if service.persistent:
            for b in usable:
                cmds.append(
                    _add(
                        "rule",
                        {
                            **t,
                            "expr": [
                                _match(_saddr(service, True), "@" + persist_set(service, b)),
                                {"goto": {"target": backend_chain(service, b)}},
                            ],
                        },
                    )
                )
        view = Service(**{**_fields(service), "backends": tuple(usable)})
        sched = schedule(view)
        if sched is None:
            if fam == "inet":  # nobody to send new connections to (IPVS drops them too)
                cmds.append(_add("rule", {**t, "expr": [{"counter": None}, {"drop": None}]}))
            return cmds
        key, slots = sched
        backends = eligible(view)
        gate: list[Json] = []
        if fam == "netdev" and service.protocol == "tcp":
            syn = _match({"&": [_payload("tcp", "flags"), ["syn", "ack"]]}, "syn")
            gate = [_l4(service), syn]
        if len(set(slots)) == 1 and not needs_backend_chains(service):
            nat: Json = {"family": ipf, "addr": str(backends[slots[0]].address)}
            port = backends[slots[0]].port
            port = port if port is not None else _single_port(service)
            expr0: list[Json] = []
            if port is not None:
                expr0.append(_l4(service))
                nat["port"] = port
            cmds.append(_add("rule", {**t, "expr": [*expr0, {"dnat": nat}]}))
        elif len(set(slots)) == 1:
            b = backends[slots[0]]
            cmds.append(
                _add(
                    "rule", {**t, "expr": [*gate, {"goto": {"target": backend_chain(service, b)}}]}
                )
            )
        elif fam == "inet" and not service.persistent:  # the lean form: one dnat map
            values = [_target(b, service) for b in backends]
            expr: list[Json] = []
            if any(isinstance(v, dict) for v in values):
                expr.append(_l4(service))
            expr.append(
                {
                    "dnat": {
                        "family": ipf,
                        "addr": {"map": {"key": key, "data": {"set": _elems(slots, values)}}},
                    }
                }
            )
            cmds.append(_add("rule", {**t, "expr": expr}))
        else:
            values = [{"goto": {"target": backend_chain(service, b)}} for b in backends]
            vmap = {"vmap": {"key": key, "data": {"set": _elems(slots, values)}}}
            cmds.append(_add("rule", {**t, "expr": [*gate, vmap]}))
        if fam == "netdev" and gate:  # mid-flow packets of unknown flows: stateless hash
            fkey = {
                "jhash": {
                    "expr": {"concat": [_payload(ipf, "saddr"), _payload("th", "sport")]},
                    "mod": len(backends),
                    "seed": 0,
                }
            }
            values = [{"goto": {"target": backend_chain(service, b)}} for b in backends]
            elems = _elems(list(range(len(backends))), values)
            cmds.append(
                _add("rule", {**t, "expr": [{"vmap": {"key": fkey, "data": {"set": elems}}}]})
            )
        return cmds

    def add_service(self, service: Service) -> None:
        fam = self._family(service)
        t = {"family": fam, "table": TABLE}
        self.cmds.append(_add("chain", {**t, "name": chain_name(service)}))
        for b in service.backends:
            if self._usable(service, b):
                self.cmds += self._backend_objects(service, b, "add")
                self.cmds += self._backend_rules(service, b)
        self.cmds += self._service_rules(service)
        self.cmds += self._dispatch(service, "add")

    def delete_service(self, service: Service, rendered: set[str]) -> None:
        """Remove its dispatch elements, chains and sets (`rendered`: backends with objects)."""
        fam = self._family(service)
        t = {"family": fam, "table": TABLE}
        self.cmds += self._dispatch(service, "delete")
        self.cmds.append({"flush": {"chain": {**t, "name": chain_name(service)}}})
        for b in service.backends:
            if b.key in rendered:
                self.cmds += self._backend_objects(service, b, "delete")
        self.cmds.append({"delete": {"chain": {**t, "name": chain_name(service)}}})

    def update_backends(self, new: Service, old: Service, old_usable: set[str]) -> None:
        """Same settings, different backends: keep the sets of backends that stay."""
        fam = self._family(new)
        t = {"family": fam, "table": TABLE}
        self.cmds.append({"flush": {"chain": {**t, "name": chain_name(new)}}})
        new_usable = {b.key for b in new.backends if self._usable(new, b)}
        for b in old.backends:
            if b.key in old_usable and b.key not in new_usable:
                self.cmds += self._backend_objects(old, b, "delete")
        for b in new.backends:
            if b.key not in new_usable:
                continue
            if b.key in old_usable:
                if needs_backend_chains(new):
                    self.cmds.append({"flush": {"chain": {**t, "name": backend_chain(new, b)}}})
            else:
                self.cmds += self._backend_objects(new, b, "add")
            self.cmds += self._backend_rules(new, b)
        self.cmds += self._service_rules(new)

    def masquerade(self, services: Sequence[Service]) -> None:
        """Refill `masq4`/`masq6` with the NAT backends of `services` (full-NAT option)."""
        for fam in (4, 6):
            t = {"family": "inet", "table": TABLE, "name": f"masq{fam}"}
            self.cmds.append({"flush": {"set": t}})
            elems = sorted(
                {
                    str(b.address)
                    for s in services
                    if s.method == "NAT" and s.family == fam
                    for b in s.backends
                }
            )
            if elems:
                self.cmds.append({"add": {"element": {**t, "elem": elems}}})


def _fields(service: Service) -> dict[str, Any]:
    return {f: getattr(service, f) for f in Service.__dataclass_fields__}


def usable_keys(service: Service, l2: Mapping[IPAddress, L2Peer]) -> set[str]:
    """Backends that got objects rendered (DR needs a resolved MAC)."""
    return {b.key for b in service.backends if service.method != "DR" or b.address in l2}


__all__ = [
    "TABLE",
    "L2Peer",
    "Renderer",
    "approximations",
    "backend_chain",
    "chain_name",
    "eligible",
    "schedule",
    "service_id",
    "supported",
    "usable_keys",
]
