"""Receive demultiplexing: decode, VRID lookup, drop counters, the decode cache, peer check."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from fakewire import FakeWire

from hakeeper.io.vrrp_socket import ReceivedPacket, VrrpSocketConfig
from hakeeper.runtime.params import SocketKey
from hakeeper.runtime.sockets import SocketGroup
from hakeeper.vrrp.packet import Advert, DecodeError, encode

PEER, OTHER, GROUP = "198.18.0.1", "198.18.0.9", "224.0.0.18"


class Driver:
    def __init__(self, vrid: int) -> None:
        self.params = type("P", (), {"vrid": vrid})()
        self.adverts: list[Advert] = []
        self.errors: list[DecodeError] = []

    def on_advert(self, advert: Advert) -> None:
        self.adverts.append(advert)

    def on_decode_error(self, error: DecodeError) -> None:
        self.errors.append(error)


def payload(vrid: int, src: str = PEER, prio: int = 100) -> bytes:
    adv = Advert(3, vrid, prio, (ipaddress.ip_address("198.18.0.100"),), 10)
    return encode(adv, src=ipaddress.ip_address(src), dst=ipaddress.ip_address(GROUP))


def group(peers: tuple[str, ...] = (), check: bool = False) -> tuple[SocketGroup, Driver]:
    key = SocketKey("eth0", socket.AF_INET, None, peers, None)
    sock: Any = FakeWire().factory("198.18.0.2")(VrrpSocketConfig("eth0", unicast_peers=peers))
    g = SocketGroup(key, sock, check_unicast_src=check)
    drv = Driver(51)
    g.drivers[51] = drv  # type: ignore[assignment]
    return g, drv


def pkt(data: bytes, src: str = PEER, dst: str = GROUP, ttl: int = 255) -> ReceivedPacket:
    return ReceivedPacket(socket.AF_INET, data, src, dst, ttl, 1)


def test_demux_and_drop_reasons() -> None:
    g, drv = group()
    g.on_packet(pkt(payload(51)))
    g.on_packet(pkt(payload(51)))  # identical bytes: served from the decode cache
    g.on_packet(pkt(payload(52)))
    g.on_packet(pkt(payload(51), ttl=64))
    g.on_packet(pkt(b"\x31\x33\x00"))  # VRID byte readable: counted on the instance
    g.on_packet(pkt(b"\x31"))  # not even a VRID: counted on the socket
    g.on_packet(pkt(payload(51), src="not-an-ip"))
    assert len(drv.adverts) == 2 and drv.adverts[0] is drv.adverts[1]
    assert [e.reason.name for e in drv.errors] == ["BAD_TTL", "TOO_SHORT"]
    assert g.dropped == {"UNKNOWN_VRID": 1, "TOO_SHORT": 1, "BAD_ADDRESS": 1}


def test_unicast_source_check_follows_vrrp_check_unicast_src() -> None:
    loose, drv = group(peers=(PEER,))
    loose.on_packet(pkt(payload(51, OTHER), src=OTHER, dst="198.18.0.2"))
    assert len(drv.adverts) == 1, "keepalived accepts any source by default"
    strict, drv2 = group(peers=(PEER,), check=True)
    strict.on_packet(pkt(payload(51, OTHER), src=OTHER, dst="198.18.0.2"))
    strict.on_packet(pkt(payload(51, PEER), src=PEER, dst="198.18.0.2"))
    assert len(drv2.adverts) == 1 and strict.dropped == {"NOT_A_PEER": 1}
