"""Lab processes: `hakeeper run` or keepalived per LB node, nginx, and `ip monitor` watchers.

Owns starting each process inside its namespace through `Lab.popen` (own session, tracked,
ended by PID), reading its output in a thread that stamps every line with
`time.monotonic()` on arrival (log timestamps have one-second resolution; the timeline
needs milliseconds), and turning "Entering MASTER STATE"-style lines (both daemons log
keepalived's wording) and `ip monitor address` lines into timeline events.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hakeeper.lab.netns import Lab, wait_until

KEEPALIVED = shutil.which("keepalived", path="/usr/sbin:/sbin:/usr/bin") or "keepalived"
NGINX = shutil.which("nginx", path="/usr/sbin:/sbin:/usr/bin") or "nginx"
STATE_RE = re.compile(r"Entering (MASTER|BACKUP|FAULT) STATE")
KINDS = ("hakeeper", "keepalived")


@dataclass(frozen=True)
class Line:
    """One output line and the monotonic time it was read."""

    t: float
    text: str


class LineReader:
    """Reads a process's stdout in a thread, stamping lines; optional copy to a file."""

    def __init__(self, stream: IO[bytes], copy_to: Path | None = None) -> None:
        self.lines: list[Line] = []
        self._lock = threading.Lock()
        self._copy = copy_to.open("a") if copy_to is not None else None
        self._thread = threading.Thread(target=self._loop, args=(stream,), daemon=True)
        self._thread.start()

    def _loop(self, stream: IO[bytes]) -> None:
        try:
            for raw in iter(stream.readline, b""):
                now = time.monotonic()
                text = raw.decode("utf-8", "replace").rstrip("\n")
                with self._lock:
                    self.lines.append(Line(now, text))
                if self._copy is not None:
                    self._copy.write(text + "\n")
                    self._copy.flush()
        except (OSError, ValueError):
            pass
        finally:
            if self._copy is not None:
                with contextlib.suppress(OSError):
                    self._copy.close()

    def snapshot(self) -> list[Line]:
        with self._lock:
            return list(self.lines)

    def join(self, timeout: float = 2.0) -> None:
        self._thread.join(timeout)


class VrrpDaemon:
    """One VRRP daemon (hakeeper or keepalived) on one LB node; files live in `workdir`."""

    def __init__(self, lab: Lab, ns: str, name: str, kind: str, workdir: Path) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown daemon {kind!r}, expected one of {KINDS}")
        self.lab = lab
        self.ns = ns
        self.name = name
        self.kind = kind
        self.workdir = workdir
        self.conf = workdir / f"{name}.keepalived.conf"
        self.log = workdir / f"{name}.{kind}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader: LineReader | None = None
        self.started_at = 0.0

    def argv(self) -> list[str]:
        pids = self.pid_files()
        if self.kind == "keepalived":
            return [
                KEEPALIVED, "-n", "-l", "-D", "-P", "-f", str(self.conf),
                "-p", str(pids[0]), "-r", str(pids[1]),
            ]  # fmt: skip
        return [
            sys.executable, "-m", "hakeeper", "run", "-n", "-l", "-f", str(self.conf),
            "--control", str(self.workdir / f"{self.name}.sock"), "-p", str(pids[0]),
        ]  # fmt: skip

    def pid_files(self) -> list[Path]:
        w = self.workdir
        if self.kind == "keepalived":
            return [w / f"{self.name}.ka.pid", w / f"{self.name}.ka_vrrp.pid"]
        return [w / f"{self.name}.hk.pid"]

    def start(self, conf_text: str | None = None) -> None:
        """Start the daemon; stale PID files go first, as after a reboot (/run is tmpfs).

        A killed keepalived's children can linger as zombies when PID 1 does not reap,
        and keepalived then refuses to start ("daemon is already running").
        """
        if conf_text is not None:
            self.conf.write_text(conf_text)
        for path in self.pid_files():
            path.unlink(missing_ok=True)
        self.started_at = time.monotonic()
        self.proc = self.lab.popen(
            self.ns, self.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert self.proc.stdout is not None
        self.reader = LineReader(self.proc.stdout, self.log)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the daemon's process group (keepalived's parent and children too)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def terminate(self) -> None:
        """SIGTERM to the daemon itself (keepalived's parent forwards it to its children)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)

    def kill(self) -> None:
        """A crash: freeze the whole group first (no last words), then SIGKILL it."""
        self.signal_group(signal.SIGSTOP)
        self.signal_group(signal.SIGKILL)

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful stop and wait (SIGKILL after `timeout`); idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.proc.wait(timeout=2.0)
        else:
            self.signal_group(signal.SIGKILL)  # children of a killed keepalived
        if self.reader is not None:
            self.reader.join()
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()

    def wait_exit(self, timeout: float = 5.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def states(self) -> list[tuple[float, str]]:
        """(monotonic time, state) for every state-change line so far."""
        if self.reader is None:
            return []
        out = []
        for line in self.reader.snapshot():
            m = STATE_RE.search(line.text)
            if m is not None:
                out.append((line.t, m.group(1)))
        return out

    def state(self) -> str:
        got = self.states()
        return got[-1][1] if got else "INIT"

    def wait_state(self, state: str, timeout: float = 10.0) -> float:
        """Wait for the daemon to log `state` (the latest state line); return its time."""

        def check() -> float | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} ({self.kind}) exited: see {self.log}")
            got = self.states()
            return got[-1][0] if got and got[-1][1] == state else None

        return float(wait_until(check, timeout=timeout, what=f"{self.name} {state}"))

    def lines(self) -> list[Line]:
        return self.reader.snapshot() if self.reader is not None else []


class AddressWatch:
    """`ip -ts monitor address` in a namespace: stamped add/delete events of one address."""

    def __init__(self, lab: Lab, ns: str, addr: str) -> None:
        self.addr = addr
        self.proc = lab.popen(
            ns, ["ip", "-o", "monitor", "address"], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.reader = LineReader(self.proc.stdout)
        self._lab = lab

    def events(self) -> list[tuple[float, bool]]:
        """(time, present) for each add (True) or delete (False) of `addr`."""
        out = []
        needle = f" {self.addr}/"
        for line in self.reader.snapshot():
            if needle in line.text:
                out.append((line.t, not line.text.startswith("Deleted")))
        return out

    def close(self) -> None:
        self._lab.stop(self.proc, timeout=1.0)


def start_nginx(lab: Lab, ns: str, conf: Path) -> subprocess.Popen[bytes]:
    """nginx in the foreground (`daemon off` in the conf), tracked by the lab."""
    proc = lab.popen(ns, [NGINX, "-c", str(conf)], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)  # fmt: skip
    return proc


def wait_port(lab: Lab, ns: str, port: int = 80, timeout: float = 5.0) -> None:
    """Wait until something listens on TCP `port` in `ns` (`ss -ltn`)."""

    def listening() -> bool:
        out = lab.run(ns, ["ss", "-Hltn", f"sport = :{port}"], check=False).stdout
        return bool(out.strip())

    wait_until(listening, timeout=timeout, interval=0.05, what=f"port {port} in {ns}")


def first_after(events: list[tuple[float, Any]], t0: float, pred: Callable[[Any], bool]) -> float:
    """The first event time >= t0 whose value satisfies `pred`; -1.0 if none."""
    for t, value in events:
        if t >= t0 and pred(value):
            return t
    return -1.0
