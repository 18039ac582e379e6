"""keepalived's VRRPv2 ``auth_type AH``: an IPsec-AH header (RFC 2402) with HMAC-MD5-96.

Pure functions over whole IPv4 packets (the AH header sits between the IP header and
VRRP, and its ICV covers the IP header), so the adapter must send these with IP_HDRINCL
and pass received packets including the IP header. IPv4 only, VRRPv2 only (keepalived
ignores AH for v3). Verified byte-for-byte against keepalived 2.2.7 captures
(tests/unit/vrrp/golden/keepalived_ah.txt).

Wire format, as keepalived builds it (behaviour read from its vrrp.c, re-implemented):

* IP: TOS 0xC0, TTL 255, protocol 51, a non-zero incrementing IP ID chosen by the sender
  (so the kernel leaves it alone), total length includes the 24-byte AH header.
* AH: next header 112, payload length 4 (24 bytes), reserved 0, SPI = the IPv4 source
  address, sequence number (starts at 1, +1 per advert), 12-byte ICV.
* ICV = first 12 bytes of HMAC-MD5(key = auth_pass truncated/zero-padded to 8 bytes,
  IP header with TOS, fragment offset and header checksum zeroed (and TTL zeroed in
  unicast mode) || AH header with ICV zeroed || VRRP message).
* The VRRP message itself has Auth Type 2 and 8 zero bytes of auth data.
* Receive: ICV must match, SPI must equal the source address, and the sequence number
  must be larger than the instance's counter (:class:`AhCounter`, keepalived's
  anti-replay: a restarted peer is refused until its counter passes the old one).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from dataclasses import dataclass

from hakeeper.vrrp.packet import (
    VRRP_PROTOCOL,
    DecodeError,
    DropReason,
    internet_checksum,
    pass_auth_data,
)

IPPROTO_AH = 51
AH_LEN = 24
AH_PAYLOAD_LEN = 4  # (24 / 4) - 2, RFC 2402 §2.2
ICV_LEN = 12
IPV4_TOS = 0xC0
MAX_SEQ = 0xFFFFFFFD


@dataclass(frozen=True, slots=True)
class AhPacket:
    """A verified AH packet: the VRRP payload and the header facts the receiver needs."""

    src: ipaddress.IPv4Address
    dst: ipaddress.IPv4Address
    ttl: int
    seq: int
    vrrp: bytes


def _icv(key: bytes, ip_header: bytes, ah: bytes, vrrp: bytes, unicast: bool) -> bytes:
    hdr = bytearray(ip_header)
    hdr[1] = 0  # TOS
    hdr[6:8] = b"\x00\x00"  # flags + fragment offset
    hdr[10:12] = b"\x00\x00"  # header checksum
    if unicast:
        hdr[8] = 0  # TTL
    ah_zeroed = ah[:12] + bytes(ICV_LEN)
    return hmac.new(key, bytes(hdr) + ah_zeroed + vrrp, hashlib.md5).digest()[:ICV_LEN]


def encode_ipv4(
    vrrp: bytes,
    *,
    src: ipaddress.IPv4Address,
    dst: ipaddress.IPv4Address,
    password: str | bytes,
    seq: int,
    ip_id: int,
    ttl: int = 255,
    unicast: bool = False,
) -> bytes:
    """The full IPv4 packet (IP header + AH + ``vrrp``) ready for an IP_HDRINCL socket.

    ``vrrp`` is the encoded VRRPv2 message (Auth Type AH, zero auth data). ``ip_id`` must
    be 1..65535 (0 would let the kernel pick one and break the ICV).
    """
    if not 1 <= ip_id <= 0xFFFF:
        raise ValueError("ip_id must be 1..65535 so the kernel keeps it")
    if not 1 <= seq <= 0xFFFFFFFF:
        raise ValueError("sequence number out of range")
    total = 20 + AH_LEN + len(vrrp)
    ip_header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        IPV4_TOS,
        total,
        ip_id,
        0,
        ttl,
        IPPROTO_AH,
        0,
        src.packed,
        dst.packed,
    )
    ah = struct.pack("!BBH4sI", VRRP_PROTOCOL, AH_PAYLOAD_LEN, 0, src.packed, seq) + bytes(ICV_LEN)
    icv = _icv(pass_auth_data(password), ip_header, ah, vrrp, unicast)
    ip_header = ip_header[:10] + struct.pack("!H", internet_checksum(ip_header)) + ip_header[12:]
    return ip_header + ah[:12] + icv + vrrp


def decode_ipv4(
    packet: bytes, *, password: str | bytes, unicast: bool = False
) -> AhPacket | DecodeError:
    """Check a received IPv4 packet with protocol 51; returns the VRRP payload or why not.

    Replay protection is separate (:meth:`AhCounter.accept`), since it is per instance.
    """
    if len(packet) < 20 + AH_LEN + 8:
        return DecodeError(DropReason.TOO_SHORT, f"{len(packet)} bytes")
    if packet[0] >> 4 != 4:
        return DecodeError(DropReason.BAD_VERSION, "not IPv4")
    ihl = (packet[0] & 0x0F) * 4
    (total,) = struct.unpack_from("!H", packet, 2)
    if ihl < 20 or total > len(packet) or total < ihl + AH_LEN + 8:
        return DecodeError(DropReason.TOO_SHORT, f"ihl {ihl} total {total}")
    if packet[9] != IPPROTO_AH:
        return DecodeError(DropReason.AUTH_MISMATCH, f"protocol {packet[9]} is not AH")
    packet = packet[:total]
    ip_header = packet[:ihl]
    ah = packet[ihl : ihl + AH_LEN]
    vrrp = packet[ihl + AH_LEN :]
    next_header, plen, _, spi, seq = struct.unpack_from("!BBH4sI", ah)
    if next_header != VRRP_PROTOCOL or plen != AH_PAYLOAD_LEN:
        return DecodeError(DropReason.AUTH_MISMATCH, f"AH next header {next_header} len {plen}")
    expected = _icv(pass_auth_data(password), ip_header, ah, vrrp, unicast)
    if not hmac.compare_digest(expected, ah[12:]):
        return DecodeError(DropReason.AUTH_MISMATCH, "AH ICV mismatch (bad password?)")
    src = ipaddress.IPv4Address(ip_header[12:16])
    if spi != src.packed:
        return DecodeError(DropReason.AUTH_MISMATCH, "AH SPI is not the source address")
    return AhPacket(src, ipaddress.IPv4Address(ip_header[16:20]), ip_header[8], seq, vrrp)


class AhCounter:
    """One instance's AH sequence state, shared by both directions as keepalived does.

    :meth:`accept` is the anti-replay check for received adverts (only numbers above the
    counter pass, and raise it); :meth:`next` numbers our own adverts from the same
    counter, so a backup that takes over continues above the old master's numbers and
    its peers do not refuse it as a replay.
    """

    def __init__(self) -> None:
        self.seq = 0
        self.ip_id = 0

    def accept(self, seq: int) -> bool:
        if seq > self.seq:
            self.seq = seq
            return True
        return False

    def next(self) -> tuple[int, int]:
        """(sequence number, IP ID) for our next advert."""
        self.seq = self.seq + 1 if self.seq < MAX_SEQ else 1
        self.ip_id = self.ip_id % 0xFFFF + 1
        return self.seq, self.ip_id
