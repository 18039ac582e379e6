"""Network-namespace toolkit for tests, `hakeeper lab` and benchmarks (iproute2 `ip` driven).

Owns: uniquely named namespaces (`hk` + 6 random hex), veth pairs, a bridge living in a
"switch" namespace (never in the root namespace), 198.18.0.0/15 addressing, link up/down,
commands and long-running processes inside a namespace (`ip netns exec`, PIDs tracked and
ended by PID), and guaranteed cleanup (context manager + atexit). It never touches eth0,
the root namespace's links or its routes. `entered()` moves only the calling thread into a
namespace (setns(2)) so that sockets created there live in it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import ctypes.util
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

CLONE_NEWNET = 0x40000000
IP_BIN = "ip"
DEFAULT_TIMEOUT_S = 10.0

_live_namespaces: set[str] = set()
_live_labs: weakref.WeakSet[Lab] = weakref.WeakSet()
_live_lock = threading.Lock()
LAB_NETS = (
    ipaddress.ip_network("198.18.0.0/15"),  # RFC 2544 benchmarking range: the lab's IPv4
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("2001:db8::/32"),  # documentation
    ipaddress.ip_network("fc00::/7"),  # unique local
    ipaddress.ip_network("fe80::/10"),
)


class NetnsError(RuntimeError):
    """A namespace command failed (message carries the command and its stderr)."""


def unique_name(prefix: str = "hk") -> str:
    """A namespace name unlikely to collide with anyone else's: prefix + 6 random hex digits."""
    return f"{prefix}{secrets.token_hex(3)}"


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} -> rc={proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def ns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def delete_namespace(name: str) -> None:
    """Delete a namespace by name; absent is fine."""
    if ns_exists(name):
        _run([IP_BIN, "netns", "del", name], check=False)
    with _live_lock:
        _live_namespaces.discard(name)


def _atexit_cleanup() -> None:
    for lab in list(_live_labs):
        with contextlib.suppress(Exception):
            lab.close()
    with _live_lock:
        names = list(_live_namespaces)
    for name in names:
        with contextlib.suppress(Exception):
            delete_namespace(name)


atexit.register(_atexit_cleanup)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with the *calling thread* inside namespace `name`, then come back.

    Sockets (raw, packet, netlink) opened in the body stay in that namespace for life, so
    a test can open an adapter's sockets inside a namespace and drive them from its loop.
    """
    with open("/proc/thread-self/ns/net", "rb") as home, open(f"/run/netns/{name}", "rb") as ns:
        _setns(ns.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


@dataclass(frozen=True)
class VethLink:
    """One veth pair: `ifname` inside `ns`, `peer` inside `peer_ns` (a switch port or a host)."""

    ns: str
    ifname: str
    peer_ns: str
    peer: str


class Lab:
    """A set of namespaces with guaranteed cleanup. Use as a context manager.

    >>> with Lab() as lab:                                     # doctest: +SKIP
    ...     sw = lab.add_switch()
    ...     a = lab.add_ns("a"); lab.connect(a, sw); lab.addr(a, "eth0", "198.18.0.1/24")
    """

    def __init__(self, prefix: str = "hk", *, disable_dad: bool = True) -> None:
        self.prefix = prefix
        self.disable_dad = disable_dad
        self.namespaces: dict[str, str] = {}  # role -> namespace name
        self.bridges: dict[str, str] = {}  # switch namespace -> bridge name
        self._ports: dict[str, int] = {}
        self._popen: list[subprocess.Popen[Any]] = []
        self._aprocs: list[asyncio.subprocess.Process] = []
        self._closed = False
        _live_labs.add(self)

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End every process this lab started (by PID, TERM then KILL), delete its namespaces."""
        if self._closed:
            return
        self._closed = True
        pids = [p.pid for p in self._popen if p.poll() is None]
        pids += [p.pid for p in self._aprocs if p.returncode is None]
        _end_pids(pids)
        for p in self._popen:
            with contextlib.suppress(Exception):
                p.wait(timeout=1)
            _close_pipes(p)
        for name in list(self.namespaces.values()):
            delete_namespace(name)

    # -- topology -------------------------------------------------------------------------
    def add_ns(self, role: str) -> str:
        """Create a namespace for `role` (a label, e.g. "lb1"); returns its unique name."""
        if role in self.namespaces:
            raise ValueError(f"role {role!r} already exists")
        for _ in range(5):
            name = unique_name(self.prefix)
            if not ns_exists(name):
                break
        _run([IP_BIN, "netns", "add", name])
        with _live_lock:
            _live_namespaces.add(name)
        self.namespaces[role] = name
        self.ip(name, "link", "set", "lo", "up")
        if self.disable_dad:
            self.sysctl(name, "net.ipv6.conf.all.accept_dad", "0")
            self.sysctl(name, "net.ipv6.conf.default.accept_dad", "0")
        return name

    def ns(self, role: str) -> str:
        return self.namespaces[role]

    def add_switch(self, role: str = "switch", bridge: str = "br0") -> str:
        """A namespace holding one bridge (STP off, multicast snooping off so VRRP floods)."""
        name = self.add_ns(role)
        self.ip(name, "link", "add", bridge, "type", "bridge", "stp_state", "0",
                "forward_delay", "0", "mcast_snooping", "0")  # fmt: skip
        self.ip(name, "link", "set", bridge, "up")
        self.bridges[name] = bridge
        return name

    def connect(
        self, ns: str, switch: str, ifname: str = "eth0", *, mac: str | None = None
    ) -> VethLink:
        """A veth from `ns` (named `ifname`, up) to a new port of `switch`'s bridge (up)."""
        n = self._ports.get(switch, 0) + 1
        self._ports[switch] = n
        port = f"p{n}"
        self.ip(ns, "link", "add", ifname, "type", "veth", "peer", "name", port, "netns", switch)
        if mac is not None:
            self.ip(ns, "link", "set", ifname, "address", mac)
        self.ip(switch, "link", "set", port, "master", self.bridges[switch])
        self.ip(switch, "link", "set", port, "up")
        self.ip(ns, "link", "set", ifname, "up")
        return VethLink(ns=ns, ifname=ifname, peer_ns=switch, peer=port)

    def veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> VethLink:
        """A point-to-point veth between two namespaces, both ends up."""
        self.ip(ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
        self.ip(ns_a, "link", "set", if_a, "up")
        self.ip(ns_b, "link", "set", if_b, "up")
        return VethLink(ns=ns_a, ifname=if_a, peer_ns=ns_b, peer=if_b)

    def addr(self, ns: str, ifname: str, cidr: str) -> None:
        """Add an address (IPv6 without DAD); only lab ranges (198.18.0.0/15, 2001:db8::/32...)."""
        check_lab_address(cidr)
        extra = ["nodad"] if ":" in cidr else []
        self.ip(ns, "addr", "add", cidr, "dev", ifname, *extra)

    def link_set(self, ns: str, ifname: str, *, up: bool) -> None:
        self.ip(ns, "link", "set", ifname, "up" if up else "down")

    def route(self, ns: str, *spec: str) -> None:
        """`ip route replace SPEC` inside `ns` (never the root namespace)."""
        self.ip(ns, "route", "replace", *spec)

    def sysctl(self, ns: str, key: str, value: str) -> None:
        self.run(ns, ["sysctl", "-qw", f"{key}={value}"])

    # -- commands -------------------------------------------------------------------------
    def ip(self, ns: str, *args: str) -> str:
        """`ip -n NS ARGS...`; raises NetnsError on failure."""
        return _run([IP_BIN, "-n", ns, *args])

    def ip_json(self, ns: str, *args: str) -> Any:
        out = _run([IP_BIN, "-n", ns, "-j", *args])
        return json.loads(out) if out.strip() else []

    def run(
        self,
        ns: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside `ns` (bounded by `timeout`)."""
        proc = subprocess.run(
            [IP_BIN, "netns", "exec", ns, *argv],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise NetnsError(f"[{ns}] {' '.join(argv)} -> rc={proc.returncode}: {proc.stderr}")
        return proc

    def popen(self, ns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a long-running process inside `ns` in its own session; tracked for cleanup."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(
            [IP_BIN, "netns", "exec", ns, *argv], start_new_session=True, **kwargs
        )
        self._popen.append(proc)
        return proc

    async def spawn(
        self, ns: str, argv: Sequence[str], **kwargs: Any
    ) -> asyncio.subprocess.Process:
        """asyncio flavour of `popen` (own session, tracked; end it with `astop`/`aclose`)."""
        kwargs.setdefault("stdin", asyncio.subprocess.DEVNULL)
        proc = await asyncio.create_subprocess_exec(
            IP_BIN, "netns", "exec", ns, *argv, start_new_session=True, **kwargs
        )
        self._aprocs.append(proc)
        return proc

    async def astop(self, proc: asyncio.subprocess.Process, *, timeout: float = 3.0) -> int:
        """End a `spawn`ed process from its own loop (SIGTERM, SIGKILL after `timeout`)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.returncode is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout)
        return await proc.wait()

    async def aclose(self) -> None:
        """`close()` for labs that `spawn`ed: ends those processes while their loop runs."""
        for proc in self._aprocs:
            await self.astop(proc)
        self.close()

    def stop(self, proc: subprocess.Popen[Any], *, timeout: float = 3.0) -> int | None:
        """End one tracked process by PID (SIGTERM, then SIGKILL after `timeout`)."""
        if proc.poll() is None:
            _end_pids([proc.pid], grace=timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
        _close_pipes(proc)
        return proc.returncode

    # -- observation ----------------------------------------------------------------------
    def addresses(self, ns: str, ifname: str) -> list[str]:
        """`ip -j addr show dev IF` as a list of 'addr/prefix' strings."""
        out: list[str] = []
        for link in self.ip_json(ns, "addr", "show", "dev", ifname):
            for a in link.get("addr_info", []):
                out.append(f"{a['local']}/{a['prefixlen']}")
        return out

    def mac(self, ns: str, ifname: str) -> str:
        return str(self.ip_json(ns, "link", "show", "dev", ifname)[0]["address"])

    def neighbours(self, ns: str, ifname: str) -> dict[str, str]:
        """IP -> lladdr from `ip -j neigh show dev IF` (entries without lladdr skipped)."""
        return {
            n["dst"]: n["lladdr"]
            for n in self.ip_json(ns, "neigh", "show", "dev", ifname)
            if "lladdr" in n
        }


def check_lab_address(cidr: str) -> None:
    """Refuse addresses outside the ranges lab namespaces may use (never real networks)."""
    iface = ipaddress.ip_interface(cidr)
    if not any(iface.ip in net for net in LAB_NETS if net.version == iface.version):
        raise ValueError(f"{cidr} is outside the lab ranges {[str(n) for n in LAB_NETS]}")


def _end_pids(pids: Sequence[int], *, grace: float = 2.0) -> None:
    """SIGTERM each PID's process group (they run in their own session), then SIGKILL."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    pending = list(pids)
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if _alive(p)]
        if pending:
            time.sleep(0.02)
    for pid in pending:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _close_pipes(proc: subprocess.Popen[Any]) -> None:
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (never reaps: callers own that)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[:1]
    return state != ["Z"]


def wait_until(
    predicate: Any, *, timeout: float = 5.0, interval: float = 0.02, what: str = "condition"
) -> Any:
    """Poll `predicate()` until it returns a truthy value or raise TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
