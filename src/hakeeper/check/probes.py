"""Health-check probe I/O: where a checker connects, TCP_CHECK, MISC_CHECK, FILE_CHECK, dispatch.

Follows keepalived's checkers (keepalived.conf(5) "real_server" checker blocks; check_tcp.c,
check_misc.c, check_file.c read for behaviour only): TCP_CHECK is up when a connect to
`connect_ip:connect_port` (default: the real server's ip and port, else the virtual port)
completes within `connect_timeout`, optionally from `bindto`:`bind_port` / `bind_if`;
MISC_CHECK runs `misc_path` with `misc_timeout` (default: delay_loop) and maps its exit
status with `policy.misc_exit_result`; FILE_CHECK reads the integer in a `track_file`.
BFD_CHECK needs a BFD daemon this project does not have: it reports "unsupported" (down).

Every probe is non-blocking on the caller's loop and ends by calling `done(ProbeResult)`
exactly once. TCP_CHECK is a bare callback probe (one socket, one writer callback, one timer
handle, no task); the engine runs plain TCP_CHECKs (no bind options) on a leaner path of its
own and uses `TcpProbe` for the others. The protocol probes (HTTP/SSL/SMTP in
`probe_stream`, PING/UDP/DNS in `probe_dgram`) run as tasks under one deadline.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hakeeper.check.policy import misc_exit_result
from hakeeper.conf.model import (
    BfdCheck,
    Checker,
    CheckerCommon,
    FileCheck,
    MiscCheck,
    RealServer,
    TcpCheck,
    TrackFile,
    VirtualServer,
)
from hakeeper.io.scripts import ScriptResult, run_script, split_command

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """How one probe ended: `ok`, a short human reason, and an optional dynamic weight.

    `weight` follows `VirtualServerHealth.on_result`: None = unchanged, -1 = configured.
    """

    ok: bool
    detail: str = ""
    weight: int | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """Where and from where one checker probes."""

    ip: IPAddress
    port: int | None
    bindto: IPAddress | None = None
    bind_port: int | None = None
    bind_if: str | None = None
    addr: tuple[str, int] = field(init=False, compare=False, repr=False)
    family: int = field(init=False, compare=False, repr=False)
    plain: bool = field(init=False, compare=False, repr=False)  # no bind options

    def __post_init__(self) -> None:
        # computed once: probes run thousands of times per second against the same target
        object.__setattr__(self, "addr", (str(self.ip), self.port or 0))
        fam = socket.AF_INET6 if self.ip.version == 6 else socket.AF_INET
        object.__setattr__(self, "family", fam)
        plain = self.bindto is None and not self.bind_port and not self.bind_if
        object.__setattr__(self, "plain", plain)

    def sockaddr(self, port: int | None = None) -> tuple[str, int]:
        return self.addr if port is None else (self.addr[0], port)

    def label(self) -> str:
        host = f"[{self.ip}]" if self.ip.version == 6 else str(self.ip)
        return f"{host}:{self.port}" if self.port else host


def target_for(vs: VirtualServer, rs: RealServer, common: CheckerCommon | None) -> Target:
    """keepalived's defaults: connect_ip = RS ip, connect_port = RS port, else the VS port."""
    port = rs.port if rs.port else vs.port
    if common is None:
        return Target(rs.ip, port)
    return Target(
        common.connect_ip or rs.ip,
        common.connect_port or port,
        common.bindto,
        common.bind_port,
        common.bind_if,
    )


def open_socket(target: Target, kind: int, proto: int = 0) -> socket.socket:
    """A non-blocking socket bound as the checker asks (bindto / bind_port / bind_if)."""
    sock = socket.socket(target.family, kind, proto)
    try:
        sock.setblocking(False)
        if target.plain:
            return sock
        if target.bind_if:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_BINDTODEVICE, target.bind_if.encode() + b"\0"
            )
        if target.bindto is not None or target.bind_port:
            if target.bind_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            any_ip = "::" if target.family == socket.AF_INET6 else "0.0.0.0"
            host = str(target.bindto) if target.bindto is not None else any_ip
            sock.bind((host, target.bind_port or 0))
    except BaseException:
        sock.close()
        raise
    return sock


Done = Callable[[ProbeResult], None]
CONNECTED = ProbeResult(True, "connected")
STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC


class Probe:
    """A running probe; `cancel()` ends it without calling `done`."""

    __slots__ = ()

    def cancel(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


# ------------------------------------------------------------------------------ TCP_CHECK


def established(sock: _socket.socket) -> bool:
    """One cheap syscall instead of a poller registration when connect() already finished."""
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


class TcpProbe(Probe):
    """Non-blocking connect with a writer callback and a timer: no task, no coroutine."""

    __slots__ = ("_done", "_fd", "_loop", "_sock", "_timer", "early")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        target: Target,
        timeout: float,
        done: Done,
        *,
        inline: bool = False,
    ) -> None:
        """With `inline`, a result known before returning (a connect() that completed or
        failed in-call) is left in `early` instead of being delivered through `done`."""
        self._loop = loop
        self._done: Done | None = done
        self._sock: _socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._fd = -1
        self.early: ProbeResult | None = None
        try:
            if target.plain:  # the C socket type: no Python-level __init__ per probe
                sock = _socket.socket(target.family, STREAM_NONBLOCK)
            else:
                sock = open_socket(target, socket.SOCK_STREAM)
        except OSError as exc:
            loop.call_soon(self._finish, False, f"socket: {exc.strerror or exc}")
            return
        self._sock = sock
        err = sock.connect_ex(target.addr)
        if err == errno.EINPROGRESS and established(sock):
            err = 0  # same-host backends: the handshake completed inside connect()
        if err == 0 and inline:
            sock.close()
            self._sock = None
            self._done = None
            self.early = CONNECTED
        elif err == 0:
            loop.call_soon(self._finish, True, "connected")
        elif err == errno.EINPROGRESS:
            self._fd = sock.fileno()
            loop.add_writer(self._fd, self._writable)
            self._timer = loop.call_later(timeout, self._timed_out)
        else:
            loop.call_soon(self._finish, False, os.strerror(err))

    def _writable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err == 0:
            self._finish(True, "connected")
        else:
            self._finish(False, os.strerror(err))

    def _timed_out(self) -> None:
        self._timer = None
        self._finish(False, "connect timeout")

    def _close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_writer(self._fd)
            self._fd = -1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _finish(self, ok: bool, detail: str) -> None:
        self._close()
        done, self._done = self._done, None
        if done is not None:
            done(CONNECTED if ok else ProbeResult(ok, detail))

    def cancel(self) -> None:
        self._close()
        self._done = None


# --------------------------------------------------------------------------- task probes


class TaskProbe(Probe):
    """A coroutine probe under one deadline; errors become a failed result, never raise."""

    __slots__ = ("_done", "_task")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        make: Callable[[], Awaitable[ProbeResult]],
        timeout: float,
        done: Done,
        what: str = "timeout",
    ) -> None:
        self._done: Done | None = done
        # the coroutine is made inside the task: a probe cancelled before it ever ran
        # leaves no never-awaited coroutine behind
        self._task = loop.create_task(self._run(make, timeout, what))

    async def _run(
        self, make: Callable[[], Awaitable[ProbeResult]], timeout: float, what: str
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                result = await make()
        except TimeoutError:
            result = ProbeResult(False, what)
        except OSError as exc:
            result = ProbeResult(False, exc.strerror or str(exc))
        except Exception as exc:  # a probe bug must not end the checker loop
            log.exception("probe failed unexpectedly")
            result = ProbeResult(False, f"{type(exc).__name__}: {exc}")
        done, self._done = self._done, None
        if done is not None:
            done(result)

    def cancel(self) -> None:
        self._done = None
        self._task.cancel()


# ----------------------------------------------------------------------------- MISC/FILE


async def run_command(
    command: str, timeout: float, user: str | None = None, group: str | None = None
) -> ScriptResult:
    """run_script, except that `user`/`group` switch through a preexec function (uvloop,
    which the daemon runs on, rejects create_subprocess_exec's user=/group=)."""
    if not user and not group:
        return await run_script(command, timeout=timeout)
    from hakeeper.runtime.notify import exec_with_timeout  # noqa: PLC0415

    argv = tuple(split_command(command))
    status = await exec_with_timeout(argv, timeout, user=user, group=group)
    if status is None:
        return ScriptResult(argv, None, error=f"did not run as {user}/{group} or timed out")
    if status < 0:
        return ScriptResult(argv, None, signal=-status)
    return ScriptResult(argv, status)


async def misc_probe(check: MiscCheck, timeout: float) -> ProbeResult:
    """Run misc_path; exit status -> (ok, weight) like keepalived's misc_dynamic."""
    result = await run_command(check.misc_path, timeout, check.user, check.group)
    if result.error:
        return ProbeResult(False, result.error)
    if result.timed_out:
        return ProbeResult(False, f"timed out after {timeout:g}s")
    if result.returncode is None:
        return ProbeResult(False, f"killed by signal {result.signal}")
    ok, weight = misc_exit_result(result.returncode, check.misc_dynamic)
    return ProbeResult(ok, f"exit status {result.returncode}", weight)


def file_result(
    check: FileCheck, track: TrackFile | None, text: str | None, rs_weight: int = 1
) -> ProbeResult:
    """FILE_CHECK from the file's contents (keepalived.conf(5) `FILE_CHECK` / `track_file`).

    The value (an integer; unreadable or empty = 0) times `weight` (negated with `reverse`)
    gives a result; -254 or below is down. With `dynamic` the result is added to the real
    server's configured weight (never below 0); otherwise the server is simply up.
    """
    if track is None:
        return ProbeResult(False, f"no track_file {check.track_file!r}")
    words = (text or "").split()
    try:
        value = int(words[0]) if words else 0
    except ValueError:
        value = 0
    result = value * check.weight * (-1 if check.reverse else 1)
    if result <= -254:
        return ProbeResult(False, f"file value {value}")
    if check.dynamic:
        return ProbeResult(True, f"file value {value}", max(0, rs_weight + result))
    return ProbeResult(True, f"file value {value}")


async def file_probe(check: FileCheck, track: TrackFile | None, rs_weight: int) -> ProbeResult:
    text: str | None = None
    if track is not None:
        try:
            text = await asyncio.to_thread(_read_small, track.file)
        except OSError:
            text = None
    return file_result(check, track, text, rs_weight)


def _read_small(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read(64)


# ------------------------------------------------------------------------------ dispatch


def start_probe(  # noqa: PLR0917
    loop: asyncio.AbstractEventLoop,
    check: Checker,
    target: Target,
    timeout: float,
    done: Done,
    track_files: dict[str, TrackFile] | None = None,
    rs_weight: int = 1,
) -> Probe:
    """Start the probe for one checker; `done` is called once with its result."""
    if isinstance(check, TcpCheck):
        return TcpProbe(loop, target, timeout, done)
    if isinstance(check, MiscCheck):
        misc_timeout = check.misc_timeout or check.common.delay_loop
        # run_script already bounds the script; the outer deadline covers its reaping
        return TaskProbe(loop, lambda: misc_probe(check, misc_timeout), misc_timeout + 5.0, done)
    if isinstance(check, FileCheck):
        track = (track_files or {}).get(check.track_file)
        return TaskProbe(loop, lambda: file_probe(check, track, rs_weight), 5.0, done)
    if isinstance(check, BfdCheck):
        return TaskProbe(
            loop, lambda: _unsupported("BFD_CHECK needs a BFD daemon (unsupported)"), 1, done
        )
    from hakeeper.check import probe_dgram, probe_stream  # noqa: PLC0415

    make = probe_stream.factory_for(check, target, timeout) or probe_dgram.factory_for(
        check, target, timeout
    )
    if make is None:
        why = f"{check.kind} unsupported"
        return TaskProbe(loop, lambda: _unsupported(why), 1, done)
    # the coroutine watches `timeout` itself (UDP_CHECK: silence means no ICMP error)
    return TaskProbe(loop, make, timeout + 0.5, done)


async def _unsupported(why: str) -> ProbeResult:
    return ProbeResult(False, why)
