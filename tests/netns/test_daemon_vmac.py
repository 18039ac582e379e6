"""VMAC ARP hygiene: the sysctls set on the parent and the VMAC, refcounted per parent,
and a neighbour that resolves a VIP only ever learns the VMAC's MAC (real kernel)."""

from __future__ import annotations

import asyncio
import signal

import pytest
from test_daemon_vrrp import VIP, Node, instance_conf, nodes  # noqa: F401 (fixtures)

from conftest import Pair
from hakeeper.io.netlink import Netlink
from hakeeper.lab.netns import entered, wait_until

pytestmark = pytest.mark.root

PARENT = ("arp_ignore", "arp_filter", "arp_announce")


def _conf(pair: Pair, ifname: str, key: str) -> str:
    cmd = ["cat", f"/proc/sys/net/ipv4/conf/{ifname}/{key}"]
    return pair.lab.run(pair.a, cmd).stdout.strip()


def test_parent_sysctls_held_until_the_last_vmac_goes(pair: Pair) -> None:
    before = {k: _conf(pair, "eth0", k) for k in PARENT}
    assert before == {"arp_ignore": "0", "arp_filter": "0", "arp_announce": "0"}

    async def go() -> None:
        with entered(pair.a):
            nl = await Netlink().open()
        try:
            await nl.create_vmac("eth0", 7)
            await nl.create_vmac("eth0", 8)
            assert {k: _conf(pair, "eth0", k) for k in PARENT} == {
                "arp_ignore": "1", "arp_filter": "1", "arp_announce": "2",
            }  # fmt: skip
            assert _conf(pair, "vrrp.7", "arp_ignore") == "1"
            assert _conf(pair, "vrrp.7", "accept_local") == "1"
            assert _conf(pair, "vrrp.7", "rp_filter") == "0"
            assert _conf(pair, "vrrp.7", "promote_secondaries") == "1"
            assert await nl.delete_link("vrrp.7")
            assert _conf(pair, "eth0", "arp_ignore") == "1", "vrrp.8 still needs it"
            pair.lab.ip(pair.a, "link", "del", "vrrp.8")  # someone else deletes the last one
            assert not await nl.delete_link("vrrp.8")
            assert {k: _conf(pair, "eth0", k) for k in PARENT} == before
        finally:
            nl.close()

    asyncio.run(go())


def test_neighbours_learn_the_vip_only_with_the_vmac(nodes: tuple[Node, Node]) -> None:  # noqa: F811
    a, b = nodes
    vmac = "00:00:5e:00:01:33"
    parent_mac = a.lab.mac(a.ns, "eth0")
    a.start(instance_conf(prio=150, extra="use_vmac"))
    a.wait_state("MASTER")
    wait_until(lambda: a.has(VIP, dev="vrrp.51"), what="VIP on the VMAC")
    for _ in range(3):  # each round: forget, resolve again by ARP request, check who answered
        a.lab.ip(b.ns, "neigh", "flush", "dev", "eth0")
        a.lab.run(b.ns, ["ping", "-c", "1", "-W", "1", VIP], check=False)
        learnt = a.lab.neighbours(b.ns, "eth0").get(VIP)
        assert learnt in (vmac, None) and learnt != parent_mac
    wait_until(lambda: a.lab.neighbours(b.ns, "eth0").get(VIP) == vmac, what="VMAC learnt")
    a.signal(signal.SIGTERM)
    assert a.wait_exit() == 0
    cmd = ["sysctl", "-n", "net.ipv4.conf.eth0.arp_announce"]
    assert a.lab.run(a.ns, cmd).stdout.strip() == "0", "restored on exit"
