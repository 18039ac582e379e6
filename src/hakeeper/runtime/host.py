"""Host side effects of VRRP transitions, performed in order off the hot path.

Implements `hakeeper.runtime.driver.HostOps` (VIPs, virtual_routes/virtual_rules in the
simple `ip route`/`ip rule` subset, gratuitous ARP/NA, VMAC removal) over the netlink adapter
(`hakeeper.io.netlink.Netlink`, coroutines) and a gratuitous ARP / unsolicited NA sender.
The driver calls these synchronously from its state transition; each call is queued and one
worker task performs the queue strictly in order, so "add VIPs, then GARP" and
"remove VIPs" on the way out keep keepalived's ordering (RFC 5798 §6.4.2: the new master
announces the VIPs only once they are configured). `drain()` lets shutdown wait until the
VIPs really are gone. Failures are logged and counted; the queue never stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import socket
import sys
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from hakeeper.conf.model import RouteSpec, VirtualAddress
from hakeeper.io import netlink as nl

log = logging.getLogger("hakeeper.host")

T = TypeVar("T")

# (ifname, vip address as text, prefix, count) -> sends `count` GARPs/NAs for one address
GarpFn = Callable[[str, str, int], Awaitable[None]]


def to_netlink(vip: VirtualAddress, ifname: str) -> nl.VirtualAddress:
    """Model VIP -> the adapter's address spec (dev defaults to the instance interface)."""
    scope: str | int = vip.scope or "global"
    return nl.VirtualAddress(
        address=str(vip.address.ip),
        prefixlen=vip.address.network.prefixlen,
        ifname=vip.dev or ifname,
        broadcast=vip.brd,
        scope=scope,
        label=vip.label,
    )


ROUTE_VALUE_WORDS = {"via", "gw", "dev", "src", "table", "metric", "preference", "scope", "to"}
RULE_VALUE_WORDS = {"from", "to", "table", "lookup", "priority", "preference", "pref"}


def _table(word: str) -> int:
    return {"main": 254, "local": 255, "default": 253}.get(word) or int(word)


def parse_route(words: Sequence[str], ifname: str) -> nl.Route:
    """A `virtual_routes` line (the simple `ip route` subset) -> the adapter's Route.

    `[to] PREFIX|default [via|gw IP] [dev IF] [src IP] [table N] [metric N] [scope S]`;
    anything else raises ValueError (logged once, the route skipped). dev defaults to the
    instance interface when there is no gateway.
    """
    fields: dict[str, str] = {}
    dst: str | None = None
    it = iter(words)
    for word in it:
        if word in ("no_track",):
            continue
        if word in ROUTE_VALUE_WORDS:
            value = next(it, None)
            if value is None:
                raise ValueError(f"{word} needs a value")
            if word == "to":
                dst = value
            else:
                fields["via" if word == "gw" else "metric" if word == "preference" else word] = (
                    value
                )
        elif dst is None:
            dst = word
        else:
            raise ValueError(f"unsupported route word {word!r}")
    if dst is None:
        raise ValueError("route without destination")
    if dst != "default":
        dst = str(ipaddress.ip_network(dst, strict=False))
    dev = fields.get("dev") or (ifname if "via" not in fields else None)
    return nl.Route(
        dst=dst,
        via=fields.get("via"),
        dev=dev,
        src=fields.get("src"),
        table=_table(fields.get("table", "main")),
        metric=int(fields["metric"]) if "metric" in fields else None,
        scope=fields.get("scope"),
    )


def parse_rule(words: Sequence[str]) -> nl.Rule:
    """A `virtual_rules` line: `[from P] [to P] table N [priority N]` -> the adapter's Rule."""
    fields: dict[str, str] = {}
    it = iter(words)
    for word in it:
        if word == "no_track":
            continue
        if word not in RULE_VALUE_WORDS:
            raise ValueError(f"unsupported rule word {word!r}")
        value = next(it, None)
        if value is None:
            raise ValueError(f"{word} needs a value")
        key = {"lookup": "table", "preference": "priority", "pref": "priority"}.get(word, word)
        fields[key] = value
    if "table" not in fields:
        raise ValueError("rule without table")
    probe = fields.get("from") or fields.get("to") or ""
    family = socket.AF_INET6 if ":" in probe else socket.AF_INET
    return nl.Rule(
        table=_table(fields["table"]),
        src=fields.get("from") if fields.get("from") != "all" else None,
        dst=fields.get("to"),
        priority=int(fields["priority"]) if "priority" in fields else None,
        family=family,
    )


class NetlinkThread:
    """Runs `hakeeper.io.netlink.Netlink` on a private stdlib loop in a helper thread.

    pyroute2's AsyncIPRoute opens its netlink socket with `create_datagram_endpoint`, which
    uvloop refuses for AF_NETLINK; the daemon's own loop is uvloop, so netlink work is
    shipped to this thread (a few per state change, never per advert) and awaited.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="netlink", daemon=True)
        self._thread.start()
        self.netlink: nl.Netlink | None = None

    async def open(self) -> NetlinkThread:
        self.netlink = await self.call(nl.Netlink().open)
        return self

    async def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        future = asyncio.run_coroutine_threadsafe(fn(*args), self._loop)
        return await asyncio.wrap_future(future)

    async def add_address(self, spec: nl.VirtualAddress) -> bool:
        assert self.netlink is not None
        return await self.call(self.netlink.add_address, spec)

    async def remove_address(self, spec: nl.VirtualAddress) -> bool:
        assert self.netlink is not None
        return await self.call(self.netlink.remove_address, spec)

    async def add_route(self, route: nl.Route) -> bool:
        assert self.netlink is not None
        return await self.call(self.netlink.add_route, route)

    async def remove_route(self, route: nl.Route) -> bool:
        assert self.netlink is not None
        return await self.call(self.netlink.remove_route, route)

    async def add_rule(self, rule: nl.Rule) -> bool:
        assert self.netlink is not None
        return await self.call(self.netlink.add_rule, rule)

    async def remove_rule(self, rule: nl.Rule) -> bool:
        assert self.netlink is not None
        return await self.call(self.netlink.remove_rule, rule)

    async def interfaces(self) -> list[nl.InterfaceInfo]:
        assert self.netlink is not None
        return await self.call(self.netlink.interfaces)

    def close(self) -> None:
        if self.netlink is not None:
            netlink = self.netlink
            self.netlink = None
            with contextlib.suppress(Exception):
                self._loop.call_soon_threadsafe(netlink.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2.0)
        if not self._thread.is_alive():
            self._loop.close()


class Announcers:
    """Gratuitous ARP / unsolicited NA senders, one AF_PACKET socket per interface.

    keepalived `vrrp_garp_interval` / `vrrp_gna_interval`: the minimum gap between two
    gratuitous ARPs (IPv4) / unsolicited NAs (IPv6) on one interface, whichever instance
    sent them. With a gap, packets are queued per interface and a pacing task sends them
    (the ordered host-ops queue is not held up); with 0 (the default) they go at once.
    """

    def __init__(
        self,
        *,
        factory: Callable[[str], Any] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._by_if: dict[str, Any] = {}
        self._factory = factory
        self._clock = clock
        self.sent = 0
        self.garp_interval = 0.0
        self.gna_interval = 0.0
        self._queues: dict[str, deque[str]] = {}
        self._pacers: dict[str, asyncio.Task[None]] = {}
        self._next_ok: dict[tuple[str, bool], float] = {}  # (ifname, ipv6) -> earliest send

    def _announcer(self, ifname: str) -> Any:
        announcer = self._by_if.get(ifname)
        if announcer is None:
            if self._factory is not None:
                announcer = self._factory(ifname)
            else:
                from hakeeper.io.arp import NeighbourAnnouncer  # noqa: PLC0415

                announcer = NeighbourAnnouncer(ifname)
            self._by_if[ifname] = announcer
        return announcer

    def send_now(self, ifname: str, address: str, count: int) -> bool:
        """Send `count` announcements synchronously (the takeover's critical path); False
        (nothing sent) when a pacing interval is configured: then use the coroutine."""
        if self.garp_interval or self.gna_interval:
            return False
        announcer = self._announcer(ifname)
        for _ in range(count):
            if announcer.announce(address):
                self.sent += 1
        return True

    async def __call__(self, ifname: str, address: str, count: int) -> None:
        if not (self.garp_interval or self.gna_interval):
            announcer = self._announcer(ifname)
            for _ in range(count):
                if announcer.announce(address):
                    self.sent += 1
            return
        queue = self._queues.setdefault(ifname, deque())
        queue.extend([address] * count)
        pacer = self._pacers.get(ifname)
        if pacer is None or pacer.done():
            self._pacers[ifname] = asyncio.get_running_loop().create_task(
                self._pace(ifname, queue), name=f"garp-{ifname}"
            )

    async def _pace(self, ifname: str, queue: deque[str]) -> None:
        loop = asyncio.get_running_loop()
        clock = self._clock or loop.time
        while queue:
            address = queue.popleft()
            v6 = ":" in address
            gap = self.gna_interval if v6 else self.garp_interval
            wait = self._next_ok.get((ifname, v6), 0.0) - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                if self._announcer(ifname).announce(address):
                    self.sent += 1
            except Exception as exc:  # e.g. the interface went away: drop the rest
                log.error("gratuitous ARP/NA for %s on %s failed: %s", address, ifname, exc)
                queue.clear()
            self._next_ok[(ifname, v6)] = clock() + gap

    def close(self) -> None:
        for task in self._pacers.values():
            task.cancel()
        self._pacers.clear()
        self._queues.clear()
        for announcer in self._by_if.values():
            announcer.close()
        self._by_if.clear()


class NetlinkHost:
    """Ordered queue of address/neighbour operations (one worker task).

    Fast path: when nothing is queued or running, VIP adds go straight out of the loop
    thread on a raw rtnetlink socket (`hakeeper.io.netlink.RawRtnl`, applied by the kernel
    within the send) and unpaced GARP/NA frames straight onto the packet socket, so a
    takeover's VIP + GARP cost well under a millisecond instead of a thread round trip.
    Anything behind queued work keeps the queue, so the order never changes.
    """

    def __init__(self, netlink: NetlinkThread | None, garp: GarpFn | None = None) -> None:
        self.netlink = netlink
        self.garp = garp
        self.errors = 0
        self.done = 0
        self._warned: set[str] = set()
        self._queue: deque[Callable[[], Awaitable[None]]] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.raw: nl.RawRtnl | None = None
        self.fast_adds = 0
        self.fast_garps = 0

    # HostOps -----------------------------------------------------------------------------
    def add_addresses(self, ifname: str, vips: Sequence[VirtualAddress]) -> None:
        specs = [to_netlink(v, ifname) for v in vips]
        if self.raw is not None and self._idle.is_set() and self._add_now(specs):
            return
        self._submit(lambda: self._add(specs))

    def _add_now(self, specs: list[nl.VirtualAddress]) -> bool:
        """All of `specs` on the raw socket, or False (nothing sent) if any interface
        cannot be resolved; a send error leaves the rest to the queue (logged there)."""
        raw = self.raw
        assert raw is not None
        try:
            messages = [raw.message(spec) for spec in specs]
        except OSError:
            return False
        for i, (spec, msg) in enumerate(zip(specs, messages, strict=True)):
            try:
                raw.sock.send(msg)
            except OSError as exc:
                log.debug("raw RTM_NEWADDR for %s failed (%s); queued", spec.address, exc)
                rest = specs[i:]
                self._submit(functools.partial(self._add, rest))
                return True
            raw.pending[int.from_bytes(msg[8:12], sys.byteorder)] = spec
            self.fast_adds += 1
        return True

    def _read_acks(self) -> None:
        if self.raw is None:
            return
        try:
            acks = self.raw.read_acks()
        except OSError as exc:
            log.error("rtnetlink ack read failed: %s", exc)
            return
        for spec, err in acks:
            if err:
                self.errors += 1
                where = f"{spec.address}/{spec.prefixlen} on {spec.ifname}" if spec else "a VIP"
                log.error("cannot add %s: %s", where, os.strerror(err))

    def remove_addresses(self, ifname: str, vips: Sequence[VirtualAddress]) -> None:
        specs = [to_netlink(v, ifname) for v in vips]
        self._submit(lambda: self._remove(specs))

    def gratuitous(self, ifname: str, vips: Sequence[VirtualAddress], count: int) -> None:
        if self.garp is None or count <= 0:
            return
        targets = [(v.dev or ifname, str(v.address.ip)) for v in vips]
        garp = self.garp
        if isinstance(garp, Announcers) and self._idle.is_set():
            try:
                if all(garp.send_now(dev, addr, count) for dev, addr in targets):
                    self.fast_garps += 1
                    return
            except Exception as exc:
                self.errors += 1
                log.error("gratuitous ARP/NA on %s failed: %s", ifname, exc)
                return
        self._submit(lambda: self._garp(targets, count))

    def add_routes(
        self, ifname: str, routes: Sequence[RouteSpec], rules: Sequence[RouteSpec]
    ) -> None:
        """virtual_routes then virtual_rules, added while MASTER (after the VIPs)."""
        parsed = self._parse(ifname, routes, rules)
        self._submit(lambda: self._routes(parsed, add=True))

    def remove_routes(
        self, ifname: str, routes: Sequence[RouteSpec], rules: Sequence[RouteSpec]
    ) -> None:
        parsed = self._parse(ifname, routes, rules)
        self._submit(lambda: self._routes(parsed, add=False))

    def _parse(
        self, ifname: str, routes: Sequence[RouteSpec], rules: Sequence[RouteSpec]
    ) -> list[nl.Route | nl.Rule]:
        out: list[nl.Route | nl.Rule] = []
        for spec in routes:
            try:
                out.append(parse_route(spec.words, ifname))
            except ValueError as exc:
                self._warn_once(f"virtual_routes {' '.join(spec.words)!r} skipped: {exc}")
        for spec in rules:
            try:
                out.append(parse_rule(spec.words))
            except ValueError as exc:
                self._warn_once(f"virtual_rules {' '.join(spec.words)!r} skipped: {exc}")
        return out

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    async def _routes(self, items: list[nl.Route | nl.Rule], *, add: bool) -> None:
        if self.netlink is None:
            return
        for item in items if add else list(reversed(items)):
            try:
                if isinstance(item, nl.Route):
                    await (self.netlink.add_route if add else self.netlink.remove_route)(item)
                else:
                    await (self.netlink.add_rule if add else self.netlink.remove_rule)(item)
            except Exception as exc:
                self.errors += 1
                log.error("cannot %s %s: %s", "add" if add else "remove", item, exc)

    def delete_link(self, ifname: str) -> None:
        """Queue the removal of a VMAC interface (after its VIPs are gone)."""
        self._submit(lambda: self._delete_link(ifname))

    # worker ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), name="host-ops")
            if self.netlink is not None and self.raw is None:
                try:
                    self.raw = nl.RawRtnl()
                    loop.add_reader(self.raw.fileno(), self._read_acks)
                except OSError as exc:
                    log.warning("no raw rtnetlink socket (%s); VIPs via the netlink thread", exc)
                    self.raw = None

    async def drain(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self.raw is not None:
            self._read_acks()
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.raw.fileno())
            self.raw.close()
            self.raw = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _submit(self, op: Callable[[], Awaitable[None]]) -> None:
        self._queue.append(op)
        self._idle.clear()
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            op = self._queue.popleft()
            try:
                await op()
                self.done += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
                log.exception("host operation failed")

    async def _add(self, specs: list[nl.VirtualAddress]) -> None:
        if self.netlink is None:
            return
        for spec in specs:
            try:
                await self.netlink.add_address(spec)
            except Exception as exc:
                self.errors += 1
                log.error(
                    "cannot add %s/%d on %s: %s", spec.address, spec.prefixlen, spec.ifname, exc
                )

    async def _remove(self, specs: list[nl.VirtualAddress]) -> None:
        if self.netlink is None:
            return
        for spec in specs:
            try:
                await self.netlink.remove_address(spec)
            except Exception as exc:
                self.errors += 1
                log.error(
                    "cannot remove %s/%d on %s: %s", spec.address, spec.prefixlen, spec.ifname, exc
                )

    async def _delete_link(self, ifname: str) -> None:
        if self.netlink is None or self.netlink.netlink is None:
            return
        try:
            await self.netlink.call(self.netlink.netlink.delete_link, ifname)
        except Exception as exc:
            self.errors += 1
            log.error("cannot delete %s: %s", ifname, exc)

    async def _garp(self, targets: list[tuple[str, str]], count: int) -> None:
        assert self.garp is not None
        for ifname, addr in targets:
            try:
                await self.garp(ifname, addr, count)
            except Exception as exc:
                self.errors += 1
                log.error("gratuitous ARP/NA for %s on %s failed: %s", addr, ifname, exc)

    def status(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "errors": self.errors,
            "queued": len(self._queue),
            "fast_adds": self.fast_adds,
            "fast_garps": self.fast_garps,
        }
