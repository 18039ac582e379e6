"""Health verdicts shared from the master's checker with every proxy worker: one byte a server.

nginx Plus keeps health-check state in the upstream's shared-memory `zone`, so one check
serves every worker and a new worker starts from the current state. Here the master (the
process that owns the listeners and forks the workers) runs each check once
(`hakeeper.proxy.health.HealthHub`) and writes each server's state into a `HealthTable`:
an anonymous `MAP_SHARED` mmap created before the first worker is forked, so every worker
(the first ones, respawned ones, those of a reload) maps the same pages. Byte 8 + slot is
one server (UNKNOWN, UP, DOWN or CHECKING = `mandatory` and not checked yet); bytes 0-3
are a generation counter the master bumps after every change. A worker
(`WorkerHealth`) reads the counter on a timer (every POLL_S) and scans the slots only
when it moved, then calls `set_health` on its own balancer copy for the servers that
changed: nothing is added to the per-request path. Slots are given out by check key
(upstream name, server address, check spec) and a freed slot is reused only one
reconcile later, so a draining old worker never reads another server's state in it.

`HubThread` hosts the hub's asyncio loop in a thread of a master that has none (`hakeeper
run --nginx` waits in `sigwait`).
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import struct
import threading
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from hakeeper.balance.upstream import UpstreamGroup

log = logging.getLogger("hakeeper.proxy.health")

UNKNOWN, UP, DOWN, CHECKING = 0, 1, 2, 3
#: How often a worker looks at the generation counter.
POLL_S = 0.05
_HEADER = 8
_GEN = struct.Struct("=I")
T = TypeVar("T")

Key = Hashable


class HealthTable:
    """The shared bytes plus the master's slot book (copied into workers by fork)."""

    def __init__(self, capacity: int = 65536) -> None:
        self.capacity = capacity
        self.mem = mmap.mmap(-1, _HEADER + capacity)  # MAP_SHARED | MAP_ANONYMOUS
        self.slots: dict[Key, int] = {}
        self._free: list[int] = []
        self._quarantine: list[int] = []
        self._next = 0

    # -- master side ----------------------------------------------------------------------
    def assign(self, keys: Iterable[Key]) -> dict[Key, int]:
        """Keep the slots of `keys` already known, give new ones a slot, free the rest
        (reusable from the next call on). Returns the slot of every key."""
        wanted = list(dict.fromkeys(keys))
        keep = set(wanted)
        self._free.extend(self._quarantine)
        self._quarantine = [s for k, s in self.slots.items() if k not in keep]
        self.slots = {k: s for k, s in self.slots.items() if k in keep}
        for key in wanted:
            if key not in self.slots:
                self.slots[key] = self._take()
        return dict(self.slots)

    def _take(self) -> int:
        if self._free:
            return self._free.pop()
        if self._next >= self.capacity:
            raise RuntimeError(f"more than {self.capacity} health-checked servers")
        self._next += 1
        return self._next - 1

    def set(self, slot: int, state: int) -> None:
        if self.mem[_HEADER + slot] != state:
            self.mem[_HEADER + slot] = state
            self.bump()

    def bump(self) -> None:
        _GEN.pack_into(self.mem, 0, (self.generation() + 1) & 0xFFFFFFFF)

    # -- both sides ------------------------------------------------------------------------
    def get(self, slot: int) -> int:
        return self.mem[_HEADER + slot]

    def generation(self) -> int:
        gen: int = _GEN.unpack_from(self.mem, 0)[0]
        return gen

    def close(self) -> None:
        self.mem.close()


@dataclass(slots=True)
class _Followed:
    group: UpstreamGroup[Any]
    peer: str
    slot: int
    seen: int


class WorkerHealth:
    """A worker's view: applies the table's states to its balancer copies on a timer."""

    def __init__(
        self,
        table: HealthTable,
        bindings: Iterable[tuple[UpstreamGroup[Any], str, Key]],
        loop: asyncio.AbstractEventLoop,
        poll: float = POLL_S,
    ) -> None:
        self.table = table
        self.loop = loop
        self.poll = poll
        self.followed = [
            _Followed(group, peer, table.slots[key], UNKNOWN)
            for group, peer, key in bindings
            if key in table.slots
        ]
        self._gen = -1
        self._timer: asyncio.TimerHandle | None = None
        self.changes = 0

    def start(self) -> None:
        self.sync()
        self._timer = self.loop.call_later(self.poll, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = self.loop.call_later(self.poll, self._tick)
        try:
            self.sync()
        except Exception:  # a bad byte must not stop the timer
            log.exception("health table sync failed")

    def sync(self) -> int:
        """Apply what changed since the last look; returns how many servers changed."""
        gen = self.table.generation()
        if gen == self._gen:
            return 0
        self._gen = gen
        now = self.loop.time()
        changed = 0
        for f in self.followed:
            state = self.table.get(f.slot)
            if state in (f.seen, UNKNOWN):
                continue
            # a server back from DOWN slow-starts; CHECKING -> UP (mandatory's first pass)
            # and a worker's first look do not
            ramp = f.seen == DOWN
            f.seen = state
            if f.group.balancer.set_health(f.peer, state == UP, now, ramp=ramp):
                changed += 1
        self.changes += changed
        return changed


class HubThread:
    """An asyncio loop in a daemon thread, for a master without a loop of its own."""

    def __init__(self, name: str = "hakeeper-health") -> None:
        import uvloop  # noqa: PLC0415 (as the workers: about half the CPU per probe)

        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        """Run `fn(*args)` on the loop's thread and wait for its result."""
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(fn(*args))
            except BaseException as exc:  # handed to the caller
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout)

    def stop(self, cleanup: Callable[[], Any] | None = None, timeout: float = 5.0) -> None:
        """Run `cleanup` (a coroutine function or plain function) on the loop, then stop."""

        async def finish() -> None:
            if cleanup is not None:
                got = cleanup()
                if asyncio.iscoroutine(got):
                    await got
            # let cancelled probe tasks unwind
            await asyncio.sleep(0)

        if self._thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(finish(), self.loop)
            try:
                fut.result(timeout)
            except Exception:
                log.exception("health checker stop failed")
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
