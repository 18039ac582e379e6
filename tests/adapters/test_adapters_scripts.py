"""Script runner: exit codes, shlex splitting, timeout kills the whole process group."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from hakeeper.io.scripts import SerialRunner, exec_status, run_script, split_command


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_split_command_follows_shell_quoting() -> None:
    assert split_command("\"/opt/my checks/chk\" --port 80 'a b'") == [
        "/opt/my checks/chk",
        "--port",
        "80",
        "a b",
    ]
    assert split_command(["/bin/true"]) == ["/bin/true"]


@pytest.mark.parametrize("code", [0, 1, 3])
def test_exit_status_is_reported(code: int) -> None:
    result = asyncio.run(run_script(f"/bin/sh -c 'exit {code}'", timeout=5))
    assert (result.returncode, result.timed_out, result.ok) == (code, False, code == 0)


def test_missing_binary_is_an_error_not_an_exception() -> None:
    result = asyncio.run(run_script("/nonexistent/script arg", timeout=5))
    assert result.returncode is None and result.error and not result.ok


def test_capture_output() -> None:
    result = asyncio.run(run_script(["/bin/sh", "-c", "echo out; echo err >&2"], timeout=5,
                                    capture=True))  # fmt: skip
    assert result.output == b"out\nerr\n"


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    """The script and a child it forked are both gone once the timeout fires."""
    pidfile = tmp_path / "child.pid"
    script = f"sleep 30 & echo $! > {pidfile}; wait"
    started = time.monotonic()
    result = asyncio.run(run_script(["/bin/sh", "-c", script], timeout=0.5, grace=0.5))
    elapsed = time.monotonic() - started
    assert result.timed_out and result.returncode is None and not result.ok
    assert elapsed < 5
    assert result.pid is not None and not alive(result.pid)
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 3
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(child)


def test_timeout_escalates_to_sigkill_when_term_is_ignored() -> None:
    script = "trap '' TERM; while :; do sleep 0.05; done"
    result = asyncio.run(run_script(["/bin/sh", "-c", script], timeout=0.3, grace=0.3))
    assert result.timed_out
    assert result.pid is not None and not alive(result.pid)


def test_run_as_user() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to change user")
    result = asyncio.run(run_script(["/usr/bin/id", "-u"], timeout=5, user="nobody",
                                    capture=True))  # fmt: skip
    assert result.ok, result
    assert result.output.strip() == b"65534"
    bad = asyncio.run(run_script(["/usr/bin/id"], timeout=5, user="no-such-user-hk"))
    assert bad.error and "unknown user" in bad.error


def test_exec_status_hook() -> None:
    assert asyncio.run(exec_status(["/bin/sh", "-c", "exit 4"], 5)) == 4
    assert asyncio.run(exec_status(["/bin/sleep", "5"], 0.2)) is None


def test_serial_runner_keeps_order_per_key(tmp_path: Path) -> None:
    log = tmp_path / "log"

    async def scenario() -> list[str]:
        runner = SerialRunner(timeout=5)
        for i in range(4):
            # earlier commands sleep longer: order only holds if they run one after another
            runner.submit("VI_1", [sys.executable, "-c",
                                   f"import time; time.sleep({0.08 - i * 0.02}); "
                                   f"open({str(log)!r}, 'a').write('{i}\\n')"])  # fmt: skip
        assert await runner.join(timeout=10)
        await runner.close()
        return log.read_text().split()

    assert asyncio.run(scenario()) == ["0", "1", "2", "3"]
