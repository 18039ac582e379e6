"""keepalived's VRRPv2 AH authentication: golden bytes captured from keepalived 2.2.7."""

from __future__ import annotations

import socket

from hakeeper.io.ah import AhError, AhSigner, AhVerified, ah_datagram, ah_key, ah_verify
from hakeeper.io.vrrp_socket import ReceivedPacket

# keepalived 2.2.7, `auth_type AH; auth_pass secret12`, VRID 51, prio 150, 198.18.0.1 -> group
IP_HEADER = bytes.fromhex("45c0004000010000ff3314a4c6120001e0000012")
AH_AND_VRRP = bytes.fromhex(
    "70040000c612000100000001b81f2e011883f82c071821ae2133960102018053c61200640000000000000000"
)
VRRP = AH_AND_VRRP[24:]


def received(ip_header: bytes = IP_HEADER, payload: bytes = AH_AND_VRRP) -> ReceivedPacket:
    return ReceivedPacket(socket.AF_INET, payload, "198.18.0.1", "224.0.0.18", 255, 2, ip_header)


def test_keepalived_advert_verifies() -> None:
    result = ah_verify(received(), ah_key("secret12"))
    assert isinstance(result, AhVerified)
    assert (result.seq, result.packet.payload) == (1, VRRP)
    assert result.packet.payload[4] == 2  # VRRP auth type AH


def test_we_build_keepalived_identical_bytes() -> None:
    datagram = ah_datagram(VRRP, key=ah_key("secret12"), src="198.18.0.1", dst="224.0.0.18",
                           seq=1, ident=1)  # fmt: skip
    assert datagram == IP_HEADER + AH_AND_VRRP


def test_signer_counts_up_and_verifies() -> None:
    signer = AhSigner("secret12-and-more")  # truncated to 8 bytes like keepalived
    first = signer.wrap(VRRP, src="198.18.0.1", dst="224.0.0.18")
    second = signer.wrap(VRRP, src="198.18.0.1", dst="224.0.0.18")
    assert first == IP_HEADER + AH_AND_VRRP
    checked = ah_verify(received(second[:20], second[20:]), ah_key("secret12"))
    assert isinstance(checked, AhVerified) and checked.seq == 2


def test_garbage_and_tampering_are_reported_not_raised() -> None:
    key = ah_key("secret12")
    assert ah_verify(received(), ah_key("wrong")) is AhError.BAD_ICV
    tampered = AH_AND_VRRP[:-9] + b"\x01" + AH_AND_VRRP[-8:]
    assert ah_verify(received(payload=tampered), key) is AhError.BAD_ICV
    assert ah_verify(received(payload=AH_AND_VRRP[:10]), key) is AhError.TOO_SHORT
    assert ah_verify(received(payload=b"\x70\x05" + AH_AND_VRRP[2:]), key) is AhError.BAD_LENGTH
    assert ah_verify(received(payload=b"\x06" + AH_AND_VRRP[1:]), key) is AhError.NOT_VRRP
    spoofed = AH_AND_VRRP[:4] + bytes(4) + AH_AND_VRRP[8:]
    assert ah_verify(received(payload=spoofed), key) is AhError.BAD_SPI
    not_ah = IP_HEADER[:9] + b"\x70" + IP_HEADER[10:]
    assert ah_verify(received(ip_header=not_ah), key) is AhError.NOT_AH
    # TTL is covered by the ICV as keepalived computes it; TOS and checksum are not
    assert ah_verify(received(ip_header=IP_HEADER[:1] + b"\x00" + IP_HEADER[2:]), key) != (
        AhError.BAD_ICV
    )
