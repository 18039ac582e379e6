"""Checker policy with fake time: retries, warmup, alpha/omega, inhibit, misc_dynamic, quorum."""

from __future__ import annotations

import random

import pytest

from hakeeper.check.policy import (
    BOOTSTRAP_DELAY,
    CheckerSpec,
    MarkDown,
    MarkUp,
    QuorumDown,
    QuorumUp,
    RealServerSpec,
    RunNotify,
    SetWeight,
    SorryServerOff,
    SorryServerOn,
    StartProbe,
    VirtualServerHealth,
    VirtualServerSpec,
    misc_exit_result,
)

TCP = CheckerSpec(delay_loop=6, retry=2, delay_before_retry=1, connect_timeout=3, warmup=0)


def vs(*reals, **kw):
    return VirtualServerHealth(
        VirtualServerSpec("vip:80", tuple(reals), **kw), rng=random.Random(1)
    )


def rs(key, weight=1, checkers=(TCP,), **kw):
    return RealServerSpec(key, weight, checkers=checkers, **kw)


def only(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def test_start_schedules_after_bootstrap_plus_warmup_within_bounds():
    h = vs(rs("a", checkers=(CheckerSpec(delay_loop=10),)), rs("b", checkers=(TCP,)))
    probes = only(h.start(100.0), StartProbe)
    by_rs = {p.rs: p for p in probes}
    assert by_rs["b"].at == 100.0 + BOOTSTRAP_DELAY  # warmup 0: no jitter
    assert 101.0 <= by_rs["a"].at <= 111.0  # warmup defaults to delay_loop
    assert by_rs["a"].timeout == 5.0 and by_rs["b"].timeout == 3
    again = vs(rs("a", checkers=(CheckerSpec(delay_loop=10),)))
    assert only(again.start(100.0), StartProbe)[0].at == by_rs["a"].at  # same seeded rng


def test_retry_then_down_then_recovery_with_notifies():
    h = vs(rs("a", notify_up="up.sh", notify_down="down.sh"), rs("b"))
    h.start(0)
    t = 1.0
    acts = h.on_result("a", 0, False, t)
    assert only(acts, StartProbe)[0].at == t + 1  # delay_before_retry
    assert h.alive("a")
    acts = h.on_result("a", 0, False, t + 1)
    assert h.alive("a") and only(acts, StartProbe)[0].at == t + 2
    acts = h.on_result("a", 0, False, t + 2)  # third failure: retry=2 exhausted
    assert not h.alive("a")
    assert acts[0] == MarkDown("vip:80", "a", inhibit=False, in_pool=True)
    assert RunNotify("down.sh", "vip:80", "a", "down") in acts
    assert only(acts, StartProbe)[0].at == t + 2 + 6  # back to delay_loop
    assert h.pool() == (("b", 1),)
    acts = h.on_result("a", 0, True, 20)
    assert acts[0] == MarkUp("vip:80", "a", 1, in_pool=True)
    assert RunNotify("up.sh", "vip:80", "a", "up") in acts
    assert h.changed_at("a") == 20
    assert h.pool() == (("a", 1), ("b", 1))


def test_success_during_retries_resets_the_count():
    h = vs(rs("a"))
    h.start(0)
    h.on_result("a", 0, False, 1)
    h.on_result("a", 0, True, 2)
    h.on_result("a", 0, False, 8)
    h.on_result("a", 0, False, 9)
    assert h.alive("a")


def test_alpha_starts_down_and_first_success_brings_up():
    h = vs(rs("a"), rs("b"), alpha=True, quorum=1)
    assert not h.alive("a") and h.pool() == ()
    assert not h.quorum_up
    h.start(0)
    acts = h.on_result("a", 0, True, 1)
    assert only(acts, MarkUp) and only(acts, QuorumUp)
    assert h.quorum_up


def test_without_alpha_first_success_is_silent():
    h = vs(rs("a"))
    h.start(0)
    assert only(h.on_result("a", 0, True, 1), MarkUp) == []


def test_inhibit_on_failure_keeps_weight_zero():
    h = vs(rs("a", inhibit_on_failure=True, checkers=(CheckerSpec(retry=0),)), rs("b"))
    h.start(0)
    acts = h.on_result("a", 0, False, 1)
    assert only(acts, MarkDown)[0].inhibit
    assert h.pool() == (("a", 0), ("b", 1))


def test_server_is_down_while_any_checker_is_down():
    two = (CheckerSpec(retry=0), CheckerSpec(retry=0))
    h = vs(rs("a", checkers=two), rs("b"))
    h.start(0)
    h.on_result("a", 0, False, 1)
    assert not h.alive("a")
    h.on_result("a", 1, False, 1)
    assert only(h.on_result("a", 0, True, 2), MarkUp) == []  # checker 1 still down
    assert only(h.on_result("a", 1, True, 3), MarkUp)


def test_server_without_checkers_is_always_alive():
    h = vs(RealServerSpec("a", 3), alpha=True)
    assert h.alive("a") and h.pool() == (("a", 3),)


def test_misc_dynamic_weights():
    assert misc_exit_result(0, False) == (True, None)
    assert misc_exit_result(0, True) == (True, -1)
    assert misc_exit_result(1, True) == (False, None)
    assert misc_exit_result(12, True) == (True, 10)
    assert misc_exit_result(12, False) == (False, None)
    misc = CheckerSpec(kind="MISC_CHECK", dynamic=True, retry=0, delay_loop=5)
    h = vs(rs("a", weight=4, checkers=(misc,)), rs("b", weight=4), quorum=6)
    h.start(0)
    ok, w = misc_exit_result(3, True)
    acts = h.on_result("a", 0, ok, 1, weight=w)
    assert SetWeight("vip:80", "a", 1, True) in acts
    assert only(acts, QuorumDown)  # 1 + 4 < 6
    assert h.on_result("a", 0, ok, 6, weight=w) == [StartProbe("vip:80", "a", 0, 11, 5.0)]
    acts = h.on_result("a", 0, True, 11, weight=-1)  # exit 0: configured weight again
    assert SetWeight("vip:80", "a", 4, True) in acts and only(acts, QuorumUp)


def test_misc_schedules_from_probe_start_and_retries_only_while_up():
    misc = CheckerSpec(kind="MISC_CHECK", retry=1, delay_before_retry=2, delay_loop=10)
    h = vs(rs("a", checkers=(misc,)))
    h.start(0)
    acts = h.on_result("a", 0, True, 4, started=3)
    assert only(acts, StartProbe)[0].at == 13
    h.on_result("a", 0, False, 14)  # retry
    h.on_result("a", 0, False, 16)  # down
    acts = h.on_result("a", 0, False, 26)
    assert only(acts, StartProbe)[0].at == 36  # down: no retries, delay_loop


def test_quorum_hysteresis_and_sorry_server():
    spec = dict(
        quorum=3,
        hysteresis=1,
        sorry_server="sorry:80",
        quorum_up="qup.sh",
        quorum_down="qdown.sh",
    )
    one = (CheckerSpec(retry=0),)
    h = vs(*(rs(k, checkers=one) for k in "abcd"), **spec)
    assert h.quorum_up and h.start(0)[0:1] != [SorryServerOn("vip:80", "sorry:80", False)]
    h.on_result("a", 0, False, 1)  # 3 left: >= quorum - hysteresis (2)
    assert h.quorum_up
    acts = h.on_result("b", 0, False, 1)  # 2 left: still not < 2
    assert h.quorum_up and not only(acts, QuorumDown)
    acts = h.on_result("c", 0, False, 1)  # 1 left: lost
    assert [type(a) for a in acts[1:-1]] == [SorryServerOn, QuorumDown, RunNotify]
    assert h.pool() == (("sorry:80", 1),)
    acts = h.on_result("a", 0, True, 2)  # 2: not >= quorum + hysteresis (4)
    assert not h.quorum_up and only(acts, MarkUp)[0].in_pool is False
    h.on_result("b", 0, True, 2)
    acts = h.on_result("c", 0, True, 2)  # 4: gained
    assert [type(a) for a in acts[1:-1]] == [SorryServerOff, QuorumUp, RunNotify]
    assert RunNotify("qup.sh", "vip:80", None, "quorum_up") in acts
    assert h.pool() == (("a", 1), ("b", 1), ("c", 1), ("d", 1))


def test_alpha_with_sorry_server_installs_it_at_start():
    h = vs(rs("a"), alpha=True, sorry_server="sorry:80")
    acts = h.start(0)
    assert acts[0] == SorryServerOn("vip:80", "sorry:80", False)
    assert h.pool() == (("sorry:80", 1),)


def test_omega_runs_down_notifiers_at_shutdown():
    h = vs(rs("a", notify_down="d.sh"), rs("b"), omega=True, quorum=2, quorum_down="q.sh")
    acts = h.shutdown()
    assert RunNotify("d.sh", "vip:80", "a", "down") in acts
    assert RunNotify("q.sh", "vip:80", None, "quorum_down") in acts
    silent = vs(rs("a", notify_down="d.sh"))
    assert not only(silent.shutdown(), RunNotify)
    sorry = vs(rs("a", notify_down="d.sh"), omega=True, sorry_server="s:80")
    assert only(sorry.shutdown(), RunNotify) == [RunNotify("d.sh", "vip:80", "a", "down")]
    assert sorry.pool() == ()


def test_alpha_first_failure_runs_notify_down_without_transition():
    h = vs(rs("a", notify_down="d.sh", checkers=(CheckerSpec(retry=0),)), alpha=True)
    h.start(0)
    acts = h.on_result("a", 0, False, 1)
    assert acts[0] == RunNotify("d.sh", "vip:80", "a", "down") and not only(acts, MarkDown)
    assert not only(h.on_result("a", 0, False, 2), RunNotify)


def test_init_notifies_and_quorum_down_at_start():
    h = VirtualServerHealth(
        VirtualServerSpec("v", (rs("a", notify_up="u.sh"),)), init_notifies=True
    )
    assert RunNotify("u.sh", "v", "a", "up") in h.start(0)
    down = vs(rs("a"), alpha=True, sorry_server="s:80", quorum_down="q.sh")
    acts = down.start(0)
    assert [type(a) for a in acts[:3]] == [SorryServerOn, QuorumDown, RunNotify]


def test_sorry_server_inhibit_sits_at_weight_zero():
    one = (CheckerSpec(retry=0),)
    h = vs(rs("a", checkers=one), sorry_server="s:80", sorry_server_inhibit=True)
    h.start(0)
    assert h.pool() == (("a", 1), ("s:80", 0))
    h.on_result("a", 0, False, 1)
    assert h.pool() == (("s:80", 1),)


def test_external_set_weight_and_next_deadline():
    h = vs(rs("a"), rs("b"))
    assert h.next_deadline() == 0.0
    h.start(10)
    assert h.next_deadline() == pytest.approx(11)
    assert h.set_weight("a", 5) == [SetWeight("vip:80", "a", 5, True)]
    assert h.weight_sum == 6 and h.weight("a") == 5


def test_reload_keeps_live_state_and_diffs_servers():
    one = (CheckerSpec(retry=0),)
    h = vs(rs("a", checkers=one), rs("b", checkers=one, notify_down="bd.sh"), rs("c", checkers=one))
    h.start(0)
    h.on_result("a", 0, False, 1)
    assert not h.alive("a")
    new = VirtualServerSpec(
        "vip:80",
        (rs("a", checkers=one), rs("c", weight=5, checkers=one), rs("d", checkers=one)),
    )
    acts = h.reload(new, 10)
    assert not h.alive("a")  # still down: no fresh start for a failing server
    assert MarkDown("vip:80", "b", False, True) in acts
    assert RunNotify("bd.sh", "vip:80", "b", "down") in acts
    assert SetWeight("vip:80", "c", 5, True) in acts  # configured weight changed
    assert MarkUp("vip:80", "d", 1, True) in acts
    assert [p.rs for p in only(acts, StartProbe)] == ["d"]  # existing checkers keep timers
    assert h.pool() == (("c", 5), ("d", 1))
    assert only(h.on_result("a", 0, True, 11), MarkUp)


def test_reload_new_checker_on_failing_server_needs_one_failure():
    one = (CheckerSpec(retry=0),)
    h = vs(rs("a", checkers=one), rs("b"))
    h.start(0)
    h.on_result("a", 0, False, 1)
    two = (CheckerSpec(retry=0), CheckerSpec(kind="HTTP_GET", retry=3))
    h.reload(VirtualServerSpec("vip:80", (rs("a", checkers=two), rs("b"))), 5)
    h.on_result("a", 0, True, 6)
    assert h.alive("a")
    acts = h.on_result("a", 1, False, 7)  # retries already used up
    assert only(acts, MarkDown)


def test_reload_losing_quorum_config_brings_sorry_server():
    h = vs(rs("a"), quorum=1)
    h.start(0)
    acts = h.reload(VirtualServerSpec("vip:80", (rs("a"),), quorum=5, sorry_server="s:80"), 1)
    assert SorryServerOn("vip:80", "s:80", False) in acts
    assert h.pool() == (("s:80", 1),)
    with pytest.raises(ValueError):
        h.reload(VirtualServerSpec("other:80"), 2)


def test_ha_suspend_ignores_results_until_resumed():
    h = vs(rs("a", checkers=(CheckerSpec(retry=0, delay_loop=6),)))
    h.start(0)
    h.set_suspended(True)
    assert h.on_result("a", 0, False, 1) == [StartProbe("vip:80", "a", 0, 7, 5.0)]
    assert h.alive("a")
    h.set_suspended(False)
    assert only(h.on_result("a", 0, False, 7), MarkDown)


def test_results_for_removed_servers_or_checkers_are_counted_and_dropped():
    h = vs(rs("a"), rs("b"))
    h.start(0)
    h.reload(VirtualServerSpec("vip:80", (rs("a"),)), 1)
    assert h.on_result("b", 0, False, 2) == []
    assert h.on_result("a", 5, False, 2) == []
    assert h.stale_results == 2
    h.shutdown()
    assert h.on_result("a", 0, False, 3) == []
