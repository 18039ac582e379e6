"""Loop and port helpers shared by the adapter tests (proxy, L4 proxy, checker engine).

`run_bounded` runs one test coroutine on uvloop with a time limit and fails the test on any
error the loop's exception handler saw; `wait_for` / `wait_until` wait on a condition with a
deadline; `free_port` names a loopback port nothing listens on, `hanging_port` one where
connects hang; `run_nginx_once` runs `hakeeper run --nginx` to its exit, `reap` cleans up
a child.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import uvloop


def run_bounded(coro: Coroutine[Any, Any, Any], limit: float) -> Any:
    """Run one test coroutine on uvloop, bounded in time; loop-level errors fail the test."""
    errors: list[dict[str, Any]] = []

    async def bounded() -> Any:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        return await asyncio.wait_for(coro, limit)

    result = uvloop.run(bounded())
    assert not errors, f"errors raised inside the event loop: {errors}"
    return result


async def wait_for(cond: Callable[[], bool], limit: float = 5.0, step: float = 0.01) -> None:
    """Wait until cond() holds; fail after `limit` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(step)


async def wait_until(pred: Callable[[], object], timeout: float, what: str) -> None:
    """Wait until pred() is truthy; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A 127.0.0.1 port of type `kind` that was free a moment ago (bound, then released)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def hanging_port(fillers: int = 3) -> AsyncIterator[int]:
    """A 127.0.0.1 port whose listener never accepts and whose accept queue is full, so a
    new connect there hangs (its SYNs are dropped) until the caller's connect timeout."""
    stuck = socket.socket()
    socks: list[socket.socket] = []
    try:
        stuck.bind(("127.0.0.1", 0))
        stuck.listen(0)
        for _ in range(fillers):
            f = socket.socket()
            socks.append(f)
            f.setblocking(False)
            f.connect_ex(stuck.getsockname())
        await asyncio.sleep(0.05)  # let the fillers' handshakes land in the queue
        yield int(stuck.getsockname()[1])
    finally:
        for f in socks:
            f.close()
        stuck.close()


def run_nginx_once(conf: str) -> subprocess.CompletedProcess[str]:
    """`hakeeper run --nginx conf` to its exit (bounded at 30 s), output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "hakeeper", "run", "--nginx", conf],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def reap(proc: subprocess.Popen[Any]) -> None:
    """Test teardown for a child: kill it if it still runs, close its pipes."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
