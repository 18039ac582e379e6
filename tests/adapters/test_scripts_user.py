"""Scripts run as another user alike on the stdlib asyncio loop and on uvloop.

uvloop's subprocess_exec rejects create_subprocess_exec's user=/group=/extra_groups=, which
is what the daemon runs on; run_script and the notify runner share one preexec privilege
drop instead. Each case runs on both loops and checks the ids the script itself sees.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from hakeeper.io.scripts import privilege_drop, run_script
from hakeeper.runtime.notify import exec_with_timeout

T = TypeVar("T")

NOBODY = pwd.getpwnam("nobody")
NOGROUP = grp.getgrgid(NOBODY.pw_gid)
# a group other than nobody's own, to see `user GROUP` take effect
OTHER_GROUP = next(g for g in ("daemon", "bin", "sys", "adm") if g != NOGROUP.gr_name)
OTHER_GID = grp.getgrnam(OTHER_GROUP).gr_gid


def _asyncio_loop() -> asyncio.AbstractEventLoop:
    return asyncio.new_event_loop()


def _uvloop_loop() -> asyncio.AbstractEventLoop:
    uvloop = pytest.importorskip("uvloop")
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


LOOPS = pytest.mark.parametrize(
    "loop_factory", [_asyncio_loop, _uvloop_loop], ids=["asyncio", "uvloop"]
)


def run_on(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    make: Callable[[], Coroutine[Any, Any, T]],
) -> T:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(make())


def ids_seen(output: bytes) -> tuple[int, int, set[int]]:
    uid, gid, groups = output.decode().split("\n")[:3]
    return int(uid), int(gid), {int(g) for g in groups.split()}


ID_SCRIPT = ["/bin/sh", "-c", "id -u; id -g; id -G"]


@pytest.mark.root
@LOOPS
def test_run_script_as_nobody(loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    result = run_on(
        loop_factory, lambda: run_script(ID_SCRIPT, timeout=5, user="nobody", capture=True)
    )
    assert result.ok, result
    # only the target group is left: root's supplementary groups are dropped
    assert ids_seen(result.output) == (NOBODY.pw_uid, NOBODY.pw_gid, {NOBODY.pw_gid})


@pytest.mark.root
@LOOPS
def test_run_script_as_user_and_group(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    result = run_on(
        loop_factory,
        lambda: run_script(ID_SCRIPT, timeout=5, user="nobody", group=OTHER_GROUP, capture=True),
    )
    assert result.ok, result
    assert ids_seen(result.output) == (NOBODY.pw_uid, OTHER_GID, {OTHER_GID})
    numeric = run_on(
        loop_factory,
        lambda: run_script(ID_SCRIPT, timeout=5, user=str(NOBODY.pw_uid), capture=True),
    )
    assert ids_seen(numeric.output)[0] == NOBODY.pw_uid


@pytest.mark.root
@LOOPS
def test_timeout_still_kills_a_script_running_as_nobody(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    result = run_on(
        loop_factory,
        lambda: run_script(["/bin/sleep", "30"], timeout=0.3, user="nobody", grace=0.5),
    )
    assert result.timed_out and result.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(result.pid, 0)


@LOOPS
def test_unknown_user_or_group_is_an_error_not_a_crash(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    bad_user = run_on(loop_factory, lambda: run_script(["/bin/true"], timeout=5, user="no-such-hk"))
    assert bad_user.error and "unknown user" in bad_user.error and not bad_user.ok
    bad_group = run_on(
        loop_factory,
        lambda: run_script(["/bin/true"], timeout=5, user="nobody", group="no-such-hk"),
    )
    assert bad_group.error and "unknown user/group" in bad_group.error


@pytest.mark.root
@LOOPS
def test_notify_exec_uses_the_same_drop(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    # exit status carries the uid check: 0 only when the script runs as nobody
    check = ["/bin/sh", "-c", f'test "$(id -u)" = {NOBODY.pw_uid} && test "$(id -g)" = {OTHER_GID}']

    async def go() -> tuple[int | None, int | None]:
        as_nobody = await exec_with_timeout(check, 5.0, user="nobody", group=OTHER_GROUP)
        as_root = await exec_with_timeout(check, 5.0)
        return as_nobody, as_root

    assert run_on(loop_factory, go) == (0, 1)


def test_privilege_drop_resolves_names_in_the_parent() -> None:
    assert privilege_drop(None, None) is None
    assert callable(privilege_drop("nobody"))
    assert callable(privilege_drop(None, OTHER_GROUP))
    with pytest.raises(KeyError):
        privilege_drop("no-such-hk")
    with pytest.raises(KeyError):
        privilege_drop(None, "no-such-hk")
