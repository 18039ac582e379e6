"""ip_hash, hash KEY and ketama `hash KEY consistent` against independent reference formulas."""

from __future__ import annotations

import zlib
from collections import Counter
from ipaddress import IPv4Address, IPv6Address

from hypothesis import given, settings
from hypothesis import strategies as st

from hakeeper.balance import make_balancer
from hakeeper.balance.nginx import UpstreamServer
from hakeeper.balance.nginx_hash import (
    KETAMA_POINTS_PER_WEIGHT,
    ChashBalancer,
    ip_hash_octets,
    ketama_points,
    split_host_port,
)

S = UpstreamServer


def ref_ip_hash(octets: bytes, weights: list[int]) -> int:
    h = 89
    for o in octets:
        h = (h * 113 + o) % 6271
    w = h % sum(weights)
    for i, wt in enumerate(weights):
        if w < wt:
            return i
        w -= wt
    raise AssertionError


def pick(b, **kw):
    r = b.begin(**kw)
    p = r.get(0)
    r.free(p, 0)
    return p.name


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 5), min_size=2, max_size=5))
def test_ip_hash_matches_formula_over_first_three_octets(addr, weights):
    servers = [S(f"s{i}", w) for i, w in enumerate(weights)]
    b = make_balancer("ip_hash", servers)
    client = IPv4Address(addr)
    assert pick(b, client=client) == f"s{ref_ip_hash(client.packed[:3], weights)}"
    same24 = IPv4Address((addr & ~0xFF) | ((addr + 1) & 0xFF))
    assert pick(b, client=same24) == pick(b, client=client)


def test_ip_hash_octets_v6_and_unix():
    assert ip_hash_octets(IPv6Address("2001:db8::1")) == IPv6Address("2001:db8::1").packed
    assert ip_hash_octets(None) == b"\0\0\0"


def test_ip_hash_down_peer_keeps_its_share_and_rehashes():
    weights = [1, 1, 1]
    b = make_balancer("ip_hash", [S("a", down=True), S("b"), S("c")])
    for i in range(50):
        client = IPv4Address(f"198.18.{i}.1")
        home = "abc"[ref_ip_hash(client.packed[:3], weights)]
        got = pick(b, client=client)
        assert got != "a"
        if home != "a":
            assert got == home


def test_ip_hash_falls_back_to_round_robin_after_20_misses():
    b = make_balancer("ip_hash", [S("a"), S("b", max_conns=1)])
    holders = [b.begin(client=IPv4Address("198.18.0.1")) for _ in range(3)]
    names = [r.get(0).name for r in holders]
    assert names.count("b") <= 1 and all(n in "ab" for n in names)


def ref_memcached(key: bytes, weights: list[int], rounds: int) -> int:
    h = 0
    for r in range(rounds):
        prefix = str(r).encode() if r else b""
        h += (zlib.crc32(prefix + key) >> 16) & 0x7FFF
    w = h % sum(weights)
    for i, wt in enumerate(weights):
        if w < wt:
            return i
        w -= wt
    raise AssertionError


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=20), st.lists(st.integers(1, 4), min_size=2, max_size=5))
def test_hash_is_cache_memcached_compatible(key, weights):
    b = make_balancer("hash", [S(f"s{i}", w) for i, w in enumerate(weights)])
    assert pick(b, key=key) == f"s{ref_memcached(key, weights, 1)}"


def test_hash_rehashes_on_retry_and_empty_key_is_round_robin():
    weights = [1, 1, 1, 1]
    b = make_balancer("hash", [S(f"s{i}") for i in range(4)])
    r = b.begin(key="user42")
    first = r.get(0)
    assert first.name == f"s{ref_memcached(b'user42', weights, 1)}"
    r.free(first, 0, failed=True)
    second = r.get(0)
    rounds = 2
    while f"s{ref_memcached(b'user42', weights, rounds)}" == first.name:
        rounds += 1
    assert second.name == f"s{ref_memcached(b'user42', weights, rounds)}"
    e = make_balancer("hash", [S("a"), S("b")])
    assert [pick(e, key="") for _ in range(4)] == ["a", "b", "a", "b"]


def test_split_host_port_like_nginx():
    assert split_host_port("127.0.0.1:8080") == (b"127.0.0.1", b"8080")
    assert split_host_port("backend") == (b"backend", b"")
    assert split_host_port("unix:/tmp/sock") == (b"/tmp/sock", b"")
    assert split_host_port("[::1]:80") == (b"[::1]", b"80")


def test_ketama_points_chain_crc32_of_host_nul_port_prev():
    b = ChashBalancer([S("127.0.0.1:8081", server="127.0.0.1:8081")])
    pts = ketama_points(b.primary.peers)
    assert len(pts) == KETAMA_POINTS_PER_WEIGHT
    expect, prev = [], 0
    for _ in range(160):
        prev = zlib.crc32(b"127.0.0.1\x008081" + prev.to_bytes(4, "little"))
        expect.append(prev)
    assert [p.hash for p in pts] == sorted(set(expect))


def test_ketama_weight_and_minimal_disruption():
    servers = [S(f"10.0.0.{i}:80", weight=2 if i == 1 else 1) for i in range(1, 5)]
    b = ChashBalancer(servers)
    assert len(b.points) == 5 * 160
    keys = [f"/obj/{i}" for i in range(2000)]
    owners = Counter(b.owner(k) for k in keys)
    assert owners["10.0.0.1:80"] > owners["10.0.0.2:80"]
    smaller = ChashBalancer(servers[:-1])
    moved = sum(1 for k in keys if b.owner(k) != "10.0.0.4:80" and b.owner(k) != smaller.owner(k))
    assert moved == 0


def test_chash_skips_down_peer_clockwise_and_same_key_is_sticky():
    servers = [S(f"10.0.0.{i}:80") for i in range(1, 4)]
    b = make_balancer("hash_consistent", servers)
    assert {pick(b, key="k1") for _ in range(5)} == {b.owner("k1")}
    down = [S(s.name, down=s.name == b.owner("k1")) for s in servers]
    b2 = make_balancer("hash_consistent", down)
    assert pick(b2, key="k1") != b.owner("k1")


def test_chash_single_peer_or_empty_key_uses_round_robin():
    b = make_balancer("hash_consistent", [S("a:1"), S("b:1")])
    assert [pick(b, key=b"") for _ in range(2)] == ["a:1", "b:1"]
