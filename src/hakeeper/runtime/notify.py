"""Notify scripts on VRRP transitions, with keepalived's arguments and ordering.

keepalived.conf(5), `notify*` of vrrp_instance and vrrp_sync_group:
* `notify_master` / `notify_backup` / `notify_fault` / `notify_stop` run as configured (the
  command line may carry its own arguments, split like a shell would), no extra arguments;
* `notify` runs after the state-specific script with four arguments appended:
  `INSTANCE|GROUP`, the instance/group name, the target state
  (`MASTER|BACKUP|FAULT|STOP`), and the priority (0 for groups);
* a script configured with `USER [GROUP]` (or global `script_user`) runs as that user;
* `notify_fifo`/`vrrp_notify_fifo` get one ordered line per transition (`FifoNotifier`);
* scripts of one instance or group run strictly in order (one queue each), each bounded by
  a timeout after which its process group is killed; the VRRP loop never waits for them.

`notify_commands` is the pure part; `NotifyRunner` owns the queues. The process runner is
injected (`Exec`) so tests and the daemon can swap it; the default uses asyncio subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import subprocess
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hakeeper.io.scripts import privilege_drop

log = logging.getLogger("hakeeper.notify")

DEFAULT_TIMEOUT = 30.0
MAX_PENDING = 256

Exec = Callable[..., Awaitable[int | None]]
"""`exec_fn(argv, timeout[, user=, group=])`: run argv with a timeout; return the exit status,
or None when it could not run or timed out. `user`/`group` are passed only when configured."""


@dataclass(frozen=True, slots=True)
class RunAs:
    """Who a script runs as (keepalived `script USER [GROUP]` / global `script_user`)."""

    user: str | None = None
    group: str | None = None

    def kwargs(self) -> dict[str, str]:
        out = {}
        if self.user:
            out["user"] = self.user
        if self.group:
            out["group"] = self.group
        return out


@dataclass(frozen=True, slots=True)
class NotifyScripts:
    """The notify command lines of one instance or sync group (None: not configured)."""

    master: str | None = None
    backup: str | None = None
    fault: str | None = None
    stop: str | None = None
    notify: str | None = None
    run_as: dict[str, RunAs] | None = None  # per field name, when not root

    def who(self, field_name: str) -> RunAs:
        return (self.run_as or {}).get(field_name, RunAs())

    @property
    def empty(self) -> bool:
        return not (self.master or self.backup or self.fault or self.stop or self.notify)


def split_command(command: str) -> list[str]:
    """Split a configured script line into argv (shell quoting, no shell)."""
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


def notify_jobs(
    scripts: NotifyScripts, kind: str, name: str, state: str, priority: int
) -> list[tuple[list[str], RunAs]]:
    """(argv, run-as) to run, in order, when `name` (`kind` INSTANCE|GROUP) enters `state`."""
    out: list[tuple[list[str], RunAs]] = []
    field_name = {"MASTER": "master", "BACKUP": "backup", "FAULT": "fault", "STOP": "stop"}.get(
        state
    )
    specific = getattr(scripts, field_name) if field_name else None
    if specific and field_name:
        argv = split_command(specific)
        if argv:
            out.append((argv, scripts.who(field_name)))
    if scripts.notify:
        argv = split_command(scripts.notify)
        if argv:
            out.append(([*argv, kind, name, state, str(priority)], scripts.who("notify")))
    return out


def notify_commands(
    scripts: NotifyScripts, kind: str, name: str, state: str, priority: int
) -> list[list[str]]:
    """The argv lists of `notify_jobs` (what keepalived would exec, in order)."""
    return [argv for argv, _who in notify_jobs(scripts, kind, name, state, priority)]


async def exec_with_timeout(
    argv: Sequence[str], timeout: float, *, user: str | None = None, group: str | None = None
) -> int | None:
    """Default `Exec`: run without a shell in a new session (as `user`/`group` when given),
    kill the whole process group on timeout."""
    extra: dict[str, Any] = {}
    try:
        if user or group:  # not create_subprocess_exec's user=/group=: uvloop rejects them
            extra["preexec_fn"] = privilege_drop(user or None, group or None)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            **extra,
        )
    except (OSError, KeyError, ValueError, subprocess.SubprocessError) as exc:
        log.warning("cannot run %s: %s", argv[0], exc)
        return None
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        log.warning("script %s timed out after %gs, killing it", argv[0], timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 1.0)
        # whatever survived SIGTERM in the group (the script itself or its children) goes now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return None


class NotifyRunner:
    """One ordered queue per instance/group; scripts of different queues run concurrently."""

    def __init__(self, exec_fn: Exec = exec_with_timeout, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._exec = exec_fn
        self.timeout = timeout
        self.ran = 0
        self.failed = 0
        self.dropped = 0
        self._queues: dict[str, deque[tuple[list[str], RunAs]]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def transition(
        self, scripts: NotifyScripts, kind: str, name: str, state: str, priority: int
    ) -> None:
        """Queue the scripts for one transition (no-op when none are configured)."""
        if scripts.empty:
            return
        for argv, who in notify_jobs(scripts, kind, name, state, priority):
            self.submit(f"{kind}:{name}", argv, who)

    def submit(self, key: str, argv: list[str], who: RunAs | None = None) -> None:
        queue = self._queues.setdefault(key, deque())
        if len(queue) >= MAX_PENDING:
            self.dropped += 1
            log.warning("notify queue for %s full, dropping %s", key, argv[0])
            return
        queue.append((argv, who or RunAs()))
        task = self._tasks.get(key)
        if task is None or task.done():
            loop = asyncio.get_running_loop()
            self._tasks[key] = loop.create_task(self._drain(key), name=f"notify-{key}")

    @property
    def busy(self) -> bool:
        return any(not t.done() for t in self._tasks.values())

    async def wait_idle(self, timeout: float) -> bool:
        """Wait for every queued script to finish; False if `timeout` passed first."""
        pending = [t for t in self._tasks.values() if not t.done()]
        if not pending:
            return True
        _done, still = await asyncio.wait(pending, timeout=timeout)
        return not still

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _drain(self, key: str) -> None:
        queue = self._queues[key]
        while queue:
            argv, who = queue.popleft()
            try:
                status = await self._exec(argv, self.timeout, **who.kwargs())
            except Exception:
                log.exception("notify %s crashed", argv[0])
                status = None
            self.ran += 1
            if status != 0:
                self.failed += 1
                log.info("notify %s for %s exited with %s", argv[0], key, status)


class FifoNotifier:
    """keepalived's `notify_fifo` / `vrrp_notify_fifo`: one line per transition, in order.

    Lines read `INSTANCE "VI_1" MASTER 100` and `GROUP "G1" BACKUP`. The FIFO is created
    if missing and opened read-write non-blocking (so opening never waits for a reader and
    a missing reader never blocks the loop); a full pipe drops the line and counts it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.written = 0
        self.dropped = 0
        if not os.path.exists(path):
            os.mkfifo(path, 0o600)
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)

    def transition(self, kind: str, name: str, state: str, priority: int | None) -> None:
        line = f'{kind} "{name}" {state}' + (f" {priority}" if priority is not None else "")
        try:
            os.write(self._fd, (line + "\n").encode())
            self.written += 1
        except OSError:  # EAGAIN: nobody reads and the pipe is full
            self.dropped += 1

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
