"""Tracking policy: keepalived's weight arithmetic, clamps, FAULT rules, rise/fall, sync groups."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hakeeper.vrrp.machine import State, StateChanged, VrrpMachine, VrrpParams
from hakeeper.vrrp.track import (
    SYNC_FAULT_SOURCE,
    ScriptCounter,
    ScriptStatus,
    SyncGroup,
    TrackedFile,
    TrackedInterface,
    TrackedScript,
    clamp_priority,
    evaluate,
    file_contribution,
    strip_for_sync_group,
    weight_contribution,
)

GOOD, BAD, INIT = ScriptStatus.GOOD, ScriptStatus.BAD, ScriptStatus.INIT


# ---------------------------------------------------------------- weights


@pytest.mark.parametrize(
    ("up", "weight", "reverse", "expected"),
    [
        (True, 0, False, 0),
        (False, 0, False, None),  # weight 0: failure => FAULT
        (True, 0, True, None),  # reverse: up => FAULT
        (False, 0, True, 0),
        (True, 20, False, 20),  # +w while OK
        (False, 20, False, 0),
        (True, -20, False, 0),
        (False, -20, False, -20),  # -|w| while KO
        (True, 20, True, -20),  # reverse flips the direction
        (False, -20, True, 20),
    ],
)
def test_weight_contribution(up: bool, weight: int, reverse: bool, expected: int | None) -> None:
    assert weight_contribution(up, weight, reverse) == expected


def test_file_contribution() -> None:
    assert file_contribution(0, 0) == 0
    assert file_contribution(3, 0) is None  # weight 0: non-zero => FAULT
    assert file_contribution(5, 10) == 50
    assert file_contribution(-3, 10) == -30
    assert file_contribution(100, 10) == 253  # clamp
    assert file_contribution(-26, 10) is None  # <= -254 => FAULT
    assert file_contribution(-25, 10) == -250
    assert file_contribution(5, 10, reverse=True) == -50
    assert file_contribution(10**9, 1) == 253


def test_clamp_and_owner() -> None:
    assert clamp_priority(100, 200) == 254
    assert clamp_priority(100, -200) == 1
    assert clamp_priority(255, -100) == 255
    assert clamp_priority(100, -20) == 80


def test_evaluate_combines_all_trackers() -> None:
    ev = evaluate(
        100,
        scripts=[(TrackedScript("chk", -20), BAD), (TrackedScript("up", 5), GOOD)],
        interfaces=[(TrackedInterface("eth1", -30), False), (TrackedInterface("eth2", 0), True)],
        files=[(TrackedFile("f", 2), 3)],
    )
    assert ev.priority == 100 - 20 + 5 - 30 + 6
    assert not ev.fault and ev.pending == ()


def test_evaluate_faults_and_pending() -> None:
    ev = evaluate(
        100,
        scripts=[(TrackedScript("nginx"), BAD), (TrackedScript("late"), INIT)],
        interfaces=[(TrackedInterface("eth0"), False)],
        files=[(TrackedFile("f", 0), 1)],
    )
    assert ev.faults == ("track_script nginx", "track_interface eth0", "track_file f")
    assert ev.pending == ("late",)
    assert ev.fault


def test_owner_ignores_weights_but_can_fault() -> None:
    ev = evaluate(255, scripts=[(TrackedScript("w", -50), BAD), (TrackedScript("z"), BAD)])
    assert ev.priority == 255
    assert ev.faults == ("track_script z",)


@given(
    base=st.integers(1, 254),
    weights=st.lists(st.tuples(st.integers(-253, 253), st.booleans(), st.booleans()), max_size=6),
)
def test_priority_always_in_range(base: int, weights: list[tuple[int, bool, bool]]) -> None:
    scripts = [
        (TrackedScript(f"s{i}", w or 1, rev), GOOD if ok else BAD)
        for i, (w, ok, rev) in enumerate(weights)
    ]
    assert 1 <= evaluate(base, scripts=scripts).priority <= 254


# ---------------------------------------------------------------- rise / fall


def test_script_counter_fall_two() -> None:
    c = ScriptCounter(rise=1, fall=2)
    assert c.status is INIT
    assert c.record(True) and c.status is GOOD
    assert not c.record(False) and c.status is GOOD  # 1st failure tolerated
    assert c.record(False) and c.status is BAD  # 2nd => BAD (keepalived e2 scenario)
    assert c.record(True) and c.status is GOOD


def test_script_counter_rise_three_and_init_decides_at_once() -> None:
    c = ScriptCounter(rise=3, fall=1)
    assert c.record(False) and c.status is BAD  # INIT: the first failure decides
    assert not c.record(True)
    assert not c.record(True)
    assert c.record(True) and c.status is GOOD
    c2 = ScriptCounter(rise=3, fall=1)
    assert c2.record(True) and c2.status is GOOD  # INIT: the first success decides


def test_script_counter_init_fail_needs_rise_successes() -> None:
    c = ScriptCounter(rise=2, fall=1, init_fail=True)
    assert c.status is BAD
    assert not c.record(True)
    assert c.record(True) and c.status is GOOD


def test_failures_interrupted_by_a_success_reset() -> None:
    c = ScriptCounter(rise=1, fall=3)
    c.record(True)
    c.record(False)
    c.record(False)
    c.record(True)  # back to the top
    c.record(False)
    c.record(False)
    assert c.status is GOOD
    c.record(False)
    assert c.status is BAD


def test_bad_rise_fall() -> None:
    with pytest.raises(ValueError):
        ScriptCounter(rise=0)


# ---------------------------------------------------------------- sync groups


def test_strip_for_sync_group() -> None:
    res = strip_for_sync_group(
        "VI_1",
        [TrackedScript("chk", -20), TrackedScript("z", 0)],
        [TrackedInterface("eth0", 10)],
        [TrackedFile("f", 5)],
    )
    assert [s.name for s in res.scripts] == ["z"]
    assert res.interfaces == (TrackedInterface("eth0", 0),)
    assert res.files == (TrackedFile("f", 0),)
    assert "ignoring tracked script chk with weights due to SYNC group" in res.warnings[0]
    kept = strip_for_sync_group("VI_1", [TrackedScript("chk", -20)], [], [], tracking_weight=True)
    assert kept.scripts == (TrackedScript("chk", -20),) and kept.warnings == ()


def _machine(name: str, vrid: int, prio: int = 100) -> VrrpMachine:
    return VrrpMachine(
        VrrpParams(
            name=name,
            vrid=vrid,
            primary_ip=ipaddress.IPv4Address("198.18.0.10"),
            priority=prio,
            vips=(ipaddress.IPv4Address(f"198.18.1.{vrid}"),),
        )
    )


def test_sync_group_member_fault_faults_the_group_and_recovers_together() -> None:
    a, b = _machine("A", 1), _machine("B", 2)
    g = SyncGroup("G", [a, b])
    for m in (a, b):
        m.start(0.0)
        m.on_timer(m.next_deadline() or 0.0)
    assert a.state is b.state is State.MASTER
    acts = a.set_fault(5.0, True, "track_interface eth1")
    extra = g.reconcile(5.0, a, acts)
    assert [(m.params.name, m.state) for m, _ in extra] == [("B", State.FAULT)]
    assert b.faults == {SYNC_FAULT_SOURCE}
    assert g.state is State.FAULT
    # B's own fault appears while held; A recovers: A must stay FAULT for B's sake
    b.set_fault(6.0, True, "track_script chk")
    acts = a.set_fault(7.0, False, "track_interface eth1")
    g.reconcile(7.0, a, acts)
    assert a.state is State.FAULT and a.faults == {SYNC_FAULT_SOURCE}
    acts = b.set_fault(8.0, False, "track_script chk")
    g.reconcile(8.0, b, acts)
    assert a.state is State.BACKUP and b.state is State.BACKUP
    assert a.faults == b.faults == frozenset()


def test_sync_group_masters_and_backups_move_together() -> None:
    a, b = _machine("A", 1), _machine("B", 2)
    g = SyncGroup("G", [a, b])
    a.start(0.0)
    b.start(0.0)
    acts = a.on_timer(a.next_deadline() or 0.0)
    extra = g.reconcile(3.7, a, acts)
    assert b.state is State.MASTER
    assert any(isinstance(x, StateChanged) for _, acts2 in extra for x in acts2)
    # A hears a higher master and yields: B must follow
    from hakeeper.vrrp.packet import Advert

    higher = Advert(
        2,
        1,
        200,
        (ipaddress.IPv4Address("198.18.1.1"),),
        100,
        auth_data=bytes(8),
        source=ipaddress.IPv4Address("198.18.0.99"),
    )
    acts = a.on_advert(5.0, higher)
    g.reconcile(5.0, a, acts)
    assert a.state is State.BACKUP and b.state is State.BACKUP


def test_sync_group_rejects_duplicates() -> None:
    a = _machine("A", 1)
    with pytest.raises(ValueError):
        SyncGroup("G", [a, a])
