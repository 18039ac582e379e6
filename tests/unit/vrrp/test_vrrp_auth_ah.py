"""keepalived's IPsec-AH (HMAC-MD5-96) for VRRPv2: verified against keepalived 2.2.7 packets."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from hakeeper.vrrp.auth_ah import AhCounter, AhPacket, decode_ipv4, encode_ipv4
from hakeeper.vrrp.packet import (
    MCAST_GROUP4,
    Advert,
    AuthType,
    DecodeError,
    DropReason,
    decode,
    encode,
)

GOLDEN = Path(__file__).parent / "golden" / "keepalived_ah.txt"
SRC = ipaddress.IPv4Address("198.18.200.1")


def _captured() -> list[bytes]:
    return [
        bytes.fromhex(line.split()[2])
        for line in GOLDEN.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_keepalived_ah_packets_verify_and_carry_a_valid_vrrp_advert() -> None:
    packets = _captured()
    assert len(packets) >= 2
    counter = AhCounter()
    for pkt in packets:
        got = decode_ipv4(pkt, password="ahsecret9")  # keepalived truncates to "ahsecret"
        assert isinstance(got, AhPacket), got
        assert got.src == SRC and got.dst == MCAST_GROUP4 and got.ttl == 255
        assert counter.accept(got.seq)
        adv = decode(got.vrrp, src=got.src, dst=got.dst, ttl=got.ttl)
        assert isinstance(adv, Advert)
        assert (adv.vrid, adv.auth_type, adv.auth_data) == (55, AuthType.AH, bytes(8))
    assert not counter.accept(1)  # replay


def test_we_reproduce_keepalived_ah_packets_byte_for_byte() -> None:
    for pkt in _captured():
        got = decode_ipv4(pkt, password="ahsecret")
        assert isinstance(got, AhPacket)
        ip_id = int.from_bytes(pkt[4:6], "big")
        ours = encode_ipv4(
            got.vrrp, src=got.src, dst=got.dst, password="ahsecret9", seq=got.seq, ip_id=ip_id
        )
        assert ours == pkt


def test_wrong_password_or_tampering_is_an_auth_drop() -> None:
    pkt = _captured()[0]
    bad = decode_ipv4(pkt, password="other")
    assert isinstance(bad, DecodeError) and bad.reason is DropReason.AUTH_MISMATCH
    tampered = bytearray(pkt)
    tampered[46] ^= 0x01  # the VRRP priority
    got = decode_ipv4(bytes(tampered), password="ahsecret")
    assert isinstance(got, DecodeError) and got.reason is DropReason.AUTH_MISMATCH


def test_mutable_fields_do_not_affect_the_icv() -> None:
    pkt = bytearray(_captured()[0])
    pkt[1] = 0x00  # TOS rewritten on the path
    pkt[10:12] = b"\xde\xad"  # header checksum
    assert isinstance(decode_ipv4(bytes(pkt), password="ahsecret"), AhPacket)
    pkt[8] = 64  # TTL is covered for multicast...
    assert isinstance(decode_ipv4(bytes(pkt), password="ahsecret"), DecodeError)
    uni = encode_ipv4(
        _vrrp(),
        src=SRC,
        dst=ipaddress.IPv4Address("198.18.200.2"),
        password="pw",
        seq=1,
        ip_id=1,
        unicast=True,
    )
    changed = bytearray(uni)
    changed[8] = 60  # ...but zeroed in unicast mode
    assert isinstance(decode_ipv4(bytes(changed), password="pw", unicast=True), AhPacket)


def _vrrp() -> bytes:
    return encode(
        Advert(2, 9, 100, (ipaddress.IPv4Address("198.18.1.1"),), 100, AuthType.AH, bytes(8))
    )


def test_spi_must_be_the_source() -> None:
    pkt = bytearray(encode_ipv4(_vrrp(), src=SRC, dst=MCAST_GROUP4, password="pw", seq=5, ip_id=7))
    pkt[12:16] = ipaddress.IPv4Address("198.18.200.9").packed  # spoofed source
    got = decode_ipv4(bytes(pkt), password="pw")
    assert isinstance(got, DecodeError)  # ICV covers src: fails before the SPI check


@pytest.mark.parametrize("cut", [0, 10, 43, 51])
def test_short_or_garbage_never_raises(cut: int) -> None:
    pkt = _captured()[0][:cut]
    assert isinstance(decode_ipv4(pkt, password="x"), DecodeError)


def test_counter_shared_by_send_and_receive_like_keepalived() -> None:
    c = AhCounter()
    assert c.accept(41)
    assert c.next() == (42, 1)  # a backup taking over continues above the old master
    assert not c.accept(42)
    assert c.accept(43)


def test_encode_rejects_kernel_chosen_ip_id() -> None:
    with pytest.raises(ValueError):
        encode_ipv4(_vrrp(), src=SRC, dst=MCAST_GROUP4, password="pw", seq=1, ip_id=0)
