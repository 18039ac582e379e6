"""Run vrrp_script / MISC_CHECK / notify commands as real subprocesses without blocking asyncio.

Owns process handling for keepalived's script features (keepalived.conf(5) `vrrp_script`,
`MISC_CHECK`, `notify*`, `script_user`): the command line is split like a shell would
(shlex, so `"/path with space/chk" arg` works as in keepalived's quoted scripts), it runs
in its own session so a timeout can end the whole process group (SIGTERM, then SIGKILL
after a grace period), optionally as another `user [group]` (switched by one preexec
function, `privilege_drop`, so it works alike on uvloop and the stdlib loop; notify scripts
use it too), with stdin from /dev/null and output discarded unless asked for. The result
carries the exit status, the signal that ended it, and whether it timed out; interpreting
it (rise/fall, weight) is the caller's.
`exec_status` matches the `Exec` hook of `hakeeper.runtime.notify.NotifyRunner`.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import shlex
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 1.0
MAX_OUTPUT = 64 * 1024


@dataclass(frozen=True)
class ScriptResult:
    """How one run ended."""

    argv: tuple[str, ...]
    returncode: int | None  # exit status; None if it never started or timed out
    signal: int | None = None  # the signal that ended it, if any
    timed_out: bool = False
    error: str | None = None  # could not start (ENOENT, EACCES, unknown user, ...)
    output: bytes = b""  # stdout+stderr (first 64 KiB) when capture=True
    pid: int | None = None

    @property
    def ok(self) -> bool:
        """keepalived's success: exit status 0 within the timeout."""
        return self.returncode == 0 and not self.timed_out


def split_command(command: str | Sequence[str]) -> list[str]:
    """A config `script "..."` line to argv (shlex rules); sequences pass through."""
    if isinstance(command, str):
        return shlex.split(command)
    return list(command)


@dataclass(frozen=True)
class RunAs:
    """`user [group]` resolved to ids (group defaults to the user's primary group)."""

    uid: int
    gid: int
    name: str

    @classmethod
    def resolve(cls, user: str, group: str | None = None) -> RunAs:
        pw = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
        gid = pw.pw_gid if group is None else _gid(group)
        return cls(uid=pw.pw_uid, gid=gid, name=pw.pw_name)

    def preexec(self) -> Callable[[], None]:
        return _switch_to(self.uid, self.gid)


def _gid(group: str) -> int:
    return grp.getgrnam(group).gr_gid if not group.isdigit() else int(group)


def privilege_drop(user: str | None, group: str | None = None) -> Callable[[], None] | None:
    """A preexec function running the child as `user [group]`, or None when neither is set.

    Names are resolved now, in the parent (KeyError/ValueError when unknown), so the child
    only makes system calls: supplementary groups become just the target group, then the
    gid, then the uid (in that order, while it still may). A preexec function rather than
    create_subprocess_exec's user=/group=/extra_groups=, which uvloop rejects: the same
    code path runs on the stdlib loop and on uvloop. `group` alone changes only the group.
    """
    if user is not None:
        return RunAs.resolve(user, group).preexec()
    if group is not None:
        return _switch_to(None, _gid(group))
    return None


def _switch_to(uid: int | None, gid: int) -> Callable[[], None]:
    def switch() -> None:
        os.setgroups([gid])
        os.setgid(gid)
        if uid is not None:
            os.setuid(uid)

    return switch


async def run_script(
    command: str | Sequence[str],
    *,
    timeout: float,
    user: str | None = None,
    group: str | None = None,
    env: dict[str, str] | None = None,
    capture: bool = False,
    grace: float = DEFAULT_GRACE_S,
) -> ScriptResult:
    """Run one command to completion or until `timeout` (then its process group is killed)."""
    argv = split_command(command)
    if not argv:
        return ScriptResult((), None, error="empty command")
    try:
        preexec = privilege_drop(user, group)
    except (KeyError, ValueError) as exc:
        return ScriptResult(tuple(argv), None, error=f"unknown user/group: {exc}")
    out = asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT if capture else asyncio.subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            preexec_fn=preexec,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        # SubprocessError: the privilege drop failed in the child (e.g. not root)
        return ScriptResult(tuple(argv), None, error=f"{type(exc).__name__}: {exc}")
    output = b""
    timed_out = False
    try:
        if capture:
            assert proc.stdout is not None
            output = await asyncio.wait_for(_read_bounded(proc.stdout), timeout)
            await asyncio.wait_for(proc.wait(), timeout)
        else:
            await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        timed_out = True
        await _end_group(proc, grace)
    except asyncio.CancelledError:
        await asyncio.shield(_end_group(proc, grace))
        raise
    rc = proc.returncode
    if rc is not None and rc < 0:
        return ScriptResult(tuple(argv), None, -rc, timed_out, None, output, proc.pid)
    return ScriptResult(
        tuple(argv), None if timed_out else rc, None, timed_out, None, output, proc.pid
    )


async def _read_bounded(stream: asyncio.StreamReader) -> bytes:
    data = bytearray()
    while chunk := await stream.read(4096):
        if len(data) < MAX_OUTPUT:
            data += chunk[: MAX_OUTPUT - len(data)]
    return bytes(data)


async def _end_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the process group (the script's own session), SIGKILL after `grace`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            continue
        if sig == signal.SIGTERM:
            # the leader is gone; make sure nothing it forked in its group survives
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        return


async def exec_status(argv: Sequence[str], timeout: float) -> int | None:
    """`Exec` hook for NotifyRunner: exit status, or None if it could not run or timed out."""
    result = await run_script(argv, timeout=timeout)
    if result.error:
        log.warning("script %s: %s", shlex.join(result.argv), result.error)
    elif result.timed_out:
        log.warning("script %s timed out after %.1fs", shlex.join(result.argv), timeout)
    return result.returncode


class SerialRunner:
    """One FIFO per key (instance name): commands of one key run strictly in order."""

    def __init__(self, *, timeout: float, max_pending: int = 256) -> None:
        self.timeout = timeout
        self.max_pending = max_pending
        self.dropped = 0
        self.results: list[ScriptResult] = []
        self._queues: dict[str, asyncio.Queue[list[str]]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def submit(self, key: str, command: str | Sequence[str]) -> bool:
        """Queue a command for `key`; False (counted) if that queue is full."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue(self.max_pending)
            self._tasks[key] = asyncio.get_running_loop().create_task(self._drain(key, queue))
        try:
            queue.put_nowait(split_command(command))
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        return True

    async def _drain(self, key: str, queue: asyncio.Queue[list[str]]) -> None:
        while True:
            argv = await queue.get()
            try:
                self.results.append(await run_script(argv, timeout=self.timeout))
                del self.results[:-256]
            except Exception:
                log.exception("script runner for %s", key)
            finally:
                queue.task_done()

    async def join(self, timeout: float) -> bool:
        """Wait until every queue is empty; False at the deadline."""
        try:
            await asyncio.wait_for(
                asyncio.gather(*(q.join() for q in self._queues.values())), timeout
            )
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._queues.clear()
