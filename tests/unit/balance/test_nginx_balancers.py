"""nginx upstream methods: SWRR sequence, passive health, backup, least_conn, random."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hakeeper.balance import NGINX_BALANCERS, make_balancer
from hakeeper.balance.nginx import UpstreamServer

S = UpstreamServer


def run(balancer, n, now=0.0, **begin):
    out = []
    for _ in range(n):
        req = balancer.begin(**begin)
        peer = req.get(now)
        out.append(peer.name if peer else "-")
        if peer:
            req.free(peer, now)
    return "".join(out)


def test_swrr_5_1_1_gives_a_a_b_a_c_a_a():
    b = make_balancer("round_robin", [S("a", 5), S("b", 1), S("c", 1)])
    assert run(b, 14) == "aabacaa" * 2


def test_swrr_equal_weights_is_plain_round_robin():
    b = make_balancer("round_robin", [S("a"), S("b"), S("c")])
    assert run(b, 6) == "abcabc"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10), min_size=1, max_size=6))
def test_swrr_exact_share_over_one_cycle_and_smoothness(weights):
    servers = [S(str(i), w) for i, w in enumerate(weights)]
    b = make_balancer("round_robin", servers)
    total = sum(weights)
    picks = [run(b, 1) for _ in range(total)]
    assert Counter(picks) == Counter({str(i): w for i, w in enumerate(weights)})
    # smooth: never more than ceil-ish bursts; the heaviest never repeats more than its share
    assert max(len(list(g)) for g in _runs(picks)) <= max(weights)


def _runs(items):
    cur: list[str] = []
    for x in items:
        if cur and cur[-1] != x:
            yield cur
            cur = []
        cur.append(x)
    if cur:
        yield cur


def test_failure_disables_peer_for_fail_timeout_in_whole_seconds():
    b = make_balancer("round_robin", [S("a", max_fails=1, fail_timeout=10), S("b")])
    req = b.begin()
    a = req.get(100)
    assert a.name == "a"
    req.free(a, 100.9, failed=True)
    assert b.peer("a").fails == 1
    assert run(b, 3, now=105) == "bbb"
    assert run(b, 1, now=110.99) == "b"  # int(now) - checked == 10 <= fail_timeout
    # past fail_timeout it is eligible again, but its effective weight was cut to 0 and
    # climbs back by one per selection round, so it wins only on the third round
    assert run(b, 3, now=111) == "bba"


def test_effective_weight_cut_and_recovery_one_per_selection():
    b = make_balancer("round_robin", [S("a", 6, max_fails=3), S("b", 6, max_fails=3)])
    a = b.peer("a")
    req = b.begin()
    p = req.get(0)
    assert p is a
    req.free(a, 0, failed=True)
    assert a.effective_weight == 4  # 6 - 6 // 3
    req = b.begin()
    p = req.get(1)
    req.free(p, 1)
    assert a.effective_weight == 5
    run(b, 1, now=1)
    assert a.effective_weight == 6
    run(b, 1, now=1)
    assert a.effective_weight == 6


def test_success_after_retry_clears_fails():
    b = make_balancer("round_robin", [S("a", max_fails=2), S("b")])
    a = b.peer("a")
    r = b.begin()
    assert r.get(0) is a
    r.free(a, 0, failed=True)
    assert a.fails == 1
    # successes within fail_timeout do not clear fails (checked is not moved) ...
    for t in range(1, 5):
        r = b.begin()
        p = r.get(t)
        r.free(p, t)
    assert a.fails == 1
    # ... a pick after fail_timeout moves `checked` past `accessed`; its success clears them
    for t in (11, 11):
        r = b.begin()
        p = r.get(t)
        r.free(p, t)
    assert a.fails == 0


def test_single_server_upstream_never_marked_down():
    b = make_balancer("round_robin", [S("only", max_fails=1)])
    for t in range(5):
        r = b.begin()
        p = r.get(t)
        assert p is not None and p.name == "only"
        r.free(p, t, failed=True)
        assert r.tries == 0
    assert b.peer("only").fails == 0


def test_backup_only_when_all_primaries_down_and_fails_reset_when_all_fail():
    b = make_balancer(
        "round_robin",
        [S("a", max_fails=1), S("b", max_fails=1), S("x", backup=True), S("y", backup=True)],
    )
    assert run(b, 4) == "abab"
    r = b.begin()
    assert r.tries == 4
    for expect in ("a", "b"):
        p = r.get(0)
        assert p.name == expect
        r.free(p, 0, failed=True)
    p = r.get(0)
    assert p.name in "xy"  # backup list, with a fresh tried set
    assert run(b, 2, now=1) in ("xy", "yx")
    assert b.peer("x").conns == 0 or p.name == "x"


def test_no_live_upstream_returns_none_until_fail_timeout():
    b = make_balancer("round_robin", [S("a", fail_timeout=10), S("b", fail_timeout=10)])
    r = b.begin()
    for _ in range(2):
        p = r.get(0)
        r.free(p, 0, failed=True)
    assert r.tries == 0
    assert b.begin().get(1) is None  # both failed within fail_timeout: 502
    assert b.begin().get(10) is None  # no "mark them as live" reset (as nginx 1.22)
    assert all(p.fails == 1 for p in b.peers)
    assert set(run(b, 4, now=11)) == {"a", "b"}


def test_down_is_never_chosen_and_not_counted_in_tries():
    b = make_balancer("round_robin", [S("a", down=True), S("b"), S("c")])
    assert "a" not in run(b, 10)
    assert b.begin().tries == 2


def test_max_conns_skips_busy_peer():
    b = make_balancer("round_robin", [S("a", max_conns=1), S("b", 1)])
    r1 = b.begin()
    p1 = r1.get(0)
    assert p1.name == "a"
    r2 = b.begin()
    assert r2.get(0).name == "b"
    r3 = b.begin()
    assert r3.get(0).name == "b"  # a is full
    r1.free(p1, 0)
    assert "a" in run(b, 2)


def test_least_conn_picks_fewest_per_weight_and_breaks_ties_by_swrr():
    b = make_balancer("least_conn", [S("a", 1), S("b", 1), S("c", 2)])
    reqs = [b.begin() for _ in range(4)]
    names = [r.get(0).name for r in reqs]
    # all idle -> tie among a, b, c: SWRR picks c (weight 2); then a (0/1 < 1/2) ...
    assert names[0] == "c"
    assert Counter(names) == Counter({"c": 2, "a": 1, "b": 1})
    loaded = make_balancer("least_conn", [S("a", 1), S("b", 3)])
    held = [loaded.begin().get(0) for _ in range(4)]
    assert Counter(p.name for p in held) == Counter({"b": 3, "a": 1})


def test_least_conn_uses_backup():
    b = make_balancer("least_conn", [S("a", down=True), S("z", backup=True)])
    assert run(b, 2) == "zz"


def test_random_is_weighted_and_reproducible():
    servers = [S("a", 3), S("b", 1)]
    b1 = make_balancer("random", servers, rng=random.Random(42))
    b2 = make_balancer("random", servers, rng=random.Random(42))
    s1, s2 = run(b1, 400), run(b2, 400)
    assert s1 == s2
    share = Counter(s1)["a"] / 400
    assert 0.65 < share < 0.85


def test_random_two_prefers_fewer_connections():
    b = make_balancer("random_two", [S("a"), S("b")], rng=random.Random(1))
    held = [b.begin().get(0) for _ in range(50)]
    c = Counter(p.name for p in held)
    assert abs(c["a"] - c["b"]) <= 1  # with two peers it always takes the idler one


def test_random_skips_down_and_falls_back_to_rr_after_20_misses():
    b = make_balancer("random", [S("a", down=True), S("b")], rng=random.Random(3))
    assert run(b, 20) == "b" * 20


@pytest.mark.parametrize("method", ["ip_hash", "hash", "hash_consistent", "random", "random_two"])
def test_backup_rejected_where_nginx_rejects_it(method):
    with pytest.raises(ValueError, match="backup"):
        make_balancer(method, [S("a"), S("b", backup=True)])


def test_registry_and_validation():
    assert set(NGINX_BALANCERS) == {
        "round_robin", "least_conn", "ip_hash", "hash", "hash_consistent", "random", "random_two",
    }  # fmt: skip
    with pytest.raises(ValueError):
        make_balancer("fair", [S("a")])
    with pytest.raises(ValueError):
        S("a", weight=0)
    with pytest.raises(ValueError):
        make_balancer("round_robin", [S("a", backup=True)])


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.integers(0, 3), st.integers(0, 2), st.booleans()),
        min_size=1,
        max_size=5,
    ),
    st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.booleans()), max_size=60),
    st.sampled_from(["round_robin", "least_conn", "random", "random_two"]),
)
def test_invariants_under_random_failures(spec, steps, method):
    servers = [
        S(f"p{i}", w, max_fails=mf, max_conns=mc, down=d, fail_timeout=5)
        for i, (w, mf, mc, d) in enumerate(spec)
    ]
    b = make_balancer(method, servers, rng=random.Random(0))
    single = len(servers) == 1
    now = 0
    open_reqs = []
    for dt, fail, hold in steps:
        now += dt
        disabled = {
            p.name
            for p in b.peers
            if p.max_fails and p.fails >= p.max_fails and now - p.checked <= p.fail_timeout
        }
        req = b.begin()
        peer = req.get(now)
        if peer is not None:
            assert not peer.down
            assert peer.max_conns == 0 or peer.conns <= peer.max_conns
            if not single:
                # never a peer that max_fails had disabled at the time of the pick
                assert peer.name not in disabled
            if hold:
                open_reqs.append((req, peer, fail))
            else:
                req.free(peer, now, failed=fail)
        assert sum(p.conns for p in b.peers) == len(open_reqs)
        assert all(p.effective_weight >= 0 for p in b.peers)
    for req, peer, fail in open_reqs:
        req.free(peer, now, failed=fail)
    assert all(p.conns == 0 for p in b.peers)


def test_set_down_at_run_time():
    b = make_balancer("round_robin", [S("a"), S("b"), S("c")])
    b.set_down("b", True)
    assert "b" not in run(b, 6) and b.begin().tries == 2
    b.set_down("b", False)
    assert "b" in run(b, 3)
