"""ServiceCore (the userspace L4 proxy's scheduling state) without sockets: counts, updates."""

from __future__ import annotations

import random
from ipaddress import ip_address

import pytest

from hakeeper.balance import Persistent
from hakeeper.balance.lvs_hash import MaglevHash, SourceHash
from hakeeper.conf.model import RealServer as ModelRealServer
from hakeeper.conf.model import VirtualServer
from hakeeper.dataplane.userspace import (
    Backend,
    L4Service,
    ServiceCore,
    make_scheduler,
    service_from_model,
)

A, B, C = (Backend("10.0.0.1", 80), Backend("10.0.0.2", 80), Backend("10.0.0.3", 80, 2))


def core(sched: str, *backends: Backend, **kw: object) -> ServiceCore:
    spec = L4Service("192.0.2.1", 80, "TCP", sched, backends, **kw)  # type: ignore[arg-type]
    return ServiceCore(spec, random.Random(1))


def test_backend_keys_bracket_ipv6() -> None:
    assert A.key == "10.0.0.1:80"
    assert Backend("2001:db8::1", 443).key == "[2001:db8::1]:443"


def test_wlc_reads_live_counts_and_weights() -> None:
    c = core("wlc", A, B, C)
    picks = []
    for _ in range(4):
        st = c.pick(None, 0.0)
        assert st is not None
        st.active += 1  # what the TCP relay does once connected
        picks.append(st.key)
    # wlc: overhead/weight, ties to list order; C has weight 2
    assert picks == [A.key, B.key, C.key, C.key]
    assert [s.connections for s in c.order] == [1, 1, 2]


def test_exclude_skips_failed_servers_and_none_when_all_excluded() -> None:
    c = core("rr", A, B)
    assert c.pick(None, 0.0, {A.key}).key == B.key  # type: ignore[union-attr]
    assert c.pick(None, 0.0, {A.key, B.key}) is None
    assert c.no_backend == 1


def test_update_keeps_state_objects_and_marks_removed() -> None:
    c = core("wlc", A, B)
    sa, sb = c.by_key[A.key], c.by_key[B.key]
    sa.active = 3
    c.update(L4Service("192.0.2.1", 80, "TCP", "wlc", (Backend(A.host, A.port, 0), C)))
    assert c.by_key[A.key] is sa and sa.active == 3 and sa.weight == 0
    assert sb.removed and B.key not in c.by_key
    assert c.pick(None, 0.0).key == C.key  # type: ignore[union-attr]


def test_scheduler_change_replaces_the_scheduler_only_then() -> None:
    c = core("rr", A, B)
    first = c.scheduler
    c.update(L4Service("192.0.2.1", 80, "TCP", "rr", (A,)))
    assert c.scheduler is first
    c.update(L4Service("192.0.2.1", 80, "TCP", "lc", (A,)))
    assert c.scheduler is not first and c.needs_counts


def test_persistence_pins_by_granularity_and_forget_pin_unpins() -> None:
    c = core("rr", A, B, persistence_timeout=30, persistence_granularity="255.255.255.0")
    assert isinstance(c.scheduler, Persistent)
    one = c.pick(("198.51.100.7", 1000), 0.0)
    two = c.pick(("198.51.100.9", 1001), 1.0)
    assert one is two
    c.forget_pin(("198.51.100.7", 1000))
    assert c.pick(("198.51.100.9", 1002), 2.0) is not one
    assert c.persistence is not None and len(c.persistence) == 1


def test_sched_flags_reach_the_hash_schedulers() -> None:
    sh = make_scheduler(
        L4Service("x", 1, scheduler="sh", sched_flags=("sh-port",)), random.Random()
    )
    assert isinstance(sh, SourceHash) and sh.port and not sh.fallback
    mh = make_scheduler(L4Service("x", 1, scheduler="mh", sched_flags=("flag-1",)), random.Random())
    assert isinstance(mh, MaglevHash) and mh.fallback
    with pytest.raises(ValueError, match="unknown LVS scheduler"):
        make_scheduler(L4Service("x", 1, scheduler="nope"), random.Random())


def test_service_from_model_defaults_ports_and_overrides_weights() -> None:
    vs = VirtualServer(
        address=ip_address("192.0.2.10"),
        port=443,
        lvs_sched="sed",
        persistence_timeout=50,
        real_servers=(
            ModelRealServer(ip_address("10.1.0.1"), None, 3),
            ModelRealServer(ip_address("10.1.0.2"), 8443, 1),
        ),
    )
    svc = service_from_model(vs, {"10.1.0.2:8443": 0})
    assert svc.key == ("TCP", "192.0.2.10", 443)
    assert svc.backends == (Backend("10.1.0.1", 443, 3), Backend("10.1.0.2", 8443, 0))
    assert svc.scheduler == "sed" and svc.persistence_timeout == 50
    with pytest.raises(ValueError):
        service_from_model(VirtualServer(fwmark=1))


def test_expire_drops_idle_templates_and_locality_entries() -> None:
    c = core("rr", A, B, persistence_timeout=5)
    c.pick(("198.51.100.7", 1000), 0.0)
    assert c.expire(4.0) == 0 and c.expire(5.0) == 1
    lb = core("lblc", A, B)
    lb.pick(("198.51.100.7", 1000), 0.0)
    assert lb.expire(1.0) == 0
    assert lb.expire(24 * 3600.0) == 1
