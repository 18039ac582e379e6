"""VRRP state machine with fake time: every RFC 3768/5798 §6 transition, keepalived's FAULT,
preempt/nopreempt/preempt_delay, GARP scheduling, and the fast-preempt improvement."""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import replace

import pytest

from hakeeper.vrrp.machine import (
    Action,
    AddVips,
    DroppedAdvert,
    LogEvent,
    RemoveVips,
    SendAdvert,
    SendGratuitous,
    State,
    StateChanged,
    VrrpMachine,
    VrrpParams,
)
from hakeeper.vrrp.packet import Advert, AuthType, DropReason, pass_auth_data

ip = ipaddress.ip_address
ME = ipaddress.IPv4Address("198.18.0.10")
PEER_HI = ipaddress.IPv4Address("198.18.0.20")
PEER_LO = ipaddress.IPv4Address("198.18.0.5")
VIP = (ipaddress.IPv4Address("198.18.1.1"),)


def params(**kw: object) -> VrrpParams:
    base: dict[str, object] = {
        "name": "VI_1",
        "vrid": 51,
        "primary_ip": ME,
        "priority": 100,
        "vips": VIP,
    }
    base.update(kw)
    return VrrpParams(**base)  # type: ignore[arg-type]


def adv(
    prio: int, src: ipaddress.IPv4Address = PEER_HI, *, version: int = 2, cs: int = 100
) -> Advert:
    return Advert(
        version=version,
        vrid=51,
        priority=prio,
        addresses=VIP,
        interval_cs=cs,
        auth_data=bytes(8) if version == 2 else b"",
        source=src,
    )


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def sent(actions: list[Action]) -> list[int]:
    return [a.priority for a in actions if isinstance(a, SendAdvert)]


def changes(actions: list[Action]) -> list[tuple[State, State]]:
    return [(a.old, a.new) for a in actions if isinstance(a, StateChanged)]


def run_until(m: VrrpMachine, end: float) -> list[tuple[float, Action]]:
    """Fire timers in order up to ``end`` (inclusive); returns timestamped actions."""
    log: list[tuple[float, Action]] = []
    for _ in range(10_000):
        d = m.next_deadline()
        if d is None or d > end:
            return log
        log += [(d, a) for a in m.on_timer(d)]
    raise AssertionError("timer loop did not converge")


# ---------------------------------------------------------------- timers and start


def test_timer_formulas_v2_and_v3() -> None:
    m2 = VrrpMachine(params(priority=100))
    assert m2.skew_time == pytest.approx(156 / 256)
    assert m2.master_down_interval == pytest.approx(3 + 156 / 256)  # 3.609 s (anchors §2a-6)
    m3 = VrrpMachine(params(version=3, advert_int=0.1, priority=100))
    assert m3.skew_time == pytest.approx(156 * 0.1 / 256)
    assert m3.master_down_interval == pytest.approx(0.3 + 156 * 0.1 / 256)
    m5 = VrrpMachine(params(priority=100, down_timer_adverts=5))
    assert m5.master_down_interval == pytest.approx(5 + 156 / 256)


def test_startup_non_owner_goes_backup_and_arms_down_timer() -> None:
    m = VrrpMachine(params())
    out = m.start(10.0)
    assert changes(out) == [(State.INIT, State.BACKUP)]
    assert m.state is State.BACKUP
    assert m.next_deadline() == pytest.approx(10.0 + 3 + 156 / 256)
    assert sent(out) == []


def test_startup_state_master_wish_below_255_starts_backup_with_short_timer() -> None:
    m = VrrpMachine(params(initial_state=State.MASTER))
    m.start(0.0)
    assert m.state is State.BACKUP
    assert m.next_deadline() == pytest.approx(1 + 1 / 256)  # keepalived: 1 interval + skew_min
    m3 = VrrpMachine(params(initial_state=State.MASTER, version=3, advert_int=0.1))
    m3.start(0.0)
    assert m3.next_deadline() == pytest.approx(0.1 + 0.1 / 256)
    # hearing a master resets it to the normal Master_Down_Interval
    m.on_advert(0.5, adv(150))
    assert m.next_deadline() == pytest.approx(0.5 + m.master_down_interval)


def test_backup_priority_change_moves_the_down_timer_by_the_skew_change() -> None:
    m = VrrpMachine(params(priority=100, preempt=False))
    m.start(0.0)
    m.on_advert(1.0, adv(150))
    before = m.next_deadline()
    assert before is not None
    m.set_effective_priority(1.5, 80)
    assert m.next_deadline() == pytest.approx(before + 20 / 256)


def test_owner_fault_cleared_returns_after_one_interval() -> None:
    m = VrrpMachine(params(priority=255))
    m.start(0.0)
    m.set_fault(2.0, True)
    m.set_fault(3.0, False)
    assert m.state is State.BACKUP
    assert m.next_deadline() == pytest.approx(3.0 + 1 + 1 / 256)


def test_owner_goes_master_at_once_with_advert_vips_and_garp() -> None:
    m = VrrpMachine(params(priority=255))
    out = m.start(0.0)
    assert kinds(out) == ["StateChanged", "AddVips", "SendAdvert", "SendGratuitous"]
    assert sent(out) == [255]
    garp = next(a for a in out if isinstance(a, SendGratuitous))
    assert garp.vips == VIP and garp.count == 5
    assert m.next_deadline() == pytest.approx(1.0)


def test_owner_ignores_tracker_priority_changes() -> None:
    m = VrrpMachine(params(priority=255))
    m.start(0.0)
    assert m.set_effective_priority(0.5, 200) == []
    assert m.priority == 255


def test_start_twice_is_our_bug() -> None:
    m = VrrpMachine(params())
    m.start(0.0)
    with pytest.raises(RuntimeError):
        m.start(1.0)


# ---------------------------------------------------------------- BACKUP


def test_backup_becomes_master_when_down_timer_expires() -> None:
    m = VrrpMachine(params())
    m.start(0.0)
    log = run_until(m, 3.0)
    assert log == []
    log = run_until(m, 3.7)
    t, first = log[0]
    assert t == pytest.approx(3 + 156 / 256)
    assert isinstance(first, StateChanged) and first.new is State.MASTER
    assert "down timer" in first.reason
    assert [type(a).__name__ for _, a in log] == [
        "StateChanged",
        "AddVips",
        "SendAdvert",
        "SendGratuitous",
    ]


def test_backup_higher_advert_resets_down_timer() -> None:
    m = VrrpMachine(params())
    m.start(0.0)
    for t in (1.0, 2.0, 3.0, 4.0, 5.0):
        assert m.on_advert(t, adv(150)) == []
    assert m.state is State.BACKUP
    assert m.next_deadline() == pytest.approx(5.0 + m.master_down_interval)
    assert m.master_ip == PEER_HI and m.master_priority == 150


def test_backup_follows_an_equal_priority_master_whatever_its_address() -> None:
    m = VrrpMachine(params())
    m.start(0.0)
    for t in (1.0, 2.0, 3.0, 4.0):
        assert m.on_advert(t, adv(100, src=PEER_LO)) == []  # equal: not "lower"
    assert m.state is State.BACKUP
    assert m.next_deadline() == pytest.approx(4.0 + m.master_down_interval)


def test_backup_priority_zero_waits_only_skew_time() -> None:
    m = VrrpMachine(params(priority=90))
    m.start(0.0)
    m.on_advert(1.0, adv(100))
    out = m.on_advert(1.5, adv(0))
    assert any(isinstance(a, LogEvent) and "resigned" in a.message for a in out)
    assert m.next_deadline() == pytest.approx(1.5 + 166 / 256)  # 0.648 s, keepalived 650 ms
    log = run_until(m, 2.2)
    assert changes([a for _, a in log]) == [(State.BACKUP, State.MASTER)]


def test_backup_rfc_mode_discards_lower_priority_adverts() -> None:
    m = VrrpMachine(params(fast_preempt=False))
    m.start(0.0)
    m.on_advert(0.5, adv(150))
    for t in (1.5, 2.5, 3.5):
        assert [a for a in m.on_advert(t, adv(50)) if not isinstance(a, LogEvent)] == []
    # the lower adverts did not refresh the timer: master after MDI from the last good one
    assert m.next_deadline() == pytest.approx(0.5 + m.master_down_interval)
    log = run_until(m, 10.0)
    assert changes([a for _, a in log])[0] == (State.BACKUP, State.MASTER)


def test_backup_fast_preempt_takes_over_from_lower_master_at_once() -> None:
    m = VrrpMachine(params())
    m.start(0.0)
    out = m.on_advert(0.2, adv(50))
    assert changes(out) == [(State.BACKUP, State.MASTER)]
    assert "preempting" in next(a for a in out if isinstance(a, StateChanged)).reason
    assert sent(out) == [100]


def test_nopreempt_backup_follows_a_lower_master() -> None:
    m = VrrpMachine(params(preempt=False))
    m.start(0.0)
    for t in range(1, 20):
        assert m.on_advert(float(t), adv(50)) == []
    assert m.state is State.BACKUP
    assert m.next_deadline() == pytest.approx(19 + m.master_down_interval)


def test_v3_backup_learns_master_adver_interval() -> None:
    m = VrrpMachine(params(version=3, advert_int=1.0))
    m.start(0.0)
    out = m.on_advert(0.1, adv(150, version=3, cs=50))
    assert any(isinstance(a, LogEvent) and "advert_int" in a.message for a in out)
    assert m.master_adver_interval == pytest.approx(0.5)
    assert m.next_deadline() == pytest.approx(0.1 + 1.5 + 156 * 0.5 / 256)


def test_v2_interval_mismatch_is_dropped_and_counted() -> None:
    m = VrrpMachine(params())
    m.start(0.0)
    deadline = m.next_deadline()
    out = m.on_advert(1.0, adv(150, cs=200))
    assert any(
        isinstance(a, DroppedAdvert) and a.reason is DropReason.INTERVAL_MISMATCH for a in out
    )
    assert m.next_deadline() == deadline
    assert m.counters.dropped == {"INTERVAL_MISMATCH": 1}


def test_auth_mismatch_dropped() -> None:
    m = VrrpMachine(params(auth_type=AuthType.PASS, auth_pass="secret"))
    m.start(0.0)
    bad = replace(adv(150), auth_type=AuthType.PASS, auth_data=pass_auth_data("nope"))
    out = m.on_advert(1.0, bad)
    assert any(isinstance(a, DroppedAdvert) and a.reason is DropReason.AUTH_MISMATCH for a in out)
    good = replace(bad, auth_data=pass_auth_data("secret"))
    assert m.on_advert(1.0, good) == []


def test_own_looped_advert_is_dropped() -> None:
    m = VrrpMachine(params())
    m.start(0.0)
    out = m.on_advert(1.0, adv(100, src=ME))
    assert kinds(out) == ["DroppedAdvert"]


def test_vip_mismatch_logged_but_followed() -> None:
    m = VrrpMachine(params())
    m.start(0.0)
    out = m.on_advert(1.0, replace(adv(150), addresses=(ip("198.18.9.9"),)))
    assert kinds(out) == ["LogEvent"]
    assert m.master_priority == 150


# ---------------------------------------------------------------- MASTER


def master(**kw: object) -> VrrpMachine:
    m = VrrpMachine(params(**kw))
    m.start(0.0)
    run_until(m, m.master_down_interval)
    assert m.state is State.MASTER
    return m


def test_master_sends_an_advert_every_interval() -> None:
    m = master(garp_master_delay=0)
    t0 = m.next_deadline()
    assert t0 is not None
    log = run_until(m, t0 + 4.01)
    assert [a.priority for _, a in log if isinstance(a, SendAdvert)] == [100] * 5
    times = [t for t, a in log if isinstance(a, SendAdvert)]
    assert all(b - a == pytest.approx(1.0) for a, b in itertools.pairwise(times))


def test_master_yields_to_higher_priority() -> None:
    m = master()
    out = m.on_advert(5.0, adv(150))
    assert kinds(out) == ["StateChanged", "RemoveVips"]
    assert m.state is State.BACKUP
    assert m.next_deadline() == pytest.approx(5.0 + m.master_down_interval)


def test_master_equal_priority_tie_break_on_primary_ip() -> None:
    m = master()
    out = m.on_advert(5.0, adv(100, src=PEER_LO))
    assert m.state is State.MASTER
    assert sent(out) == [100]  # lower address: we stay and assert ourselves
    out = m.on_advert(5.1, adv(100, src=PEER_HI))
    assert m.state is State.BACKUP
    assert changes(out) == [(State.MASTER, State.BACKUP)]


def test_master_answers_lower_priority_with_an_advert_unless_configured() -> None:
    m = master()
    assert sent(m.on_advert(5.0, adv(50))) == [100]
    quiet = master(lower_prio_no_advert=True)
    assert quiet.on_advert(5.0, adv(50)) == []
    assert quiet.state is State.MASTER


def test_master_answers_priority_zero_with_an_advert() -> None:
    m = master()
    out = m.on_advert(5.0, adv(0))
    assert sent(out) == [100]
    assert m.next_deadline() == pytest.approx(5.0 + 1.0)


def test_master_v3_learns_interval_when_yielding() -> None:
    m = master(version=3, advert_int=1.0)
    m.on_advert(5.0, adv(150, version=3, cs=20))
    assert m.master_adver_interval == pytest.approx(0.2)
    assert m.next_deadline() == pytest.approx(5.0 + 0.6 + 156 * 0.2 / 256)


def test_shutdown_master_sends_priority_zero_and_removes_vips() -> None:
    m = master()
    out = m.shutdown(9.0)
    assert kinds(out) == ["StateChanged", "SendAdvert", "RemoveVips"]
    assert sent(out) == [0]
    assert changes(out) == [(State.MASTER, State.INIT)]
    assert m.next_deadline() is None
    assert m.counters.priority_zero_sent == 1


def test_shutdown_backup_is_silent() -> None:
    m = VrrpMachine(params())
    m.start(0.0)
    out = m.shutdown(1.0)
    assert kinds(out) == ["StateChanged"]
    assert m.next_deadline() is None


def test_garp_delayed_burst_and_refresh() -> None:
    m = VrrpMachine(
        params(
            priority=255,
            garp_master_delay=5,
            garp_master_repeat=3,
            garp_master_refresh=60,
            garp_master_refresh_repeat=2,
        )
    )
    out = m.start(0.0)
    assert [a.count for a in out if isinstance(a, SendGratuitous)] == [3]
    log = run_until(m, 130.0)
    garps = [(t, a.count, a.reason) for t, a in log if isinstance(a, SendGratuitous)]
    assert garps == [(5.0, 3, "delayed"), (60.0, 2, "refresh"), (120.0, 2, "refresh")]


def test_leaving_master_cancels_garp_timers() -> None:
    m = VrrpMachine(params(priority=254, garp_master_delay=5))
    m.start(0.0)
    run_until(m, 3.1)
    assert m.state is State.MASTER
    m.on_advert(3.2, adv(255))
    log = run_until(m, 6.1)  # before our own down timer (3.2 + 3.004)
    assert not any(isinstance(a, SendGratuitous) for _, a in log)


# ---------------------------------------------------------------- FAULT


def test_master_to_fault_resigns_and_removes_vips_then_clears_to_backup() -> None:
    m = master()
    out = m.set_fault(5.0, True, "track_script chk")
    assert kinds(out) == ["StateChanged", "SendAdvert", "RemoveVips"]
    assert sent(out) == [0]
    assert m.state is State.FAULT
    assert m.next_deadline() is None  # a FAULT instance sends nothing
    assert m.on_advert(6.0, adv(50)) == []
    assert m.set_fault(7.0, False, "track_script chk") == [
        StateChanged(State.FAULT, State.BACKUP, "fault cleared", 100)
    ]
    assert m.next_deadline() == pytest.approx(7.0 + m.master_down_interval)


def test_fault_needs_every_source_cleared() -> None:
    m = VrrpMachine(params())
    m.start(0.0)
    m.set_fault(1.0, True, "interface")
    assert m.set_fault(1.1, True, "script") == []
    assert m.set_fault(1.2, False, "interface") == []
    assert m.state is State.FAULT
    m.set_fault(1.3, False, "script")
    assert m.state is State.BACKUP


def test_fault_before_start_starts_in_fault() -> None:
    m = VrrpMachine(params(priority=255))
    assert m.set_fault(0.0, True) == []
    out = m.start(0.0)
    assert changes(out) == [(State.INIT, State.FAULT)]
    assert sent(out) == []


# ---------------------------------------------------------------- priority changes and preemption


def test_master_lowering_priority_advertises_at_once() -> None:
    m = master()
    out = m.set_effective_priority(5.3, 80)
    assert sent(out) == [80]
    assert m.next_deadline() == pytest.approx(6.3)


def test_backup_raised_above_master_preempts_at_once_with_fast_preempt() -> None:
    m = VrrpMachine(params(priority=90))
    m.start(0.0)
    m.on_advert(0.5, adv(100))
    out = m.set_effective_priority(0.7, 110)
    assert changes(out) == [(State.BACKUP, State.MASTER)]
    rfc = VrrpMachine(params(priority=90, fast_preempt=False))
    rfc.start(0.0)
    rfc.on_advert(0.5, adv(100))
    assert changes(rfc.set_effective_priority(0.7, 110)) == []


def test_effective_priority_out_of_range_is_our_bug() -> None:
    m = VrrpMachine(params())
    with pytest.raises(ValueError):
        m.set_effective_priority(0.0, 0)
    with pytest.raises(ValueError):
        m.set_effective_priority(0.0, 255)


def test_preempt_delay_fast_mode_takes_over_when_delay_elapses() -> None:
    m = VrrpMachine(params(preempt_delay=10.0))
    m.start(0.0)
    for t in range(1, 10):
        assert changes(m.on_advert(float(t), adv(50))) == []
    assert m.state is State.BACKUP
    log = run_until(m, 10.0)
    assert changes([a for _, a in log]) == [(State.BACKUP, State.MASTER)]
    assert log[0][0] == pytest.approx(10.0)


def test_preempt_delay_rfc_mode_discards_after_delay_then_down_timer() -> None:
    m = VrrpMachine(params(preempt_delay=4.0, fast_preempt=False))
    m.start(0.0)
    t = 0.5
    while t < 12:
        m.on_advert(t, adv(50))
        run_until(m, t + 0.99)
        if m.state is State.MASTER:
            break
        t += 1.0
    # adverts accepted until 4.0 (last at 3.5), discarded after: master at 3.5 + MDI
    assert m.state is State.MASTER
    assert m.counters.became_master == 1
    assert 3.5 + m.master_down_interval - 1 <= t <= 3.5 + m.master_down_interval + 0.01


def test_preempt_delay_restarts_only_after_a_higher_master() -> None:
    m = VrrpMachine(params(preempt_delay=5.0))
    m.start(0.0)
    for t in range(1, 7):
        m.on_advert(float(t), adv(150))  # higher master: no preempt timer pending
    assert m.next_deadline() == pytest.approx(6 + m.master_down_interval)
    log: list[tuple[float, Action]] = []
    for t in range(7, 13):  # now a lower master appears: 5 s from 7.0
        if m.state is State.BACKUP:
            log += [(float(t), x) for x in m.on_advert(float(t), adv(50))]
        log += run_until(m, t + 0.99)
    assert [t for t, a in log if isinstance(a, StateChanged)] == [pytest.approx(12.0)]


def test_master_demoted_by_tracker_then_fast_preempted_end_to_end() -> None:
    """The weight-based failover path: master lowers prio -> advert -> backup takes over."""
    a = VrrpMachine(params(name="A", primary_ip=PEER_HI, priority=100))
    b = VrrpMachine(params(name="B", primary_ip=PEER_LO, priority=90))
    a.start(0.0)
    b.start(0.0)
    run_until(a, 4.0)
    assert a.state is State.MASTER
    out = a.set_effective_priority(4.2, 80)
    (adv_a,) = [x.advert for x in out if isinstance(x, SendAdvert)]
    out_b = b.on_advert(4.2, adv_a)
    assert b.state is State.MASTER  # no 3.6 s wait
    (adv_b,) = [x.advert for x in out_b if isinstance(x, SendAdvert)]
    out_a = a.on_advert(4.2, adv_b)
    assert a.state is State.BACKUP
    assert isinstance(out_a[1], RemoveVips)
    assert any(isinstance(x, AddVips) for x in out_b)


# ---------------------------------------------------------------- params


@pytest.mark.parametrize(
    "kw",
    [
        {"vrid": 0},
        {"priority": 0},
        {"priority": 256},
        {"version": 4},
        {"advert_int": 1.5},
        {"version": 3, "advert_int": 41.0},
        {"primary_ip": ipaddress.IPv6Address("fe80::1")},
        {"vips": (ipaddress.IPv6Address("fe80::1"),)},
        {"down_timer_adverts": 0},
    ],
)
def test_params_validation(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        params(**kw)


def test_ipv6_v3_advert_built_from_params() -> None:
    m = VrrpMachine(
        params(
            version=3,
            advert_int=0.1,
            primary_ip=ipaddress.IPv6Address("fe80::10"),
            vips=(ipaddress.IPv6Address("fe80::53"),),
            priority=255,
        )
    )
    out = m.start(0.0)
    (a,) = [x.advert for x in out if isinstance(x, SendAdvert)]
    assert (a.version, a.family, a.interval_cs, a.priority) == (3, 6, 10, 255)
    assert a.auth_data == b""
