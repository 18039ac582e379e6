"""VRRPv2 `auth_type AH` for received/sent datagrams: a thin adapter over `vrrp.auth_ah`.

keepalived's IPsec-AH wrapping (RFC 2338 §5.3.6.3 / RFC 2402, HMAC-MD5-96) is implemented
once, in the pure `hakeeper.vrrp.auth_ah` (wire format, ICV, golden-tested against
keepalived 2.2.7 captures); the daemon uses it directly (runtime/driver.py, sockets.py).
This module keeps the socket-level helpers some tools and tests use: `ah_datagram` (a full
IPv4 datagram for `VrrpSocket.send_datagram`), `ah_verify` (a `ReceivedPacket` from a
protocol-51 socket -> the inner VRRP packet, or an `AhError` naming the header check that
failed) and `AhSigner` (sequence number and IP ID of one sender). Anti-replay is the
caller's policy (`vrrp.auth_ah.AhCounter`); the sequence number is handed back.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass, replace
from enum import Enum

from hakeeper.io.vrrp_socket import IPPROTO_AH, IPPROTO_VRRP, VRRP_TOS, VRRP_TTL, ReceivedPacket
from hakeeper.vrrp import auth_ah
from hakeeper.vrrp.packet import DecodeError, DropReason

AH_HEADER_LEN = auth_ah.AH_LEN  # 12 fixed bytes + 12-byte ICV
AH_PAYLOAD_LEN_FIELD = auth_ah.AH_PAYLOAD_LEN
ICV_LEN = auth_ah.ICV_LEN
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
    if tos != VRRP_TOS:
        raise ValueError("keepalived's AH adverts always carry TOS 0xC0")
    return auth_ah.encode_ipv4(
        vrrp,
        src=ipaddress.IPv4Address(src),
        dst=ipaddress.IPv4Address(dst),
        password=key,
        seq=seq & 0xFFFFFFFF or 1,
        ip_id=ident & 0xFFFF or 1,
        ttl=ttl,
    )


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
    header = bytearray(pkt.ip_header)  # total length as actually received
    header[2:4] = struct.pack("!H", len(pkt.ip_header) + len(data))
    result = auth_ah.decode_ipv4(bytes(header) + data, password=key)
    if isinstance(result, DecodeError):
        return AhError.TOO_SHORT if result.reason is DropReason.TOO_SHORT else AhError.BAD_ICV
    return AhVerified(packet=replace(pkt, payload=result.vrrp), seq=seq, spi=spi)


class AhSigner:
    """Per-sender AH state: the next sequence number and IP identification."""

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
