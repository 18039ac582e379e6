"""The checker engine: binds every virtual server's pure checker policy to the asyncio loop.

Owns the runtime half of keepalived's checker process (check_daemon.c / ipwrapper.c
behaviour): one `VirtualServerHealth` per `virtual_server`, one loop timer for all of them
(a wheel of 10 ms buckets, re-armed to its earliest bucket), probes launched for each
`StartProbe`, results fed back with `now` = loop time, `notify_up` / `notify_down` /
`quorum_up` / `quorum_down` run exactly as configured (keepalived passes no extra
arguments) in order per virtual server, and the healthy pool handed to the data plane
through `on_pool_change(vs_key, [(RealServer, weight), ...])` whenever it changes. Log lines
follow keepalived's ("TCP check failed to ...", "Removing service [..] from VS [..]").

TCP_CHECK takes a path of its own, like keepalived's check_tcp.c: a bare non-blocking
socket, connect(), plain close() (FIN) once connected; connect() is asked again at the end
of its tick, and only connects still going then wait in one epoll set polled each tick,
their connect_timeout in the same wheel; an unchanged success goes through `steady_ok`.
No task, future, transport, action object or timer handle per probe.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import errno
import heapq
import logging
import os
import random
import select
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hakeeper.check.policy import (
    Action,
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
)
from hakeeper.check.probes import (
    CONNECTED,
    STREAM_NONBLOCK,
    Probe,
    ProbeResult,
    Target,
    TcpProbe,
    run_command,
    start_probe,
    target_for,
)
from hakeeper.conf.model import (
    BfdCheck,
    Checker,
    FileCheck,
    MiscCheck,
    RealServer,
    Script,
    TcpCheck,
    TrackFile,
    VirtualServer,
)
from hakeeper.io.scripts import ScriptResult

log = logging.getLogger("hakeeper.check")

VsKey = tuple[str, ...]
Pool = list[tuple[RealServer, int]]
PoolCallback = Callable[[VsKey, Pool], None]
NOTIFY_TIMEOUT_S = 30.0
FILE_POLL_S = 1.0
TICK_S = 0.01  # timer wheel granularity: probes due in one 10 ms bucket start together
_PER_TICK = 1.0 / TICK_S
_NEVER = 1 << 62
_EPOLLOUT = select.EPOLLOUT
_POLL_BATCH = 1024
_EINPROGRESS, _EALREADY, _EISCONN = errno.EINPROGRESS, errno.EALREADY, errno.EISCONN
_CONNECTING = frozenset((errno.EINPROGRESS, errno.EALREADY))

_LOG_NAMES = {"PING_CHECK": "ICMP", "SSL_GET": "SSL", "HTTP_GET": "HTTP"}


def rs_label(ip: Any, port: int | None) -> str:
    host = f"[{ip}]" if getattr(ip, "version", 4) == 6 else str(ip)
    return f"{host}:{port}" if port else host


def vs_label(vs: VirtualServer) -> str:
    if vs.address is not None:
        return rs_label(vs.address, vs.port)
    return vs.label


def checker_spec(check: Checker, vs: VirtualServer) -> CheckerSpec:
    """The policy's view of one checker block (timing options + kind)."""
    if isinstance(check, (FileCheck, BfdCheck)):
        # keepalived watches these with inotify / the BFD daemon; we poll a file cheaply
        return CheckerSpec(check.kind, min(vs.delay_loop, FILE_POLL_S), 0, 1.0, 5.0, 0.0)
    c = check.common
    timeout = c.connect_timeout
    if isinstance(check, MiscCheck):
        timeout = check.misc_timeout or c.delay_loop
    return CheckerSpec(
        check.kind,
        c.delay_loop,
        c.retry,
        c.delay_before_retry,
        timeout,
        c.warmup,
        dynamic=isinstance(check, MiscCheck) and check.misc_dynamic,
    )


def _script(s: Script | None) -> str | None:
    return s.command if s is not None else None


def health_spec(vs: VirtualServer) -> VirtualServerSpec:
    """The policy's view of one virtual server (keys are "ip:port" strings)."""
    reals = tuple(
        RealServerSpec(
            rs_label(rs.ip, rs.port),
            rs.weight,
            rs.inhibit_on_failure or vs.inhibit_on_failure,
            _script(rs.notify_up),
            _script(rs.notify_down),
            tuple(checker_spec(c, vs) for c in rs.checkers),
        )
        for rs in vs.real_servers
    )
    sorry = vs.sorry_server
    return VirtualServerSpec(
        "|".join(vs.key),
        reals,
        vs.quorum,
        vs.hysteresis,
        _script(vs.quorum_up),
        _script(vs.quorum_down),
        vs.alpha,
        vs.omega,
        rs_label(sorry.ip, sorry.port) if sorry is not None else None,
        sorry.inhibit if sorry is not None else False,
    )


@dataclass(frozen=True, slots=True)
class CheckerStatus:
    kind: str
    target: str
    last_ok: bool | None
    detail: str


@dataclass(frozen=True, slots=True)
class RealServerStatus:
    server: str
    weight: int
    alive: bool
    in_pool: bool
    last_result: bool | None
    changed_at: float | None  # wall-clock seconds of the last transition
    checkers: tuple[CheckerStatus, ...]


@dataclass(frozen=True, slots=True)
class VirtualServerStatus:
    key: VsKey
    label: str
    quorum_up: bool
    weight_sum: int
    sorry_active: bool
    real_servers: tuple[RealServerStatus, ...]


@dataclass(slots=True)
class _Bound:
    """One virtual server: model, policy, and the live bits the policy does not keep."""

    key: VsKey
    vs: VirtualServer
    health: VirtualServerHealth
    reals: dict[str, RealServer]
    targets: dict[tuple[str, int], Target] = field(default_factory=dict)
    slots: dict[tuple[str, int], _Slot] = field(default_factory=dict)
    live: bool = True
    last_pool: Pool | None = None
    notify_tail: asyncio.Task[None] | None = None

    def checker(self, rs: str, i: int) -> Checker | None:
        real = self.reals.get(rs)
        if real is None or i >= len(real.checkers):
            return None
        return real.checkers[i]

    def slot(self, rs: str, i: int) -> _Slot:
        slot = self.slots.get((rs, i))
        if slot is None:
            slot = self.slots[(rs, i)] = _Slot(self, rs, i)
        return slot

    def target(self, rs: str, i: int) -> Target:
        key = (rs, i)
        t = self.targets.get(key)
        if t is None:
            real = self.reals[rs]
            check = real.checkers[i]
            common = None if isinstance(check, (FileCheck, BfdCheck)) else check.common
            t = self.targets[key] = target_for(self.vs, real, common)
        return t


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one checker probes, resolved once per (server, checker) and config."""

    check: Checker
    target: Target
    timeout: float
    tcp: bool


@dataclass(slots=True, eq=False)
class _Slot:
    """One checker of one real server: the engine's per-checker state (the policy keeps
    the rest)."""

    b: _Bound
    rs: str
    i: int
    gen: int = 0  # queued-probe generation: a newer StartProbe supersedes queued ones
    plan: _Plan | None = None
    inflight: Probe | None = None
    result: ProbeResult | None = None  # the last one
    inline: bool = True  # connects complete inside connect() (same host): ask at once


class _Connect(Probe):
    """A TCP_CHECK connect waiting in the engine's epoll set; also its timeout entry."""

    __slots__ = ("engine", "fd", "slot", "sock", "started")

    def __init__(
        self, engine: CheckerEngine, sock: _socket.socket, fd: int, slot: _Slot, started: float
    ) -> None:
        self.engine = engine
        self.sock: _socket.socket | None = sock
        self.fd = fd
        self.slot = slot
        self.started = started

    def _drop(self) -> bool:
        sock, self.sock = self.sock, None
        if sock is None:
            return False
        if self.engine._connects.get(self.fd) is self:
            del self.engine._connects[self.fd]
        sock.close()  # also leaves the epoll set
        return True

    def cancel(self) -> None:
        self._drop()

    def expire(self) -> None:
        """The timer wheel reached connect_timeout: a failure if still connecting."""
        if not self._drop():
            return
        slot = self.slot
        if slot.inflight is self:
            slot.inflight = None
        self.engine._on_result(slot, self.started, ProbeResult(False, "connect timeout"))


_Entry = tuple[_Slot, int] | _Connect


class CheckerEngine:
    """Health checks of many virtual servers on one loop; the pools for the data plane."""

    def __init__(
        self,
        virtual_servers: Iterable[VirtualServer],
        *,
        on_pool_change: PoolCallback | None = None,
        track_files: Iterable[TrackFile] = (),
        rng: random.Random | None = None,
        init_notifies: bool = False,
        notify_timeout: float = NOTIFY_TIMEOUT_S,
        log_all_failures: bool = False,
    ) -> None:
        self.on_pool_change = on_pool_change
        self.track_files = {t.name: t for t in track_files}
        self.rng = rng if rng is not None else random.Random()
        self.init_notifies = init_notifies
        self.notify_timeout = notify_timeout
        self.log_all_failures = log_all_failures
        self.probes_started = 0
        self.notify_failures = 0
        self._bound: dict[VsKey, _Bound] = {}
        self._pending = list(virtual_servers)
        self._wheel: dict[int, list[_Entry]] = {}
        self._ticks: list[int] = []  # heap of the wheel's occupied buckets
        self._timer: asyncio.TimerHandle | None = None
        self._timer_tick = _NEVER
        self._epoll: select.epoll | None = None
        self._connects: dict[int, _Connect] = {}
        self._recheck: list[tuple[_Slot, int, _socket.socket, Target, float, float]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wall_offset = 0.0
        self._notifies: set[asyncio.Task[None]] = set()
        self.running = False

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Begin checking (call from inside the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._wall_offset = time.time() - self._loop.time()
        self.running = True
        for vs in self._pending:
            self._add(vs)
        self._pending = []

    async def stop(self) -> None:
        """Cancel probes; every server leaves its pool (omega notifiers run), then wait a
        bounded time for queued notify scripts."""
        self.running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for key in list(self._bound):
            self._remove(key, shutdown=True)
        self._close_epoll()
        self._wheel.clear()
        self._ticks.clear()
        self._timer_tick = _NEVER
        await self.drain_notifies(self.notify_timeout)

    async def drain_notifies(self, timeout: float) -> bool:
        tasks = list(self._notifies)
        if not tasks:
            return True
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        return not pending

    def update(self, virtual_servers: Iterable[VirtualServer]) -> None:
        """Reload: removed servers leave, new ones start, changed ones keep live state."""
        new = {vs.key: vs for vs in virtual_servers}
        if not self.running:
            self._pending = list(new.values())
            return
        for key in [k for k in self._bound if k not in new]:
            self._remove(key, shutdown=False)
        for key, vs in new.items():
            bound = self._bound.get(key)
            if bound is None:
                self._add(vs)
            elif bound.vs != vs:
                bound.vs = vs
                bound.reals = {rs_label(r.ip, r.port): r for r in vs.real_servers}
                bound.targets.clear()
                for slot in bound.slots.values():
                    slot.plan = None
                self._apply(bound, bound.health.reload(health_spec(vs), self._now()))

    def set_suspended(self, key: VsKey, suspended: bool) -> None:
        """ha_suspend: results are ignored while the node does not hold the VIP."""
        self._bound[key].health.set_suspended(suspended)

    # -- views -------------------------------------------------------------------------
    def pools(self) -> dict[VsKey, Pool]:
        return {key: self._pool(b) for key, b in self._bound.items()}

    def pool(self, key: VsKey) -> Pool:
        return self._pool(self._bound[key])

    def status(self) -> list[VirtualServerStatus]:
        out = []
        for key, b in self._bound.items():
            h = b.health
            pooled = {k for k, _w in h.pool()}
            reals = []
            for rs_key, real in b.reals.items():
                changed = h.changed_at(rs_key)
                checks = []
                for i, c in enumerate(real.checkers):
                    slot = b.slots.get((rs_key, i))
                    r = None if slot is None else slot.result
                    checks.append(
                        CheckerStatus(
                            c.kind,
                            b.target(rs_key, i).label(),
                            None if r is None else r.ok,
                            "" if r is None else r.detail,
                        )
                    )
                reals.append(
                    RealServerStatus(
                        rs_key,
                        h.weight(rs_key),
                        h.alive(rs_key),
                        rs_key in pooled,
                        h.last_result(rs_key),
                        None if changed is None else changed + self._wall_offset,
                        tuple(checks),
                    )
                )
            out.append(
                VirtualServerStatus(
                    key, vs_label(b.vs), h.quorum_up, h.weight_sum, h.sorry_active, tuple(reals)
                )
            )
        return out

    def status_dict(self) -> list[dict[str, Any]]:
        """`status()` as plain JSON-able data (for `hakeeper status` / the control API)."""
        from dataclasses import asdict  # noqa: PLC0415

        return [asdict(s) for s in self.status()]

    # -- internals ---------------------------------------------------------------------
    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _add(self, vs: VirtualServer) -> None:
        spec = health_spec(vs)
        health = VirtualServerHealth(spec, rng=self.rng, init_notifies=self.init_notifies)
        reals = {rs_label(r.ip, r.port): r for r in vs.real_servers}
        bound = _Bound(vs.key, vs, health, reals)
        self._bound[vs.key] = bound
        self._apply(bound, health.start(self._now()), force_pool=True)

    def _remove(self, key: VsKey, *, shutdown: bool) -> None:
        bound = self._bound[key]
        for slot in bound.slots.values():
            if slot.inflight is not None:
                slot.inflight.cancel()
                slot.inflight = None
        if shutdown:
            self._apply(bound, bound.health.shutdown())
        bound.live = False
        del self._bound[key]
        if not shutdown and self.on_pool_change is not None:
            self._safe_callback(key, [])

    def _pool(self, b: _Bound) -> Pool:
        out: Pool = []
        sorry = b.vs.sorry_server
        for key, weight in b.health.pool():
            real = b.reals.get(key)
            if real is not None:
                out.append((real, weight))
            elif sorry is not None:
                out.append(
                    (RealServer(sorry.ip, sorry.port, weight, lvs_method=sorry.lvs_method), weight)
                )
        return out

    def _apply(self, b: _Bound, actions: list[Action], *, force_pool: bool = False) -> None:
        changed = force_pool
        vs = vs_label(b.vs)
        for a in actions:
            if isinstance(a, StartProbe):
                self._schedule(b, a)
            elif isinstance(a, MarkDown):
                changed = True
                verb = "Disabling" if a.inhibit else "Removing"
                log.info("%s service [%s] from VS [%s]", verb, a.rs, vs)
            elif isinstance(a, MarkUp):
                changed = True
                log.info("Adding service [%s] to VS [%s]", a.rs, vs)
            elif isinstance(a, SetWeight):
                changed = True
                log.info("Changing weight to %d for rs [%s] VS [%s]", a.weight, a.rs, vs)
            elif isinstance(a, (SorryServerOn, SorryServerOff)):
                changed = True
                on = isinstance(a, SorryServerOn)
                verb, prep = ("Adding", "to") if on else ("Removing", "from")
                log.info("%s sorry server [%s] %s VS [%s]", verb, a.server, prep, vs)
            elif isinstance(a, QuorumUp):
                log.info("Gained quorum %d+%d=%d <= %d for VS [%s]", b.vs.quorum,
                         b.vs.hysteresis, a.threshold, a.weight_sum, vs)  # fmt: skip
            elif isinstance(a, QuorumDown):
                log.info("Lost quorum %d-%d=%d > %d for VS [%s]", b.vs.quorum,
                         b.vs.hysteresis, a.threshold, a.weight_sum, vs)  # fmt: skip
            elif isinstance(a, RunNotify):
                self._notify(b, a)
        if changed and self.on_pool_change is not None:
            pool = self._pool(b)
            if force_pool or pool != b.last_pool:
                b.last_pool = pool
                self._safe_callback(b.key, pool)

    def _safe_callback(self, key: VsKey, pool: Pool) -> None:
        assert self.on_pool_change is not None
        try:
            self.on_pool_change(key, pool)
        except Exception:
            log.exception("on_pool_change failed for VS %s", key)

    # -- timer -------------------------------------------------------------------------
    # A wheel of TICK_S buckets: scheduling is a list append (no heap comparisons); one
    # loop timer fires at the end of the earliest occupied bucket, so a probe starts at
    # most TICK_S after it is due and never before. Pending TCP connects' timeouts live in
    # the same wheel (`_Connect` entries); while connects are pending it fires every tick.
    def _schedule(self, b: _Bound, a: StartProbe) -> None:
        self._schedule_at(b.slot(a.rs, a.checker), a.at)

    def _schedule_at(self, slot: _Slot, at: float) -> None:
        slot.gen = gen = slot.gen + 1
        self._put(int(at * _PER_TICK), (slot, gen))

    def _put(self, tick: int, entry: _Entry) -> None:
        bucket = self._wheel.get(tick)
        if bucket is not None:
            bucket.append(entry)
            return
        self._wheel[tick] = [entry]
        heapq.heappush(self._ticks, tick)
        if tick < self._timer_tick:
            self._arm(tick)

    def _arm(self, tick: int) -> None:
        if not self.running or self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_tick = tick
        self._timer = self._loop.call_at((tick + 1) * TICK_S, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_tick = -1  # "armed": inline results do not re-arm it; done at the end
        now = self._now()
        if self._connects:
            self._poll_connects()
        if self._recheck:
            self._run_rechecks(now)
        last = int(now * _PER_TICK + 1e-6) - 1  # buckets that have fully elapsed
        ticks, wheel = self._ticks, self._wheel
        due: list[list[_Entry]] = []
        while ticks and ticks[0] <= last:
            due.append(wheel.pop(heapq.heappop(ticks)))
        for bucket in due:
            for entry in bucket:
                try:
                    if isinstance(entry, _Connect):
                        entry.expire()
                    else:
                        slot, gen = entry
                        if slot.gen == gen and slot.b.live:
                            self._launch(slot, now)
                except Exception:  # never let one bad probe end the checker loop
                    log.exception("checker timer entry %r", entry)
        self._timer_tick = _NEVER
        tick = ticks[0] if ticks else _NEVER
        if self._connects or self._recheck:  # look at them again at the end of this tick
            tick = min(tick, int(now * _PER_TICK))
        if tick < _NEVER:
            self._arm(tick)

    @staticmethod
    def _plan(slot: _Slot) -> _Plan | None:
        b, rs, i = slot.b, slot.rs, slot.i
        check = b.checker(rs, i)
        if check is None:
            return None
        timeout = b.health.reals[rs].spec.checkers[i].connect_timeout
        plan = _Plan(check, b.target(rs, i), timeout, type(check) is TcpCheck)
        slot.plan = plan
        return plan

    def _launch(self, slot: _Slot, now: float) -> None:
        plan = slot.plan or self._plan(slot)
        if plan is None:
            return
        self.probes_started += 1
        if slot.inflight is not None:
            slot.inflight.cancel()
            slot.inflight = None
        target = plan.target
        if plan.tcp and target.plain:
            self._tcp_connect(slot, target, plan.timeout, now)
            return
        loop = self._loop
        assert loop is not None

        def done(result: ProbeResult) -> None:
            self._on_result(slot, now, result)

        if plan.tcp:
            probe: Probe = TcpProbe(loop, target, plan.timeout, done)
        else:
            weight = slot.b.health.reals[slot.rs].spec.weight
            probe = start_probe(
                loop, plan.check, target, plan.timeout, done, self.track_files, weight
            )
        slot.inflight = probe

    # -- TCP_CHECK fast path -----------------------------------------------------------
    def _tcp_connect(self, slot: _Slot, target: Target, timeout: float, now: float) -> None:
        """keepalived's TCP_CHECK on a bare socket: connect(); a failure in the call is a
        result at once; otherwise connect() is asked again at the end of this tick (done by
        then: same-host or LAN backends; EISCONN or the error in one syscall), and only
        connects still in progress go to the epoll set and their timeout to the wheel."""
        try:
            sock = _socket.socket(target.family, STREAM_NONBLOCK)
        except OSError as exc:
            self._on_result(slot, now, ProbeResult(False, f"socket: {exc.strerror or exc}"))
            return
        err = sock.connect_ex(target.addr)
        if err == _EINPROGRESS and slot.inline:  # same host: connected inside the call
            err = sock.connect_ex(target.addr)
            err = 0 if err == _EISCONN else err
            slot.inline = err != _EALREADY  # else a real network: ask at the tick's end
        if err not in _CONNECTING:
            sock.close()
            self._tcp_result(slot, now, err)
            return
        self._recheck.append((slot, slot.gen, sock, target, timeout, now))
        tick = int(now * _PER_TICK)
        if tick < self._timer_tick:  # (inside _fire the timer is re-armed at its end)
            self._arm(tick)

    def _run_rechecks(self, now: float) -> None:
        batch, self._recheck = self._recheck, []
        for slot, gen, sock, target, timeout, started in batch:
            if slot.gen != gen or not slot.b.live or not self.running:
                sock.close()  # superseded (reload) or removed meanwhile
                continue
            try:
                err = sock.connect_ex(target.addr)
                if err == _EISCONN:
                    err = 0
                if err not in _CONNECTING:
                    sock.close()
                    self._tcp_result(slot, started, err)
                elif now >= started + timeout:
                    sock.close()
                    self._on_result(slot, started, ProbeResult(False, "connect timeout"))
                else:
                    self._watch(slot, sock, started + timeout, started)
            except Exception:  # never let one bad probe end the checker loop
                sock.close()
                log.exception("TCP check %s/%s#%d", slot.b.key, slot.rs, slot.i)

    def _watch(self, slot: _Slot, sock: _socket.socket, deadline: float, started: float) -> None:
        fd = sock.fileno()
        if self._epoll is None:
            self._epoll = select.epoll()
        try:
            self._epoll.register(fd, _EPOLLOUT)
        except OSError as exc:
            sock.close()
            self._on_result(slot, started, ProbeResult(False, f"epoll: {exc.strerror or exc}"))
            return
        pending = _Connect(self, sock, fd, slot, started)
        self._connects[fd] = pending
        slot.inflight = pending
        self._put(int(deadline * _PER_TICK), pending)

    def _tcp_result(self, slot: _Slot, started: float, err: int) -> None:
        if err == 0:
            b = slot.b
            if b.live and self.running:
                at = b.health.steady_ok(slot.rs, slot.i, self._now())
                if at is not None:  # up and still up: no actions, nothing allocated but the entry
                    slot.result = CONNECTED
                    slot.gen = gen = slot.gen + 1
                    self._put(int(at * _PER_TICK), (slot, gen))
                    return
            self._on_result(slot, started, CONNECTED)
            return
        self._on_result(slot, started, ProbeResult(False, os.strerror(err)))

    def _poll_connects(self) -> None:
        """Collect finished connects, once per tick (a result is at most one tick late)."""
        ep = self._epoll
        while ep is not None and self._connects:
            try:
                events = ep.poll(0, _POLL_BATCH)
            except OSError:  # cannot happen on our own open epoll fd; never kill the timer
                return
            self._connect_events(events)
            if len(events) < _POLL_BATCH:
                return

    def _connect_events(self, events: list[tuple[int, int]]) -> None:
        connects = self._connects
        for fd, _ev in events:
            pending = connects.pop(fd, None)
            if pending is None or pending.sock is None:
                continue
            sock = pending.sock
            pending.sock = None
            try:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            except OSError as exc:
                err = exc.errno or errno.EIO
            sock.close()  # closing the last reference also leaves the epoll set
            slot = pending.slot
            if slot.inflight is pending:
                slot.inflight = None
            try:
                self._tcp_result(slot, pending.started, err)
            except Exception:
                log.exception("TCP check result %s/%s#%d", slot.b.key, slot.rs, slot.i)

    def _close_epoll(self) -> None:
        for _slot, _gen, sock, *_rest in self._recheck:
            sock.close()
        self._recheck.clear()
        for pending in list(self._connects.values()):
            pending.cancel()
        self._connects.clear()
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None

    def _on_result(self, slot: _Slot, started: float, result: ProbeResult) -> None:
        slot.inflight = None
        b, rs, i = slot.b, slot.rs, slot.i
        if not b.live or not self.running:
            return
        h = b.health
        real = h.reals.get(rs)
        was_alive = real.alive if real is not None else None
        slot.result = result
        ok = result.ok
        if not ok and (self.log_all_failures or was_alive):
            kind, ip = self._kind(b, rs, i)
            log.info("%s check failed to %s. (%s)", kind, ip, result.detail)
        actions = h.on_result(rs, i, ok, self._now(), weight=result.weight, started=started)
        if ok and was_alive is False and h.alive(rs):
            log.info("%s check succeed to %s.", *self._kind(b, rs, i))
        if len(actions) == 1 and type(actions[0]) is StartProbe:
            self._schedule(b, actions[0])  # the common case: nothing changed, next probe
        else:
            self._apply(b, actions)

    @staticmethod
    def _kind(b: _Bound, rs: str, i: int) -> tuple[str, str]:
        """("TCP", "10.0.0.1") for keepalived's "TCP check failed to 10.0.0.1." lines."""
        check = b.checker(rs, i)
        if check is None:
            return "?", rs
        return _LOG_NAMES.get(check.kind, check.kind.split("_")[0]), str(b.target(rs, i).ip)

    # -- notify scripts ----------------------------------------------------------------
    def _notify(self, b: _Bound, a: RunNotify) -> None:
        script = self._script_model(b, a)
        prev = b.notify_tail
        task = asyncio.get_running_loop().create_task(self._run_notify(prev, script, a))
        b.notify_tail = task
        self._notifies.add(task)
        task.add_done_callback(self._notifies.discard)

    def _script_model(self, b: _Bound, a: RunNotify) -> Script:
        candidates: list[Script | None] = [b.vs.quorum_up, b.vs.quorum_down]
        if a.rs is not None and a.rs in b.reals:
            candidates += [b.reals[a.rs].notify_up, b.reals[a.rs].notify_down]
        for s in candidates:
            if s is not None and s.command == a.script:
                return s
        return Script(a.script)

    async def _run_notify(
        self, prev: asyncio.Task[None] | None, script: Script, a: RunNotify
    ) -> None:
        if prev is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await prev  # notifiers of one virtual server run in order
        try:
            res = await run_command(script.command, self.notify_timeout, script.user, script.group)
        except Exception as exc:  # a notifier must never take the checker down
            res = ScriptResult((script.command,), None, error=f"{type(exc).__name__}: {exc}")
        if not res.ok:
            self.notify_failures += 1
            why = res.error or ("timed out" if res.timed_out else f"exit {res.returncode}")
            log.warning(
                "%s script %r for %s failed: %s", a.event, script.command, a.rs or a.vs, why
            )


def pools_by_label(pools: Mapping[VsKey, Pool]) -> dict[str, list[tuple[str, int]]]:
    """A readable form of `pools()` for logs and tests: {"vs": [("ip:port", weight)]}."""
    return {
        "|".join(k): [(rs_label(r.ip, r.port), w) for r, w in pool] for k, pool in pools.items()
    }
