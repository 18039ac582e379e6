"""The nftables renderer (pure): scheduling maps, persistence sets, incremental batches."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from typing import Any

from hakeeper.balance.lvs import RealServer as SchedServer
from hakeeper.balance.lvs import WeightedRoundRobin
from hakeeper.balance.lvs_hash import SourceHash
from hakeeper.conf.model import LvsMethod, RealServer, VirtualServer
from hakeeper.dataplane.desired import desired_state, service_from
from hakeeper.dataplane.nft_rules import (
    HASH_BUCKETS,
    L2Peer,
    Renderer,
    approximations,
    chain_name,
    persist_set,
    schedule,
    supported,
)

A = ipaddress.ip_address


def _vs(sched: str, weights: tuple[int, ...] = (1, 1, 1), **kw: Any) -> VirtualServer:
    reals = tuple(RealServer(A(f"198.18.1.{i + 1}"), 80, weight=w) for i, w in enumerate(weights))
    return VirtualServer(address=A("198.18.0.10"), port=80, lvs_sched=sched, real_servers=reals,
                         **kw)  # fmt: skip


def _cmds(r: Renderer) -> str:
    return json.dumps(r.cmds)


def test_rr_is_numgen_over_eligible_backends() -> None:
    s = service_from(_vs("rr", (1, 0, 4)), None)
    key, slots = schedule(s) or ({}, [])
    assert key == {"numgen": {"mode": "inc", "mod": 2}} and slots == [0, 1]


def test_wrr_map_is_one_ipvs_wrr_cycle() -> None:
    s = service_from(_vs("wrr", (4, 2, 2)), None)
    key, slots = schedule(s) or ({}, [])
    assert key["numgen"]["mod"] == 4  # sum / gcd
    servers = [SchedServer(str(i), w) for i, w in enumerate((4, 2, 2))]
    wrr = WeightedRoundRobin()
    expected = [int(p.key) for p in (wrr.pick(servers) for _ in range(4)) if p is not None]
    assert slots == expected
    assert Counter(slots) == {0: 2, 1: 1, 2: 1}


def test_hash_schedulers_and_fo() -> None:
    s = service_from(_vs("sh", (1, 2, 1)), None)
    key, slots = schedule(s) or ({}, [])
    assert key["jhash"]["mod"] == HASH_BUCKETS
    table = SourceHash().bucket_keys([SchedServer(str(i), w) for i, w in enumerate((1, 2, 1))])
    assert slots == [int(k) for k in table if k is not None]
    key, slots = schedule(service_from(_vs("mh"), None)) or ({}, [])
    assert key["jhash"]["mod"] == len(slots) == 251 and set(slots) == {0, 1, 2}
    key, slots = schedule(service_from(_vs("dh"), None)) or ({}, [])
    assert key["jhash"]["expr"] == {"payload": {"protocol": "ip", "field": "daddr"}}
    assert schedule(service_from(_vs("fo", (1, 5, 5)), None)) == (
        {"numgen": {"mode": "inc", "mod": 1}}, [1])  # fmt: skip
    assert schedule(service_from(_vs("rr", (0, 0, 0)), None)) is None


def test_connection_count_schedulers_are_noted_and_tun_is_unsupported() -> None:
    s = service_from(_vs("wlc"), None)
    assert any("wrr" in n for n in approximations(s))
    assert supported(service_from(_vs("rr", lvs_method=LvsMethod("TUN")), None)) is not None
    assert supported(s) is None


def test_add_service_lean_dnat_map_and_dispatch() -> None:
    r = Renderer()
    s = service_from(_vs("rr"), None)
    r.add_service(s)
    text = _cmds(r)
    assert '"dnat"' in text and '"numgen"' in text
    elem = [c for c in r.cmds if "element" in c.get("add", {})]
    assert elem[0]["add"]["element"]["name"] == "vs4"
    assert elem[0]["add"]["element"]["elem"][0][0] == {"concat": ["198.18.0.10", "tcp", 80]}


def test_update_keeps_persistence_sets_of_staying_backends() -> None:
    vs = _vs("rr", persistence_timeout=30)
    old = service_from(vs, None)
    new = service_from(vs, [(vs.real_servers[0], 1), (vs.real_servers[2], 1)])
    r = Renderer()
    r.update_backends(new, old, {b.key for b in old.backends})
    deleted_sets = [c["delete"]["set"]["name"] for c in r.cmds if "set" in c.get("delete", {})]
    assert deleted_sets == [persist_set(old, old.backends[1])]
    added_sets = [c for c in r.cmds if "set" in c.get("add", {})]
    assert added_sets == []  # the two staying backends keep theirs (and their clients)
    assert r.cmds[0] == {"flush": {"chain": {"family": "inet", "table": "hakeeper",
                                             "name": chain_name(new)}}}  # fmt: skip


def test_dr_renders_netdev_rewrite_and_skips_unresolved_backends() -> None:
    vs = _vs("rr", lvs_method=LvsMethod("DR"))
    (s,) = desired_state([vs]).services
    l2 = {A("198.18.1.1"): L2Peer("eth0", "02:00:00:00:00:01", "02:00:00:00:00:fe"),
          A("198.18.1.2"): L2Peer("eth0", "02:00:00:00:00:02", "02:00:00:00:00:fe")}  # fmt: skip
    r = Renderer(l2)
    r.add_service(s)
    text = _cmds(r)
    assert '"fwd": {"dev": "eth0"}' in text and "02:00:00:00:00:02" in text
    assert "198_18_1_3" not in text  # no MAC yet: left out until resolved
    assert all(c.get("add", {}).get("chain", {}).get("family", "netdev") == "netdev"
               for c in r.cmds)  # fmt: skip
