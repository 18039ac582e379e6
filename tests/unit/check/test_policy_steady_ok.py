"""`VirtualServerHealth.steady_ok`, the allocation-free success path, with fake time: it
agrees with `on_result` whenever it answers, and declines every case that can change state."""

from __future__ import annotations

import random

from hakeeper.check.policy import (
    CheckerSpec,
    RealServerSpec,
    StartProbe,
    VirtualServerHealth,
    VirtualServerSpec,
)

TCP = CheckerSpec(delay_loop=6, retry=2, delay_before_retry=1, connect_timeout=3, warmup=0)
MISC = CheckerSpec(kind="MISC_CHECK", delay_loop=6, retry=0, connect_timeout=3, warmup=0)


def health(checkers: tuple[CheckerSpec, ...] = (TCP,), alpha: bool = False) -> VirtualServerHealth:
    spec = VirtualServerSpec("vip:80", (RealServerSpec("a", 1, checkers=checkers),), alpha=alpha)
    h = VirtualServerHealth(spec, rng=random.Random(1))
    h.start(0.0)
    return h


def test_agrees_with_on_result_once_the_checker_has_run() -> None:
    fast, full = health(), health()
    for h in (fast, full):
        h.on_result("a", 0, True, 1.0)  # first result: the full path
    at = fast.steady_ok("a", 0, 7.0)
    actions = full.on_result("a", 0, True, 7.0)
    assert actions == [StartProbe("vip:80", "a", 0, 13.0, 3)]
    assert at == 13.0
    assert fast.next_deadline() == full.next_deadline() == 13.0
    assert fast.last_result("a") is True and fast.alive("a")


def test_resets_a_retry_count_like_on_result() -> None:
    fast, full = health(), health()
    for h in (fast, full):
        h.on_result("a", 0, True, 1.0)
        h.on_result("a", 0, False, 7.0)  # retry 1 of 2, still up
    assert fast.steady_ok("a", 0, 8.0) == 14.0
    full.on_result("a", 0, True, 8.0)
    for h in (fast, full):  # both need three more failures to go down
        assert h.on_result("a", 0, False, 14.0)[-1] == StartProbe("vip:80", "a", 0, 15.0, 3)
        h.on_result("a", 0, False, 15.0)
        assert h.alive("a")
        h.on_result("a", 0, False, 16.0)
        assert not h.alive("a")


def test_declines_whenever_state_could_change() -> None:
    h = health()
    assert h.steady_ok("a", 0, 1.0) is None  # first result (notifier rules)
    h.on_result("a", 0, True, 1.0)
    assert h.steady_ok("zz", 0, 2.0) is None  # unknown server
    assert h.steady_ok("a", 5, 2.0) is None  # unknown checker
    h.set_suspended(True)
    assert h.steady_ok("a", 0, 2.0) is None  # ha_suspend
    h.set_suspended(False)
    for t in (7.0, 8.0, 9.0):
        h.on_result("a", 0, False, t)
    assert not h.alive("a")
    assert h.steady_ok("a", 0, 10.0) is None  # down: a success brings it back
    assert health(alpha=True).steady_ok("a", 0, 1.0) is None
    misc = health((MISC,))
    misc.on_result("a", 0, True, 1.0)
    assert misc.steady_ok("a", 0, 7.0) is None  # MISC counts from the probe's start
    h.shutdown()
    assert h.steady_ok("a", 0, 11.0) is None
