"""Netlink adapter in a namespace: VIPs (v4/v6, brd, scope, label), routes, rules, VMAC."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from conftest import Pair
from hakeeper.io.netlink import Netlink, Route, Rule, VirtualAddress, vmac_address, vmac_name
from hakeeper.lab.netns import entered

pytestmark = pytest.mark.root
T = TypeVar("T")


def run_in(ns: str, body: Callable[[Netlink], Awaitable[T]]) -> T:
    async def main() -> T:
        with entered(ns):
            nl = await Netlink().open()
        try:
            return await body(nl)
        finally:
            nl.close()

    return asyncio.run(main())


def addr_info(pair: Pair, ns: str, ifname: str = "eth0") -> list[dict[str, object]]:
    links = pair.lab.ip_json(ns, "addr", "show", "dev", ifname)
    return [a for link in links for a in link["addr_info"]]


def test_vip_add_remove_is_idempotent_and_visible_to_ip(pair: Pair) -> None:
    vip = VirtualAddress.parse(
        "198.18.0.100/24", "eth0", broadcast="+", label="eth0:vi1", scope="global"
    )
    vip6 = VirtualAddress.parse("2001:db8:18::100/64", "eth0")

    async def add(nl: Netlink) -> list[bool]:
        return [
            await nl.add_address(vip),
            await nl.add_address(vip),
            await nl.add_address(vip6),
            await nl.add_address(vip6),
            await nl.has_address(vip),
        ]

    assert run_in(pair.a, add) == [True, False, True, False, True]
    info = {a["local"]: a for a in addr_info(pair, pair.a)}
    v4 = info["198.18.0.100"]
    assert (v4["prefixlen"], v4["broadcast"], v4["label"], v4["scope"]) == (
        24,
        "198.18.0.255",
        "eth0:vi1",
        "global",
    )
    v6 = info["2001:db8:18::100"]
    assert v6["prefixlen"] == 64 and not v6.get("tentative")
    # The VIP answers from the other node right away (no DAD wait for v6).
    pair.lab.run(pair.b, ["ping", "-c1", "-W2", "198.18.0.100"])
    pair.lab.run(pair.b, ["ping", "-6", "-c1", "-W2", "2001:db8:18::100"])

    async def remove(nl: Netlink) -> list[bool]:
        return [
            await nl.remove_address(vip),
            await nl.remove_address(vip),
            await nl.remove_address(vip6),
            await nl.remove_address(vip6),
        ]

    assert run_in(pair.a, remove) == [True, False, True, False]
    left = {a["local"] for a in addr_info(pair, pair.a)}
    assert "198.18.0.100" not in left and "2001:db8:18::100" not in left
    assert pair.a_ip in left  # the node's own address is untouched


def test_default_prefix_and_host_scope(pair: Pair) -> None:
    vip = VirtualAddress.parse("198.18.0.101", "eth0", scope="host")
    assert vip.prefixlen == 32
    assert run_in(pair.a, lambda nl: nl.add_address(vip))
    (a,) = [a for a in addr_info(pair, pair.a) if a["local"] == "198.18.0.101"]
    assert (a["prefixlen"], a["scope"]) == (32, "host")


def test_interface_facts(pair: Pair) -> None:
    async def body(nl: Netlink) -> tuple[object, ...]:
        info = await nl.interface("eth0")
        return (info, await nl.primary_ipv4("eth0"), await nl.link_local_ipv6("eth0"))

    info, ip4, ll6 = run_in(pair.a, body)
    assert info is not None
    assert info.name == "eth0" and info.up and info.carrier and info.kind == "veth"
    assert info.mac == pair.lab.mac(pair.a, "eth0")
    assert ip4 == pair.a_ip
    assert isinstance(ll6, str) and ll6.startswith("fe80:")


def test_routes_and_rules(pair: Pair) -> None:
    route = Route("198.18.9.0/24", via=pair.b_ip, dev="eth0")
    route6 = Route("2001:db8:99::/64", via=pair.b6, dev="eth0", table=100)
    rule = Rule(table=100, src="198.18.0.0/24", priority=1000)

    async def add(nl: Netlink) -> list[bool]:
        return [
            await nl.add_route(route),
            await nl.add_route(route),
            await nl.add_route(route6),
            await nl.add_rule(rule),
            await nl.add_rule(rule),
        ]

    assert run_in(pair.a, add) == [True, False, True, True, False]
    routes = pair.lab.ip_json(pair.a, "route", "show")
    assert {"dst": "198.18.9.0/24", "gateway": pair.b_ip} in [
        {"dst": r["dst"], "gateway": r.get("gateway")} for r in routes
    ]
    r6 = pair.lab.ip_json(pair.a, "-6", "route", "show", "table", "100")
    assert any(r["dst"] == "2001:db8:99::/64" for r in r6)
    rules = pair.lab.ip_json(pair.a, "rule", "show")
    assert any(r.get("priority") == 1000 and r.get("table") == "100" for r in rules), rules

    async def remove(nl: Netlink) -> list[bool]:
        return [
            await nl.remove_route(route),
            await nl.remove_route(route),
            await nl.remove_route(route6),
            await nl.remove_rule(rule),
            await nl.remove_rule(rule),
        ]

    assert run_in(pair.a, remove) == [True, False, True, True, False]
    assert not any(r.get("priority") == 1000 for r in pair.lab.ip_json(pair.a, "rule", "show"))


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_vmac_macvlan_lifecycle(pair: Pair, family: int) -> None:
    name = vmac_name(51, family)

    async def body(nl: Netlink) -> tuple[object, object, bool, bool]:
        first = await nl.create_vmac("eth0", 51, family=family)
        again = await nl.create_vmac("eth0", 51, family=family)
        return first, again, await nl.delete_link(name), await nl.delete_link(name)

    first, again, deleted, deleted_again = run_in(pair.a, body)
    assert first == again
    assert first.mac == vmac_address(51, family)
    assert (deleted, deleted_again) == (True, False)
    assert name in {"vrrp.51", "vrrp6.51"}
    assert vmac_address(51, socket.AF_INET) == "00:00:5e:00:01:33"
    assert vmac_address(51, socket.AF_INET6) == "00:00:5e:00:02:33"


def test_vmac_is_private_macvlan_and_carries_the_vip(pair: Pair) -> None:
    lab = pair.lab

    def arp_ignore() -> str:
        return lab.run(pair.a, ["sysctl", "-n", "net.ipv4.conf.eth0.arp_ignore"]).stdout.strip()

    async def body(nl: Netlink) -> None:
        await nl.create_vmac("eth0", 7)
        await nl.add_address(VirtualAddress.parse("198.18.0.107/24", "vrrp.7"))
        (link,) = lab.ip_json(pair.a, "-d", "link", "show", "vrrp.7")
        assert link["linkinfo"]["info_kind"] == "macvlan"
        assert link["linkinfo"]["info_data"]["mode"] == "private"
        assert link["address"] == "00:00:5e:00:01:07"
        lab.run(pair.b, ["ping", "-c1", "-W2", "198.18.0.107"])
        # only the VMAC answers ARP for its VIPs; deleting it restores the parent's sysctls
        assert arp_ignore() == "1"
        assert await nl.delete_link("vrrp.7")
        assert arp_ignore() == "0"

    run_in(pair.a, body)


def test_missing_interface(pair: Pair) -> None:
    async def body(nl: Netlink) -> tuple[bool, bool]:
        with pytest.raises(LookupError):
            await nl.ifindex("nosuch0")
        gone = VirtualAddress.parse("198.18.0.5", "nosuch0")
        return await nl.remove_address(gone), await nl.delete_link("nosuch0")

    assert run_in(pair.a, body) == (False, False)
