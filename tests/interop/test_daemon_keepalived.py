"""`hakeeper run` and the real keepalived (Debian 2.2.7) in one VRID, daemon to daemon.

Both roles each way, VRRPv2 with PASS auth (advert_int 1: few tests) and VRRPv3 at
advert_int 0.1: the higher priority wins, a crash (kill -9) or a graceful stop (SIGTERM) of
the master moves the VIP to the other daemon, the master's return preempts it back, the VIP
is never held by both after the handover, keepalived logs no protocol complaint and
hakeeper drops nothing; tshark decodes the daemon's own adverts as VRRP with good checksums.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hakeeper.lab import configs
from hakeeper.lab.daemons import VrrpDaemon
from hakeeper.lab.netns import Lab, wait_until
from hakeeper.runtime.control import query

pytestmark = [pytest.mark.root, pytest.mark.interop("keepalived")]

VIP = "198.18.0.100"
IPS = {"a": "198.18.0.1", "b": "198.18.0.2"}
PROBLEM_WORDS = ("invalid", "checksum", "mismatch", "error", "wrong", "bad ")


@dataclass
class Net:
    lab: Lab
    ns: dict[str, str]
    workdir: Path

    def has_vip(self, node: str) -> bool:
        return any(a.split("/")[0] == VIP for a in self.lab.addresses(self.ns[node], "eth0"))

    def remove_vip(self, node: str) -> None:
        if self.has_vip(node):
            self.lab.ip(self.ns[node], "addr", "del", f"{VIP}/24", "dev", "eth0")


@pytest.fixture
def net() -> Iterator[Net]:
    workdir = Path(tempfile.mkdtemp(prefix="hkinterop-"))  # not tmp_path: see tests/netns
    try:
        with Lab() as lab:
            sw = lab.add_switch()
            ns = {}
            for node, ip in IPS.items():
                ns[node] = lab.add_ns(node)
                lab.connect(ns[node], sw)
                lab.addr(ns[node], "eth0", f"{ip}/24")
            yield Net(lab, ns, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def conf(node: str, version: int, *, master: bool) -> str:
    opts = configs.VrrpOptions(
        version=version, advert_int=1.0 if version == 2 else 0.1, sync_group=False, track=False
    )
    return configs.keepalived_conf(
        router_id=node, priority=150 if master else 100, master=master, vip=VIP,
        check_script="/bin/true", opts=opts,
    )  # fmt: skip


def keepalived_problems(d: VrrpDaemon) -> list[str]:
    assert d.kind == "keepalived"
    return [ln.text for ln in d.lines() if any(w in ln.text.lower() for w in PROBLEM_WORDS)]


def hakeeper_instance(d: VrrpDaemon) -> dict[str, Any]:
    data = query(str(d.workdir / f"{d.name}.sock"), "status", timeout=2.0)
    assert isinstance(data, dict)
    return dict(data["instances"][0])


def timeout_for(version: int) -> float:
    return 8.0 if version == 2 else 3.0


def start_pair(net: Net, version: int, master_kind: str) -> tuple[VrrpDaemon, VrrpDaemon]:
    """Master-to-be on a (priority 150, state MASTER), the other daemon on b (100, BACKUP)."""
    other = "keepalived" if master_kind == "hakeeper" else "hakeeper"
    m = VrrpDaemon(net.lab, net.ns["a"], "a", master_kind, net.workdir)
    b = VrrpDaemon(net.lab, net.ns["b"], "b", other, net.workdir)
    m.start(conf("a", version, master=True))
    wait_until(lambda: net.has_vip("a"), timeout=timeout_for(version) + 5, what="VIP on a")
    b.start(conf("b", version, master=False))
    b.wait_state("BACKUP", timeout=timeout_for(version) + 5)
    return m, b


def check_clean(m: VrrpDaemon, b: VrrpDaemon) -> None:
    for d in (m, b):
        if d.kind == "keepalived":
            assert keepalived_problems(d) == [], d.log
        elif d.running:
            assert hakeeper_instance(d)["counters"]["dropped"] == {}, d.log


def failover_and_back(net: Net, m: VrrpDaemon, b: VrrpDaemon, version: int, fault: str) -> None:
    # the right node won and the other one backs off
    assert m.state() == "MASTER"
    assert not net.has_vip("b")
    time.sleep(3 * (1.0 if version == 2 else 0.1))  # a few adverts cross in each direction
    assert b.state() == "BACKUP" and not net.has_vip("b")
    check_clean(m, b)
    # failover
    if fault == "kill":
        m.kill()
    else:
        m.terminate()
        assert m.wait_exit() == 0
        assert not net.has_vip("a"), "graceful stop removes the VIP"
    wait_until(lambda: net.has_vip("b"), timeout=timeout_for(version), what="VIP moves to b")
    b.wait_state("MASTER", timeout=5.0)
    if b.kind == "hakeeper" and fault == "sigterm":
        assert hakeeper_instance(b)["counters"]["priority_zero_received"] >= 1
    # return: a comes back like a rebooted node and preempts
    m.stop()
    net.remove_vip("a")
    m.start()
    wait_until(
        lambda: net.has_vip("a") and not net.has_vip("b"),
        timeout=timeout_for(version) + 5,
        what="preemption back to a",
    )
    m.wait_state("MASTER", timeout=5.0)
    b.wait_state("BACKUP", timeout=5.0)
    time.sleep(3 * (1.0 if version == 2 else 0.1))
    assert net.has_vip("a") and not net.has_vip("b")
    check_clean(m, b)


@pytest.mark.parametrize("master_kind", ["hakeeper", "keepalived"])
@pytest.mark.parametrize("fault", ["kill", "sigterm"])
def test_v3_fast_failover_both_ways(net: Net, master_kind: str, fault: str) -> None:
    m, b = start_pair(net, 3, master_kind)
    try:
        failover_and_back(net, m, b, 3, fault)
    finally:
        b.stop()
        m.stop()


@pytest.mark.parametrize("master_kind", ["hakeeper", "keepalived"])
def test_v2_pass_auth_failover_both_ways(net: Net, master_kind: str) -> None:
    m, b = start_pair(net, 2, master_kind)
    try:
        failover_and_back(net, m, b, 2, "sigterm")
    finally:
        b.stop()
        m.stop()


def _capture_adverts(net: Net, src: str, count: int, version: int) -> str:
    """tcpdump `count` VRRP packets from `src` on b, then decode them with tshark -V."""
    pcap = net.workdir / f"adverts-v{version}.pcap"
    cap = net.lab.popen(
        net.ns["b"],
        ["tcpdump", "-i", "eth0", "-U", "-c", str(count), "-w", str(pcap),
         f"ip proto 112 and src host {src}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert cap.wait(timeout=10) == 0
    finally:
        net.lab.stop(cap)
    prefs = ["-o", "vrrp.v3_checksum_as_in_v2:FALSE"] if version == 3 else []
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-V", *prefs],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return out.stdout + out.stderr


@pytest.mark.interop("keepalived", "tshark", "tcpdump")
@pytest.mark.parametrize("version", [2, 3])
def test_tshark_decodes_the_daemons_adverts(net: Net, version: int) -> None:
    """The adverts `hakeeper run` sends while master of a keepalived backup decode cleanly."""
    m, b = start_pair(net, version, "hakeeper")
    try:
        text = _capture_adverts(net, IPS["a"], 3, version)
        assert text.count("Virtual Router Redundancy Protocol") == 3, text
        assert text.count("[Checksum Status: Good]") == 3, text
        assert "Virtual Rtr ID: 51" in text
        assert "Priority: 150" in text
        assert "Time to Live: 255" in text
        if version == 2:
            assert "Auth Type: Simple Text Authentication" in text or "Auth Type: 1" in text, text
        check_clean(m, b)
    finally:
        b.stop()
        m.stop()
