"""sh / dh / mh tables and hashing, SipHash reference vectors, persistence templates."""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hakeeper.balance.lvs import Flow, RealServer, RoundRobin
from hakeeper.balance.lvs_hash import (
    MH_DEFAULT_TABLE_SIZE,
    DestinationHash,
    MaglevHash,
    SourceHash,
    addr_fold,
    hash_32,
    hsiphash_u32,
    siphash,
)
from hakeeper.balance.persistence import PersistenceTable, Persistent, parse_granularity

RS = RealServer
K0 = int.from_bytes(bytes(range(8)), "little")
K1 = int.from_bytes(bytes(range(8, 16)), "little")


def test_siphash_2_4_reference_vectors():
    assert siphash(K0, K1, b"") == 0x726FDB47DD0E0E31
    assert siphash(K0, K1, bytes(range(15))) == 0xA129CA6149BE45E5
    assert siphash(K0, K1, bytes(range(8))) == 0x93F5F5799A932462


def test_hsiphash_matches_linux_64bit_self_test_vectors():
    # lib/test_siphash.c: key 00..0f, input bytes 0..len-1, truncated to u32
    k0, k1 = 0x0706050403020100, 0x0F0E0D0C0B0A0908
    vectors = {0: 0x050FC4DC, 4: 0x88D38328, 7: 0x9BB11140, 8: 0x8D299A8E, 63: 0xB7BBB3A8}
    for n, want in vectors.items():
        assert siphash(k0, k1, bytes(range(n)), 1, 3) & 0xFFFFFFFF == want
    assert hsiphash_u32((k0, k1), 0x03020100) == 0x88D38328


def test_hash_32_and_fold():
    assert hash_32(1, 8) == (0x61C88647 >> 24)
    assert addr_fold(IPv4Address("1.2.3.4")) == 0x01020304
    assert addr_fold(IPv6Address("::1:0:0:5")) == 0x00010000 ^ 5


def test_sh_table_honours_weights_and_is_stable():
    s = [RS("a", 3), RS("b", 1)]
    table = SourceHash().bucket_keys(s)
    assert Counter(table) == Counter({"a": 192, "b": 64})
    assert table[:8] == ("a", "a", "a", "b", "a", "a", "a", "b")
    sh = SourceHash()
    src = IPv4Address("198.18.5.7")
    first = sh.pick(s, Flow(src=src)).key
    assert all(sh.pick(s, Flow(src=src, sport=p)).key == first for p in range(50))


def test_sh_no_fallback_returns_none_fallback_finds_other():
    s = [RS("a"), RS("b", weight=0)]
    src = next(
        IPv4Address(i) for i in range(1000) if SourceHash.hashkey(IPv4Address(i), 0) % 2 == 1
    )
    assert SourceHash().pick(s, Flow(src=src)) is None
    assert SourceHash(fallback=True).pick(s, Flow(src=src)).key == "a"


def test_sh_port_spreads_one_client():
    s = [RS("a"), RS("b"), RS("c")]
    sh = SourceHash(port=True)
    got = {sh.pick(s, Flow(src=IPv4Address("198.18.0.1"), sport=p)).key for p in range(64)}
    assert got == {"a", "b", "c"}


def test_dh_uses_destination_and_has_no_fallback():
    s = [RS("a"), RS("b")]
    dh = DestinationHash()
    dst = IPv4Address("198.18.1.1")
    home = dh.pick(s, Flow(dst=dst)).key
    quiesced = [RS(k.key, 0 if k.key == home else 1) for k in s]
    assert dh.pick(quiesced, Flow(dst=dst)) is None


def test_mh_default_table_is_ipvs_4093_and_balanced():
    mh = MaglevHash()
    assert mh.table_size == MH_DEFAULT_TABLE_SIZE == 4093
    s = [RS(f"198.18.0.{i}:80") for i in range(1, 6)]
    counts = Counter(mh.table(s))
    assert sum(counts.values()) == 4093
    assert max(counts.values()) - min(counts.values()) <= 1


def test_mh_weights_scale_table_share():
    s = [RS("198.18.0.1:80", 3), RS("198.18.0.2:80", 1)]
    counts = Counter(MaglevHash(table_size=251).table(s))
    assert counts["198.18.0.1:80"] == pytest.approx(251 * 3 / 4, abs=2)


def test_mh_minimal_disruption_when_a_server_leaves():
    s = [RS(f"198.18.0.{i}:80") for i in range(1, 11)]
    before = MaglevHash().table(s)
    after = MaglevHash().table(s[:-1])
    moved = sum(1 for a, b in zip(before, after, strict=True) if a != b and a != s[-1].key)
    assert moved / len(before) < 0.05


def test_mh_quiesced_keeps_slots_and_fallback_moves_only_its_clients():
    s = [RS(f"198.18.0.{i}:80") for i in range(1, 4)]
    mh = MaglevHash(fallback=True)
    clients = [IPv4Address(f"203.0.113.{i}") for i in range(1, 200)]
    before = {c: mh.pick(s, Flow(src=c)).key for c in clients}
    drained = [RS(x.key, 0 if x.key == s[0].key else 1) for x in s]
    assert mh.table(drained) == mh.table(s)
    after = {c: mh.pick(drained, Flow(src=c)).key for c in clients}
    for c in clients:
        if before[c] != s[0].key:
            assert after[c] == before[c]
        else:
            assert after[c] != s[0].key
    no_fallback = MaglevHash()
    no_fallback.table(s)  # it must have seen the server's weight before it was drained
    c0 = next(c for c in clients if before[c] == s[0].key)
    assert no_fallback.pick(drained, Flow(src=c0)) is None


def test_mh_rejects_non_prime_and_accepts_65537():
    with pytest.raises(ValueError):
        MaglevHash(table_size=65536)
    assert MaglevHash(table_size=65537).table_size == 65537


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_hash_schedulers_are_deterministic(src_int):
    s = [RS("198.18.0.1:80", 2), RS("198.18.0.2:80", 1), RS("198.18.0.3:80", 1)]
    f = Flow(src=IPv4Address(src_int), dst=IPv4Address(src_int))
    for factory in (SourceHash, DestinationHash, lambda: MaglevHash(table_size=251)):
        assert factory().pick(s, f) == factory().pick(s, f)


# ---------------------------------------------------------------------- persistence


def test_granularity_parsing():
    assert parse_granularity(None) == 32
    assert parse_granularity("255.255.255.0") == 24
    assert parse_granularity(16) == 16


def test_persistence_pins_masked_client_until_timeout():
    table = PersistenceTable(timeout=300, granularity="255.255.255.0")
    p = Persistent(RoundRobin(), table)
    s = [RS("a"), RS("b"), RS("c")]
    c1, c2 = IPv4Address("198.18.7.1"), IPv4Address("198.18.7.200")
    first = p.pick(s, Flow(src=c1, now=0)).key
    assert p.pick(s, Flow(src=c2, now=10)).key == first  # same /24
    assert p.pick(s, Flow(src=c1, now=309)).key == first  # refreshed at t=10
    assert table.lookup(c1, 610) is None  # expired 300 s after last use
    assert len(table) == 0


def test_persistence_open_connections_hold_template():
    table = PersistenceTable(timeout=10)
    c = IPv4Address("198.18.0.5")
    table.bind(c, "a", 0)
    table.connection_opened(c)
    assert table.expire(100) == 0
    table.connection_closed(c, 100)
    assert table.lookup(c, 109) == "a"
    assert table.expire(110) == 1


def test_persistence_removed_server_reschedules_quiesced_is_kept():
    table = PersistenceTable(timeout=60)
    p = Persistent(RoundRobin(), table)
    c = IPv4Address("198.18.0.5")
    s = [RS("a"), RS("b")]
    assert p.pick(s, Flow(src=c, now=0)).key == "a"
    assert p.pick([RS("a", weight=0), RS("b")], Flow(src=c, now=1)).key == "a"
    assert p.pick([RS("b")], Flow(src=c, now=2)).key == "b"
    strict = Persistent(RoundRobin(), PersistenceTable(timeout=60, expire_quiescent=True))
    assert strict.pick(s, Flow(src=c, now=0)).key == "a"
    assert strict.pick([RS("a", weight=0), RS("b")], Flow(src=c, now=1)).key == "b"


def test_persistence_ipv6_prefix_and_deadline():
    table = PersistenceTable(timeout=5, granularity6=64)
    table.bind(IPv6Address("2001:db8::1"), "a", 0)
    assert table.lookup(IPv6Address("2001:db8::ffff"), 1) == "a"
    assert table.next_deadline() == 5
