"""Pid file rules, loop selection and the loop-lag watchdog."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hakeeper.runtime.process import (
    LoopWatchdog,
    PidFileError,
    loop_factory,
    remove_pid_file,
    write_pid_file,
)


def test_pid_file_written_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "run" / "hk.pid"
    write_pid_file(str(path))
    assert path.read_text().strip() == str(os.getpid())
    remove_pid_file(str(path))
    assert not path.exists()


def test_stale_pid_file_is_replaced(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    path = tmp_path / "hk.pid"
    path.write_text(f"{proc.pid}\n")
    write_pid_file(str(path))
    assert path.read_text().strip() == str(os.getpid())


def test_live_pid_file_is_refused(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        path = tmp_path / "hk.pid"
        path.write_text(f"{proc.pid}\n")
        with pytest.raises(PidFileError, match="already running"):
            write_pid_file(str(path))
        remove_pid_file(str(path))  # not ours: left alone
        assert path.exists()
    finally:
        proc.kill()
        proc.wait()


def test_uvloop_preferred() -> None:
    loop = loop_factory()()
    try:
        assert "uvloop" in type(loop).__module__
    finally:
        loop.close()
    loop = loop_factory(prefer_uvloop=False)()
    try:
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()


def test_watchdog_sees_a_stall() -> None:
    async def go() -> LoopWatchdog:
        loop = asyncio.get_running_loop()
        dog = LoopWatchdog(loop, interval=0.02, warn_after=0.05)
        dog.start()
        await asyncio.sleep(0.03)
        time.sleep(0.15)  # deliberately block the loop
        deadline = loop.time() + 2.0
        while dog.stalls == 0 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        dog.stop()
        return dog

    dog = asyncio.run(go())
    assert dog.stalls >= 1
    assert dog.max_lag >= 0.08
    assert dog.status()["max_lag_ms"] >= 80
