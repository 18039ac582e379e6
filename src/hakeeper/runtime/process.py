"""Process housekeeping for `hakeeper run`: pid file, fork to background, logging, loop, watchdog.

keepalived(8) behaviours kept: by default the daemon forks into the background
(`-n/--dont-fork` keeps it in the foreground), logs to syslog (facility daemon, or
`-l/--log-console` to stderr), and writes a pid file (`-p/--pid`) that it refuses to
overwrite while the recorded process is alive and removes on a clean exit.
The event loop is uvloop when installed (asyncio otherwise). `LoopWatchdog` measures how
late a periodic timer fires: a loop stalled longer than a fraction of the advert interval
could cost a missed advert, so it is logged (rate-limited) and exported in status.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import logging.handlers
import os
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger("hakeeper.daemon")

LOG_FORMAT_CONSOLE = "%(asctime)s.%(msecs)03d hakeeper[%(process)d]: %(message)s"
LOG_FORMAT_SYSLOG = "hakeeper[%(process)d]: %(message)s"


class PidFileError(Exception):
    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_pid_file(path: str) -> None:
    """Write our pid; refuse if the file names another live process (stale files replaced)."""
    try:
        with open(path, encoding="ascii") as f:
            old = int(f.read().strip() or "0")
    except (FileNotFoundError, ValueError):
        old = 0
    if old and old != os.getpid() and _pid_alive(old):
        raise PidFileError(f"{path}: daemon already running with pid {old}")
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove_pid_file(path: str) -> None:
    """Remove the pid file only if it still holds our pid."""
    try:
        with open(path, encoding="ascii") as f:
            if int(f.read().strip() or "0") != os.getpid():
                return
        os.unlink(path)
    except (OSError, ValueError):
        pass


def daemonize() -> None:
    """Classic double fork: detach from the terminal and session, stdio to /dev/null."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)


def setup_logging(*, console: bool, debug: bool = False) -> None:
    """Console (stderr) or syslog (/dev/log, facility daemon; stderr if unavailable)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    if console:
        handler.setFormatter(logging.Formatter(LOG_FORMAT_CONSOLE, "%Y-%m-%d %H:%M:%S"))
    else:
        try:
            syslog = logging.handlers.SysLogHandler(
                address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON
            )
            syslog.setFormatter(logging.Formatter(LOG_FORMAT_SYSLOG))
            handler = syslog
        except OSError:
            handler.setFormatter(logging.Formatter(LOG_FORMAT_CONSOLE, "%Y-%m-%d %H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def loop_factory(prefer_uvloop: bool = True) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when installed and wanted, else the stdlib one."""
    if prefer_uvloop:
        try:
            import uvloop  # noqa: PLC0415

            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
            return factory
        except ImportError:
            pass
    return asyncio.new_event_loop


class LoopWatchdog:
    """Re-arms a timer every `interval` s and records how late it ran (the loop's lag)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        interval: float = 0.5,
        warn_after: float = 0.05,
        warn_every: float = 10.0,
    ) -> None:
        self.loop = loop
        self.interval = interval
        self.warn_after = warn_after
        self.warn_every = warn_every
        self.max_lag = 0.0
        self.last_lag = 0.0
        self.stalls = 0
        self._due = 0.0
        self._last_warn = -1e9
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._due = self.loop.time() + self.interval
        self._handle = self.loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        now = self.loop.time()
        lag = max(0.0, now - self._due)
        self.last_lag = lag
        self.max_lag = max(self.max_lag, lag)
        if lag > self.warn_after:
            self.stalls += 1
            if now - self._last_warn >= self.warn_every:
                self._last_warn = now
                log.warning(
                    "event loop stalled %.0f ms (adverts may be late; %d stalls so far)",
                    lag * 1000,
                    self.stalls,
                )
        self._due = now + self.interval
        self._handle = self.loop.call_at(self._due, self._tick)

    def status(self) -> dict[str, Any]:
        return {
            "last_lag_ms": round(self.last_lag * 1000, 2),
            "max_lag_ms": round(self.max_lag * 1000, 2),
            "stalls": self.stalls,
            "warn_after_ms": round(self.warn_after * 1000, 1),
        }


def write_json_atomic(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)


def settle_gc() -> None:
    """After (re)loading: move the long-lived config, checker and instance objects out of
    the cyclic collector's sight and collect young objects less often, so a full
    collection never walks thousands of checkers in the middle of an advert interval."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
