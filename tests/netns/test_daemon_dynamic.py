"""Interfaces missing at start, deleted and recreated, and a deleted VMAC (real kernel).

keepalived `dynamic_interfaces`-like behaviour: the instance comes up when its interface
appears (no SIGHUP), a recreated interface (new ifindex) gets a new socket, and a VMAC
deleted under a running master is rebuilt with the VIP on it.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from test_daemon_vrrp import (  # noqa: F401 (fixtures)
    A_IP,
    B_IP,
    FAILOVER_TIMEOUT,
    VIP,
    Node,
    instance_conf,
    nodes,
)

from hakeeper.lab.netns import Lab, wait_until

pytestmark = pytest.mark.root


def _links(lab: Lab, ns: str) -> list[str]:
    return [link["ifname"] for link in lab.ip_json(ns, "link", "show")]


def test_interface_missing_at_start_then_recreated(lab: Lab, workdir: Path) -> None:
    sw = lab.add_switch()
    a_ns, b_ns = lab.add_ns("a"), lab.add_ns("b")
    lab.connect(b_ns, sw)
    lab.addr(b_ns, "eth0", f"{B_IP}/24")
    a, b = Node(lab, a_ns, "a", workdir), Node(lab, b_ns, "b", workdir)
    b.start(instance_conf(prio=100))
    b.wait_state("MASTER")
    a.start(instance_conf(prio=150).replace("interface eth0", "interface eth1"))
    assert a.state() == "NOT_RUNNING" and "interface" in a.instance()["error"]

    def plug() -> None:
        lab.connect(a_ns, sw, "eth1")  # link add, set up (link events) ...
        lab.addr(a_ns, "eth1", f"{A_IP}/24")  # ... then the address (no link event)

    plug()
    a.wait_state("MASTER", timeout=5.0)
    b.wait_state("BACKUP")
    wait_until(lambda: a.has(VIP, dev="eth1") and not b.has(VIP), what="VIP moved to a")
    first_index = a.status()["sockets"][0]["ifindex"]

    lab.ip(a_ns, "link", "del", "eth1")
    b.wait_state("MASTER")
    a.wait_state("FAULT")
    plug()
    a.wait_state("MASTER", timeout=5.0)
    b.wait_state("BACKUP")  # b hears a's adverts from the new socket
    sockets = a.status()["sockets"]
    assert len(sockets) == 1 and sockets[0]["ifindex"] not in (None, first_index)
    wait_until(lambda: a.has(VIP, dev="eth1"), what="VIP back on the new eth1")
    a.signal(signal.SIGTERM)
    assert a.wait_exit() == 0


def test_deleted_vmac_is_recreated(nodes: tuple[Node, Node]) -> None:  # noqa: F811
    a, b = nodes
    a.start(instance_conf(prio=150, extra="use_vmac"))
    a.wait_state("MASTER")
    b.start(instance_conf(prio=100))
    b.wait_state("BACKUP")
    wait_until(lambda: a.has(VIP, dev="vrrp.51"), what="VIP on the VMAC")
    a.lab.ip(a.ns, "link", "del", "vrrp.51")
    wait_until(
        lambda: "vrrp.51" in _links(a.lab, a.ns) and a.has(VIP, dev="vrrp.51"),
        timeout=FAILOVER_TIMEOUT,
        what="VMAC and VIP recreated",
    )
    assert a.state() == "MASTER"
    wait_until(lambda: b.instance()["master"] == A_IP, what="b still hears a")
    a.signal(signal.SIGTERM)
    assert a.wait_exit() == 0
    assert "vrrp.51" not in _links(a.lab, a.ns)
