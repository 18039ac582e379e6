"""Topologies for the L4 data-plane namespace tests: client -> LB -> three web backends.

NAT: client (198.18.0.2) -- LB eth0 (198.18.0.1, VIP 198.18.0.10) | LB eth1 (198.18.1.254)
-- switch -- backends 198.18.1.1-3 (default route via the LB, as LVS-NAT needs).
DR: client, LB and backends on one switch (198.18.0.0/24); the VIP is on the LB's eth0 and
on every backend's lo with arp_ignore=1 / arp_announce=2 (seed 001's real-server script).
Each backend answers every TCP connection on its ports with its name and closes.
`Director` runs `hakeeper run` with virtual servers in one of these namespaces.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hakeeper.lab.netns import Lab, wait_until
from hakeeper.runtime.control import ControlError, query

VIP = "198.18.0.10"
VIP6 = "2001:db8:18::10"
BACKEND_PORTS = (80, 81)

_SERVER = r"""
import selectors, socket, sys
name = sys.argv[1].encode()
sel = selectors.DefaultSelector()
for port in map(int, sys.argv[2:]):
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(256)
    sel.register(s, selectors.EVENT_READ)
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    u.bind(("::", port))
    sel.register(u, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj.type == socket.SOCK_DGRAM:
            try:
                _data, peer = key.fileobj.recvfrom(64)
                key.fileobj.sendto(name, peer)
            except OSError:
                pass
            continue
        try:
            c, _ = key.fileobj.accept()
        except OSError:
            continue
        try:
            c.sendall(name)
        except OSError:  # health checkers connect and reset
            pass
        finally:
            c.close()
"""

_CLIENT = r"""
import json, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
udp = len(sys.argv) > 4
out = []
for _ in range(n):
    if udp:  # a new socket (source port) per datagram: a new flow each time
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                           socket.SOCK_DGRAM) as u:
            u.settimeout(2)
            try:
                u.sendto(b"?", (host, port))
                out.append(u.recv(64).decode())
            except OSError as exc:
                out.append("ERR " + type(exc).__name__)
        continue
    try:
        s = socket.create_connection((host, port), timeout=2)
        s.settimeout(2)
        out.append(s.recv(64).decode() or "EOF")
        s.close()
    except OSError as exc:
        out.append("ERR " + type(exc).__name__)
print(json.dumps(out))
"""


@dataclass
class L4Lab:
    lab: Lab
    client: str
    lb: str
    backends: dict[str, str] = field(default_factory=dict)  # name -> namespace
    addrs: dict[str, str] = field(default_factory=dict)  # name -> address
    procs: dict[str, subprocess.Popen[Any]] = field(default_factory=dict)

    def start_backend(self, name: str) -> None:
        ns = self.backends[name]
        self.procs[name] = self.lab.popen(
            ns, [sys.executable, "-c", _SERVER, name, *map(str, BACKEND_PORTS)]
        )
        wait_until(
            lambda: ":81 " in self.lab.run(ns, ["ss", "-Hltn"]).stdout,
            timeout=10,
            what=f"backend {name} listening",
        )

    def stop_backend(self, name: str) -> None:
        self.lab.stop(self.procs.pop(name))

    def connect(
        self, n: int, port: int = 80, host: str = VIP, udp: bool = False, ns: str | None = None
    ) -> list[str]:
        """`n` sequential new TCP connections (or UDP flows) from the client (or `ns`)."""
        proc = self.lab.run(
            ns or self.client,
            [sys.executable, "-c", _CLIENT, host, str(port), str(n), *(["udp"] if udp else [])],
            timeout=5 + n * 0.5,
        )
        result: list[str] = json.loads(proc.stdout)
        return result

    def counts(self, n: int, port: int = 80, host: str = VIP) -> Counter[str]:
        return Counter(self.connect(n, port, host))


def _start_backends(lab: Lab, l4: L4Lab) -> None:
    for name in l4.backends:
        l4.start_backend(name)


def nat_lab(lab: Lab) -> L4Lab:
    client, lb = lab.add_ns("client"), lab.add_ns("lb")
    lab.veth(client, "eth0", lb, "eth0")
    lab.addr(client, "eth0", "198.18.0.2/24")
    lab.addr(lb, "eth0", "198.18.0.1/24")
    lab.addr(lb, "eth0", f"{VIP}/32")
    sw = lab.add_switch()
    lab.connect(lb, sw, "eth1")
    lab.addr(lb, "eth1", "198.18.1.254/24")
    lab.sysctl(lb, "net.ipv4.ip_forward", "1")
    lab.sysctl(lb, "net.ipv6.conf.all.forwarding", "1")
    lab.addr(client, "eth0", "2001:db8:18::2/64")
    lab.addr(lb, "eth0", "2001:db8:18::1/64")
    lab.addr(lb, "eth0", f"{VIP6}/128")
    lab.addr(lb, "eth1", "2001:db8:19::fe/64")
    l4 = L4Lab(lab, client, lb)
    for i in (1, 2, 3):
        ns = lab.add_ns(f"web{i}")
        lab.connect(ns, sw)
        lab.addr(ns, "eth0", f"198.18.1.{i}/24")
        lab.route(ns, "default", "via", "198.18.1.254")
        lab.addr(ns, "eth0", f"2001:db8:19::{i}/64")
        lab.ip(ns, "-6", "route", "replace", "default", "via", "2001:db8:19::fe")
        l4.backends[f"web{i}"] = ns
        l4.addrs[f"web{i}"] = f"198.18.1.{i}"
    _start_backends(lab, l4)
    return l4


def dr_lab(lab: Lab) -> L4Lab:
    sw = lab.add_switch()
    client, lb = lab.add_ns("client"), lab.add_ns("lb")
    lab.connect(client, sw)
    lab.connect(lb, sw)
    lab.addr(client, "eth0", "198.18.0.2/24")
    lab.addr(lb, "eth0", "198.18.0.1/24")
    lab.addr(lb, "eth0", f"{VIP}/32")
    l4 = L4Lab(lab, client, lb)
    add_dr_backends(l4, sw, 3)
    return l4


def add_dr_backends(l4: L4Lab, sw: str, count: int) -> None:
    """`count` DR real servers web1.. on switch `sw` (198.18.0.11..), the VIP on their lo
    with arp_ignore=1 / arp_announce=2, each serving its name."""
    lab = l4.lab
    for i in range(1, count + 1):
        ns = lab.add_ns(f"web{i}")
        lab.connect(ns, sw)
        for key, value in (("arp_ignore", "1"), ("arp_announce", "2")):
            for dev in ("all", "lo", "eth0"):
                lab.sysctl(ns, f"net.ipv4.conf.{dev}.{key}", value)
        lab.addr(ns, "eth0", f"198.18.0.{10 + i}/24")
        lab.addr(ns, "lo", f"{VIP}/32")
        l4.backends[f"web{i}"] = ns
        l4.addrs[f"web{i}"] = f"198.18.0.{10 + i}"
    _start_backends(lab, l4)


class Director:
    """One `hakeeper run -n -l -f NAME.conf` in namespace `ns` (control socket, pid, status
    and log files NAME.* under `workdir`) with the given data plane; ready once its virtual
    servers were reconciled and `ready()` holds."""

    def __init__(
        self,
        lab: Lab,
        ns: str,
        name: str,
        workdir: Path,
        conf: str,
        *,
        dataplane: str = "nftables",
        timeout: float = 15.0,
    ) -> None:
        self.lab, self.ns, self.name = lab, ns, name
        self.conf = workdir / f"{name}.conf"
        self.sock = str(workdir / f"{name}.sock")
        self.log = workdir / f"{name}.log"
        self.conf.write_text(conf)
        argv = [
            sys.executable,
            "-m",
            "hakeeper",
            "run",
            "-n",
            "-l",
            "-f",
            str(self.conf),
            "--control",
            self.sock,
            "-p",
            str(workdir / f"{name}.pid"),
            "--status-file",
            str(workdir / f"{name}.json"),
            "--dataplane",
            dataplane,
        ]
        with self.log.open("a") as log:
            self.proc = lab.popen(ns, argv, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._ready, timeout=timeout, what=f"{name} virtual servers applied")

    def ready(self) -> bool:
        """More than reconciled virtual servers a subclass waits for."""
        return True

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited: {self.log.read_text()}")
        try:
            lvs = self.status().get("virtual_servers")
        except ControlError:
            return False
        return bool(lvs and lvs.get("reconciles")) and self.ready()

    def status(self) -> dict[str, Any]:
        data = query(self.sock, "status", timeout=2.0)
        assert isinstance(data, dict)
        return data

    def tables(self) -> str:
        return self.lab.run(self.ns, ["nft", "list", "tables"]).stdout


class NsLoop:
    """An event loop on a thread that lives inside namespace `ns` (its sockets are there)."""

    def __init__(self, ns: str) -> None:
        import asyncio
        import threading

        self.ns = ns
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"nsloop-{ns}", daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("namespace loop did not start")

    def _main(self) -> None:
        from hakeeper.lab.netns import entered

        with entered(self.ns):
            self.loop.call_soon(self._ready.set)
            self.loop.run_forever()
            self.loop.close()

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
