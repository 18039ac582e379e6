"""Run Debian's keepalived on a config and read back its verdict and object counts.

The reference for the differential test (test_keepalived_config_diff.py). keepalived is
run inside a throwaway network namespace (`hkref` + random hex) that has the interfaces
the samples and seeds name (eth0-eth3, eth0.1, ens33 as veth pairs), with `PATH` pointing
at an empty directory so no tracked or notify script can be found and run.

* Verdict: `keepalived -t -f FILE -i ID` (config test). Exit 0 = clean; 4 = cannot run;
  5 = config errors reported (keepalived still runs); 6 = scripts without script
  security. Messages look like `(FILE: Line N) text` and are deduplicated by (line, text).
  Some messages depend on the host, not on the file (a script path that does not exist
  here, script security); those are classed as environment noise.
* Counts: `keepalived -n -l -D -d -G -R -P|-C` dumps its parsed configuration to the
  console. The VRRP dump is taken with `-P`, the checker dump with `-C`. This kernel has
  no IPVS, so both runs get `fake_ipvs.so` (LD_PRELOAD, built here with gcc) that makes
  keepalived's IPVS netlink calls succeed without a kernel (the VRRP process needs IPVS
  too when a config asks for the LVS sync daemon). The process is
  stopped (SIGTERM to its own PID, then SIGKILL after a deadline) as soon as the dump
  has been printed.
"""

from __future__ import annotations

import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

KEEPALIVED_CANDIDATES = ("/usr/sbin/keepalived", "/sbin/keepalived")
SHIM_SOURCE = Path(__file__).with_name("fake_ipvs.c")

# veth pairs created in the namespace: every interface name used by a sample or seed.
VETH_PAIRS = (("eth0", "eth1"), ("eth2", "eth3"), ("ens33", "eth0.1"))

TEST_TIMEOUT_S = 20.0
DUMP_DEADLINE_S = 8.0
STOP_GRACE_S = 5.0

_TS_RE = re.compile(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} +\d+ \d\d:\d\d:\d\d \d{4}: ")
_MSG_RE = re.compile(r"^\((?:(?P<file>[^()]*?): )?Line (?P<line>\d+)\) (?P<text>.*)$")

# Messages about this host rather than about the file: scripts that do not exist here
# (we run with an empty PATH on purpose), script security policy, and the notice that
# one subsystem has nothing to do.
ENVIRONMENT_NOISE = tuple(
    re.compile(p)
    for p in (
        r"^Disabling track script .* since not found",
        r"^Disabling misc script .* since not found",
        r"^Disabling notify script .* since not found",
        r"^Script .* cannot be accessed",
        r"^SECURITY VIOLATION - scripts are being executed but script_security not enabled",
        r"^Script user '.*' does not exist",
        r"^WARNING - default user '.*' for script execution does not exist",
        r"^Warning - keepalived has no configuration to run",
        r"^NOTICE: setting config option max_auto_priority",
    )
)


def find_keepalived() -> str | None:
    for cand in KEEPALIVED_CANDIDATES:
        if os.access(cand, os.X_OK):
            return cand
    return shutil.which("keepalived")


@dataclass(frozen=True, order=True)
class RefMessage:
    """One line keepalived -t printed; `line` is None when it named no line."""

    line: int | None
    text: str

    @property
    def is_environment(self) -> bool:
        return any(p.search(self.text) for p in ENVIRONMENT_NOISE)


@dataclass(frozen=True)
class RefVerdict:
    exit_code: int
    messages: tuple[RefMessage, ...]

    @property
    def config_messages(self) -> tuple[RefMessage, ...]:
        return tuple(m for m in self.messages if not m.is_environment)

    @property
    def valid(self) -> bool:
        """keepalived found nothing wrong with the file itself (host-only noise ignored)."""
        return self.exit_code == 0 or not self.config_messages


@dataclass(frozen=True)
class Counts:
    """The numbers both sides must agree on."""

    vrrp_instances: int
    vips: int
    virtual_servers: int
    real_servers: int
    checkers: int


def parse_test_output(text: str) -> tuple[RefMessage, ...]:
    """Messages of `keepalived -t`, without file names, deduplicated, in first-seen order."""
    seen: dict[RefMessage, None] = {}
    for raw in text.splitlines():
        line = _TS_RE.sub("", raw).rstrip()
        if not line.strip():
            continue
        m = _MSG_RE.match(line)
        msg = (
            RefMessage(int(m.group("line")), m.group("text").strip())
            if m
            else RefMessage(None, line.strip())
        )
        seen.setdefault(msg, None)
    return tuple(seen)


# Lines the parent process prints while a child is dumping: both write to the same pipe,
# so they can land in the middle of a dump section and are dropped before parsing.
_PARENT_LINE_RE = re.compile(r"^(Startup complete|Starting \w+ child process, pid=\d+)$")


def strip_timestamps(text: str) -> list[str]:
    """Dump lines without timestamps and without the parent's interleaved lines."""
    out = (_TS_RE.sub("", raw) for raw in text.splitlines())
    return [ln for ln in out if not _PARENT_LINE_RE.match(ln)]


def _section(lines: list[str], header: str) -> list[str]:
    """The indented lines after `header` up to the next unindented line."""
    out: list[str] = []
    inside = False
    for line in lines:
        if line.strip() == header:
            inside = True
            continue
        if inside:
            if line[:1] not in (" ", "\t") and line.strip():
                if line.startswith("------<"):
                    inside = False
                    continue
                break
            out.append(line)
    return out


_VRRP_INSTANCE_RE = re.compile(r"^ VRRP Instance = ")
_VIP_RE = re.compile(r"^\s+Virtual IP \((\d+)\):")
_VS_RE = re.compile(r"^ VS (VIP|FWMARK|GROUP) = ")
_RS_HEADER = "------< Real server >------"
_CHECKER_RE = re.compile(r"^\s+Keepalive method = ")
_DISABLED_MISC_RE = re.compile(r"^Disabling misc script ")


def parse_vrrp_dump(text: str) -> tuple[int, int]:
    """(vrrp instances, VIPs) from a `-P -d` dump; (0, 0) when there is nothing to run."""
    lines = strip_timestamps(text)
    topo = _section(lines, "------< VRRP Topology >------")
    instances = sum(1 for ln in topo if _VRRP_INSTANCE_RE.match(ln))
    vips = sum(int(m.group(1)) for ln in topo if (m := _VIP_RE.match(ln)))
    return instances, vips


def parse_check_dump(text: str) -> tuple[int, int, int]:
    """(virtual servers, real servers, checkers) from a `-C -d` dump.

    A MISC_CHECK whose script does not exist on this host is dropped by keepalived before
    the dump ("Disabling misc script ... since not found"); it is counted back in, since
    the file does declare that checker.
    """
    lines = strip_timestamps(text)
    lvs = _section(lines, "------< LVS Topology >------")
    vs = sum(1 for ln in lvs if _VS_RE.match(ln))
    rs = sum(1 for ln in lvs if ln.strip() == _RS_HEADER)
    checks = _section(lines, "------< Health checkers >------")
    checkers = sum(1 for ln in checks if _CHECKER_RE.match(ln))
    checkers += sum(1 for ln in lines if _DISABLED_MISC_RE.match(ln))
    return vs, rs, checkers


def _vrrp_dump_done(lines: list[str]) -> bool:
    return _dump_done(lines, "------< VRRP Topology >------")


def _check_dump_done(lines: list[str]) -> bool:
    return _dump_done(lines, "------< LVS Topology >------")


def _dump_done(lines: list[str], first_header: str) -> bool:
    """The dump starting at `first_header` is complete: an ordinary log line follows it."""
    if any("keepalived has no configuration to run" in ln for ln in lines):
        return True
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == first_header)
    except StopIteration:
        return False
    return any(
        ln.strip() and ln[:1] not in (" ", "\t") and not ln.startswith("------<")
        for ln in lines[start + 1 :]
    )


class RefHost:
    """A throwaway namespace with the samples' interfaces, and keepalived runs inside it."""

    def __init__(self, keepalived: str, workdir: Path) -> None:
        self.keepalived = keepalived
        self.workdir = workdir
        self.ns = "hkref" + secrets.token_hex(3)
        self.empty_path = workdir / "empty-path"
        self.shim: Path | None = None
        self.shim_error = ""
        self.started_pids: list[int] = []

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> RefHost:
        self.empty_path.mkdir(parents=True, exist_ok=True)
        _ip("netns", "add", self.ns)
        try:
            _ip("-n", self.ns, "link", "set", "lo", "up")
            for a, b in VETH_PAIRS:
                _ip("-n", self.ns, "link", "add", a, "type", "veth", "peer", "name", b)
                _ip("-n", self.ns, "link", "set", a, "up")
                _ip("-n", self.ns, "link", "set", b, "up")
            self.shim = self._build_shim()
        except BaseException:
            self._delete_ns()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._reap_leftovers()
        self._delete_ns()

    def _delete_ns(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], check=False, capture_output=True)

    def _build_shim(self) -> Path | None:
        gcc = shutil.which("gcc") or shutil.which("cc")
        if gcc is None:
            self.shim_error = "no gcc"
            return None
        out = self.workdir / "fake_ipvs.so"
        res = subprocess.run(
            [gcc, "-shared", "-fPIC", "-nostdlib", "-O1", "-o", str(out), str(SHIM_SOURCE)],
            check=False,
            capture_output=True,
            timeout=60,
        )
        if res.returncode != 0:
            self.shim_error = res.stderr.decode("utf-8", "replace")
            return None
        return out

    def _pidfile_args(self, tag: str) -> list[str]:
        d = self.workdir / f"pids-{tag}"
        d.mkdir(exist_ok=True)
        return [
            "-p",
            str(d / "keepalived.pid"),
            "-r",
            str(d / "vrrp.pid"),
            "-c",
            str(d / "checkers.pid"),
            "-b",
            str(d / "bfd.pid"),
        ]

    def _env(self, *, shim: bool) -> list[str]:
        env = ["env", "-i", f"PATH={self.empty_path}"]
        if shim and self.shim is not None:
            env.append(f"LD_PRELOAD={self.shim}")
        return env

    # -- the two questions we ask keepalived -----------------------------------------
    def config_test(self, path: Path, config_id: str) -> RefVerdict:
        cmd = [
            "ip",
            "netns",
            "exec",
            self.ns,
            *self._env(shim=False),
            self.keepalived,
            "-t",
            "-i",
            config_id,
            "-f",
            str(path),
            *self._pidfile_args("t"),
        ]
        res = subprocess.run(
            cmd,
            check=False,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TEST_TIMEOUT_S,
        )
        return RefVerdict(res.returncode, parse_test_output(res.stdout + res.stderr))

    def dump(self, path: Path, config_id: str, subsystem: str) -> str:
        """keepalived's own dump of the parsed config; `subsystem` is 'vrrp' or 'check'."""
        flag, done = ("-P", _vrrp_dump_done) if subsystem == "vrrp" else ("-C", _check_dump_done)
        cmd = [
            "ip",
            "netns",
            "exec",
            self.ns,
            *self._env(shim=True),
            self.keepalived,
            "-n",
            "-l",
            "-D",
            "-d",
            "-G",
            "-R",
            flag,
            "-i",
            config_id,
            "-f",
            str(path),
            *self._pidfile_args(subsystem),
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.started_pids.append(proc.pid)
        assert proc.stdout is not None
        lines: list[str] = []
        pending = b""
        deadline = time.monotonic() + DUMP_DEADLINE_S
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        try:
            eof = False
            while not eof and not done(lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                for key, _ in sel.select(timeout=left):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        eof = True
                        break
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    lines.extend(strip_timestamps(b"\n".join(complete).decode("utf-8", "replace")))
        finally:
            sel.close()
            self._stop(proc, subsystem)
        if pending:
            lines.extend(strip_timestamps(pending.decode("utf-8", "replace")))
        return "\n".join(lines)

    # -- process hygiene: only our own PIDs ------------------------------------------
    def _stop(self, proc: subprocess.Popen[bytes], subsystem: str) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_GRACE_S)
        if proc.stdout is not None:
            proc.stdout.close()
        self._kill_children(subsystem)

    def _kill_children(self, subsystem: str) -> None:
        d = self.workdir / f"pids-{subsystem}"
        for name in ("vrrp.pid", "checkers.pid", "bfd.pid"):
            pidfile = d / name
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            finally:
                pidfile.unlink(missing_ok=True)
            _kill_if_keepalived(pid, self.workdir)

    def _reap_leftovers(self) -> None:
        for sub in ("vrrp", "check"):
            self._kill_children(sub)


def _kill_if_keepalived(pid: int, workdir: Path) -> None:
    """SIGKILL `pid` if it is still a keepalived we started (its command line names workdir)."""
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if b"keepalived" not in cmdline or str(workdir).encode() not in cmdline:
            return
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)
