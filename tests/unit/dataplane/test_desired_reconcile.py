"""Desired state from config + pools, and the reconcile plan (pure)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from hakeeper.conf.keepalived import load_keepalived
from hakeeper.conf.model import (
    LvsMethod,
    RealServer,
    SorryServer,
    VirtualServer,
    VirtualServerGroup,
    VsgEntry,
)
from hakeeper.dataplane.desired import (
    Backend,
    desired_state,
    parse_endpoint,
    prefix_of,
    service_from,
)
from hakeeper.dataplane.reconcile import (
    AddBackend,
    AddService,
    DeleteBackend,
    DeleteService,
    UpdateBackend,
    UpdateService,
    plan,
)

A = ipaddress.ip_address
R1, R2, R3 = (RealServer(A(f"198.18.1.{i}"), 80, weight=i) for i in (1, 2, 3))


def _vs(port: int = 80, **kw: object) -> VirtualServer:
    base: dict[str, object] = {
        "address": A("198.18.0.10"),
        "port": port,
        "lvs_sched": "rr",
        "real_servers": (R1, R2, R3),
    }
    base.update(kw)
    return VirtualServer(**base)  # type: ignore[arg-type]


def test_no_pool_means_every_real_server_at_its_weight() -> None:
    s = service_from(_vs(), None)
    assert [(b.key, b.weight) for b in s.backends] == [
        ("198.18.1.1:80", 1),
        ("198.18.1.2:80", 2),
        ("198.18.1.3:80", 3),
    ]
    assert s.protocol == "tcp" and s.family == 4 and s.method == "NAT"


def test_pool_entries_by_object_key_or_text_and_sorry_server() -> None:
    sorry = SorryServer(A("198.18.1.9"), 80, lvs_method=LvsMethod("DR"))
    vs = _vs(sorry_server=sorry)
    pool = [(R1, 5), ((A("198.18.1.2"), 80), 0), ("198.18.1.9:80", 1), ("junk", 1)]
    s = service_from(vs, pool)
    assert [(b.key, b.weight, b.method) for b in s.backends] == [
        ("198.18.1.1:80", 5, "NAT"),
        ("198.18.1.2:80", 0, "NAT"),
        ("198.18.1.9:80", 1, "DR"),
    ]
    assert any("junk" in n for n in s.notes)


def test_pools_keyed_by_vs_key_or_label_and_duplicates_dropped() -> None:
    vs = _vs()
    st = desired_state([vs, vs], {vs.label: [(R3, 1), (R3, 1)]})
    assert len(st.services) == 1
    assert [b.key for b in st.services[0].backends] == ["198.18.1.3:80"]


def test_groups_fwmark_and_persistence_granularity() -> None:
    group = VirtualServerGroup(
        "web", (VsgEntry(A("198.18.0.10"), A("198.18.0.12"), 80), VsgEntry(fwmark=7))
    )
    vs = VirtualServer(
        group="web",
        persistence_timeout=50,
        persistence_granularity="255.255.255.0",
        real_servers=(R1,),
    )
    s = service_from(vs, None, {"web": group})
    assert [str(f.address) for f in s.frontends if f.address] == [
        "198.18.0.10",
        "198.18.0.11",
        "198.18.0.12",
    ]
    assert any(f.fwmark == 7 for f in s.frontends)
    assert s.persistence_prefix == 24 and s.persistent
    assert prefix_of(None, 4) is None and prefix_of("32", 4) is None and prefix_of("/64", 6) == 64
    assert parse_endpoint("[2001:db8::1]:80") == (A("2001:db8::1"), 80)
    assert parse_endpoint("198.18.1.1 80") == (A("198.18.1.1"), 80)


def test_plan_orders_changes_and_leaves_unchanged_services_alone() -> None:
    old = desired_state([_vs(80), _vs(81), _vs(82)])
    vs80 = _vs(80)
    new = desired_state(
        [vs80, _vs(81, lvs_sched="wrr"), _vs(83)],
        {vs80.key: [(R1, 1), (R3, 7), (RealServer(A("198.18.1.4"), 80), 1)]},
    )
    p = plan(new, old)
    kinds = [type(c).__name__ for c in p.changes]
    assert kinds[0] == "DeleteService"  # removed first
    assert kinds.index("AddService") < kinds.index("UpdateService")
    per80 = [c for c in p.changes if c.service.key == vs80.key]
    assert [type(c) for c in per80] == [AddBackend, UpdateBackend, DeleteBackend]
    assert isinstance(per80[1], UpdateBackend) and per80[1].old.weight == 3
    assert p.counts() == {
        "services_added": 1,
        "services_changed": 1,
        "services_removed": 1,
        "backends_added": 4,
        "backends_changed": 1,
        "backends_removed": 1,
        "services_unchanged": 0,
    }
    assert not plan(new, new) and plan(new, new).counts()["services_unchanged"] == 3
    assert isinstance(p.changes[0], DeleteService)
    assert any(isinstance(c, AddService) for c in p.changes)
    assert any(isinstance(c, UpdateService) for c in p.changes)


def test_backend_identity_is_address_and_port() -> None:
    b = Backend(A("2001:db8::1"), 80, 1)
    assert b.key == "[2001:db8::1]:80"
    assert Backend(A("198.18.1.1"), None, 1).key == "198.18.1.1"


def test_seed_configs_build(tmp_path: Path) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text(
        "virtual_server 198.18.0.10 81 {\n delay_loop 6\n lb_algo wrr\n lb_kind DR\n"
        " persistence_timeout 50\n protocol TCP\n"
        " real_server 198.18.0.11 81 {\n weight 1\n TCP_CHECK {\n connect_timeout 10\n"
        " retry 3\n delay_before_retry 3\n connect_port 81\n }\n }\n}\n"
    )
    cfg, _ = load_keepalived(str(conf))
    assert cfg is not None
    (s,) = desired_state(cfg).services
    assert (s.scheduler, s.method, s.persistence_timeout) == ("wrr", "DR", 50)


def test_cache_rebuilds_only_changed_virtual_servers() -> None:
    cache: dict = {}  # type: ignore[type-arg]
    a, b = _vs(80), _vs(81)
    first = desired_state([a, b], None, cache)
    again = desired_state([a, b], {}, cache)
    assert again.services[0] is first.services[0] and again.services[1] is first.services[1]
    changed = desired_state([a, b], {b.key: [(R1, 1)]}, cache)
    assert changed.services[0] is first.services[0]
    assert changed.services[1] is not first.services[1]
    assert [x.key for x in changed.services[1].backends] == ["198.18.1.1:80"]
    desired_state([a], None, cache)
    assert set(cache) == {a.key}


def test_a_frontend_claimed_twice_stays_with_the_first_service() -> None:
    group = VirtualServerGroup("g", (VsgEntry(A("198.18.0.9"), A("198.18.0.10"), 80),))
    cfg_vs = [_vs(80), VirtualServer(group="g", real_servers=(R1,))]
    from hakeeper.conf.model import KeepalivedConfig

    st = desired_state(
        KeepalivedConfig(virtual_servers=tuple(cfg_vs), virtual_server_groups=(group,))
    )
    first, second = st.services
    assert [str(f.address) for f in second.frontends] == ["198.18.0.9"]
    assert any("already served by 198.18.0.10 80" in n for n in second.notes)
    assert len(first.frontends) == 1
