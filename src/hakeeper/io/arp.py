"""Gratuitous ARP (IPv4) and unsolicited Neighbour Advertisement (IPv6) frames and their sender.

Owns the "re-point every neighbour" step of RFC 5798 §6.4.2 / RFC 3768 §6.4.2 when a node
becomes master. GARP follows RFC 5227 §3 / keepalived: an ARP *request* with sender =
target = VIP, broadcast destination MAC, source MAC = the interface MAC or the VMAC. The
unsolicited NA follows RFC 4861 §4.4 and §7.2.6: ICMPv6 type 136 to ff02::1 with hop
limit 255, Solicited=0, Override=1, Router as configured (keepalived sets it when the
node forwards), and a Target Link-Layer Address option; the ICMPv6 checksum is computed
here over the RFC 8200 §8.1 pseudo-header. Frame builders are pure; `NeighbourAnnouncer`
writes them with an AF_PACKET socket bound to one interface. Repeat/delay policy
(`garp_master_delay`, `_repeat`, `_refresh`) belongs to the caller.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_ALL = 0x0003
BROADCAST_MAC = b"\xff" * 6
ALL_NODES = ipaddress.IPv6Address("ff02::1")
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
ICMPV6_NA = 136
NA_ROUTER = 0x80000000
NA_SOLICITED = 0x40000000
NA_OVERRIDE = 0x20000000
ETH_MIN_FRAME = 60  # without FCS


def mac_bytes(mac: str | bytes) -> bytes:
    """'aa:bb:cc:dd:ee:ff' (or 6 raw bytes) -> 6 bytes."""
    if isinstance(mac, bytes):
        if len(mac) != 6:
            raise ValueError(f"MAC must be 6 bytes, got {len(mac)}")
        return mac
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"bad MAC {mac!r}")
    return raw


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    frame = dst + src + struct.pack("!H", ethertype) + payload
    return frame.ljust(ETH_MIN_FRAME, b"\0")


def garp_frame(ip: str, mac: str | bytes) -> bytes:
    """A gratuitous ARP request announcing `ip` at `mac` (Ethernet frame, padded to 60)."""
    sha = mac_bytes(mac)
    spa = ipaddress.IPv4Address(ip).packed
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + sha + spa + bytes(6) + spa
    return ethernet(BROADCAST_MAC, sha, ETH_P_ARP, arp)


def na_frame(
    ip: str,
    mac: str | bytes,
    *,
    router: bool = False,
    src: str | None = None,
) -> bytes:
    """An unsolicited Neighbour Advertisement for `ip` at `mac` to all-nodes (ff02::1).

    The IPv6 source defaults to the target address itself (keepalived does the same);
    pass the interface's link-local address as `src` to use that instead.
    """
    lladdr = mac_bytes(mac)
    target = ipaddress.IPv6Address(ip)
    source = ipaddress.IPv6Address(src) if src else target
    flags = NA_OVERRIDE | (NA_ROUTER if router else 0)
    option = struct.pack("!BB", 2, 1) + lladdr  # Target Link-Layer Address, 8 bytes
    body = struct.pack("!BBHI", ICMPV6_NA, 0, 0, flags) + target.packed + option
    pseudo = source.packed + ALL_NODES.packed + struct.pack("!I3xB", len(body), 58)
    csum = _checksum(pseudo + body)
    body = body[:2] + struct.pack("!H", csum) + body[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(body), 58, 255) + source.packed + ALL_NODES.packed
    return ethernet(ALL_NODES_MAC, lladdr, ETH_P_IPV6, ip6 + body)


def parse_arp(frame: bytes) -> tuple[int, str, str, str, str] | None:
    """(op, sender MAC, sender IP, target MAC, target IP) of an Ethernet ARP frame, else None."""
    if len(frame) < 42 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, 14)
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4):
        return None
    a = frame[22:42]
    return (
        op,
        mac_text(a[0:6]),
        socket.inet_ntoa(a[6:10]),
        mac_text(a[10:16]),
        socket.inet_ntoa(a[16:20]),
    )


class NeighbourAnnouncer:
    """Send GARP / unsolicited NA frames on one interface (AF_PACKET, this thread's netns)."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.sent = 0
        self.errors = 0
        self._frames: dict[tuple[str, bytes | str | None, bool], bytes] = {}
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # proto 0: send only
        try:
            self._sock.bind((ifname, 0))
            self._sock.setblocking(False)
            self.mac: bytes = self._sock.getsockname()[4][:6]
        except BaseException:
            self._sock.close()
            raise

    def send_frame(self, frame: bytes) -> bool:
        try:
            self._sock.send(frame)
        except OSError as exc:  # ENETDOWN, ENOBUFS, EAGAIN: counted, caller may retry later
            self.errors += 1
            log.debug("neighbour announcement on %s failed: %s", self.ifname, exc)
            return False
        self.sent += 1
        return True

    def garp(self, ip: str, mac: str | bytes | None = None) -> bool:
        """One gratuitous ARP for `ip`, from `mac` (default: this interface's MAC)."""
        return self.send_frame(garp_frame(ip, mac if mac is not None else self.mac))

    def unsolicited_na(
        self,
        ip: str,
        mac: str | bytes | None = None,
        *,
        router: bool = False,
        src: str | None = None,
    ) -> bool:
        """One unsolicited NA for `ip` (see `na_frame`)."""
        return self.send_frame(
            na_frame(ip, mac if mac is not None else self.mac, router=router, src=src)
        )

    def announce(self, ip: str, mac: str | bytes | None = None, *, router: bool = False) -> bool:
        """GARP for IPv4 addresses, unsolicited NA for IPv6 ones (frames built once and
        kept: a takeover sends them on its critical path)."""
        key = (ip, mac, router)
        frame = self._frames.get(key)
        if frame is None:
            own = mac if mac is not None else self.mac
            if ipaddress.ip_address(ip).version == 6:
                frame = na_frame(ip, own, router=router)
            else:
                frame = garp_frame(ip, own)
            if len(self._frames) > 1024:
                self._frames.clear()
            self._frames[key] = frame
        return self.send_frame(frame)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> NeighbourAnnouncer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
