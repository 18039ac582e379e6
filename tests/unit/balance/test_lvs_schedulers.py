"""IPVS scheduler behaviour: exact sequences, quiescing, overhead rules, registry."""

from __future__ import annotations

import ast
import math
import pathlib
from collections import Counter
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hakeeper.balance import CONNECTION_COUNT_SCHEDULERS, LVS_SCHEDULERS
from hakeeper.balance.lvs import (
    Flow,
    LeastConnection,
    LocalityLeastConnection,
    LocalityLeastConnectionReplicated,
    NeverQueue,
    RealServer,
    RoundRobin,
    ShortestExpectedDelay,
    WeightedFailover,
    WeightedLeastConnection,
    WeightedOverflow,
    WeightedRoundRobin,
    WeightedTwoChoices,
)

RS = RealServer


def seq(sched, servers, n):
    return "".join(sched.pick(servers).key for _ in range(n))


def reference_wrr(weights: list[int], n: int) -> list[int]:
    """The textbook LVS wrr (i, cw, gcd, max) walk, written independently."""
    g = 0
    for w in weights:
        g = math.gcd(g, w)
    mw = max(weights)
    i, cw, out = -1, 0, []
    while len(out) < n:
        i = (i + 1) % len(weights)
        if i == 0:
            cw -= g
            if cw <= 0:
                cw = mw
        if weights[i] >= cw:
            out.append(i)
    return out


def test_rr_cycles_in_list_order_and_skips_quiesced_and_overloaded():
    s = [RS("a"), RS("b", weight=0), RS("c", overloaded=True), RS("d")]
    assert seq(RoundRobin(), s, 5) == "adada"


def test_rr_continues_after_removed_destination():
    rr = RoundRobin()
    s = [RS("a"), RS("b"), RS("c")]
    assert seq(rr, s, 2) == "ab"
    assert rr.pick([RS("a"), RS("c")]).key == "c"  # b deleted: cursor moves back to a


def test_rr_none_when_nothing_usable():
    assert RoundRobin().pick([RS("a", weight=0)]) is None
    assert RoundRobin().pick([]) is None


def test_wrr_exact_ipvs_sequence():
    s = [RS("a", 4), RS("b", 3), RS("c", 2)]
    assert seq(WeightedRoundRobin(), s, 18) == "aababcabc" * 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=6))
def test_wrr_matches_textbook_gcd_max_weight_walk(weights):
    servers = [RS(str(i), w) for i, w in enumerate(weights)]
    total = sum(weights) // math.gcd(*weights)
    wrr = WeightedRoundRobin()
    got = [int(wrr.pick(servers).key) for _ in range(2 * total)]
    assert got == reference_wrr(weights, 2 * total)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=6))
def test_wrr_distribution_equals_weights_per_cycle(weights):
    servers = [RS(str(i), w) for i, w in enumerate(weights)]
    live = [w for w in weights if w > 0]
    w = WeightedRoundRobin()
    if not live:
        assert w.pick(servers) is None
        return
    g = math.gcd(*live)
    cycle = sum(live) // g
    counts = Counter(w.pick(servers).key for _ in range(cycle * 3))
    assert counts == Counter({str(i): 3 * x // g for i, x in enumerate(weights) if x > 0})


def test_wrr_weight_change_keeps_working():
    w = WeightedRoundRobin()
    s = [RS("a", 2), RS("b", 1)]
    assert seq(w, s, 3) == "aab"
    s2 = [RS("a", 2), RS("b", 0)]
    assert seq(w, s2, 3) == "aaa"
    assert w.pick([RS("a", 0), RS("b", 0)]) is None


def test_lc_overhead_active_times_256_plus_inactive():
    s = [RS("a", active=1, inactive=0), RS("b", active=0, inactive=255)]
    assert LeastConnection().pick(s).key == "b"
    s = [RS("a", active=1), RS("b", active=0, inactive=256)]
    assert LeastConnection().pick(s).key == "a"  # tie: first in list


def test_lc_ignores_weight_except_zero():
    s = [RS("a", weight=0), RS("b", weight=1, active=5), RS("c", weight=100, active=6)]
    assert LeastConnection().pick(s).key == "b"


def test_wlc_divides_by_weight_and_ties_go_first():
    s = [RS("a", weight=1, active=1), RS("b", weight=3, active=2)]
    assert WeightedLeastConnection().pick(s).key == "b"  # 256/1 > 512/3
    s = [RS("a", weight=1, active=1), RS("b", weight=2, active=2)]
    assert WeightedLeastConnection().pick(s).key == "a"
    assert WeightedLeastConnection().pick([RS("a", weight=0)]) is None


def test_sed_and_nq():
    s = [RS("a", weight=1, active=0), RS("b", weight=10, active=1)]
    assert ShortestExpectedDelay().pick(s).key == "b"  # (0+1)/1 > (1+1)/10
    assert NeverQueue().pick(s).key == "a"  # an idle server wins outright
    s = [RS("a", weight=1, active=1), RS("b", weight=10, active=5)]
    assert NeverQueue().pick(s).key == "b"


def test_fo_and_ovf():
    s = [RS("a", weight=5, overloaded=True), RS("b", weight=3), RS("c", weight=3)]
    assert WeightedFailover().pick(s).key == "b"
    s = [RS("a", weight=5, active=6), RS("b", weight=3, active=3), RS("c", weight=2)]
    assert WeightedOverflow().pick(s).key == "b"  # a exceeds its weight; b is at it


def test_twos_prefers_lighter_of_two_and_is_deterministic_with_seed():
    import random

    s = [RS("a", weight=1, active=50), RS("b", weight=1, active=0)]
    twos = WeightedTwoChoices(random.Random(7))
    picks = Counter(twos.pick(s).key for _ in range(200))
    assert picks["b"] > picks["a"]
    t1, t2 = WeightedTwoChoices(random.Random(3)), WeightedTwoChoices(random.Random(3))
    one = [t1.pick(s).key for _ in range(20)]
    two = [t2.pick(s).key for _ in range(20)]
    assert one == two


def test_lblc_sticks_per_destination_and_moves_when_overloaded():
    lb = LocalityLeastConnection()
    d1 = Flow(dst=IPv4Address("198.18.0.10"), now=0)
    s = [RS("a", weight=2), RS("b", weight=2)]
    assert lb.pick(s, d1).key == "a"
    s = [RS("a", weight=2, active=1), RS("b", weight=2, active=3)]
    assert lb.pick(s, d1).key == "a"  # cached even though wlc would also say a
    s = [RS("a", weight=2, active=3), RS("b", weight=2, active=0)]
    assert lb.pick(s, d1).key == "b"  # a > weight while b is under half load
    assert lb.pick([RS("a", weight=2), RS("b", weight=0)], d1).key == "a"  # b quiesced


def test_lblc_expiry():
    lb = LocalityLeastConnection(expiration=60)
    lb.pick([RS("a")], Flow(dst=IPv4Address("198.18.0.1"), now=0))
    assert len(lb) == 1
    assert lb.expire(59) == 0
    assert lb.expire(60) == 1


def test_lblcr_grows_set_when_overloaded_and_shrinks_after_expiration():
    lb = LocalityLeastConnectionReplicated(expiration=100)
    dst = IPv4Address("198.18.0.9")
    s = [RS("a", weight=1), RS("b", weight=1)]
    assert lb.pick(s, Flow(dst=dst, now=0)).key == "a"
    s = [RS("a", weight=1, active=2), RS("b", weight=1, active=0)]
    assert lb.pick(s, Flow(dst=dst, now=1)).key == "b"
    assert lb.members(dst) == ("b", "a")
    s = [RS("a", weight=1, active=0), RS("b", weight=1, active=1)]
    assert lb.pick(s, Flow(dst=dst, now=2)).key == "a"
    # not modified for > expiration: the most loaded member (b) is dropped
    assert lb.pick(s, Flow(dst=dst, now=200)).key == "a"
    assert lb.members(dst) == ("a",)


@pytest.mark.parametrize("name", sorted(LVS_SCHEDULERS))
def test_every_scheduler_never_picks_quiesced_or_overloaded(name):
    sched = LVS_SCHEDULERS[name]()
    s = [RS("q", weight=0), RS("o", weight=5, overloaded=True), RS("ok", weight=1)]
    for i in range(20):
        got = sched.pick(s, Flow(src=IPv4Address(i), dst=IPv4Address(i), now=i))
        assert got is None or got.key == "ok"


def test_registry_names_match_keepalived_lb_algo():
    assert set(LVS_SCHEDULERS) == {
        "rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "mh", "lblc", "lblcr", "fo", "ovf",
        "twos",
    }  # fmt: skip
    assert set(LVS_SCHEDULERS) >= CONNECTION_COUNT_SCHEDULERS
    for name, factory in LVS_SCHEDULERS.items():
        assert factory().name == name


FORBIDDEN = {"socket", "asyncio", "time", "os", "subprocess", "threading"}


@pytest.mark.parametrize(
    "module",
    ["balance/lvs.py", "balance/lvs_hash.py", "balance/persistence.py", "balance/nginx.py",
     "balance/nginx_hash.py", "balance/__init__.py", "balance/upstream.py", "check/policy.py"],
)  # fmt: skip
def test_pure_cores_import_no_io(module):
    import hakeeper

    path = pathlib.Path(hakeeper.__file__).parent / module
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert not names & FORBIDDEN


servers_st = st.lists(
    st.builds(
        lambda w, a, i, o: (w, a, i, o),
        st.integers(0, 5),
        st.integers(0, 20),
        st.integers(0, 300),
        st.booleans(),
    ),
    min_size=1,
    max_size=7,
)


def _mk(spec):
    return [RS(str(k), w, a, i, o) for k, (w, a, i, o) in enumerate(spec)]


@settings(max_examples=150, deadline=None)
@given(servers_st)
def test_connection_schedulers_match_brute_force_minimum(spec):
    from fractions import Fraction

    servers = _mk(spec)
    usable = [s for s in servers if s.usable]

    def first_min(key):
        return min(usable, key=key) if usable else None  # min() keeps the first on ties

    cases = {
        "lc": (LeastConnection(), lambda s: s.overhead),
        "wlc": (WeightedLeastConnection(), lambda s: Fraction(s.overhead, s.weight)),
        "sed": (ShortestExpectedDelay(), lambda s: Fraction(s.active + 1, s.weight)),
    }
    for name, (sched, key) in cases.items():
        got = sched.pick(servers)
        want = first_min(key)
        assert (got.key if got else None) == (want.key if want else None), name
    idle = [s for s in usable if s.active == 0]
    nq = NeverQueue().pick(servers)
    if idle:
        assert nq == idle[0]
    else:
        want = first_min(lambda s: Fraction(s.active + 1, s.weight))
        assert nq == want
