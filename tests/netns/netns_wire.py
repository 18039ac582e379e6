"""Tiny VRRP payload builders for the adapter tests (independent of the codec under test)."""

from __future__ import annotations

import ipaddress
import struct


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def v2_advert(vrid: int, prio: int, vips: list[str], adver_int: int = 1) -> bytes:
    addrs = b"".join(ipaddress.IPv4Address(v).packed for v in vips)
    msg = struct.pack("!BBBBBBH", 0x21, vrid, prio, len(vips), 0, adver_int, 0) + addrs
    msg += bytes(8)
    return msg[:6] + struct.pack("!H", checksum(msg)) + msg[8:]


def v3_advert(vrid: int, prio: int, vips: list[str], src: str, dst: str, *, cs: int = 100) -> bytes:
    """VRRPv3 with the pseudo-header checksum (IPv6 always, IPv4 keepalived's default)."""
    ips = [ipaddress.ip_address(v) for v in vips]
    addrs = b"".join(ip.packed for ip in ips)
    msg = struct.pack("!BBBBHH", 0x31, vrid, prio, len(ips), cs, 0) + addrs
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 112, len(msg))
    else:
        pseudo = s.packed + d.packed + struct.pack("!I3xB", len(msg), 112)
    return msg[:6] + struct.pack("!H", checksum(pseudo + msg)) + msg[8:]
