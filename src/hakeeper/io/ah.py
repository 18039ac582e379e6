"""VRRPv2 `auth_type AH` on the wire, as keepalived does it (IPsec AH, HMAC-MD5-96).

Owns the IP-layer wrapping that RFC 2338 §5.3.6.3 / RFC 2402 describe and keepalived
implements for `authentication { auth_type AH; auth_pass X }` (IPv4 only): the datagram is
IP header (protocol 51) + a 24-byte AH header (next header 112, payload length 4, SPI =
the sender's IPv4 address, a sequence number counting up from 1, a 12-byte ICV) + the
VRRPv2 message (auth type 2, empty auth data, the normal v2 checksum). The ICV is the first
96 bits of HMAC-MD5 keyed with `auth_pass` (8 bytes at most) over the IP header with TOS
and header checksum zeroed (keepalived keeps the TTL; flags/fragment are zero anyway),
the AH header with a zero ICV, and the VRRP message. This was checked against the adverts
of Debian's keepalived 2.2.7, and it accepts ours. The VRRP message itself is the codec's
(`hakeeper.vrrp.packet`); the IP ID and the AH sequence number are kept by `AhSigner`.
Anti-replay (rejecting an old sequence number) is the caller's policy; the number is handed back.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct
from dataclasses import dataclass, replace
from enum import Enum

from hakeeper.io.vrrp_socket import (
    IPPROTO_AH,
    IPPROTO_VRRP,
    VRRP_TOS,
    VRRP_TTL,
    ReceivedPacket,
    build_ipv4_header,
)

AH_HEADER_LEN = 24  # 12 fixed bytes + 12-byte ICV
AH_PAYLOAD_LEN_FIELD = 4  # (24 / 4) - 2, RFC 2402 §2.2
ICV_LEN = 12
KEY_LEN = 8  # keepalived truncates auth_pass to 8 bytes


class AhError(Enum):
    """Why an AH-wrapped advert is dropped (count it; never raise for peer input)."""

    TOO_SHORT = "shorter than an AH header"
    NOT_AH = "not an IPv4 AH packet"
    BAD_LENGTH = "AH payload length is not 4 (HMAC-MD5-96)"
    NOT_VRRP = "AH next header is not VRRP (112)"
    BAD_SPI = "SPI differs from the IP source address"
    BAD_ICV = "ICV does not verify (wrong auth_pass or altered packet)"


@dataclass(frozen=True)
class AhVerified:
    """A verified advert: the inner VRRP packet and the sender's AH sequence number."""

    packet: ReceivedPacket  # payload is now the VRRP message only
    seq: int
    spi: int


def ah_key(auth_pass: str | bytes) -> bytes:
    raw = auth_pass.encode() if isinstance(auth_pass, str) else auth_pass
    return raw[:KEY_LEN]


def _icv(key: bytes, ip_header: bytes, ah_fixed: bytes, vrrp: bytes) -> bytes:
    header = bytearray(ip_header)
    header[1] = 0  # TOS
    header[6:8] = b"\0\0"  # flags + fragment offset
    header[10:12] = b"\0\0"  # header checksum
    data = bytes(header) + ah_fixed + bytes(ICV_LEN) + vrrp
    return hmac.new(key, data, hashlib.md5).digest()[:ICV_LEN]


def ah_datagram(
    vrrp: bytes,
    *,
    key: bytes,
    src: str,
    dst: str,
    seq: int,
    ident: int,
    ttl: int = VRRP_TTL,
    tos: int = VRRP_TOS,
) -> bytes:
    """A complete IPv4 datagram (header + AH + VRRP) for `VrrpSocket.send_datagram`."""
    header = build_ipv4_header(
        src, dst, AH_HEADER_LEN + len(vrrp), ident=ident, protocol=IPPROTO_AH, ttl=ttl, tos=tos
    )
    ah_fixed = struct.pack(
        "!BBH4sI", IPPROTO_VRRP, AH_PAYLOAD_LEN_FIELD, 0, socket.inet_aton(src), seq & 0xFFFFFFFF
    )
    return header + ah_fixed + _icv(key, header, ah_fixed, vrrp) + vrrp


def ah_verify(pkt: ReceivedPacket, key: bytes) -> AhVerified | AhError:
    """Check a packet received on a protocol-51 VrrpSocket; unwrap the VRRP message."""
    if pkt.family != socket.AF_INET or len(pkt.ip_header) < 20 or pkt.ip_header[9] != IPPROTO_AH:
        return AhError.NOT_AH
    data = pkt.payload
    if len(data) < AH_HEADER_LEN:
        return AhError.TOO_SHORT
    next_header, plen, _reserved, spi, seq = struct.unpack_from("!BBHII", data, 0)
    if plen != AH_PAYLOAD_LEN_FIELD:
        return AhError.BAD_LENGTH
    if next_header != IPPROTO_VRRP:
        return AhError.NOT_VRRP
    if spi != struct.unpack("!I", socket.inet_aton(pkt.src))[0]:
        return AhError.BAD_SPI
    vrrp = data[AH_HEADER_LEN:]
    # Linux hands raw sockets the header as received except for total length/fragment
    # handling; rebuild total length from what we actually got.
    header = bytearray(pkt.ip_header)
    header[2:4] = struct.pack("!H", len(pkt.ip_header) + len(data))
    expected = _icv(key, bytes(header), data[:12], vrrp)
    if not hmac.compare_digest(expected, data[12:AH_HEADER_LEN]):
        return AhError.BAD_ICV
    return AhVerified(packet=replace(pkt, payload=bytes(vrrp)), seq=seq, spi=spi)


class AhSigner:
    """Per-instance AH state: the next sequence number and IP identification."""

    def __init__(self, auth_pass: str | bytes, *, first_seq: int = 1) -> None:
        self.key = ah_key(auth_pass)
        self.seq = first_seq
        self.ident = first_seq

    def wrap(self, vrrp: bytes, *, src: str, dst: str) -> bytes:
        """The next datagram to send (advances the counters)."""
        datagram = ah_datagram(vrrp, key=self.key, src=src, dst=dst, seq=self.seq, ident=self.ident)
        self.seq = (self.seq + 1) & 0xFFFFFFFF or 1
        self.ident = (self.ident + 1) & 0xFFFF or 1
        return datagram
