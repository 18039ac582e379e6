"""End to end: two `hakeeper run` daemons in two namespaces on one bridge, real kernel.

Each test starts the daemons with `ip netns exec NS python -m hakeeper run -n -l ...`,
watches VIPs with `ip -j addr` and instance state through the control socket, and waits on
conditions with deadlines (never fixed sleeps). VRRPv3 with advert_int 0.1 keeps failover
to a few hundred ms, so the whole module runs in well under a minute.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import Pair
from hakeeper.lab.netns import Lab, wait_until
from hakeeper.runtime.control import ControlError, query

pytestmark = pytest.mark.root

VIP = "198.18.0.100"
VIP6 = "2001:db8:18::100"
A_IP, B_IP = "198.18.0.1", "198.18.0.2"
START_TIMEOUT = 10.0
FAILOVER_TIMEOUT = 3.0


def instance_conf(
    name: str = "VI_1",
    *,
    prio: int,
    vrid: int = 51,
    vip: str = f"{VIP}/24",
    version: int = 3,
    advert_int: float = 0.1,
    extra: str = "",
) -> str:
    return f"""
vrrp_instance {name} {{
    state BACKUP
    interface eth0
    virtual_router_id {vrid}
    priority {prio}
    advert_int {advert_int}
    version {version}
    {extra}
    virtual_ipaddress {{
        {vip}
    }}
}}
"""


class Node:
    """One daemon in one namespace, with its files under `tmp`."""

    def __init__(self, lab: Lab, ns: str, name: str, tmp: Path) -> None:
        self.lab = lab
        self.ns = ns
        self.name = name
        self.conf = tmp / f"{name}.conf"
        self.sock = str(tmp / f"{name}.sock")
        self.pid_file = tmp / f"{name}.pid"
        self.log = tmp / f"{name}.log"
        self.status_file = tmp / f"{name}.status.json"
        self.proc: subprocess.Popen[Any] | None = None

    def write(self, body: str) -> None:
        self.conf.write_text(f"global_defs {{\n    router_id {self.name}\n}}\n{body}")

    def start(self, body: str | None = None) -> None:
        if body is not None:
            self.write(body)
        argv = [
            sys.executable, "-m", "hakeeper", "run", "-n", "-l",
            "-f", str(self.conf), "--control", self.sock, "-p", str(self.pid_file),
            "--status-file", str(self.status_file),
        ]  # fmt: skip
        with self.log.open("a") as log:
            self.proc = self.lab.popen(self.ns, argv, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._ready, timeout=START_TIMEOUT, what=f"{self.name} control socket")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited: {self.log.read_text()}")
        try:
            return bool(self.status()["instances"])
        except ControlError:
            return False

    def status(self) -> dict[str, Any]:
        data = query(self.sock, "status", timeout=2.0)
        assert isinstance(data, dict)
        return data

    def instance(self, name: str = "VI_1") -> dict[str, Any]:
        for inst in self.status()["instances"]:
            if inst["name"] == name:
                return dict(inst)
        raise KeyError(name)

    def state(self, name: str = "VI_1") -> str:
        try:
            return str(self.instance(name)["state"])
        except ControlError:
            return "DEAD"

    def wait_state(self, state: str, name: str = "VI_1", timeout: float = FAILOVER_TIMEOUT) -> None:
        wait_until(
            lambda: self.state(name) == state,
            timeout=timeout,
            what=f"{self.name}/{name} {state} (log: {self.log})",
        )

    def has(self, addr: str, dev: str = "eth0") -> bool:
        return any(a.split("/")[0] == addr for a in self.lab.addresses(self.ns, dev))

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout: float = 5.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def nodes(pair: Pair, workdir: Path) -> tuple[Node, Node]:
    return Node(pair.lab, pair.a, "a", workdir), Node(pair.lab, pair.b, "b", workdir)


def _elapsed_until(pred: Any, timeout: float) -> float:
    t0 = time.monotonic()
    wait_until(pred, timeout=timeout, interval=0.005, what="condition")
    return time.monotonic() - t0


def test_higher_priority_wins_and_status_reports_it(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a.start(instance_conf(prio=150))
    a.lab.addr(b.ns, "eth0", f"{VIP}/24")  # left over by a daemon killed while MASTER
    b.start(instance_conf(prio=100))
    a.wait_state("MASTER")
    b.wait_state("BACKUP")
    wait_until(lambda: not b.has(VIP), what="stale VIP removed when b starts as BACKUP")
    assert a.has(VIP)
    wait_until(lambda: b.instance()["master"] == A_IP, what="b learns the master")
    assert b.instance()["master_priority"] == 150
    wait_until(lambda: b.instance()["counters"]["adverts_received"] >= 5, what="adverts at b")
    sa = a.status()
    assert sa["instances"][0]["vips"] == [f"{VIP}/24"]
    assert sa["instances"][0]["counters"]["adverts_sent"] >= 5
    assert a.pid_file.read_text().strip() == str(sa["pid"])


def test_failover_on_master_kill(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a.start(instance_conf(prio=150))
    b.start(instance_conf(prio=100))
    a.wait_state("MASTER")
    b.wait_state("BACKUP")
    a.signal(signal.SIGKILL)
    a.wait_exit()
    took = _elapsed_until(lambda: b.has(VIP), FAILOVER_TIMEOUT)
    # Master_Down_Interval = 3 x 0.1 + (256-100)/256 x 0.1 = 0.36 s
    assert took < 1.0
    assert b.state() == "MASTER"


def test_failover_on_link_down_and_fault(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a.start(instance_conf(prio=150))
    b.start(instance_conf(prio=100))
    a.wait_state("MASTER")
    b.wait_state("BACKUP")
    a.lab.link_set(a.ns, "eth0", up=False)
    b.wait_state("MASTER")
    a.wait_state("FAULT")
    assert not a.has(VIP), "a FAULT instance removes its VIPs"
    assert "track_interface eth0" in " ".join(a.instance()["faults"])
    a.lab.link_set(a.ns, "eth0", up=True)
    a.wait_state("MASTER", timeout=5.0)  # back, higher priority preempts
    b.wait_state("BACKUP")


def test_sigterm_sends_priority_zero_and_removes_vips(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    slow = 1.0  # a long Master_Down_Interval: only the priority-0 advert can be this fast
    a.start(instance_conf(prio=150, advert_int=slow))
    b.start(instance_conf(prio=100, advert_int=slow))
    a.wait_state("MASTER", timeout=6.0)
    b.wait_state("BACKUP")
    a.signal(signal.SIGTERM)
    took = _elapsed_until(lambda: b.has(VIP), FAILOVER_TIMEOUT)
    assert took < 1.5, "skew time (0.61 s), not Master_Down_Interval (3.6 s)"
    assert a.wait_exit() == 0
    assert not a.has(VIP)
    assert b.instance()["counters"]["priority_zero_received"] >= 1
    assert not a.pid_file.exists()


def test_track_script_failure_moves_vip_and_back(nodes: tuple[Node, Node], workdir: Path) -> None:
    a, b = nodes
    flag = workdir / "healthy"
    flag.write_text("ok")
    script = f"""
vrrp_script chk {{
    script "/usr/bin/test -e {flag}"
    interval 0.2
    weight -60
    fall 1
    rise 1
}}
"""
    track = "track_script {\n        chk\n    }"
    a.start(script + instance_conf(prio=150, extra=track))
    b.start(instance_conf(prio=100))
    a.wait_state("MASTER")
    b.wait_state("BACKUP")
    flag.unlink()
    b.wait_state("MASTER")
    assert a.instance()["effective_priority"] == 90
    wait_until(lambda: not a.has(VIP), timeout=FAILOVER_TIMEOUT, what="VIP gone from a")
    flag.write_text("ok")
    a.wait_state("MASTER")
    assert a.instance()["effective_priority"] == 150
    b.wait_state("BACKUP")


def test_nopreempt_keeps_running_master(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    b.start(instance_conf(prio=100))
    b.wait_state("MASTER")
    a.start(instance_conf(prio=150, extra="nopreempt"))
    a.wait_state("BACKUP")
    # a hears b's lower-priority adverts for several Master_Down_Intervals and stays BACKUP
    wait_until(lambda: a.instance()["counters"]["adverts_received"] >= 15, what="adverts at a")
    assert a.state() == "BACKUP" and b.state() == "MASTER"
    assert b.has(VIP) and not a.has(VIP)


def test_preemption_when_higher_node_returns(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    b.start(instance_conf(prio=100))
    b.wait_state("MASTER")
    a.start(instance_conf(prio=150))
    a.wait_state("MASTER")
    b.wait_state("BACKUP")
    wait_until(lambda: not b.has(VIP), timeout=FAILOVER_TIMEOUT, what="VIP gone from b")
    assert a.has(VIP)


def test_unicast_peers(nodes: tuple[Node, Node]) -> None:
    a, b = nodes

    def uni(me: str, peer: str) -> str:
        return f"unicast_src_ip {me}\n    unicast_peer {{\n        {peer}\n    }}"

    a.start(instance_conf(prio=150, extra=uni(A_IP, B_IP)))
    b.start(instance_conf(prio=100, extra=uni(B_IP, A_IP)))
    a.wait_state("MASTER")
    b.wait_state("BACKUP")
    assert a.status()["sockets"][0]["destinations"] == [B_IP]
    a.signal(signal.SIGKILL)
    a.wait_exit()
    b.wait_state("MASTER")
    wait_until(lambda: b.has(VIP), timeout=FAILOVER_TIMEOUT, what="VIP on b")


def test_ipv6_vrrpv3(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a.start(instance_conf(prio=150, vip=f"{VIP6}/64"))
    b.start(instance_conf(prio=100, vip=f"{VIP6}/64"))
    a.wait_state("MASTER")
    b.wait_state("BACKUP")
    assert a.has(VIP6) and not b.has(VIP6)
    wait_until(
        lambda: str(b.instance()["master"]).startswith("fe80::"), what="b learns a's link-local"
    )
    a.signal(signal.SIGTERM)
    assert a.wait_exit() == 0
    b.wait_state("MASTER")
    wait_until(lambda: b.has(VIP6), timeout=FAILOVER_TIMEOUT, what="IPv6 VIP on b")


def test_sync_group_moves_together(nodes: tuple[Node, Node], workdir: Path) -> None:
    a, b = nodes
    flag = workdir / "svc_up"
    flag.write_text("ok")
    vip2 = "198.18.0.101"
    group = """
vrrp_sync_group G1 {
    group {
        VI_1
        VI_2
    }
}
"""
    chk = f"""
vrrp_script chk {{
    script "/usr/bin/test -e {flag}"
    interval 0.2
}}
"""
    track = "track_script {\n        chk\n    }"

    def body(prio: int, with_track: bool) -> str:
        return (
            (chk if with_track else "")
            + group
            + instance_conf("VI_1", prio=prio, vrid=51)
            + instance_conf(
                "VI_2", prio=prio, vrid=52, vip=f"{vip2}/24", extra=track if with_track else ""
            )
        )

    a.start(body(150, with_track=True))
    b.start(body(100, with_track=False))
    for name in ("VI_1", "VI_2"):
        a.wait_state("MASTER", name)
        b.wait_state("BACKUP", name)
    assert a.status()["sync_groups"][0]["state"] == "MASTER"
    flag.unlink()  # VI_2's weight-0 script fails: VI_2 FAULT, and VI_1 with it
    for name in ("VI_1", "VI_2"):
        a.wait_state("FAULT", name)
        b.wait_state("MASTER", name)
    wait_until(
        lambda: b.has(VIP) and b.has(vip2) and not a.has(VIP) and not a.has(vip2),
        timeout=FAILOVER_TIMEOUT,
        what="both VIPs moved to b",
    )


def test_sighup_reload_keeps_state_and_rejects_bad_config(
    nodes: tuple[Node, Node], workdir: Path
) -> None:
    a, b = nodes
    notify_out = workdir / "notify.txt"
    notify = workdir / "notify.sh"
    notify.write_text(f'#!/bin/sh\necho "$@" >> {notify_out}\n')
    notify.chmod(0o755)
    vi1 = instance_conf(prio=150, extra=f"notify {notify}")
    a.start(vi1)
    b.start(instance_conf(prio=100))
    a.wait_state("MASTER")
    b.wait_state("BACKUP")
    wait_until(lambda: "INSTANCE VI_1 MASTER 150" in _read(notify_out), what="notify MASTER")
    before = a.instance()
    # 1. a broken file: reported, running config kept
    a.conf.write_text(a.conf.read_text() + "\nvrrp_instance BROKEN {\n    priority 999\n")
    a.signal(signal.SIGHUP)
    wait_until(lambda: a.status()["reloads"]["failed"] == 1, what="failed reload counted")
    assert a.state() == "MASTER"
    # 2. add an instance: VI_1 untouched (no transition, VIP never removed), VI_2 starts
    a.write(vi1 + instance_conf("VI_2", prio=150, vrid=52, vip="198.18.0.101/24"))
    a.signal(signal.SIGHUP)
    wait_until(lambda: a.status()["reloads"]["ok"] == 1, what="good reload")
    summary = a.status()["reloads"]["last_summary"]
    assert summary["unchanged"] == ["VI_1"] and summary["added"] == ["VI_2"]
    a.wait_state("MASTER", "VI_2")
    after = a.instance()
    assert after["counters"]["transitions"] == before["counters"]["transitions"]
    assert after["last_transition"] == before["last_transition"]
    assert a.has(VIP)
    # 3. change the MASTER instance itself: replaced in place, no failover to b
    b_transitions = b.instance()["counters"]["transitions"]
    a.write(
        instance_conf(prio=160, extra=f"notify {notify}")
        + instance_conf("VI_2", prio=150, vrid=52, vip="198.18.0.101/24")
    )
    a.signal(signal.SIGHUP)
    wait_until(lambda: a.status()["reloads"]["ok"] == 2, what="second reload")
    assert a.status()["reloads"]["last_summary"]["changed"] == ["VI_1"]
    assert a.state() == "MASTER" and a.instance()["effective_priority"] == 160
    wait_until(lambda: b.instance()["master_priority"] == 160, what="b hears the new priority")
    assert b.instance()["counters"]["transitions"] == b_transitions
    assert a.has(VIP)
    # SIGUSR1 dumps the same status JSON to the status file
    a.signal(signal.SIGUSR1)
    wait_until(a.status_file.exists, what="status file")
    assert '"VI_2"' in a.status_file.read_text()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def test_use_vmac(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    vmac = "00:00:5e:00:01:33"  # VRID 51
    # b holds a stale entry for the VIP: a's gratuitous ARPs must re-point it to the VMAC
    a.lab.ip(b.ns, "neigh", "replace", VIP, "lladdr", "02:00:00:00:00:01", "dev", "eth0",
             "nud", "stale")  # fmt: skip
    a.start(instance_conf(prio=150, extra="use_vmac"))
    a.wait_state("MASTER")
    assert a.lab.mac(a.ns, "vrrp.51") == vmac
    assert a.has(VIP, dev="vrrp.51") and not a.has(VIP)
    assert a.instance()["source"] == A_IP, "adverts keep the parent's address"
    wait_until(
        lambda: a.lab.neighbours(b.ns, "eth0").get(VIP) == vmac,
        timeout=FAILOVER_TIMEOUT,
        what="GARP from the VMAC",
    )
    b.start(instance_conf(prio=100))
    b.wait_state("BACKUP")
    wait_until(lambda: b.instance()["master"] == A_IP, what="b hears a through the VMAC")
    a.signal(signal.SIGTERM)
    assert a.wait_exit() == 0
    b.wait_state("MASTER")
    links = [link["ifname"] for link in a.lab.ip_json(a.ns, "link", "show")]
    assert "vrrp.51" not in links, "VMAC removed on exit"


def test_virtual_routes_and_rules_follow_master(nodes: tuple[Node, Node]) -> None:
    a, _b = nodes
    extra = (
        "virtual_routes {\n        198.18.50.0/24 via 198.18.0.254\n    }\n"
        f"    virtual_rules {{\n        from {VIP} table 100 priority 100\n    }}"
    )
    a.start(instance_conf(prio=150, extra=extra))
    a.wait_state("MASTER")

    def route_present() -> bool:
        return bool(a.lab.ip_json(a.ns, "route", "show", "198.18.50.0/24"))

    def rule_present() -> bool:
        return any(r.get("src") == VIP for r in a.lab.ip_json(a.ns, "rule", "show"))

    wait_until(lambda: route_present() and rule_present(), what="route and rule added")
    a.signal(signal.SIGTERM)
    assert a.wait_exit() == 0
    assert not route_present() and not rule_present()
