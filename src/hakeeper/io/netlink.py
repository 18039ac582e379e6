"""Addresses, routes, rules, interfaces and VMACs through rtnetlink (pyroute2 AsyncIPRoute).

Owns the kernel side of keepalived's `virtual_ipaddress` / `virtual_ipaddress_excluded`
(`IP[/len] [brd IP|+|-] [dev IF] [scope S] [label L]`, IPv4 default /32, IPv6 without DAD),
simple `virtual_routes` / `virtual_rules`, interface facts (index, MAC, flags, primary
IPv4, link-local IPv6) and `use_vmac` (a private-mode macvlan named `vrrp.VRID`, MAC
00:00:5e:00:01:VRID, or `vrrp6.VRID` with 00:00:5e:00:02:VRID, per RFC 5798 §7.3).
Everything is idempotent: adding what exists or removing what is absent is success.
Works in the calling process's (thread's) network namespace; all calls are coroutines so
they never block or nest the daemon's event loop. No VRRP policy here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

CLONE_NEWNET = 0x40000000
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFF_LOWER_UP = 0x10000
IFA_F_SECONDARY = 0x01
IFA_F_NODAD = 0x02

SCOPES: dict[str, int] = {"global": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}
_EXISTS = {errno.EEXIST}
_ABSENT = {errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH, errno.ENODEV}


def scope_number(scope: str | int) -> int:
    """`global`/`site`/`link`/`host`/`nowhere` or a number 0-255 (iproute2's rt_scopes)."""
    if isinstance(scope, int):
        return scope
    if scope.isdigit():
        return int(scope)
    try:
        return SCOPES[scope]
    except KeyError:
        raise ValueError(f"unknown scope {scope!r}") from None


def vmac_address(vrid: int, family: int = socket.AF_INET) -> str:
    """RFC 5798 §7.3 virtual router MAC: 00-00-5E-00-01-{VRID} (IPv4) / 00-00-5E-00-02-{VRID}."""
    if not 1 <= vrid <= 255:
        raise ValueError(f"VRID out of range: {vrid}")
    kind = 2 if family == socket.AF_INET6 else 1
    return f"00:00:5e:00:{kind:02x}:{vrid:02x}"


def vmac_name(vrid: int, family: int = socket.AF_INET) -> str:
    """keepalived's default VMAC interface name."""
    return f"vrrp6.{vrid}" if family == socket.AF_INET6 else f"vrrp.{vrid}"


@dataclass(frozen=True)
class VirtualAddress:
    """One `virtual_ipaddress` line, resolved to an interface name."""

    address: str
    prefixlen: int
    ifname: str
    broadcast: str | None = None  # an IP, "+" (all host bits set) or "-"/None (none)
    scope: str | int = "global"
    label: str | None = None
    nodad: bool = True  # IPv6 only

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.address else socket.AF_INET

    @classmethod
    def parse(cls, spec: str, ifname: str, **kw: Any) -> VirtualAddress:
        """From `IP[/len]` (IPv4 default /32, IPv6 /128)."""
        addr, _, plen = spec.partition("/")
        ip = ipaddress.ip_address(addr)
        return cls(str(ip), int(plen) if plen else ip.max_prefixlen, ifname, **kw)

    def broadcast_address(self) -> str | None:
        if self.family == socket.AF_INET6 or self.broadcast in (None, "-"):
            return None
        if self.broadcast == "+":
            net = ipaddress.IPv4Network(f"{self.address}/{self.prefixlen}", strict=False)
            return str(net.broadcast_address)
        return self.broadcast


@dataclass(frozen=True)
class AddressInfo:
    address: str
    prefixlen: int
    ifindex: int
    family: int
    scope: int
    label: str | None
    secondary: bool


@dataclass(frozen=True)
class InterfaceInfo:
    index: int
    name: str
    mac: str
    up: bool  # administratively up (IFF_UP)
    running: bool  # IFF_RUNNING (operationally up)
    carrier: bool  # IFF_LOWER_UP
    mtu: int
    kind: str | None  # "veth", "macvlan", "bridge", ... or None


@dataclass(frozen=True)
class Route:
    """A simple `virtual_routes` entry: `dst [via GW] [dev IF] [src IP] [table N] [metric M]`."""

    dst: str  # "198.18.5.0/24" or "default"
    via: str | None = None
    dev: str | None = None
    src: str | None = None
    table: int = 254  # main
    metric: int | None = None
    scope: str | int | None = None

    @property
    def family(self) -> int:
        probe = self.via or self.src or self.dst
        return socket.AF_INET6 if ":" in probe else socket.AF_INET


@dataclass(frozen=True)
class Rule:
    """A simple `virtual_rules` entry: `[from P] [to P] table N [priority N]`."""

    table: int
    src: str | None = None  # "198.18.0.0/24"
    dst: str | None = None
    priority: int | None = None
    family: int = socket.AF_INET


def _prefix(spec: str) -> tuple[str, int]:
    net = ipaddress.ip_network(spec, strict=False)
    return str(net.network_address), net.prefixlen


class Netlink:
    """An rtnetlink handle in the current network namespace. `async with Netlink() as nl:`."""

    def __init__(self) -> None:
        self._ipr: Any = None
        self._saved_sysctls: dict[str, dict[str, str]] = {}  # parent -> {path: old value}
        self._vmac_parent: dict[str, str] = {}  # VMAC -> parent whose sysctls it needs
        self._netns_fd = -1  # the namespace the socket lives in (for /proc/sys writes)

    async def open(self) -> Netlink:
        if self._ipr is None:
            self._netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            ipr = AsyncIPRoute()
            await ipr.setup_endpoint()
            self._ipr = ipr
        return self

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        if self._netns_fd >= 0:
            os.close(self._netns_fd)
            self._netns_fd = -1

    def write_ipv4_conf(self, path: str, value: str) -> str | None:
        """Set net.ipv4.conf.<path> in *this handle's* namespace; returns the old value.

        /proc/sys/net follows the calling thread's namespace, which need not be the one
        the netlink socket was opened in, so hop into that namespace for the write.
        """
        here = os.stat("/proc/thread-self/ns/net").st_ino
        if self._netns_fd < 0 or os.fstat(self._netns_fd).st_ino == here:
            return _write_ipv4_conf(path, value)
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(self._netns_fd)
            try:
                return _write_ipv4_conf(path, value)
            finally:
                _setns(home)
        finally:
            os.close(home)

    async def __aenter__(self) -> Netlink:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    @property
    def ipr(self) -> Any:
        if self._ipr is None:
            raise RuntimeError("Netlink used before open()")
        return self._ipr

    # -- interfaces -----------------------------------------------------------------------
    async def interfaces(self) -> list[InterfaceInfo]:
        out = []
        async for msg in await self.ipr.link("dump"):
            out.append(_interface(msg))
        return out

    async def interface(self, name_or_index: str | int) -> InterfaceInfo | None:
        for info in await self.interfaces():
            if name_or_index in (info.name, info.index):
                return info
        return None

    async def ifindex(self, ifname: str) -> int:
        """Index of `ifname` (a targeted RTM_GETLINK, not a dump); LookupError if absent."""
        try:
            found = await self.ipr.link_lookup(ifname=ifname)
        except NetlinkError as exc:
            if exc.code in _ABSENT:
                found = []
            else:
                raise
        if not found:
            raise LookupError(f"no interface {ifname!r}")
        return int(found[0])

    async def primary_ipv4(self, ifname: str) -> str | None:
        """The first non-secondary IPv4 address of `ifname`."""
        for a in await self.addresses(ifname, socket.AF_INET):
            if not a.secondary:
                return a.address
        return None

    async def link_local_ipv6(self, ifname: str) -> str | None:
        for a in await self.addresses(ifname, socket.AF_INET6):
            if ipaddress.IPv6Address(a.address).is_link_local:
                return a.address
        return None

    async def set_link(self, ifname: str, *, up: bool) -> None:
        await self.ipr.link("set", index=await self.ifindex(ifname), state="up" if up else "down")

    # -- addresses ------------------------------------------------------------------------
    async def addresses(
        self, ifname: str | None = None, family: int | None = None
    ) -> list[AddressInfo]:
        index = await self.ifindex(ifname) if ifname is not None else None
        out = []
        async for msg in await self.ipr.addr("dump"):
            if index is not None and msg["index"] != index:
                continue
            if family is not None and msg["family"] != family:
                continue
            addr = msg.get("address") or msg.get("local")
            if addr is None:
                continue
            flags = msg.get("flags") or msg["flags"]
            out.append(
                AddressInfo(
                    address=str(addr),
                    prefixlen=int(msg["prefixlen"]),
                    ifindex=int(msg["index"]),
                    family=int(msg["family"]),
                    scope=int(msg["scope"]),
                    label=msg.get("label"),
                    secondary=bool(flags & IFA_F_SECONDARY),
                )
            )
        return out

    async def has_address(self, vip: VirtualAddress) -> bool:
        return any(
            a.address == vip.address and a.prefixlen == vip.prefixlen
            for a in await self.addresses(vip.ifname, vip.family)
        )

    async def add_address(self, vip: VirtualAddress) -> bool:
        """Add a VIP; True if added, False if it was already there."""
        kw: dict[str, Any] = {
            "index": await self.ifindex(vip.ifname),
            "address": vip.address,
            "prefixlen": vip.prefixlen,
            "scope": scope_number(vip.scope),
            "family": vip.family,
        }
        brd = vip.broadcast_address()
        if brd:
            kw["broadcast"] = brd
        if vip.label and vip.family == socket.AF_INET:
            kw["label"] = vip.label
        if vip.family == socket.AF_INET6 and vip.nodad:
            kw["flags"] = IFA_F_NODAD
        try:
            await self.ipr.addr("add", **kw)
        except NetlinkError as exc:
            if exc.code in _EXISTS:
                return False
            raise
        return True

    async def remove_address(self, vip: VirtualAddress) -> bool:
        """Remove a VIP; True if removed, False if it was absent (or its interface is gone)."""
        try:
            index = await self.ifindex(vip.ifname)
        except LookupError:
            return False
        try:
            await self.ipr.addr(
                "del", index=index, address=vip.address, prefixlen=vip.prefixlen,
                family=vip.family,
            )  # fmt: skip
        except NetlinkError as exc:
            if exc.code in _ABSENT:
                return False
            raise
        return True

    # -- routes and rules -----------------------------------------------------------------
    async def _route_kw(self, route: Route) -> dict[str, Any]:
        kw: dict[str, Any] = {"family": route.family, "table": route.table}
        if route.dst != "default":
            kw["dst"], kw["dst_len"] = _prefix(route.dst)
        else:
            kw["dst_len"] = 0
        if route.via:
            kw["gateway"] = route.via
        if route.dev:
            kw["oif"] = await self.ifindex(route.dev)
        if route.src:
            kw["prefsrc"] = route.src
        if route.metric is not None:
            kw["priority"] = route.metric
        if route.scope is not None:
            kw["scope"] = scope_number(route.scope)
        return kw

    async def add_route(self, route: Route) -> bool:
        try:
            await self.ipr.route("add", **await self._route_kw(route))
        except NetlinkError as exc:
            if exc.code in _EXISTS:
                return False
            raise
        return True

    async def remove_route(self, route: Route) -> bool:
        try:
            kw = await self._route_kw(route)
        except LookupError:
            return False
        try:
            await self.ipr.route("del", **kw)
        except NetlinkError as exc:
            if exc.code in _ABSENT:
                return False
            raise
        return True

    def _rule_kw(self, rule: Rule) -> dict[str, Any]:
        kw: dict[str, Any] = {"family": rule.family, "table": rule.table}
        if rule.src:
            kw["src"], kw["src_len"] = _prefix(rule.src)
        if rule.dst:
            kw["dst"], kw["dst_len"] = _prefix(rule.dst)
        if rule.priority is not None:
            kw["priority"] = rule.priority
        return kw

    async def add_rule(self, rule: Rule) -> bool:
        try:
            await self.ipr.rule("add", **self._rule_kw(rule))
        except NetlinkError as exc:
            if exc.code in _EXISTS:
                return False
            raise
        return True

    async def remove_rule(self, rule: Rule) -> bool:
        try:
            await self.ipr.rule("del", **self._rule_kw(rule))
        except NetlinkError as exc:
            if exc.code in _ABSENT:
                return False
            raise
        return True

    # -- VMAC -----------------------------------------------------------------------------
    async def create_vmac(
        self,
        parent: str,
        vrid: int,
        *,
        family: int = socket.AF_INET,
        name: str | None = None,
        mac: str | None = None,
        arp_sysctls: bool = True,
    ) -> InterfaceInfo:
        """Create (or reuse) the macvlan `vrrp.VRID` on `parent`, private mode, VRRP MAC, up.

        With `arp_sysctls` the parent gets arp_ignore=1 and arp_filter=1 (as keepalived
        2.2.7's vrrp_if_config does) plus arp_announce=2 (ours: ARP requests leaving the
        parent use its own address, never a VIP), and the VMAC arp_ignore=1,
        accept_local=1, rp_filter=0, promote_secondaries=1 (keepalived's), so neighbours
        learn a VIP only with the VMAC's MAC. The parent's old values are saved by the
        first VMAC on it and come back when `delete_link` removes the last one.
        """
        ifname = name or vmac_name(vrid, family)
        address = mac or vmac_address(vrid, family)
        existing = await self.interface(ifname)
        if existing is None:
            try:
                await self.ipr.link(
                    "add", ifname=ifname, kind="macvlan", link=await self.ifindex(parent),
                    macvlan_mode="private", address=address,
                )  # fmt: skip
            except NetlinkError as exc:
                if exc.code not in _EXISTS:
                    raise
        if arp_sysctls and family == socket.AF_INET:
            self._vmac_parent[ifname] = parent
            saved = self._saved_sysctls.setdefault(parent, {})
            for key, value in PARENT_SYSCTLS:
                old = self.write_ipv4_conf(f"{parent}/{key}", value)
                if old is not None:
                    saved.setdefault(f"{parent}/{key}", old)  # the first VMAC's view wins
            for key, value in VMAC_SYSCTLS:
                self.write_ipv4_conf(f"{ifname}/{key}", value)
        await self.ipr.link("set", index=await self.ifindex(ifname), state="up")
        info = await self.interface(ifname)
        if info is None:  # pragma: no cover - deleted under our feet
            raise LookupError(f"VMAC {ifname} vanished after creation")
        return info

    async def delete_link(self, ifname: str) -> bool:
        """Delete an interface (e.g. a VMAC); False if it does not exist.

        The last VMAC of a parent (even one already deleted by someone else) restores
        the parent's saved sysctls.
        """
        try:
            info = await self.interface(ifname)
            if info is None:
                return False
            try:
                await self.ipr.link("del", index=info.index)
            except NetlinkError as exc:
                if exc.code in _ABSENT:
                    return False
                raise
            return True
        finally:
            self._release_parent(ifname)

    def _release_parent(self, vmac: str) -> None:
        parent = self._vmac_parent.pop(vmac, None)
        if parent is None or parent in self._vmac_parent.values():
            return
        for path, old in self._saved_sysctls.pop(parent, {}).items():
            self.write_ipv4_conf(path, old)


# net.ipv4.conf values a VMAC needs on its parent and on itself (see create_vmac)
PARENT_SYSCTLS = (("arp_ignore", "1"), ("arp_filter", "1"), ("arp_announce", "2"))
VMAC_SYSCTLS = (
    ("arp_ignore", "1"),
    ("accept_local", "1"),
    ("rp_filter", "0"),
    ("promote_secondaries", "1"),
)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _write_ipv4_conf(path: str, value: str) -> str | None:
    """Set /proc/sys/net/ipv4/conf/<path> in this thread's namespace; returns the old value."""
    full = f"/proc/sys/net/ipv4/conf/{path}"
    try:
        with open(full, encoding="ascii") as f:
            old = f.read().strip()
        with open(full, "w", encoding="ascii") as f:
            f.write(value)
    except OSError:
        return None
    return old


def _interface(msg: Any) -> InterfaceInfo:
    flags = int(msg["flags"])
    linkinfo = msg.get("linkinfo") or msg.get("IFLA_LINKINFO")
    kind = linkinfo.get("kind") if linkinfo is not None else None
    return InterfaceInfo(
        index=int(msg["index"]),
        name=str(msg.get("ifname")),
        mac=str(msg.get("address") or ""),
        up=bool(flags & IFF_UP),
        running=bool(flags & IFF_RUNNING),
        carrier=bool(flags & IFF_LOWER_UP),
        mtu=int(msg.get("mtu") or 0),
        kind=kind,
    )


# ------------------------------------------------------------- synchronous fast path
# The takeover's critical path (RFC 5798 §6.4.1: the new master configures its VIPs, then
# announces them) must not wait for the pyroute2 thread. `RawRtnl` is a plain non-blocking
# NETLINK_ROUTE socket: RTM_NEWADDR messages are built once per (address, ifindex) and
# sent from the caller's thread; rtnetlink handles a request inside sendmsg(), so the
# address exists when `send` returns. Acks are read later with `read_acks` (EEXIST is
# success, as everywhere in this module).

RTM_NEWADDR = 20
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_LABEL = 3
IFA_BROADCAST = 4
IFA_FLAGS = 8


def _rta(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def newaddr_message(vip: VirtualAddress, ifindex: int, seq: int) -> bytes:
    """The RTM_NEWADDR request `ip addr add` sends for `vip` (with NLM_F_ACK)."""
    family = vip.family
    packed = ipaddress.ip_address(vip.address).packed
    flags = IFA_F_NODAD if family == socket.AF_INET6 and vip.nodad else 0
    attrs = []
    if family == socket.AF_INET:
        attrs.append(_rta(IFA_LOCAL, packed))
    attrs.append(_rta(IFA_ADDRESS, packed))
    brd = vip.broadcast_address()
    if brd:
        attrs.append(_rta(IFA_BROADCAST, ipaddress.IPv4Address(brd).packed))
    if vip.label and family == socket.AF_INET:
        attrs.append(_rta(IFA_LABEL, vip.label.encode()[:15] + b"\0"))
    if flags:
        attrs.append(_rta(IFA_FLAGS, struct.pack("=I", flags)))
    ifa = struct.pack(
        "=BBBBI", family, vip.prefixlen, flags & 0xFF, scope_number(vip.scope), ifindex
    )
    body = ifa + b"".join(attrs)
    nl_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    return struct.pack("=IHHII", 16 + len(body), RTM_NEWADDR, nl_flags, seq, 0) + body


def parse_acks(data: bytes) -> list[tuple[int, int]]:
    """(seq, errno) of every NLMSG_ERROR (ack) in a datagram; errno 0 = success."""
    out: list[tuple[int, int]] = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
        if length < 16:
            break
        if kind == NLMSG_ERROR and offset + 20 <= len(data):
            (code,) = struct.unpack_from("=i", data, offset + 16)
            out.append((seq, -code))
        offset += (length + 3) & ~3
    return out


class RawRtnl:
    """A non-blocking NETLINK_ROUTE socket for synchronous VIP adds (see above)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
        self.sock.bind((0, 0))
        self._seq = 0x40000000
        self._cache: dict[tuple[VirtualAddress, int], bytes] = {}
        self.pending: dict[int, VirtualAddress] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def message(self, vip: VirtualAddress) -> bytes:
        """The (cached) request for `vip`; OSError if its interface does not exist."""
        index = socket.if_nametoindex(vip.ifname)
        key = (vip, index)
        msg = self._cache.get(key)
        if msg is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._seq += 1
            msg = self._cache[key] = newaddr_message(vip, index, self._seq)
        return msg

    def add_address(self, vip: VirtualAddress) -> None:
        """Send the RTM_NEWADDR now (the kernel applies it before this returns)."""
        msg = self.message(vip)
        self.sock.send(msg)
        (seq,) = struct.unpack_from("=I", msg, 8)
        self.pending[seq] = vip

    def read_acks(self) -> list[tuple[VirtualAddress | None, int]]:
        """Acks received so far: (vip, errno) with EEXIST mapped to 0."""
        out: list[tuple[VirtualAddress | None, int]] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return out
            for seq, err in parse_acks(data):
                vip = self.pending.pop(seq, None)
                out.append((vip, 0 if err in _EXISTS else err))

    def close(self) -> None:
        self.sock.close()
