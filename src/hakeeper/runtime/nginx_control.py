"""The runtime view of `hakeeper run --nginx FILE` alone: control socket and metrics endpoint.

That master waits in `sigwait()` (proxy.run) and has no event loop of its own, so its
control socket (`runtime.control`, the same one-line protocol as the VRRP daemon's:
`status`, `metrics`, `ping`) and the optional Prometheus endpoint (`runtime.metrics_http`)
run on one asyncio loop in a daemon thread (`ControlThread`), started after the signals
are blocked so that SIGTERM/SIGHUP still reach the master's `sigwait`. Workers forked
later point the inherited control fds at /dev/null (proxy.server), so a client never
talks to a worker.

`NginxRuntime` is what the control thread reads: the masters (listeners and worker pids),
the stream process, the reload counters the master thread updates, and the health
checker's rows (asked on the checker's own thread). Its `status()` has the shape of the
daemon's status with only an `l7` part, so `hakeeper status` and `runtime.metrics` treat
both alike. Reading is lock-free: the master thread replaces lists, never edits them in
place while the control thread could iterate them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from hakeeper.runtime.control import ControlServer
from hakeeper.runtime.metrics import render_status
from hakeeper.runtime.metrics_http import MetricsHttpServer

log = logging.getLogger("hakeeper.proxy")

START_TIMEOUT = 10.0


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie child not yet reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    end = stat.rfind(b")")
    return end > 0 and stat[end + 2 : end + 3] not in (b"Z", b"X")


class NginxRuntime:
    """What `hakeeper run --nginx` reports; the master thread keeps it up to date."""

    def __init__(self, path: str, health_rows: Callable[[], list[dict[str, Any]]]) -> None:
        self.path = path
        self.health_rows = health_rows
        self.masters: list[Any] = []  # proxy.server.Master
        self.stream: Any = None  # proxy.stream.StreamProcess
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.last_error = ""
        self.started_wall = time.time()
        self.started_mono = time.monotonic()

    def reloaded(self, ok: bool, error: str = "") -> None:
        if ok:
            self.reloads_ok += 1
            self.last_error = ""
        else:
            self.reloads_failed += 1
            self.last_error = error or "reload refused"

    def status(self) -> dict[str, Any]:
        listeners = []
        serving = bool(self.masters)
        for m in list(self.masters):
            pids = [p for p in list(m.pids) if pid_alive(p)]
            serving = serving and bool(pids)
            listeners.append(
                {
                    "listen": f"{m.host}:{m.port}",
                    "workers": pids,
                    "configured_workers": m.workers,
                }
            )
        stream = self.stream
        stream_pid = stream.pid if stream is not None and stream.pid else None
        if stream_pid is not None and not pid_alive(stream_pid):
            stream_pid, serving = None, False
        try:
            health: Any = self.health_rows()
        except Exception as exc:  # the checker thread gone or slow: say so, keep answering
            health = {"error": f"{type(exc).__name__}: {exc}"}
        return {
            "mode": "nginx",
            "pid": os.getpid(),
            "config_file": self.path,
            "uptime": round(time.monotonic() - self.started_mono, 3),
            "l7": {
                "config_file": self.path,
                "serving": serving,
                "listeners": listeners,
                "stream_pid": stream_pid,
                "draining_workers": [],
                "reloads": {
                    "ok": self.reloads_ok,
                    "failed": self.reloads_failed,
                    "last_error": self.last_error,
                },
                "health": health,
            },
        }

    def metrics(self) -> str:
        return render_status(self.status(), now=time.time())

    def handlers(self) -> dict[str, Callable[[], Any]]:
        return {
            "status": self.status,
            "metrics": self.metrics,
            "ping": lambda: {"pong": os.getpid()},
        }


class ControlThread:
    """A control socket and/or metrics endpoint on an asyncio loop in a daemon thread."""

    def __init__(
        self,
        handlers: Mapping[str, Callable[[], Any]],
        *,
        control_path: str | None,
        metrics_addr: tuple[str, int] | None = None,
        render: Callable[[], str] | None = None,
    ) -> None:
        self.control = ControlServer(control_path, handlers) if control_path else None
        self.metrics: MetricsHttpServer | None = None
        if metrics_addr is not None:
            if render is None:
                raise ValueError("a metrics endpoint needs a renderer")
            self.metrics = MetricsHttpServer(metrics_addr[0], metrics_addr[1], render)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="hakeeper-control", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    def start(self) -> list[str]:
        """Open what was asked; returns the errors of the parts that could not open (those
        parts stay closed; the thread keeps serving the others)."""
        self._thread.start()
        errors: list[str] = []
        for part in (self.control, self.metrics):
            if part is None:
                continue
            fut = asyncio.run_coroutine_threadsafe(part.start(), self.loop)
            try:
                fut.result(START_TIMEOUT)
            except Exception as exc:  # OSError, ControlError, a timeout
                errors.append(str(exc))
                if part is self.control:
                    self.control = None
                else:
                    self.metrics = None
        return errors

    def stop(self, timeout: float = 5.0) -> None:
        if not self._thread.is_alive():
            if self._thread.ident is None:  # never started
                self.loop.close()
            return

        async def finish() -> None:
            for part in (self.control, self.metrics):
                if part is not None:
                    await part.close()

        try:
            asyncio.run_coroutine_threadsafe(finish(), self.loop).result(timeout)
        except Exception:
            log.exception("closing the control socket failed")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
