"""Active-health `down` flag and nginx Plus `slow_start` ramps on the pure nginx balancers."""

from __future__ import annotations

import random
from collections import Counter
from ipaddress import ip_address

import pytest

from hakeeper.balance import make_balancer
from hakeeper.balance.nginx import UpstreamBalancer, UpstreamServer
from hakeeper.balance.nginx_hash import ChashBalancer
from hakeeper.balance.upstream import UpstreamGroup


def servers(*names: str, slow: float = 0.0, weight: int = 1) -> list[UpstreamServer]:
    return [UpstreamServer(n, weight=weight, slow_start=slow, server=f"{n}:80") for n in names]


def picks(b: UpstreamBalancer, now: float, n: int, **begin: object) -> list[str]:
    out = []
    for _ in range(n):
        req = b.begin(**begin)  # type: ignore[arg-type]
        peer = req.get(now)
        out.append("-" if peer is None else peer.name)
        if peer is not None:
            req.free(peer, now)
    return out


# ------------------------------------------------------------------ down flag (active health)


def test_health_down_peer_is_skipped_and_comes_back() -> None:
    b = make_balancer("round_robin", servers("a", "b", "c"))
    assert b.set_health("b", False, 0.0) is True
    assert b.set_health("b", False, 1.0) is False  # no change
    assert picks(b, 1.0, 4) == ["a", "c", "a", "c"]
    assert b.set_health("b", True, 2.0) is True
    assert set(picks(b, 2.0, 3)) == {"a", "b", "c"}


def test_admin_and_health_flags_are_independent() -> None:
    b = make_balancer("round_robin", servers("a", "b"))
    b.set_down("b", True)
    b.set_health("b", True, 0.0)  # healthy but administratively down
    assert picks(b, 0.0, 3) == ["a", "a", "a"]
    b.set_down("b", False)
    b.set_health("b", False, 0.0)
    assert picks(b, 0.0, 2) == ["a", "a"]
    assert b.begin().tries == 2  # health does not change the configured try budget


@pytest.mark.parametrize(
    "method", ["round_robin", "least_conn", "ip_hash", "hash", "hash_consistent", "random"]
)
def test_all_peers_down_gives_none_like_nginx_502(method: str) -> None:
    g: UpstreamGroup[str] = UpstreamGroup(
        method, [(n, s) for n, s in zip("abc", servers("a", "b", "c"), strict=True)]
    )
    for n in "abc":
        g.balancer.set_health(n, False, 0.0)
    assert g.pick("10.0.0.1", (), 0.0) is None
    g.balancer.set_health("b", True, 1.0)
    assert g.pick("10.0.0.1", (), 1.0) == "b"


def test_single_peer_down_gives_none() -> None:
    g: UpstreamGroup[str] = UpstreamGroup("round_robin", [("a", UpstreamServer("a"))])
    g.balancer.set_health("a", False, 0.0)
    assert g.pick("", (), 0.0) is None


def test_least_conn_never_picks_a_down_peer() -> None:
    b = make_balancer("least_conn", servers("a", "b", "c"))
    b.set_health("a", False, 0.0)
    held = [b.begin().get(0.0) for _ in range(6)]  # connections stay open
    assert Counter(p.name for p in held if p is not None) == {"b": 3, "c": 3}


def test_consistent_hash_moves_only_the_down_peers_keys() -> None:
    b = make_balancer("hash_consistent", servers("a", "b", "c", "d"))
    assert isinstance(b, ChashBalancer)
    keys = [f"/obj/{i}" for i in range(400)]
    before = {k: picks(b, 0.0, 1, key=k)[0] for k in keys}
    b.set_health("c", False, 1.0)
    during = {k: picks(b, 1.0, 1, key=k)[0] for k in keys}
    moved = {k for k in keys if before[k] != during[k]}
    assert moved == {k for k in keys if before[k] == "c"}
    assert moved and "c" not in during.values()
    b.set_health("c", True, 2.0)
    assert {k: picks(b, 2.0, 1, key=k)[0] for k in keys} == before


def test_ip_hash_keeps_other_clients_on_their_peer() -> None:
    b = make_balancer("ip_hash", servers("a", "b", "c"))
    clients = [ip_address(f"10.{i}.{i * 7 % 256}.1") for i in range(120)]
    before = {c: picks(b, 0.0, 1, client=c)[0] for c in clients}
    b.set_health("a", False, 1.0)
    during = {c: picks(b, 1.0, 1, client=c)[0] for c in clients}
    assert all(during[c] == before[c] for c in clients if before[c] != "a")
    assert "a" not in during.values()


# ------------------------------------------------------------------ slow start


def test_no_ramp_at_start() -> None:
    b = make_balancer("round_robin", servers("a", "b", slow=30))
    assert b.weight_now("a", 0.0) == 1.0
    assert picks(b, 0.0, 4) == ["a", "b", "a", "b"]


def test_swrr_sequence_during_and_after_ramp() -> None:
    b = make_balancer("round_robin", servers("a", "b", "c", slow=10))
    b.set_health("c", False, 0.0)
    b.set_health("c", True, 100.0)
    assert b.weight_now("c", 100.0) == 0.0
    assert picks(b, 100.0, 4) == ["a", "b", "a", "b"]  # weight 0: never chosen
    b2 = make_balancer("round_robin", servers("a", "b", "c", slow=10))
    b2.set_health("c", False, 0.0)
    b2.set_health("c", True, 100.0)
    # half-way: weights 1, 1, 0.5 behave like 2, 2, 1 -> a b c a b
    assert b2.weight_now("c", 105.0) == pytest.approx(0.5)
    assert picks(b2, 105.0, 5) == ["a", "b", "c", "a", "b"]
    # the ramp is over: current weights are reset, nginx's integer SWRR again
    assert picks(b2, 110.0, 1) == ["a"]
    assert b2.primary.ramping == 0
    assert all(p.current_weight == int(p.current_weight) for p in b2.peers)
    assert picks(b2, 111.0, 6) == ["b", "c", "a", "b", "c", "a"]


def test_ramp_share_grows_linearly() -> None:
    b = make_balancer("round_robin", servers("a", "b", slow=20, weight=4))
    b.set_health("b", False, 0.0)
    b.set_health("b", True, 0.0)
    shares = []
    for t in (2.0, 5.0, 10.0, 15.0):
        got = Counter(picks(b, t, 400))
        shares.append(got["b"] / 400)
    for share, f in zip(shares, (0.1, 0.25, 0.5, 0.75), strict=True):
        assert share == pytest.approx(f / (1 + f), abs=0.02)


def test_passive_recovery_starts_a_ramp() -> None:
    b = make_balancer(
        "round_robin",
        [UpstreamServer(n, max_fails=1, fail_timeout=10, slow_start=20) for n in "ab"],
    )
    req = b.begin()
    peer = req.get(0.0)
    assert peer is not None and peer.name == "a"
    req.free(peer, 0.0, failed=True)
    assert picks(b, 5.0, 3) == ["b", "b", "b"]
    # fail_timeout over: one request retries a; its success clears fails and starts the ramp
    got = picks(b, 11.0, 6)
    assert "a" in got
    assert b.primary.ramping == 1
    assert b.weight_now("a", 21.0) == pytest.approx(0.5)
    assert b.weight_now("a", 31.0) == 1.0


def test_start_ramp_for_an_added_server() -> None:
    b = make_balancer("round_robin", servers("a", "b", slow=10))
    b.start_ramp("b", 0.0)
    b.start_ramp("b", 2.0)  # restart: still one ramp
    assert b.primary.ramping == 1
    assert b.weight_now("b", 7.0) == pytest.approx(0.5)
    nothing = make_balancer("round_robin", servers("a", "b"))
    nothing.start_ramp("b", 0.0)  # no slow_start: no ramp
    assert nothing.primary.ramping == 0


def test_least_conn_ramp_breaks_ties_by_ramped_weight() -> None:
    b = make_balancer("least_conn", servers("a", "b", slow=8))
    b.set_health("b", False, 0.0)
    b.set_health("b", True, 0.0)
    # at f = 0.25 every pick ties at 0 conns; SWRR over 1 : 0.25 picks b once in 5
    assert Counter(picks(b, 2.0, 50)) == {"a": 40, "b": 10}
    # with connections held, b's share of conns follows its ramped weight
    b2 = make_balancer("least_conn", servers("a", "b", slow=8))
    b2.start_ramp("b", 0.0)
    held = [b2.begin().get(4.0) for _ in range(30)]
    got = Counter(p.name for p in held if p is not None)
    assert got["b"] == pytest.approx(10, abs=1)


@pytest.mark.parametrize("method", ["ip_hash", "hash", "hash_consistent", "random", "random_two"])
def test_slow_start_rejected_with_hash_and_random(method: str) -> None:
    with pytest.raises(ValueError, match="slow_start"):
        make_balancer(method, servers("a", "b", slow=5), rng=random.Random(1))


def test_negative_slow_start_rejected() -> None:
    with pytest.raises(ValueError, match="slow_start"):
        UpstreamServer("a", slow_start=-1)


def test_set_health_without_ramp() -> None:
    b = make_balancer("round_robin", servers("a", "b", slow=10))
    b.set_health("b", False, 0.0)
    b.set_health("b", True, 0.0, ramp=False)  # e.g. a mandatory check's first pass
    assert b.primary.ramping == 0 and b.weight_now("b", 0.0) == 1.0
