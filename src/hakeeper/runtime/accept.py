"""VRRP Accept_Mode (RFC 5798 s6.1, keepalived `accept`/`no_accept`) enforced with nftables.

keepalived.conf(5): unless an instance has `accept` (the default, except under `vrrp_strict`
/ `strict_mode`) or is the address owner (priority 255), a MASTER does not receive packets
addressed to its VIPs/eVIPs; they can only be used for routeing. keepalived does this with
DROP rules in its own firewall table; hakeeper owns `table inet hakeeper_vrrp` for it:

    table inet hakeeper_vrrp {
        set vips4 { type ipv4_addr }          # VIPs of no_accept instances in MASTER
        set vips6 { type ipv6_addr }
        chain input { type filter hook input priority -1; policy accept;
            ip daddr @vips4 counter drop
            ip6 daddr @vips6 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
            ip6 daddr @vips6 counter drop
        }
    }

ARP never reaches an inet table and ND to a VIP is let through, so the MASTER still
answers for its VIPs (RFC 5798 s6.4.3) while refusing the traffic itself. The table exists
only while some no_accept instance is MASTER; every change is one atomic batch that
rebuilds it (or deletes it when nothing is left), so a table left by a killed daemon is
replaced or removed at the first state change, and the stop transitions at exit remove it.

`guarded_addresses` and `render` are pure; `AcceptGuard` applies them through the nft
adapter (`hakeeper.dataplane.nft.Nft`, libnftables in-process, about a millisecond).
The daemon calls `on_state(daemon, instance, state)` from its state-change path; the
guard acts after the driver has added the VIPs, so the rule lands a batch later than them.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from hakeeper.conf.model import VrrpInstance
from hakeeper.vrrp.machine import State

log = logging.getLogger("hakeeper.accept")

TABLE = "hakeeper_vrrp"
FAMILY = "inet"
OWNER_PRIORITY = 255
Json = dict[str, Any]
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


# ------------------------------------------------------------------------------ pure


def drops_vip_traffic(inst: VrrpInstance) -> bool:
    """Does a MASTER of `inst` refuse packets to its VIPs? (no_accept and not the owner)."""
    return not inst.accept and inst.priority != OWNER_PRIORITY


def guarded_addresses(inst: VrrpInstance, state: State) -> frozenset[IPAddr]:
    """The addresses to drop for `inst` in `state`: its VIPs and eVIPs while a non-owner
    no_accept MASTER, nothing otherwise."""
    if state is not State.MASTER or not drops_vip_traffic(inst):
        return frozenset()
    vips = (*inst.virtual_ipaddresses, *inst.virtual_ipaddress_excluded)
    return frozenset(v.address.ip for v in vips)


def _table() -> Json:
    return {"family": FAMILY, "name": TABLE}


def _match(proto: str, field: str, right: Any) -> Json:
    left = {"payload": {"protocol": proto, "field": field}}
    return {"match": {"op": "==", "left": left, "right": right}}


def _rule(*expr: Json) -> Json:
    return {"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": "input", "expr": expr}}}


def render(addresses: Iterable[IPAddr]) -> list[Json]:
    """One nft JSON batch making our table hold exactly `addresses` (deleted when empty).

    `add table` first makes the `delete` valid whether or not a table is left over; the
    kernel applies the whole batch as one transaction.
    """
    v4 = sorted(str(a) for a in addresses if a.version == 4)
    v6 = sorted(str(a) for a in addresses if a.version == 6)
    cmds: list[Json] = [{"add": {"table": _table()}}, {"delete": {"table": _table()}}]
    if not v4 and not v6:
        return cmds
    base = {"family": FAMILY, "table": TABLE}
    cmds += [
        {"add": {"table": _table()}},
        {"add": {"set": {**base, "name": "vips4", "type": "ipv4_addr"}}},
        {"add": {"set": {**base, "name": "vips6", "type": "ipv6_addr"}}},
        {
            "add": {
                "chain": {
                    **base,
                    "name": "input",
                    "type": "filter",
                    "hook": "input",
                    "prio": -1,
                    "policy": "accept",
                }
            }
        },
        _rule(_match("ip", "daddr", "@vips4"), {"counter": None}, {"drop": None}),
        _rule(
            _match("ip6", "daddr", "@vips6"),
            _match("icmpv6", "type", {"set": ["nd-neighbor-solicit", "nd-neighbor-advert"]}),
            {"accept": None},
        ),
        _rule(_match("ip6", "daddr", "@vips6"), {"counter": None}, {"drop": None}),
    ]
    for name, elems in (("vips4", v4), ("vips6", v6)):
        if elems:
            cmds.append({"add": {"element": {**base, "name": name, "elem": elems}}})
    return cmds


# ------------------------------------------------------------------------------- I/O


class NftRunner(Protocol):
    def run(self, cmds: list[Json]) -> None: ...


class AcceptGuard:
    """Keeps `table inet hakeeper_vrrp` equal to the VIPs of no_accept instances in MASTER."""

    def __init__(self, nft: NftRunner | None = None) -> None:
        self._nft = nft
        self._by_instance: dict[str, frozenset[IPAddr]] = {}
        self._applied: frozenset[IPAddr] | None = None  # None: nothing applied yet
        self.batches = 0
        self.errors = 0
        self.last_error = ""

    @property
    def addresses(self) -> frozenset[IPAddr]:
        return frozenset().union(*self._by_instance.values())

    def on_state(self, inst: VrrpInstance, state: State) -> None:
        """Record `inst` entering `state`; apply when the dropped set changes. Never raises."""
        wanted = guarded_addresses(inst, state)
        if wanted:
            self._by_instance[inst.name] = wanted
        else:
            self._by_instance.pop(inst.name, None)
        self.sync()

    def sync(self) -> None:
        target = self.addresses
        if target == self._applied:
            return
        try:
            if self._nft is None:
                from hakeeper.dataplane.nft import Nft  # noqa: PLC0415  (ctypes load, once)

                self._nft = Nft()
            self._nft.run(render(target))
        except Exception as exc:  # nft missing / refused: logged and counted, loop goes on
            self.errors += 1
            self.last_error = str(exc)
            if target:
                log.warning("no_accept: dropping traffic to %d VIP(s) failed: %s", len(target), exc)
            else:  # nothing to enforce: do not retry (and warn) on every transition
                self._applied = target
            return
        self.batches += 1
        self._applied = target
        if target:
            log.info("no_accept: dropping traffic to %s", ", ".join(sorted(map(str, target))))
        elif self.batches > 1:
            log.info("no_accept: no MASTER drops VIP traffic; table %s removed", TABLE)


_ATTR = "_accept_guard"


def guard_for(daemon: Any) -> AcceptGuard | None:
    """The guard of `daemon` (kept on it, created on first use), or None when it drives no
    real host."""
    options = getattr(daemon, "options", None)
    if options is None or not getattr(options, "use_netlink", False):
        return None  # a daemon on fake sockets/hosts (unit tests) must not touch nftables
    guard: AcceptGuard | None = getattr(daemon, _ATTR, None)
    if guard is None:
        guard = AcceptGuard()
        setattr(daemon, _ATTR, guard)
    return guard


def on_state(daemon: Any, inst: VrrpInstance, state: State) -> None:
    """The daemon's one-line hook: an instance of `daemon` entered `state`."""
    guard = guard_for(daemon)
    if guard is not None:
        guard.on_state(inst, state)
