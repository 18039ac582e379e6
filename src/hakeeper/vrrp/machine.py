"""VRRP instance state machine: INIT/BACKUP/MASTER/FAULT, pure, now-in / actions-out.

Follows RFC 5798 §6 (v3) with the v2 semantics of RFC 3768 §6 and keepalived's behaviours
(shared/anchors/keepalived.md §2a-6, §5d, §5e):

* Skew_Time = (256 - prio)/256 s (v2) or (256 - prio) x Master_Adver_Interval / 256 (v3);
  Master_Down_Interval = down_timer_adverts (3) x Master_Adver_Interval + Skew_Time. v3
  backups learn Master_Adver_Interval from the master's adverts; v2 drops mismatches.
* Owner (base priority 255) goes MASTER at start; other instances start in BACKUP. As in
  keepalived, ``state MASTER`` below 255 starts in BACKUP with a short first down timer
  (one interval + 1/256 of it), and a BACKUP's down timer moves when its skew changes.
* A backup hearing priority 0 waits only Skew_Time; a master hearing priority 0 re-adverts.
* A master yields to a higher priority, or to an equal one from a higher primary address.
* A master hearing a lower priority advertises at once (RFC 9568 / keepalived default;
  ``lower_prio_no_advert=True`` restores the RFC 5798 discard).
* FAULT (keepalived): no adverts; leaving MASTER for FAULT sends one priority-0 advert
  and removes the VIPs, like keepalived; when every fault source clears: BACKUP.
* ``shutdown``: a master sends priority 0, removes VIPs, goes INIT (RFC "Shutdown").
* ``preempt_delay`` (keepalived): after start or after first seeing a lower-priority
  master, keep accepting its adverts for that long before preempting.

Deliberate improvements over keepalived, both on by default and switchable off:

* ``fast_preempt``: a BACKUP with preempt that hears the current master advertise a
  priority *lower* than its own becomes MASTER at once (after any preempt_delay) instead of
  discarding the advert and waiting a whole Master_Down_Interval (RFC 5798 §6.4.2 says
  discard; keepalived measured 4.5 s for weight-based failover). Electing the higher
  priority is what preemption means, and a spurious double master resolves by the normal
  master-master rule within one advert. ``fast_preempt=False`` is the RFC behaviour.
* ``advert_on_priority_change``: a MASTER whose effective priority changes advertises
  at once (instead of at its next Adver_Timer), so backups learn about it immediately.

Outputs are action dataclasses; the driver performs them in order. ``next_deadline()``
says when ``on_timer`` must next be called (None: no timer armed).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

from hakeeper.vrrp.packet import (
    Advert,
    AuthType,
    CheckResult,
    DropReason,
    IPAddress,
    LocalExpect,
    check_local,
    pass_auth_data,
)


class State(enum.StrEnum):
    INIT = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"


@dataclass(frozen=True, slots=True)
class VrrpParams:
    """Configuration of one VRRP instance, as the machine needs it.

    ``advert_int`` is seconds (v2: whole 1..255; v3: 0.01..40.95). ``initial_state`` is
    the keepalived ``state`` wish (None: not given). ``primary_ip`` is the address we send
    from (interface primary / mcast_src_ip / unicast_src_ip), used for the tie break.
    """

    name: str
    vrid: int
    primary_ip: IPAddress
    priority: int = 100
    version: int = 2
    advert_int: float = 1.0
    vips: tuple[IPAddress, ...] = ()
    preempt: bool = True
    preempt_delay: float = 0.0
    accept: bool = True
    initial_state: State | None = None
    auth_type: AuthType = AuthType.NONE
    auth_pass: str = ""
    down_timer_adverts: int = 3
    lower_prio_no_advert: bool = False
    skip_check_adv_addr: bool = False
    garp_master_delay: float = 5.0
    garp_master_repeat: int = 5
    garp_master_refresh: float = 0.0
    garp_master_refresh_repeat: int = 1
    fast_preempt: bool = True
    advert_on_priority_change: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"{self.name}: VRID {self.vrid} out of 1..255")
        if not 1 <= self.priority <= 255:
            raise ValueError(f"{self.name}: priority {self.priority} out of 1..255")
        if self.version not in (2, 3):
            raise ValueError(f"{self.name}: version {self.version}")
        if self.version == 2 and self.primary_ip.version == 6:
            raise ValueError(f"{self.name}: IPv6 needs VRRPv3")
        if any(v.version != self.primary_ip.version for v in self.vips):
            raise ValueError(f"{self.name}: VIPs and primary address of different families")
        if not 0.01 <= self.advert_int <= 255:
            raise ValueError(f"{self.name}: advert_int {self.advert_int}")
        if self.version == 2 and self.advert_int != int(self.advert_int):
            raise ValueError(f"{self.name}: v2 advert_int must be whole seconds")
        if self.version == 3 and self.advert_int > 40.95:
            raise ValueError(f"{self.name}: v3 advert_int over 40.95 s")
        if self.down_timer_adverts < 1:
            raise ValueError(f"{self.name}: down_timer_adverts < 1")

    @property
    def family(self) -> int:
        return self.primary_ip.version

    @property
    def interval_cs(self) -> int:
        return round(self.advert_int * 100)

    @property
    def owner(self) -> bool:
        return self.priority == 255

    def expect(self) -> LocalExpect:
        auth = self.auth_type if self.version == 2 else AuthType.NONE
        return LocalExpect(
            version=self.version,
            interval_cs=self.interval_cs,
            vips=self.vips,
            auth_type=auth,
            auth_data=self.auth_pass.encode(),
            skip_check_adv_addr=self.skip_check_adv_addr,
        )


# ---------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class SendAdvert:
    """Send this advert now (the driver encodes it: packet.encode)."""

    advert: Advert

    @property
    def priority(self) -> int:
        return self.advert.priority


@dataclass(frozen=True, slots=True)
class AddVips:
    vips: tuple[IPAddress, ...]


@dataclass(frozen=True, slots=True)
class RemoveVips:
    vips: tuple[IPAddress, ...]


@dataclass(frozen=True, slots=True)
class SendGratuitous:
    """A burst of ``count`` gratuitous ARPs (IPv4) / unsolicited NAs (IPv6) per VIP."""

    vips: tuple[IPAddress, ...]
    count: int
    reason: str = "master"


@dataclass(frozen=True, slots=True)
class StateChanged:
    old: State
    new: State
    reason: str
    priority: int


@dataclass(frozen=True, slots=True)
class LogEvent:
    level: str  # "debug" | "info" | "warning" | "error"
    message: str


@dataclass(frozen=True, slots=True)
class DroppedAdvert:
    """An advert discarded by the local checks (for counters)."""

    reason: DropReason
    detail: str = ""


Action = (
    SendAdvert | AddVips | RemoveVips | SendGratuitous | StateChanged | LogEvent | DroppedAdvert
)


@dataclass(slots=True)
class Counters:
    adverts_received: int = 0
    adverts_sent: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    became_master: int = 0
    released_master: int = 0
    priority_zero_received: int = 0
    priority_zero_sent: int = 0


# ---------------------------------------------------------------- the machine


class VrrpMachine:
    """One VRRP instance. Every input takes ``now`` (monotonic seconds)."""

    def __init__(self, params: VrrpParams) -> None:
        self.params = params
        self.state = State.INIT
        self.priority = params.priority
        self.counters = Counters()
        self.master_adver_interval = params.advert_int
        self.master_ip: IPAddress | None = None
        self.master_priority: int | None = None
        self._faults: set[str] = set()
        self._expect = params.expect()
        self._adverts: dict[int, Advert] = {}
        self._started = False
        self._adver_at: float | None = None
        self._down_at: float | None = None
        self._preempt_from: float | None = None  # preempting a lower master allowed from
        self._preempt_timer: float | None = None
        self._garp_at: float | None = None
        self._refresh_at: float | None = None

    # ---------------------------------------------------------------- queries

    @property
    def skew_time(self) -> float:
        if self.params.version == 2:
            return (256 - self.priority) / 256.0
        return (256 - self.priority) * self.master_adver_interval / 256.0

    @property
    def master_down_interval(self) -> float:
        return self.params.down_timer_adverts * self.master_adver_interval + self.skew_time

    @property
    def _wants_master(self) -> bool:
        p = self.params
        return p.initial_state is State.MASTER or (p.owner and p.initial_state is None)

    @property
    def _short_down_interval(self) -> float:
        """keepalived's first down timer for a MASTER wish: one interval + minimal skew."""
        skew_min = 1 / 256 if self.params.version == 2 else self.master_adver_interval / 256
        return self.master_adver_interval + skew_min

    @property
    def faults(self) -> frozenset[str]:
        return frozenset(self._faults)

    def next_deadline(self) -> float | None:
        times = [
            t
            for t in (
                self._adver_at,
                self._down_at,
                self._preempt_timer,
                self._garp_at,
                self._refresh_at,
            )
            if t is not None
        ]
        return min(times) if times else None

    def build_advert(self, priority: int | None = None) -> Advert:
        """The advert we send at ``priority`` (default: the effective one); cached."""
        prio = self.priority if priority is None else priority
        cached = self._adverts.get(prio)
        if cached is not None:
            return cached
        p = self.params
        auth_type = p.auth_type if p.version == 2 else AuthType.NONE
        auth_data = b""
        if p.version == 2:
            auth_data = pass_auth_data(p.auth_pass) if auth_type is AuthType.PASS else bytes(8)
        advert = Advert(
            version=p.version,
            vrid=p.vrid,
            priority=prio,
            addresses=p.vips,
            interval_cs=p.interval_cs,
            auth_type=auth_type,
            auth_data=auth_data,
            source=p.primary_ip,
        )
        self._adverts[prio] = advert
        return advert

    # ---------------------------------------------------------------- inputs

    def start(self, now: float) -> list[Action]:
        """Startup event (RFC §6.4.1): owner -> MASTER, others -> BACKUP; FAULT if faulted."""
        if self._started:
            raise RuntimeError(f"{self.params.name}: already started")
        self._started = True
        if self._faults:
            return self._to_fault(now, "fault at startup")
        if self.params.owner and self.params.initial_state is not State.BACKUP:
            return self._to_master(now, "priority 255 (address owner)")
        out = self._to_backup(now, "startup")
        if self._wants_master:
            # keepalived: `state MASTER` (or an owner) waits one interval + minimal skew.
            self._down_at = now + self._short_down_interval
        if self.params.preempt and self.params.preempt_delay > 0:
            self._preempt_from = self._preempt_timer = now + self.params.preempt_delay
        return out

    def shutdown(self, now: float) -> list[Action]:
        """Shutdown event: a master sends priority 0 and removes its VIPs; all go INIT."""
        old = self.state
        out: list[Action] = []
        if old is not State.INIT:
            out.append(StateChanged(old, State.INIT, "shutdown", self.priority))
        if old is State.MASTER:
            out += self._leave_master(send_zero=True)
        self._clear_timers()
        self.state = State.INIT
        self._started = False
        return out

    def on_timer(self, now: float) -> list[Action]:
        """Fire every expired timer (call at or after ``next_deadline()``)."""
        out: list[Action] = []
        if self.state is State.MASTER:
            if self._garp_at is not None and now >= self._garp_at:
                self._garp_at = None
                out.append(
                    SendGratuitous(self.params.vips, self.params.garp_master_repeat, "delayed")
                )
            if self._refresh_at is not None and now >= self._refresh_at:
                self._refresh_at = now + self.params.garp_master_refresh
                out.append(
                    SendGratuitous(
                        self.params.vips, self.params.garp_master_refresh_repeat, "refresh"
                    )
                )
            if self._adver_at is not None and now >= self._adver_at:
                out.append(self._send(self.priority))
                self._adver_at = now + self.params.advert_int
        elif self.state is State.BACKUP:
            if self._preempt_timer is not None and now >= self._preempt_timer:
                self._preempt_timer = None
                if (
                    self.params.fast_preempt
                    and self.master_priority
                    and self.master_priority < self.priority
                ):
                    return out + self._to_master(now, "preempt_delay elapsed, master is lower")
            if self._down_at is not None and now >= self._down_at:
                return out + self._to_master(now, "master down timer expired")
        return out

    def on_advert(self, now: float, advert: Advert) -> list[Action]:
        """A structurally valid advert for our VRID (decode() already succeeded)."""
        self.counters.adverts_received += 1
        if advert.source is not None and advert.source == self.params.primary_ip:
            return [self._drop(DropReason.OWN_ADVERT)]
        if self.state not in (State.BACKUP, State.MASTER):
            return []
        check: CheckResult = check_local(advert, self._expect)
        name = self.params.name
        if check.drop is not None:
            detail = "; ".join(check.notes)
            return [
                self._drop(check.drop, detail),
                LogEvent(
                    "warning",
                    f"{name}: dropped advert from {advert.source}: {check.drop.value} {detail}",
                ),
            ]
        out: list[Action] = [LogEvent("warning", f"{name}: {n}") for n in check.notes]
        if self.state is State.BACKUP:
            out += self._backup_rx(now, advert)
        elif self.state is State.MASTER:
            out += self._master_rx(now, advert)
        return out

    def set_effective_priority(self, now: float, priority: int) -> list[Action]:
        """New effective priority from the trackers (track.py); the owner ignores it."""
        if self.params.owner:
            return []
        if not 1 <= priority <= 254:
            raise ValueError(f"{self.params.name}: effective priority {priority} not in 1..254")
        if priority == self.priority:
            return []
        old = self.priority
        old_mdi = self.master_down_interval
        self.priority = priority
        if self.state is State.BACKUP and self._down_at is not None:
            self._down_at += self.master_down_interval - old_mdi  # keepalived: skew changed
        out: list[Action] = [
            LogEvent("info", f"{self.params.name}: effective priority {old} -> {priority}")
        ]
        if self.state is State.MASTER and self.params.advert_on_priority_change:
            out.append(self._send(priority))
            self._adver_at = now + self.params.advert_int
        elif self.state is State.BACKUP and self.master_priority:
            p = self.params
            if self.master_priority >= priority or not p.preempt:
                return out
            if p.preempt_delay > 0 and self._preempt_from is None:
                self._preempt_from = self._preempt_timer = now + p.preempt_delay
            if p.fast_preempt and (self._preempt_from is None or now >= self._preempt_from):
                out += self._to_master(now, "priority now above the master's")
        return out

    def set_fault(self, now: float, faulted: bool, source: str = "interface") -> list[Action]:
        """Add/clear a fault source (interface down, tracker, sync group). FAULT while any."""
        had = bool(self._faults)
        if faulted:
            self._faults.add(source)
        else:
            self._faults.discard(source)
        if not self._started:
            return []
        if self._faults and not had:
            return self._to_fault(now, f"fault: {', '.join(sorted(self._faults))}")
        if had and not self._faults and self.state is State.FAULT:
            out = self._to_backup(now, "fault cleared")
            if self._wants_master and self.params.owner:
                self._down_at = now + self._short_down_interval
            return out
        return []

    def force_backup(self, now: float, reason: str) -> list[Action]:
        """Sync group: another member left MASTER, so this one must too."""
        if self.state is State.MASTER:
            return self._to_backup(now, reason)
        return []

    def force_master(self, now: float, reason: str) -> list[Action]:
        """Sync group: another member became MASTER, so this backup follows."""
        if self.state is State.BACKUP:
            return self._to_master(now, reason)
        return []

    # ---------------------------------------------------------------- receive rules

    def _backup_rx(self, now: float, adv: Advert) -> list[Action]:
        p = self.params
        if adv.priority == 0:
            self.counters.priority_zero_received += 1
            self._down_at = now + self.skew_time
            self.master_priority = 0
            return [LogEvent("info", f"{p.name}: master {adv.source} resigned (priority 0)")]
        lower = adv.priority < self.priority
        if lower and p.preempt and p.preempt_delay > 0:
            if self._preempt_from is None:
                # First lower-priority master seen: preempt only after the delay.
                self._preempt_from = now + p.preempt_delay
                self._preempt_timer = self._preempt_from
            waiting = now < self._preempt_from
        else:
            waiting = False
            if not lower:
                self._preempt_from = self._preempt_timer = None
        self.master_ip = adv.source
        self.master_priority = adv.priority
        if not lower or not p.preempt or waiting:
            # Follow this master (RFC 5798 §6.4.2 lines 445-460).
            if p.version == 3:
                self.master_adver_interval = adv.interval
            self._down_at = now + self.master_down_interval
            return []
        # Lower priority and we preempt.
        if p.fast_preempt:
            return self._to_master(now, f"preempting lower-priority master {adv.source}")
        return [LogEvent("debug", f"{p.name}: discarded lower-priority advert from {adv.source}")]

    def _master_rx(self, now: float, adv: Advert) -> list[Action]:
        p = self.params
        if adv.priority == 0:
            self.counters.priority_zero_received += 1
            self._adver_at = now + p.advert_int
            return [self._send(self.priority)]
        src = adv.source
        higher = adv.priority > self.priority or (
            adv.priority == self.priority and src is not None and _ip_greater(src, p.primary_ip)
        )
        if higher:
            interval = adv.interval if p.version == 3 else p.advert_int
            out = self._to_backup(now, f"higher-priority advert from {src} ({adv.priority})")
            self.master_ip = src
            self.master_priority = adv.priority
            self.master_adver_interval = interval
            self._down_at = now + self.master_down_interval
            return out
        if not p.lower_prio_no_advert:
            return [self._send(self.priority)]
        return []

    # ---------------------------------------------------------------- transitions

    def _to_master(self, now: float, reason: str) -> list[Action]:
        p = self.params
        old = self.state
        self._clear_timers()
        self.state = State.MASTER
        self.master_ip = p.primary_ip
        self.master_priority = self.priority
        self.master_adver_interval = p.advert_int
        self.counters.became_master += 1
        out: list[Action] = [StateChanged(old, State.MASTER, reason, self.priority)]
        if p.vips:
            out.append(AddVips(p.vips))
        out.append(self._send(self.priority))
        self._adver_at = now + p.advert_int
        if p.vips:
            out.append(SendGratuitous(p.vips, p.garp_master_repeat, "master"))
            if p.garp_master_delay > 0:
                self._garp_at = now + p.garp_master_delay
            if p.garp_master_refresh > 0:
                self._refresh_at = now + p.garp_master_refresh
        return out

    def _to_backup(self, now: float, reason: str) -> list[Action]:
        old = self.state
        out: list[Action] = []
        if old is State.MASTER:
            out += self._leave_master(send_zero=False)
        self._clear_timers()
        self.state = State.BACKUP
        self.master_adver_interval = self.params.advert_int
        self.master_ip = None
        self.master_priority = None
        self._down_at = now + self.master_down_interval
        return [StateChanged(old, State.BACKUP, reason, self.priority), *out]

    def _to_fault(self, now: float, reason: str) -> list[Action]:
        old = self.state
        out: list[Action] = []
        if old is State.MASTER:
            out += self._leave_master(send_zero=True)
        self._clear_timers()
        self.state = State.FAULT
        self.master_ip = None
        self.master_priority = None
        return [StateChanged(old, State.FAULT, reason, self.priority), *out]

    def _leave_master(self, *, send_zero: bool) -> list[Action]:
        out: list[Action] = []
        self.counters.released_master += 1
        if send_zero:
            self.counters.priority_zero_sent += 1
            out.append(self._send(0))
        if self.params.vips:
            out.append(RemoveVips(self.params.vips))
        return out

    # ---------------------------------------------------------------- helpers

    def _send(self, priority: int) -> SendAdvert:
        self.counters.adverts_sent += 1
        return SendAdvert(self.build_advert(priority))

    def _drop(self, reason: DropReason, detail: str = "") -> DroppedAdvert:
        self.counters.dropped[reason.name] = self.counters.dropped.get(reason.name, 0) + 1
        return DroppedAdvert(reason, detail)

    def _clear_timers(self) -> None:
        self._adver_at = self._down_at = self._preempt_timer = self._preempt_from = None
        self._garp_at = self._refresh_at = None


def _ip_greater(a: IPAddress, b: IPAddress) -> bool:
    """RFC tie break: compare primary addresses as unsigned integers."""
    return int(ipaddress.ip_address(a)) > int(ipaddress.ip_address(b))
