"""VRRP tracking policy: effective priority, FAULT from trackers, script rise/fall, sync groups.

Pure arithmetic over tracker states, reproducing keepalived (shared/anchors/keepalived.md
§1.4, §1.5, §2a-4, read against keepalived's vrrp_track.c / vrrp_scheduler.c):

* A tracker with **weight 0** puts the instance in FAULT while it is down (script BAD,
  interface down); with ``reverse``, while it is *up*.
* A tracker with weight ``w`` and multiplier ``m`` (-1 with ``reverse``, else 1) adds
  ``w*m`` while up if ``w > 0``, and ``w*m`` while down if ``w < 0``; otherwise 0.
* ``track_file``: the integer in the file (clamped to -254..254) times ``w*m``, clamped to
  -254..253; -254 (or less) means FAULT. With weight 0, any non-zero value means FAULT.
* effective = base + sum, clamped to 1..254. The address owner (base 255) keeps 255 and
  ignores weights, but weight-0 trackers can still fault it.
* ``vrrp_script`` results go through keepalived's counter: ``rise`` consecutive successes
  make it GOOD, ``fall`` consecutive failures make it BAD. Before the first result the
  script is INIT: one result decides (keepalived); ``init_fail`` starts it BAD.
* In a ``vrrp_sync_group`` weighted trackers are dropped (scripts) or zeroed (interfaces,
  files) unless ``sync_group_tracking_weight`` (keepalived VC:4300-4340, #2105).
* :class:`SyncGroup`: all-or-nothing. Any member's own FAULT faults the others; a member
  going MASTER takes the BACKUP members with it; a MASTER dropping to BACKUP drags the
  other masters down. (Simplification vs keepalived: no "can every member go master"
  pre-check; a member forced to MASTER still yields to a higher peer normally.)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from hakeeper.vrrp.machine import Action, State, StateChanged, VrrpMachine

SYNC_FAULT_SOURCE = "sync_group"
FILE_FAULT = -254


class ScriptStatus(enum.Enum):
    INIT = "INIT"
    GOOD = "GOOD"
    BAD = "BAD"


class ScriptCounter:
    """keepalived's rise/fall counter for one ``vrrp_script`` (result 0..rise+fall-1)."""

    def __init__(self, rise: int = 1, fall: int = 1, *, init_fail: bool = False) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be >= 1")
        self.rise = rise
        self.fall = fall
        self.status = ScriptStatus.BAD if init_fail else ScriptStatus.INIT
        # INIT: one success or one failure decides; init_fail: rise successes needed.
        self.result = 0 if init_fail else rise - 1

    def record(self, success: bool) -> bool:
        """Feed one run's outcome (exit 0 = success; timeout = failure). True if status changed."""
        old = self.status
        top = self.rise + self.fall - 1
        if success:
            if self.result < self.rise - 1:
                self.result += 1
                if self.status is ScriptStatus.INIT:
                    self.status = ScriptStatus.BAD
            else:
                self.result = top
                self.status = ScriptStatus.GOOD
        elif self.result > self.rise:
            self.result -= 1
        else:
            self.result = 0
            self.status = ScriptStatus.BAD
        return self.status is not old


@dataclass(frozen=True, slots=True)
class TrackedScript:
    name: str
    weight: int = 0
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class TrackedInterface:
    name: str
    weight: int = 0
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class TrackedFile:
    name: str
    weight: int = 1
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Result of :func:`evaluate`: the effective priority and why the instance is down."""

    priority: int
    faults: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()  # weight-0 scripts with no result yet: hold start()

    @property
    def fault(self) -> bool:
        return bool(self.faults)


def weight_contribution(up: bool, weight: int, reverse: bool = False) -> int | None:
    """Priority delta of an up/down tracker; None means FAULT (weight 0)."""
    multiplier = -1 if reverse else 1
    if weight == 0:
        return 0 if up == (multiplier == 1) else None
    if (up and weight > 0) or (not up and weight < 0):
        return weight * multiplier
    return 0


def file_contribution(value: int, weight: int, reverse: bool = False) -> int | None:
    """Priority delta of a track_file value; None means FAULT."""
    value = max(-254, min(254, value))
    if weight == 0:
        return None if (value != 0) != reverse else 0
    status = max(FILE_FAULT, min(253, value * weight * (-1 if reverse else 1)))
    return None if status <= FILE_FAULT else status


def clamp_priority(base: int, total_delta: int) -> int:
    """keepalived: the owner keeps 255; others are clamped to 1..254."""
    if base == 255:
        return 255
    return max(1, min(254, base + total_delta))


def evaluate(
    base_priority: int,
    *,
    scripts: Iterable[tuple[TrackedScript, ScriptStatus]] = (),
    interfaces: Iterable[tuple[TrackedInterface, bool]] = (),
    files: Iterable[tuple[TrackedFile, int]] = (),
) -> Evaluation:
    """Effective priority and fault reasons from the current tracker states.

    A script in INIT contributes nothing; with weight 0 it is reported as ``pending`` so the
    driver can hold the instance until it has a result (keepalived keeps it in INIT).
    """
    delta = 0
    faults: list[str] = []
    pending: list[str] = []
    for script, status in scripts:
        if status is ScriptStatus.INIT:
            if script.weight == 0:
                pending.append(script.name)
            continue
        c = weight_contribution(status is ScriptStatus.GOOD, script.weight, script.reverse)
        if c is None:
            faults.append(f"track_script {script.name}")
        else:
            delta += c
    for iface, up in interfaces:
        c = weight_contribution(up, iface.weight, iface.reverse)
        if c is None:
            faults.append(f"track_interface {iface.name}")
        else:
            delta += c
    for tfile, value in files:
        c = file_contribution(value, tfile.weight, tfile.reverse)
        if c is None:
            faults.append(f"track_file {tfile.name}")
        else:
            delta += c
    return Evaluation(clamp_priority(base_priority, delta), tuple(faults), tuple(pending))


@dataclass(frozen=True, slots=True)
class SyncTrackers:
    scripts: tuple[TrackedScript, ...]
    interfaces: tuple[TrackedInterface, ...]
    files: tuple[TrackedFile, ...]
    warnings: tuple[str, ...]


def strip_for_sync_group(
    instance: str,
    scripts: Sequence[TrackedScript],
    interfaces: Sequence[TrackedInterface],
    files: Sequence[TrackedFile],
    *,
    tracking_weight: bool = False,
) -> SyncTrackers:
    """keepalived §1.4: a sync-group member loses weighted scripts, weighted interfaces and
    files get weight 0 — unless ``sync_group_tracking_weight``."""
    if tracking_weight:
        return SyncTrackers(tuple(scripts), tuple(interfaces), tuple(files), ())
    warnings: list[str] = []
    kept: list[TrackedScript] = []
    for s in scripts:
        if s.weight:
            warnings.append(
                f"({instance}) ignoring tracked script {s.name} with weights due to SYNC group"
            )
        else:
            kept.append(s)
    for i in interfaces:
        if i.weight:
            warnings.append(f"({instance}) track_interface {i.name} weight ignored in SYNC group")
    for f in files:
        if f.weight:
            warnings.append(f"({instance}) track_file {f.name} weight ignored in SYNC group")
    ifaces = tuple(replace(i, weight=0) for i in interfaces)
    tfiles = tuple(replace(f, weight=0) for f in files)
    return SyncTrackers(tuple(kept), ifaces, tfiles, tuple(warnings))


class SyncGroup:
    """All-or-nothing transitions across member machines (``vrrp_sync_group``).

    Call :meth:`reconcile` after every input given to any member, passing that member and
    the actions it returned; it returns the extra (member, actions) the driver must perform.
    """

    def __init__(self, name: str, members: Sequence[VrrpMachine]) -> None:
        if len({m.params.name for m in members}) != len(members):
            raise ValueError(f"sync group {name}: duplicate members")
        self.name = name
        self.members = tuple(members)

    @property
    def state(self) -> State:
        states = {m.state for m in self.members}
        for s in (State.FAULT, State.BACKUP, State.MASTER):
            if s in states:
                return s
        return State.INIT

    def _own_faulted(self, m: VrrpMachine) -> bool:
        return bool(m.faults - {SYNC_FAULT_SOURCE})

    def reconcile(
        self, now: float, trigger: VrrpMachine | None = None, actions: Sequence[Action] = ()
    ) -> list[tuple[VrrpMachine, list[Action]]]:
        out: list[tuple[VrrpMachine, list[Action]]] = []
        reason = f"sync group {self.name}"
        # Faults: every member is held in FAULT while another member has its own fault.
        for m in self.members:
            others = any(self._own_faulted(o) for o in self.members if o is not m)
            if others != (SYNC_FAULT_SOURCE in m.faults):
                acts = m.set_fault(now, others, SYNC_FAULT_SOURCE)
                if acts:
                    out.append((m, acts))
        if trigger is None or any(self._own_faulted(o) for o in self.members):
            return out
        for change in (a for a in actions if isinstance(a, StateChanged)):
            for m in self.members:
                if m is trigger:
                    continue
                if change.new is State.MASTER:
                    acts = m.force_master(now, f"{reason}: {trigger.params.name} became MASTER")
                elif change.old is State.MASTER and change.new is State.BACKUP:
                    acts = m.force_backup(now, f"{reason}: {trigger.params.name} left MASTER")
                else:
                    continue
                if acts:
                    out.append((m, acts))
        return out
