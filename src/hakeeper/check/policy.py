"""Health-checker policy: per real server check state and per virtual server quorum, pure.

Follows keepalived's checker semantics (check_tcp.c / check_misc.c epilogues, check_api.c
start-up, ipwrapper.c perform_svr_state / update_quorum_state / update_svr_wgt; read for
facts, not copied):

* each checker first runs 1 s (keepalived's BOOTSTRAP_DELAY) plus a random warmup in
  [0, warmup] after start (`warmup` defaults to `delay_loop`; 0 disables it);
* a failed probe is retried `retry` times `delay_before_retry` apart before the checker goes
  DOWN; a success resets the retry count; otherwise the next probe is `delay_loop` later
  (MISC_CHECK counts from the probe's start, the others from its result); MISC_CHECK only
  retries while it is up (or has never run);
* a real server is alive when none of its checkers is down (no checker: always alive);
  `alpha` starts every checker (and so the server) down, otherwise everything starts up;
* a server going down is removed from the pool, or kept with weight 0 under
  `inhibit_on_failure`; `notify_up` / `notify_down` run on transitions;
* `misc_dynamic`: exit 0 restores the configured weight, 2..255 sets weight = status - 2
  (only when the status changed), 1 or anything else is a failure;
* quorum: the sum of the alive servers' weights. Gained when it reaches quorum + hysteresis
  (sorry server removed first, then `quorum_up` runs); lost when it drops below
  quorum - hysteresis or to 0 (the sorry server replaces the pool, then `quorum_down` runs).
  Starting with quorum down and a sorry server installs it and runs `quorum_down`; a
  `sorry_server_inhibit` sorry server otherwise sits in the pool with weight 0;
* a checker's first result that confirms the assumed state is silent, except that a first
  "down" (or any first result under `alpha`) runs the server's current notifier;
* `omega`: at shutdown every alive server's notify_down, then quorum_down, run (keepalived
  2.2.x `clear_services`); `rs_init_notifies` runs notify_up for servers alive at start.

Inputs are probe results with `now` in seconds; outputs are frozen action dataclasses. The
desired data-plane contents are `pool()`; adapters re-apply it after any Mark*/Sorry*/SetWeight.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

BOOTSTRAP_DELAY = 1.0


# ------------------------------------------------------------------------------ config


@dataclass(frozen=True, slots=True)
class CheckerSpec:
    """One checker block (TCP_CHECK, HTTP_GET, MISC_CHECK, ...) with its timing options."""

    kind: str = "TCP_CHECK"
    delay_loop: float = 60.0
    retry: int = 1
    delay_before_retry: float = 1.0
    connect_timeout: float = 5.0
    warmup: float | None = None  # None = delay_loop
    dynamic: bool = False  # misc_dynamic


@dataclass(frozen=True, slots=True)
class RealServerSpec:
    key: str
    weight: int = 1
    inhibit_on_failure: bool = False
    notify_up: str | None = None
    notify_down: str | None = None
    checkers: tuple[CheckerSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class VirtualServerSpec:
    key: str
    real_servers: tuple[RealServerSpec, ...] = ()
    quorum: int = 1
    hysteresis: int = 0
    quorum_up: str | None = None
    quorum_down: str | None = None
    alpha: bool = False
    omega: bool = False
    sorry_server: str | None = None
    sorry_server_inhibit: bool = False
    sorry_weight: int = 1


# ----------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class StartProbe:
    """Run checker `checker` of `rs` at `at`; give up after `timeout` (connect_timeout)."""

    vs: str
    rs: str
    checker: int
    at: float
    timeout: float


@dataclass(frozen=True, slots=True)
class MarkUp:
    vs: str
    rs: str
    weight: int
    in_pool: bool  # False while a sorry server holds the pool


@dataclass(frozen=True, slots=True)
class MarkDown:
    vs: str
    rs: str
    inhibit: bool  # keep it with weight 0 instead of removing it
    in_pool: bool


@dataclass(frozen=True, slots=True)
class SetWeight:
    vs: str
    rs: str
    weight: int
    in_pool: bool


@dataclass(frozen=True, slots=True)
class RunNotify:
    script: str
    vs: str
    rs: str | None
    event: str  # "up", "down", "quorum_up", "quorum_down"


@dataclass(frozen=True, slots=True)
class QuorumUp:
    vs: str
    weight_sum: int
    threshold: int


@dataclass(frozen=True, slots=True)
class QuorumDown:
    vs: str
    weight_sum: int
    threshold: int


@dataclass(frozen=True, slots=True)
class SorryServerOn:
    vs: str
    server: str
    inhibit: bool


@dataclass(frozen=True, slots=True)
class SorryServerOff:
    vs: str
    server: str
    inhibit: bool


Action = (
    StartProbe
    | MarkUp
    | MarkDown
    | SetWeight
    | RunNotify
    | QuorumUp
    | QuorumDown
    | SorryServerOn
    | SorryServerOff
)


def misc_exit_result(status: int, dynamic: bool) -> tuple[bool, int | None]:
    """MISC_CHECK exit status -> (success, dynamic weight or None).

    With `dynamic`, 0 means "configured weight" and is reported as weight -1 by convention
    of `on_result(..., weight=-1)`; 2..255 give status - 2.
    """
    if status == 0:
        return True, (-1 if dynamic else None)
    if dynamic and 2 <= status <= 255:
        return True, status - 2
    return False, None


# ------------------------------------------------------------------------------- state


@dataclass(slots=True)
class _Checker:
    spec: CheckerSpec
    is_up: bool
    has_run: bool = False
    retry_it: int = 0
    last_status: int | None = None  # MISC: last weight applied (status - 2 or -1)
    next_at: float = 0.0
    misc: bool = field(init=False, default=False)  # MISC_CHECK: retries/base differ

    def __post_init__(self) -> None:
        self.misc = self.spec.kind.upper() == "MISC_CHECK"


@dataclass(slots=True)
class _Real:
    spec: RealServerSpec
    alive: bool
    weight: int
    checkers: list[_Checker] = field(default_factory=list)
    failed: set[int] = field(default_factory=set)
    last_result: bool | None = None
    changed_at: float | None = None


class VirtualServerHealth:
    """The checker policy of one virtual server and its real servers."""

    def __init__(
        self,
        spec: VirtualServerSpec,
        *,
        rng: random.Random | None = None,
        init_notifies: bool = False,
    ) -> None:
        self.spec = spec
        self.init_notifies = init_notifies  # keepalived's global rs_init_notifies
        self.stopped = False
        self.suspended = False
        self.stale_results = 0
        self.rng = rng if rng is not None else random.Random()
        self.reals: dict[str, _Real] = {}
        for rs in spec.real_servers:
            self.reals[rs.key] = self._fresh(rs)
        self.quorum_up = self.weight_sum >= self.up_threshold
        self.sorry_active = False

    # -- read-only views ---------------------------------------------------------------
    @property
    def up_threshold(self) -> int:
        return self.spec.quorum + self.spec.hysteresis

    @property
    def down_threshold(self) -> int:
        return self.spec.quorum - self.spec.hysteresis

    @property
    def weight_sum(self) -> int:
        return sum(r.weight for r in self.reals.values() if r.alive)

    def alive(self, rs: str) -> bool:
        return self.reals[rs].alive

    def weight(self, rs: str) -> int:
        return self.reals[rs].weight

    def changed_at(self, rs: str) -> float | None:
        return self.reals[rs].changed_at

    def last_result(self, rs: str) -> bool | None:
        return self.reals[rs].last_result

    def _in_pool(self) -> bool:
        return not self.sorry_active

    def pool(self) -> tuple[tuple[str, int], ...]:
        """Desired data-plane destinations as (key, weight); weight 0 = quiesced."""
        out: list[tuple[str, int]] = []
        if self.stopped:
            return ()
        for r in self.reals.values():
            if r.alive and not self.sorry_active:
                out.append((r.spec.key, r.weight))
            elif not r.alive and r.spec.inhibit_on_failure:
                out.append((r.spec.key, 0))
        if self.spec.sorry_server is not None:
            if self.sorry_active:
                out.append((self.spec.sorry_server, self.spec.sorry_weight))
            elif self.spec.sorry_server_inhibit:
                out.append((self.spec.sorry_server, 0))
        return tuple(out)

    # -- inputs ------------------------------------------------------------------------
    def start(self, now: float) -> list[Action]:
        """Schedule every checker's first probe; install the sorry server if need be."""
        spec = self.spec
        actions: list[Action] = []
        if self.init_notifies:
            for real in self.reals.values():
                if real.alive and real.spec.notify_up:
                    actions.append(RunNotify(real.spec.notify_up, spec.key, real.spec.key, "up"))
        if not self.quorum_up and spec.sorry_server is not None:
            # keepalived: "Starting with quorum down" adds the sorry server and notifies
            self.sorry_active = True
            actions.append(SorryServerOn(spec.key, spec.sorry_server, spec.sorry_server_inhibit))
            actions.append(QuorumDown(spec.key, self.weight_sum, self.up_threshold))
            if spec.quorum_down:
                actions.append(RunNotify(spec.quorum_down, spec.key, None, "quorum_down"))
        for real in self.reals.values():
            actions += self._first_probes(real, now)
        return actions

    def on_result(
        self,
        rs: str,
        checker: int,
        ok: bool,
        now: float,
        *,
        weight: int | None = None,
        started: float | None = None,
    ) -> list[Action]:
        """A probe finished. `weight` (misc_dynamic) is the new weight, -1 = configured."""
        real = self.reals.get(rs)
        if real is None or not 0 <= checker < len(real.checkers) or self.stopped:
            # a probe that was in flight across a reload (or shutdown): count and drop it
            self.stale_results += 1
            return []
        c = real.checkers[checker]
        actions: list[Action] = []
        if self.suspended:
            # ha_suspend: a disabled checker's result changes nothing; it keeps ticking
            return [self._schedule(real, checker, now + c.spec.delay_loop)]
        real.last_result = ok
        misc = c.misc
        if ok:
            if weight is not None and weight != c.last_status:
                c.last_status = weight
                actions += self._update_weight(real, real.spec.weight if weight < 0 else weight)
            c.retry_it = 0
            if not c.is_up or not c.has_run:
                actions += self._checker_state(real, checker, True, now)
        elif c.retry_it < c.spec.retry and (not misc or c.is_up or not c.has_run):
            c.retry_it += 1
        else:
            c.retry_it = 0
            if c.is_up or not c.has_run:
                actions += self._checker_state(real, checker, False, now)
        c.has_run = True
        delay = c.spec.delay_before_retry if c.retry_it else c.spec.delay_loop
        base = started if (misc and started is not None) else now
        actions.append(self._schedule(real, checker, max(base + delay, now)))
        return actions

    def steady_ok(self, rs: str, checker: int, now: float) -> float | None:
        """Fast path of `on_result(rs, checker, True, now)` for the common case where a
        success changes nothing (the checker is up and has run, no misc weight, not
        suspended): records it and returns when the next probe is due, without building
        any action. Returns None when the full `on_result` is needed (nothing recorded)."""
        real = self.reals.get(rs)
        if real is None or self.stopped or self.suspended or checker >= len(real.checkers):
            return None
        c = real.checkers[checker]
        if not c.is_up or not c.has_run or c.misc or checker < 0:
            return None
        real.last_result = True
        c.retry_it = 0
        at = c.next_at = now + c.spec.delay_loop
        return at

    def set_weight(self, rs: str, weight: int) -> list[Action]:
        """An external weight change (e.g. an agent or the control API)."""
        return self._update_weight(self.reals[rs], weight)

    def shutdown(self) -> list[Action]:
        """Daemon exit: everything leaves the pool; with `omega` the down notifiers run
        (each alive real server's notify_down, then the virtual server's quorum_down)."""
        actions: list[Action] = []
        spec = self.spec
        if spec.sorry_server is not None and self.sorry_active:
            self.sorry_active = False
            actions.append(SorryServerOff(spec.key, spec.sorry_server, False))
        for real in self.reals.values():
            if real.alive or real.spec.inhibit_on_failure:
                actions.append(MarkDown(spec.key, real.spec.key, False, True))
            if not real.alive:
                continue
            real.alive = False
            if spec.omega and real.spec.notify_down:
                actions.append(RunNotify(real.spec.notify_down, spec.key, real.spec.key, "down"))
        self.quorum_up = False
        self.stopped = True
        actions.append(QuorumDown(spec.key, 0, self.down_threshold))
        if spec.omega and spec.quorum_down:
            actions.append(RunNotify(spec.quorum_down, spec.key, None, "quorum_down"))
        return actions

    def set_suspended(self, suspended: bool) -> None:
        """`ha_suspend`: while the VIP is absent (BACKUP node) results are ignored."""
        self.suspended = suspended

    def reload(self, spec: VirtualServerSpec, now: float) -> list[Action]:
        """Swap in a new config for the same virtual server, keeping live state.

        Like keepalived's clear_diff_services: a real server that stays keeps its alive
        state, weight (unless its configured weight changed) and the state of checkers of
        the same kind at the same position; a new checker on a failing server starts with
        its retries used up; new servers start as at daemon start; removed alive servers
        leave the pool with their notify_down; quorum is then re-evaluated.
        """
        if spec.key != self.spec.key:
            raise ValueError("reload() is for the same virtual server")
        old = self.reals
        self.spec = spec
        self.reals = {}
        actions: list[Action] = []
        for key, prev in old.items():
            if key not in {rs.key for rs in spec.real_servers}:
                if prev.alive or prev.spec.inhibit_on_failure:
                    actions.append(MarkDown(spec.key, key, False, self._in_pool()))
                if prev.alive and prev.spec.notify_down:
                    actions.append(RunNotify(prev.spec.notify_down, spec.key, key, "down"))
        for rs in spec.real_servers:
            before = old.get(rs.key)
            if before is None:
                real = self._fresh(rs)
                self.reals[rs.key] = real
                if real.alive:
                    actions.append(MarkUp(spec.key, rs.key, real.weight, self._in_pool()))
                actions += self._first_probes(real, now)
                continue
            weight = rs.weight if rs.weight != before.spec.weight else before.weight
            real = _Real(rs, alive=before.alive, weight=weight)
            real.last_result, real.changed_at = before.last_result, before.changed_at
            failing = bool(before.failed)
            fresh: list[int] = []
            for i, c in enumerate(rs.checkers):
                old_c = before.checkers[i] if i < len(before.checkers) else None
                if old_c is not None and old_c.spec.kind == c.kind:
                    nc = _Checker(c, old_c.is_up, old_c.has_run, min(old_c.retry_it, c.retry))
                    nc.last_status, nc.next_at = old_c.last_status, old_c.next_at
                else:
                    nc = _Checker(c, is_up=not (spec.alpha and (failing or not before.alive)))
                    if failing:
                        nc.retry_it = c.retry  # one failure is enough
                    fresh.append(i)
                real.checkers.append(nc)
                if not nc.is_up:
                    real.failed.add(i)
            self.reals[rs.key] = real
            if weight != before.weight and real.alive:
                actions.append(SetWeight(spec.key, rs.key, weight, self._in_pool()))
            if not real.failed and not real.alive:
                actions += self._server_state(real, True, now)
            for i in fresh:
                actions.append(self._first_probe(real, i, now))
        return actions + self._update_quorum(init=True)

    def _fresh(self, rs: RealServerSpec) -> _Real:
        real = _Real(rs, alive=not self.spec.alpha or not rs.checkers, weight=rs.weight)
        for i, c in enumerate(rs.checkers):
            real.checkers.append(_Checker(c, is_up=not self.spec.alpha))
            if self.spec.alpha:
                real.failed.add(i)
        return real

    def _first_probe(self, real: _Real, i: int, now: float) -> StartProbe:
        c = real.checkers[i].spec
        warmup = c.delay_loop if c.warmup is None else c.warmup
        delay = BOOTSTRAP_DELAY + (self.rng.uniform(0.0, warmup) if warmup > 0 else 0.0)
        return self._schedule(real, i, now + delay)

    def _first_probes(self, real: _Real, now: float) -> list[Action]:
        return [self._first_probe(real, i, now) for i in range(len(real.checkers))]

    def next_deadline(self) -> float | None:
        times = [c.next_at for r in self.reals.values() for c in r.checkers]
        return min(times) if times else None

    # -- internals ---------------------------------------------------------------------
    def _schedule(self, real: _Real, i: int, at: float) -> StartProbe:
        c = real.checkers[i]
        c.next_at = at
        return StartProbe(self.spec.key, real.spec.key, i, at, c.spec.connect_timeout)

    def _checker_state(self, real: _Real, i: int, up: bool, now: float) -> list[Action]:
        c = real.checkers[i]
        actions: list[Action] = []
        if c.is_up == up:
            # first result confirms the assumed state: keepalived still runs the notifier
            # when that is "down" or the checker started in alpha mode
            if not c.has_run and (self.spec.alpha or not up):
                script = real.spec.notify_up if real.alive else real.spec.notify_down
                if script:
                    event = "up" if real.alive else "down"
                    actions.append(RunNotify(script, self.spec.key, real.spec.key, event))
            return actions
        if up:
            c.is_up = True
            if not real.failed or real.failed == {i}:
                actions += self._server_state(real, True, now)
            real.failed.discard(i)
        else:
            c.is_up = False
            if not real.failed:
                actions += self._server_state(real, False, now)
            real.failed.add(i)
        return actions

    def _server_state(self, real: _Real, alive: bool, now: float) -> list[Action]:
        if real.alive == alive:
            return []
        spec, rs = self.spec, real.spec
        in_pool = self._in_pool()
        real.alive = alive
        real.changed_at = now
        actions: list[Action] = []
        if alive:
            actions.append(MarkUp(spec.key, rs.key, real.weight, in_pool))
            if rs.notify_up:
                actions.append(RunNotify(rs.notify_up, spec.key, rs.key, "up"))
        else:
            actions.append(MarkDown(spec.key, rs.key, rs.inhibit_on_failure, in_pool))
            if rs.notify_down:
                actions.append(RunNotify(rs.notify_down, spec.key, rs.key, "down"))
        return actions + self._update_quorum()

    def _update_weight(self, real: _Real, weight: int) -> list[Action]:
        if weight == real.weight:
            return []
        real.weight = weight
        actions: list[Action] = []
        if real.alive:
            actions.append(SetWeight(self.spec.key, real.spec.key, weight, self._in_pool()))
        return actions + self._update_quorum()

    def _update_quorum(self, init: bool = False) -> list[Action]:
        spec = self.spec
        ws = self.weight_sum
        actions: list[Action] = []
        if init and not self.quorum_up and ws < self.up_threshold:
            if spec.sorry_server is not None and not self.sorry_active:
                self.sorry_active = True
                actions.append(
                    SorryServerOn(spec.key, spec.sorry_server, spec.sorry_server_inhibit)
                )
            elif spec.sorry_server is None and self.sorry_active:
                self.sorry_active = False
            return actions
        if not self.quorum_up and ws >= self.up_threshold:
            self.quorum_up = True
            if self.sorry_active and spec.sorry_server is not None:
                self.sorry_active = False
                actions.append(
                    SorryServerOff(spec.key, spec.sorry_server, spec.sorry_server_inhibit)
                )
            actions.append(QuorumUp(spec.key, ws, self.up_threshold))
            if spec.quorum_up:
                actions.append(RunNotify(spec.quorum_up, spec.key, None, "quorum_up"))
        elif self.quorum_up and (ws == 0 or ws < self.down_threshold):
            self.quorum_up = False
            if spec.sorry_server is not None:
                self.sorry_active = True
                actions.append(
                    SorryServerOn(spec.key, spec.sorry_server, spec.sorry_server_inhibit)
                )
            actions.append(QuorumDown(spec.key, ws, self.down_threshold))
            if spec.quorum_down:
                actions.append(RunNotify(spec.quorum_down, spec.key, None, "quorum_down"))
        return actions
