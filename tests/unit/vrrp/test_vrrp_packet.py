"""VRRP codec: golden bytes (hand-computed and captured from keepalived 2.2.7), checksum
forms, receive-path classification, local checks, round trips and garbage resistance."""

from __future__ import annotations

import ipaddress
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hakeeper.vrrp.packet import (
    MCAST_GROUP4,
    MCAST_GROUP6,
    Advert,
    AuthType,
    ChecksumForm,
    DecodeError,
    DropReason,
    LocalExpect,
    check_local,
    decode,
    encode,
    internet_checksum,
    pass_auth_data,
    pseudo_header,
)

ip = ipaddress.ip_address
SRC4 = ipaddress.IPv4Address("198.18.200.1")
GOLDEN = Path(__file__).parent / "golden" / "keepalived_adverts.txt"


def _ref_checksum(data: bytes) -> int:
    """Independent RFC 1071 sum (byte-pair loop, end-around carry per step)."""
    if len(data) % 2:
        data += b"\0"
    acc = 0
    for i in range(0, len(data), 2):
        acc += (data[i] << 8) | data[i + 1]
        acc = (acc & 0xFFFF) + (acc >> 16)
    return (~acc) & 0xFFFF


Row = tuple[
    ipaddress.IPv4Address | ipaddress.IPv6Address,
    ipaddress.IPv4Address | ipaddress.IPv6Address,
    int,
    bytes,
]


def _golden() -> list[Row]:
    rows: list[Row] = []
    for line in GOLDEN.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        src, dst, ttl, hexdata = line.split()
        rows.append((ip(src), ip(dst), int(ttl), bytes.fromhex(hexdata)))
    return rows


# ---------------------------------------------------------------- golden bytes


def test_v2_pass_hand_computed_golden() -> None:
    adv = Advert(
        version=2,
        vrid=51,
        priority=100,
        addresses=(ipaddress.IPv4Address("192.168.1.100"),),
        interval_cs=100,
        auth_type=AuthType.PASS,
        auth_data=pass_auth_data("1111"),
    )
    # 0x2133+0x6401+0x0101+0xc0a8+0x0164+0x3131+0x3131 = 0x1AAA3 -> 0xAAA4 -> ~ = 0x555B
    expected = bytes.fromhex("2133640101 01 555b c0a80164 31313131 00000000".replace(" ", ""))
    assert encode(adv) == expected
    got = decode(expected, src=SRC4, dst=MCAST_GROUP4, ttl=255)
    assert isinstance(got, Advert)
    assert got.priority == 100 and got.interval == 1.0 and got.auth_type is AuthType.PASS
    assert got.auth_data == b"1111\0\0\0\0"


def test_keepalived_captures_decode_and_reencode_identically() -> None:
    rows = _golden()
    assert len(rows) >= 5
    seen_versions = set()
    for src, dst, ttl, payload in rows:
        got = decode(payload, src=src, dst=dst, ttl=ttl)
        assert isinstance(got, Advert), (src, payload.hex(), got)
        seen_versions.add((got.version, got.family))
        # keepalived's default: v2 message checksum, v3 with the pseudo-header
        assert got.checksum_form is (
            ChecksumForm.MESSAGE if got.version == 2 else ChecksumForm.PSEUDO
        )
        assert encode(got, src=src, dst=dst) == payload
    assert seen_versions == {(2, 4), (3, 4), (3, 6)}


def test_keepalived_capture_field_values() -> None:
    by_vrid = {}
    for src, dst, ttl, payload in _golden():
        adv = decode(payload, src=src, dst=dst, ttl=ttl)
        assert isinstance(adv, Advert)
        if adv.priority:
            by_vrid[adv.vrid] = adv
    v2 = by_vrid[51]
    assert v2.auth_data == b"secretpw"  # auth_pass "secretpw99" truncated to 8
    assert v2.addresses == (ip("198.18.201.10"), ip("198.18.201.11"))
    assert by_vrid[52].interval_cs == 50 and by_vrid[52].priority == 90
    assert by_vrid[53].addresses == (ip("fe80::53"), ip("2001:db8::53"))
    # each keepalived instance also resigned with priority 0 on stop
    zeros = [
        a
        for s, d, t, p in _golden()
        if isinstance(a := decode(p, src=s, dst=d, ttl=t), Advert) and a.priority == 0
    ]
    assert {a.vrid for a in zeros} >= {51, 52, 53}


def test_checksum_folds_to_ffff_for_every_form() -> None:
    adv = Advert(3, 7, 120, (ip("198.18.5.5"),), 100)
    for form, dst in (
        (ChecksumForm.PSEUDO, ip("198.18.200.2")),
        (ChecksumForm.MESSAGE, ip("198.18.200.2")),
        (ChecksumForm.PSEUDO_GROUP, ip("198.18.200.2")),
    ):
        data = encode(adv, src=SRC4, dst=dst, checksum=form)
        if form is ChecksumForm.MESSAGE:
            covered = data
        else:
            real_dst = MCAST_GROUP4 if form is ChecksumForm.PSEUDO_GROUP else dst
            covered = struct.pack("!4s4sBBH", SRC4.packed, real_dst.packed, 0, 112, len(data))
            covered += data
        assert _ref_checksum(covered) == 0
        got = decode(data, src=SRC4, dst=dst)
        assert isinstance(got, Advert)
        assert got.checksum_form is form


def test_pseudo_header_layouts() -> None:
    v4 = pseudo_header(SRC4, MCAST_GROUP4, 12)
    assert v4 == SRC4.packed + MCAST_GROUP4.packed + bytes([0, 112, 0, 12])
    s6 = ipaddress.IPv6Address("fe80::1")
    v6 = pseudo_header(s6, MCAST_GROUP6, 24)
    assert v6 == s6.packed + MCAST_GROUP6.packed + bytes([0, 0, 0, 24, 0, 0, 0, 112])
    with pytest.raises(ValueError):
        pseudo_header(SRC4, MCAST_GROUP6, 1)


def test_internet_checksum_matches_reference_on_odd_lengths() -> None:
    for data in (b"", b"\x01", b"\xff\xff\xff", bytes(range(37))):
        assert internet_checksum(data) == _ref_checksum(data)


# ---------------------------------------------------------------- receive classification


def _v2_bytes() -> bytes:
    adv = Advert(2, 9, 100, (ip("198.18.1.1"),), 100)
    return encode(adv)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:7], DropReason.TOO_SHORT),
        (lambda b: bytes([0x41]) + b[1:], DropReason.BAD_VERSION),
        (lambda b: bytes([0x22]) + b[1:], DropReason.BAD_TYPE),
        (lambda b: b[:3] + bytes([2]) + b[4:], DropReason.COUNT_MISMATCH),
        (lambda b: b + b"\0\0\0\0", DropReason.COUNT_MISMATCH),
        (lambda b: b[:2] + bytes([b[2] ^ 1]) + b[3:], DropReason.BAD_CHECKSUM),
        (lambda b: b[:4] + bytes([7]) + b[5:], DropReason.BAD_CHECKSUM),
    ],
)
def test_structural_drops(mutate: object, reason: DropReason) -> None:
    bad = mutate(_v2_bytes())  # type: ignore[operator]
    got = decode(bad, src=SRC4, dst=MCAST_GROUP4, ttl=255)
    assert isinstance(got, DecodeError)
    assert got.reason is reason


def test_ttl_checked_only_for_multicast() -> None:
    data = _v2_bytes()
    bad = decode(data, src=SRC4, dst=MCAST_GROUP4, ttl=64)
    assert isinstance(bad, DecodeError) and bad.reason is DropReason.BAD_TTL
    assert isinstance(decode(data, src=SRC4, dst=ip("198.18.200.2"), ttl=64), Advert)


def test_v2_over_ipv6_is_dropped() -> None:
    payload = bytes.fromhex("2109640001010000") + bytes(16 + 8)
    got = decode(payload, src=ip("fe80::1"), dst=MCAST_GROUP6, ttl=255)
    assert isinstance(got, DecodeError)
    assert got.reason in (DropReason.BAD_FAMILY,)


def test_unknown_auth_type_is_a_drop_not_an_exception() -> None:
    data = bytearray(_v2_bytes())
    data[4] = 9
    data[6:8] = b"\0\0"
    data[6:8] = struct.pack("!H", internet_checksum(bytes(data)))
    got = decode(bytes(data), src=SRC4, dst=MCAST_GROUP4, ttl=255)
    assert isinstance(got, DecodeError) and got.reason is DropReason.AUTH_MISMATCH


# ---------------------------------------------------------------- local checks


def _expect(**kw: object) -> LocalExpect:
    base: dict[str, object] = {
        "version": 2,
        "interval_cs": 100,
        "vips": (ip("198.18.1.1"),),
        "auth_type": AuthType.PASS,
        "auth_data": b"secret",
    }
    base.update(kw)
    return LocalExpect(**base)  # type: ignore[arg-type]


def _adv(**kw: object) -> Advert:
    base: dict[str, object] = {
        "version": 2,
        "vrid": 9,
        "priority": 100,
        "addresses": (ip("198.18.1.1"),),
        "interval_cs": 100,
        "auth_type": AuthType.PASS,
        "auth_data": pass_auth_data("secret"),
    }
    base.update(kw)
    return Advert(**base)  # type: ignore[arg-type]


def test_check_local_accepts_matching_advert() -> None:
    assert check_local(_adv(), _expect()).drop is None
    assert check_local(_adv(), _expect()).notes == ()


def test_check_local_drops_auth_interval_version() -> None:
    assert check_local(_adv(auth_data=pass_auth_data("other")), _expect()).drop is (
        DropReason.AUTH_MISMATCH
    )
    r = check_local(_adv(auth_type=AuthType.NONE, auth_data=bytes(8)), _expect())
    assert r.drop is DropReason.AUTH_MISMATCH
    assert check_local(_adv(interval_cs=200), _expect()).drop is DropReason.INTERVAL_MISMATCH
    assert check_local(_adv(version=3), _expect()).drop is DropReason.VERSION_MISMATCH


def test_password_longer_than_8_matches_its_truncation() -> None:
    r = check_local(_adv(auth_data=pass_auth_data("secretpw99")), _expect(auth_data=b"secretpwXX"))
    assert r.drop is None


def test_v3_interval_mismatch_is_logged_not_dropped() -> None:
    r = check_local(
        Advert(3, 9, 100, (ip("198.18.1.1"),), 50), _expect(version=3, auth_type=AuthType.NONE)
    )
    assert r.drop is None
    assert any("advert_int" in n for n in r.notes)


def test_vip_mismatch_is_logged_only() -> None:
    r = check_local(_adv(addresses=(ip("198.18.1.2"),)), _expect())
    assert r.drop is None
    assert any("VIP list differs" in n for n in r.notes)
    assert check_local(_adv(addresses=()), _expect(skip_check_adv_addr=True)).notes == ()


# ---------------------------------------------------------------- encode misuse and round trips


def test_encode_rejects_impossible_adverts() -> None:
    with pytest.raises(ValueError):
        encode(Advert(2, 1, 100, (ip("fe80::1"),), 100))
    with pytest.raises(ValueError):
        encode(Advert(2, 1, 100, (), 150))
    with pytest.raises(ValueError):
        encode(Advert(3, 1, 100, (), 5000), src=SRC4)
    with pytest.raises(ValueError):
        encode(Advert(3, 1, 100, (ip("198.18.0.1"),), 100))  # pseudo-header needs src
    with pytest.raises(ValueError):
        encode(Advert(2, 0, 100, (), 100))


v4s = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
v6s = st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1))


@settings(max_examples=150, deadline=None)
@given(
    vrid=st.integers(1, 255),
    prio=st.integers(0, 255),
    v4=st.lists(v4s, max_size=20),
    v6=st.lists(v6s, min_size=1, max_size=8),
    version=st.sampled_from([2, 3]),
    six=st.booleans(),
    cs=st.integers(1, 4095),
    form=st.sampled_from(list(ChecksumForm)),
    pw=st.text(max_size=12),
)
def test_round_trip(
    *,
    vrid: int,
    prio: int,
    v4: list[ipaddress.IPv4Address],
    v6: list[ipaddress.IPv6Address],
    version: int,
    six: bool,
    cs: int,
    form: ChecksumForm,
    pw: str,
) -> None:
    if version == 2:
        six = False
        cs = max(1, cs % 256) * 100
    addrs: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = tuple(v6 if six else v4)
    src = ip("fe80::9") if six else SRC4
    dst = MCAST_GROUP6 if six else ip("198.18.77.1")
    auth = (AuthType.PASS, pass_auth_data(pw)) if version == 2 else (AuthType.NONE, b"")
    adv = Advert(version, vrid, prio, addrs, cs, auth[0], auth[1], src)
    data = encode(adv, src=src, dst=dst, checksum=form)
    got = decode(data, src=src, dst=dst, ttl=255)
    assert isinstance(got, Advert)
    assert (got.version, got.vrid, got.priority, got.addresses, got.interval_cs) == (
        version,
        vrid,
        prio,
        addrs,
        cs,
    )
    assert got.auth_data == auth[1]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=80), six=st.booleans(), ttl=st.integers(0, 255))
def test_garbage_never_raises(data: bytes, six: bool, ttl: int) -> None:
    src = ip("fe80::9") if six else SRC4
    got = decode(data, src=src, dst=MCAST_GROUP6 if six else MCAST_GROUP4, ttl=ttl)
    assert isinstance(got, Advert | DecodeError)


# ---------------------------------------------------------------- tshark agrees


def _pcap(frames: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)  # LINKTYPE_RAW
    for f in frames:
        out += struct.pack("<IIII", 0, 0, len(f), len(f)) + f
    return out


def _ipv4(src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, payload: bytes) -> bytes:
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(payload), 0, 0, 255, 112, 0, src.packed, dst.packed
    )
    hdr = hdr[:10] + struct.pack("!H", internet_checksum(hdr)) + hdr[12:]
    return hdr + payload


def _ipv6(src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address, payload: bytes) -> bytes:
    return struct.pack("!IHBB", 6 << 28, len(payload), 112, 255) + src.packed + dst.packed + payload


@pytest.mark.interop("tshark")
def test_tshark_decodes_our_adverts_with_good_checksums(tmp_path: Path) -> None:
    tshark = shutil.which("tshark") or "/usr/bin/tshark"
    v4vip = (ipaddress.IPv4Address("198.18.201.10"),)
    src6 = ipaddress.IPv6Address("fe80::5")
    frames = [
        _ipv4(
            SRC4,
            MCAST_GROUP4,
            encode(Advert(2, 51, 100, v4vip, 100, AuthType.PASS, pass_auth_data("pw"))),
        ),
        _ipv4(SRC4, MCAST_GROUP4, encode(Advert(3, 52, 90, v4vip, 10), src=SRC4)),
        _ipv6(
            src6,
            MCAST_GROUP6,
            encode(Advert(3, 53, 100, (ipaddress.IPv6Address("fe80::53"),), 10), src=src6),
        ),
    ]
    cap = tmp_path / "ours.pcap"
    cap.write_bytes(_pcap(frames))
    res = subprocess.run(
        [tshark, "-r", str(cap), "-V", "-o", "vrrp.v3_checksum_as_in_v2:FALSE"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "vrrp.v3_checksum_as_in_v2" in res.stderr:  # preference name differs: use defaults
        res = subprocess.run(
            [tshark, "-r", str(cap), "-V"], capture_output=True, text=True, timeout=60, check=False
        )
    out = res.stdout
    assert out.count("Virtual Router Redundancy Protocol") == 3, out[-2000:]
    assert out.count("[correct]") >= 3, out
    assert "incorrect" not in out
