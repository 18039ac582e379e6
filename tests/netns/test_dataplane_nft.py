"""nftables data plane end to end: client -> LB -> three backends, NAT and DR, real kernel.

Pools are fed directly (the checker engine is exercised by its own tests); each test counts
which backend answers a number of new TCP connections.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from collections.abc import Iterator

import pytest
from dataplane_lab import VIP, VIP6, L4Lab, dr_lab, nat_lab

from hakeeper.conf.model import LvsMethod, RealServer, VirtualServer
from hakeeper.dataplane.desired import desired_state
from hakeeper.dataplane.nft import Nft, NftDataplane
from hakeeper.lab.netns import Lab

pytestmark = pytest.mark.root
A = ipaddress.ip_address


def _vs(
    l4: L4Lab,
    sched: str,
    *,
    method: str = "NAT",
    port: int = 80,
    weights: tuple[int, ...] = (1, 1, 1),
    persistence: int | None = None,
) -> VirtualServer:
    reals = tuple(
        RealServer(A(l4.addrs[f"web{i + 1}"]), port, weight=w) for i, w in enumerate(weights)
    )
    return VirtualServer(
        address=A(VIP),
        port=port,
        lvs_sched=sched,
        lvs_method=LvsMethod(method),
        persistence_timeout=persistence,
        real_servers=reals,
    )


def _tables(l4: L4Lab) -> str:
    return l4.lab.run(l4.lb, ["nft", "list", "tables"]).stdout


@pytest.fixture(scope="module")
def nat() -> Iterator[L4Lab]:
    with Lab() as lab:
        yield nat_lab(lab)


@pytest.fixture(scope="module")
def dr() -> Iterator[L4Lab]:
    with Lab() as lab:
        yield dr_lab(lab)


class _Plane:
    """Start/stop an NftDataplane in the LB namespace around a test body."""

    def __init__(self, l4: L4Lab, **kw: bool) -> None:
        self.l4 = l4
        self.dp = NftDataplane(Nft(netns=l4.lb), **kw)

    def __enter__(self) -> NftDataplane:
        asyncio.run(self.dp.start())
        return self.dp

    def __exit__(self, *exc: object) -> None:
        asyncio.run(self.dp.stop())


def test_nat_rr_is_exact_and_table_goes_away(nat: L4Lab) -> None:
    with _Plane(nat) as dp:
        asyncio.run(dp.apply(desired_state([_vs(nat, "rr")])))
        assert "inet hakeeper" in _tables(nat)
        got = nat.connect(60)
        assert Counter(got) == {"web1": 20, "web2": 20, "web3": 20}
        # numgen inc: strict rotation, whatever name starts it
        assert all(got[i] != got[i + 1] for i in range(len(got) - 1))
        # a client on the director itself goes through the nat output hook
        assert Counter(nat.connect(9, ns=nat.lb)) == {"web1": 3, "web2": 3, "web3": 3}
    assert "hakeeper" not in _tables(nat)


def test_nat_wrr_weights_exact(nat: L4Lab) -> None:
    with _Plane(nat) as dp:
        asyncio.run(dp.apply(desired_state([_vs(nat, "wrr", weights=(3, 2, 1))])))
        assert nat.counts(60) == {"web1": 30, "web2": 20, "web3": 10}


def test_nat_pool_change_reroutes_and_keeps_other_services(nat: L4Lab) -> None:
    with _Plane(nat) as dp:
        vs80, vs81 = _vs(nat, "rr"), _vs(nat, "rr", port=81)
        asyncio.run(dp.apply(desired_state([vs80, vs81])))
        assert nat.counts(30) == {"web1": 10, "web2": 10, "web3": 10}
        web1, _web2, web3 = vs80.real_servers
        pools = {vs80.key: [(web1, 1), (web3, 1)]}
        plan = asyncio.run(dp.apply(desired_state([vs80, vs81], pools)))
        assert plan.counts()["backends_removed"] == 1
        assert plan.counts()["services_unchanged"] == 1  # port 81 untouched
        assert nat.counts(30) == {"web1": 15, "web3": 15}
        assert nat.counts(30, port=81) == {"web1": 10, "web2": 10, "web3": 10}
        # quiesced (weight 0) gets no new connections; back to weight 1 rejoins the rotation
        pools = {vs80.key: [(web1, 1), (vs80.real_servers[1], 0), (web3, 1)]}
        asyncio.run(dp.apply(desired_state([vs80, vs81], pools)))
        assert set(nat.counts(20)) == {"web1", "web3"}
        asyncio.run(dp.apply(desired_state([vs80, vs81])))
        assert nat.counts(30) == {"web1": 10, "web2": 10, "web3": 10}
        # an empty pool drops new connections instead of sending them anywhere
        asyncio.run(dp.apply(desired_state([vs80, vs81], {vs80.key: []})))
        assert set(nat.connect(2)) <= {"ERR TimeoutError", "ERR ConnectionRefusedError"}


def test_nat_persistence_keeps_a_client_on_one_backend(nat: L4Lab) -> None:
    with _Plane(nat) as dp:
        vs = _vs(nat, "rr", persistence=50)
        asyncio.run(dp.apply(desired_state([vs])))
        got = nat.counts(30)
        assert len(got) == 1 and sum(got.values()) == 30
        (first,) = got
        # another backend leaving the pool does not move the client
        others = [rs for rs in vs.real_servers if str(rs.ip) != nat.addrs[first]]
        keep = [rs for rs in vs.real_servers if str(rs.ip) == nat.addrs[first]] + others[:1]
        asyncio.run(dp.apply(desired_state([vs], {vs.key: [(rs, 1) for rs in keep]})))
        assert nat.counts(10) == {first: 10}
        # its own backend leaving reschedules it (and it then sticks to the new one)
        asyncio.run(dp.apply(desired_state([vs], {vs.key: [(others[0], 1), (others[1], 1)]})))
        moved = nat.counts(10)
        assert len(moved) == 1 and first not in moved


def test_nat_masquerade_full_nat(nat: L4Lab) -> None:
    with _Plane(nat, masquerade=True) as dp:
        asyncio.run(dp.apply(desired_state([_vs(nat, "rr")])))
        # backends see the LB's address, so they need no route back through it
        for ns in nat.backends.values():
            nat.lab.ip(ns, "route", "del", "default")
        try:
            assert nat.counts(9) == {"web1": 3, "web2": 3, "web3": 3}
        finally:
            for ns in nat.backends.values():
                nat.lab.route(ns, "default", "via", "198.18.1.254")


def test_dr_rr_wrr_and_persistence(dr: L4Lab) -> None:
    with _Plane(dr) as dp:
        plan = asyncio.run(dp.apply(desired_state([_vs(dr, "rr", method="DR")])))
        assert plan.counts()["backends_added"] == 3
        assert "netdev hakeeper" in _tables(dr)
        assert dr.counts(60) == {"web1": 20, "web2": 20, "web3": 20}
        asyncio.run(dp.apply(desired_state([_vs(dr, "wrr", method="DR", weights=(3, 2, 1))])))
        assert dr.counts(60) == {"web1": 30, "web2": 20, "web3": 10}
        vs = _vs(dr, "wrr", method="DR", weights=(1, 1, 1), persistence=50)
        asyncio.run(dp.apply(desired_state([vs])))
        got = dr.counts(20)
        assert len(got) == 1 and sum(got.values()) == 20
    assert "hakeeper" not in _tables(dr)


def test_nat_ipv6_wrr_and_persistence_granularity(nat: L4Lab) -> None:
    reals = tuple(RealServer(A(f"2001:db8:19::{i}"), 80, weight=w) for i, w in ((1, 2), (2, 1)))
    vs = VirtualServer(address=A(VIP6), port=80, lvs_sched="wrr", real_servers=reals)
    sticky = VirtualServer(
        address=A(VIP6),
        port=81,
        lvs_sched="rr",
        persistence_timeout=30,
        persistence_granularity="64",
        real_servers=tuple(RealServer(r.ip, 81) for r in reals),
    )
    with _Plane(nat) as dp:
        asyncio.run(dp.apply(desired_state([vs, sticky])))
        assert nat.counts(30, host=VIP6) == {"web1": 20, "web2": 10}
        assert len(nat.counts(10, port=81, host=VIP6)) == 1


def test_nat_udp_rr(nat: L4Lab) -> None:
    reals = tuple(RealServer(A(nat.addrs[f"web{i}"]), 81) for i in (1, 2, 3))
    vs = VirtualServer(address=A(VIP), port=81, protocol="UDP", lvs_sched="rr", real_servers=reals)
    with _Plane(nat) as dp:
        asyncio.run(dp.apply(desired_state([vs])))
        assert Counter(nat.connect(30, port=81, udp=True)) == {"web1": 10, "web2": 10, "web3": 10}
