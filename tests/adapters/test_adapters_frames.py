"""Pure frame builders and parsers: GARP, unsolicited NA, IPv4 header split, link messages."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from hakeeper.io.arp import garp_frame, mac_bytes, na_frame, parse_arp
from hakeeper.io.linkwatch import (
    IFF_LOWER_UP,
    IFF_RUNNING,
    IFF_UP,
    RTM_DELLINK,
    RTM_NEWLINK,
    parse_messages,
)
from hakeeper.io.vrrp_socket import parse_ipv4

MAC = "02:00:5e:10:00:01"


def write_pcap(path: Path, frames: list[bytes]) -> None:
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for i, frame in enumerate(frames):
        data += struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame
    path.write_bytes(data)


def tshark_v(path: Path) -> str:
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    out = subprocess.run(["tshark", "-r", str(path), "-V"], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    return out.stdout


def test_garp_frame_layout() -> None:
    frame = garp_frame("198.18.0.100", MAC)
    assert len(frame) == 60
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac_bytes(MAC)
    assert parse_arp(frame) == (1, MAC, "198.18.0.100", "00:00:00:00:00:00", "198.18.0.100")


def test_na_frame_layout_and_checksum() -> None:
    frame = na_frame("2001:db8::100", MAC, router=True)
    assert frame[:6] == bytes.fromhex("333300000001")
    ip6 = frame[14:54]
    assert ip6[6] == 58 and ip6[7] == 255  # ICMPv6, hop limit 255
    icmp = frame[54 : 54 + struct.unpack("!H", ip6[4:6])[0]]
    assert icmp[0] == 136
    flags = struct.unpack("!I", icmp[4:8])[0]
    assert flags >> 29 == 0b101  # R=1 S=0 O=1
    assert icmp[-8:] == b"\x02\x01" + mac_bytes(MAC)
    # checksum verifies: sum over pseudo-header + message is 0xffff
    pseudo = ip6[8:40] + struct.pack("!I3xB", len(icmp), 58)
    data = pseudo + icmp
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF


def test_tshark_decodes_garp_and_na(tmp_path: Path) -> None:
    pcap = tmp_path / "frames.pcap"
    write_pcap(pcap, [garp_frame("198.18.0.100", MAC), na_frame("2001:db8::100", MAC)])
    text = tshark_v(pcap)
    assert "Address Resolution Protocol (ARP Announcement)" in text, text
    assert "[Is gratuitous: True]" in text
    assert "Opcode: request (1)" in text
    assert "Sender IP address: 198.18.0.100" in text
    assert "Neighbor Advertisement" in text
    assert "[Checksum Status: Good]" in text
    assert "= Solicited: Not set" in text
    assert "= Override: Set" in text
    assert "Hop Limit: 255" in text


def test_parse_ipv4_and_garbage() -> None:
    src, dst = socket.inet_aton("198.18.0.1"), socket.inet_aton("224.0.0.18")
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 28, 1, 0, 255, 112, 0, src, dst)
    pkt = parse_ipv4(header + b"\x21\x01\x64\x00\x00\x01\x00\x00", ifindex=4)
    assert pkt is not None
    assert (pkt.src, pkt.dst, pkt.ttl, pkt.ifindex) == ("198.18.0.1", "224.0.0.18", 255, 4)
    assert pkt.payload == b"\x21\x01\x64\x00\x00\x01\x00\x00"
    assert parse_ipv4(b"", 1) is None
    assert parse_ipv4(b"\x65" + header[1:], 1) is None  # version 6 in a v4 socket
    assert parse_ipv4(b"\x4f" + header[1:], 1) is None  # IHL longer than the datagram


def link_message(mtype: int, index: int, name: str, flags: int, carrier: int) -> bytes:
    def attr(atype: int, value: bytes) -> bytes:
        raw = struct.pack("=HH", 4 + len(value), atype) + value
        return raw + b"\0" * (-len(raw) % 4)

    body = struct.pack("=BxHiII", 0, 1, index, flags, 0)
    body += attr(3, name.encode() + b"\0") + attr(16, bytes([6])) + attr(33, bytes([carrier]))
    return struct.pack("=IHHII", 16 + len(body), mtype, 0, 0, 0) + body


def test_link_messages_decode_and_garbage_is_counted_not_raised() -> None:
    up = IFF_UP | IFF_RUNNING | IFF_LOWER_UP
    data = link_message(RTM_NEWLINK, 3, "eth0", up, 1) + link_message(
        RTM_DELLINK, 4, "vrrp.7", 0, 0
    )
    events = list(parse_messages(data))
    assert [(e.ifname, e.usable, e.carrier, e.deleted) for e in events if e] == [
        ("eth0", True, True, False),
        ("vrrp.7", False, False, True),
    ]
    assert events[0] is not None and events[0].operstate == "up"
    assert list(parse_messages(b"\xff" * 7)) == []
    truncated = link_message(RTM_NEWLINK, 3, "eth0", up, 1)[:-6]
    assert list(parse_messages(struct.pack("=I", 200) + truncated[4:])) == [None]
