"""Notify scripts: keepalived's argument conventions, per-instance ordering, timeouts."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import stat
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from hakeeper.runtime.notify import (
    NotifyRunner,
    NotifyScripts,
    RunAs,
    exec_with_timeout,
    notify_commands,
)


def test_specific_then_generic_with_four_arguments() -> None:
    scripts = NotifyScripts(master="/etc/ka/master.sh 'a b'", notify="/etc/ka/notify.sh x")
    cmds = notify_commands(scripts, "INSTANCE", "VI_1", "MASTER", 150)
    assert cmds == [
        ["/etc/ka/master.sh", "a b"],
        ["/etc/ka/notify.sh", "x", "INSTANCE", "VI_1", "MASTER", "150"],
    ]


def test_group_and_stop() -> None:
    scripts = NotifyScripts(stop="/s", notify="/n")
    assert notify_commands(scripts, "GROUP", "G1", "BACKUP", 0) == [
        ["/n", "GROUP", "G1", "BACKUP", "0"]
    ]
    assert notify_commands(scripts, "INSTANCE", "VI_1", "STOP", 100)[0] == ["/s"]


def test_nothing_configured() -> None:
    assert notify_commands(NotifyScripts(), "INSTANCE", "VI", "FAULT", 1) == []
    assert NotifyScripts().empty


def test_runner_keeps_order_per_instance() -> None:
    log: list[tuple[str, ...]] = []

    async def fake_exec(argv: Sequence[str], timeout: float) -> int | None:
        await asyncio.sleep(0.01 if argv[-2] == "MASTER" else 0)
        log.append(tuple(argv))
        return 0

    async def go() -> NotifyRunner:
        runner = NotifyRunner(fake_exec)
        scripts = NotifyScripts(notify="/n")
        for state in ("BACKUP", "MASTER", "FAULT", "BACKUP"):
            runner.transition(scripts, "INSTANCE", "VI_1", state, 100)
        assert await runner.wait_idle(5.0)
        return runner

    runner = asyncio.run(go())
    assert [e[-2] for e in log] == ["BACKUP", "MASTER", "FAULT", "BACKUP"]
    assert runner.ran == 4 and runner.failed == 0


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_real_script_gets_arguments(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    script = _script(tmp_path, "n.sh", f'echo "$@" >> {out}\n')

    async def go() -> None:
        runner = NotifyRunner()
        runner.transition(NotifyScripts(notify=script), "INSTANCE", "VI_1", "MASTER", 120)
        assert await runner.wait_idle(10.0)

    asyncio.run(go())
    assert out.read_text() == "INSTANCE VI_1 MASTER 120\n"


def test_timeout_kills_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = _script(tmp_path, "slow.sh", f"sleep 30 &\necho $! > {pidfile}\nwait\n")

    async def go() -> int | None:
        return await exec_with_timeout([script], 0.5)

    assert asyncio.run(go()) is None
    child = int(pidfile.read_text())

    def alive() -> bool:
        # the background sleep was in the killed group; it must be gone (or a zombie for init)
        try:
            return Path(f"/proc/{child}/stat").read_text().split()[2] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False

    deadline = time.monotonic() + 5.0
    while alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive()


def test_missing_script_counts_as_failure(tmp_path: Path) -> None:
    async def go() -> NotifyRunner:
        runner = NotifyRunner()
        runner.transition(
            NotifyScripts(master=str(tmp_path / "absent")), "INSTANCE", "V", "MASTER", 1
        )
        assert await runner.wait_idle(5.0)
        return runner

    runner = asyncio.run(go())
    assert runner.failed == 1


def test_script_runs_as_configured_user() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    work = Path(tempfile.mkdtemp(prefix="hknotify-"))  # tmp_path is not traversable by nobody
    try:
        work.chmod(0o777)
        out = work / "uid.txt"
        script = _script(work, "who.sh", f"id -u > {out}\n")
        Path(script).chmod(0o755)
        scripts = NotifyScripts(master=script, run_as={"master": RunAs("nobody")})

        async def go() -> None:
            runner = NotifyRunner()
            runner.transition(scripts, "INSTANCE", "VI_1", "MASTER", 100)
            assert await runner.wait_idle(10.0)

        asyncio.run(go())
        assert int(out.read_text()) == pwd.getpwnam("nobody").pw_uid
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_unknown_user_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    async def go() -> int | None:
        return await exec_with_timeout(["/bin/true"], 5.0, user="no-such-user-hk")

    assert asyncio.run(go()) is None


@pytest.mark.parametrize("as_nobody", [False, True])
def test_exec_works_on_uvloop(as_nobody: bool) -> None:
    """The daemon runs on uvloop, whose subprocess_exec rejects user=/group= arguments."""
    if as_nobody and os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    uvloop = pytest.importorskip("uvloop")
    kwargs = {"user": "nobody"} if as_nobody else {}

    async def go() -> tuple[int | None, int | None]:
        ok = await exec_with_timeout(["/bin/true"], 5.0, **kwargs)
        bad = await exec_with_timeout(["/bin/false"], 5.0, **kwargs)
        return ok, bad

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(go()) == (0, 1)
