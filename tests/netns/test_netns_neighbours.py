"""GARP / unsolicited NA really re-point a neighbour's cache; link watcher sees link changes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import pytest

from conftest import Pair
from hakeeper.io.arp import NeighbourAnnouncer
from hakeeper.io.linkwatch import LinkEvent, LinkWatcher
from hakeeper.io.netlink import Netlink, VirtualAddress
from hakeeper.lab.netns import entered, wait_until

pytestmark = pytest.mark.root
STALE_MAC = "02:00:00:00:00:99"


def seed_stale_entry(pair: Pair, ip: str) -> None:
    """B believes `ip` lives at STALE_MAC (as after a failover, before any announcement)."""
    pair.lab.ip(pair.b, "neigh", "replace", ip, "lladdr", STALE_MAC, "dev", "eth0", "nud", "stale")
    assert pair.lab.neighbours(pair.b, "eth0")[ip] == STALE_MAC


def test_garp_repoints_neighbour_cache(pair: Pair) -> None:
    vip = "198.18.0.100"
    seed_stale_entry(pair, vip)
    with entered(pair.a):
        announcer = NeighbourAnnouncer("eth0")
    try:
        a_mac = pair.lab.mac(pair.a, "eth0")
        assert announcer.garp(vip)
        wait_until(
            lambda: pair.lab.neighbours(pair.b, "eth0").get(vip) == a_mac,
            timeout=3,
            what="B's ARP entry for the VIP to point at A",
        )
        assert announcer.sent == 1 and announcer.errors == 0
    finally:
        announcer.close()


def test_garp_from_vmac(pair: Pair) -> None:
    vip = "198.18.0.107"

    async def make_vmac() -> None:
        with entered(pair.a):
            nl = await Netlink().open()
        try:
            await nl.create_vmac("eth0", 7)
            await nl.add_address(VirtualAddress.parse(f"{vip}/24", "vrrp.7"))
        finally:
            nl.close()

    asyncio.run(make_vmac())
    seed_stale_entry(pair, vip)
    with entered(pair.a):
        announcer = NeighbourAnnouncer("vrrp.7")
    try:
        assert announcer.announce(vip)
        wait_until(
            lambda: pair.lab.neighbours(pair.b, "eth0").get(vip) == "00:00:5e:00:01:07",
            timeout=3,
            what="B's ARP entry to point at the VMAC",
        )
    finally:
        announcer.close()


def test_unsolicited_na_repoints_ipv6_neighbour(pair: Pair) -> None:
    vip6 = "2001:db8:18::100"
    pair.lab.addr(pair.a, "eth0", f"{vip6}/64")
    seed_stale_entry(pair, vip6)
    with entered(pair.a):
        announcer = NeighbourAnnouncer("eth0")
    try:
        a_mac = pair.lab.mac(pair.a, "eth0")
        assert announcer.announce(vip6, router=False)
        wait_until(
            lambda: pair.lab.neighbours(pair.b, "eth0").get(vip6) == a_mac,
            timeout=3,
            what="B's neighbour entry for the IPv6 VIP to point at A",
        )
    finally:
        announcer.close()


def test_link_watcher_reports_down_and_up(pair: Pair) -> None:
    lab = pair.lab
    lab.veth(pair.a, "eth1", pair.b, "eth1")

    async def scenario() -> list[LinkEvent]:
        with entered(pair.a):
            watcher = LinkWatcher()
        seen: list[LinkEvent] = []
        changed = asyncio.Event()

        def on_event(event: LinkEvent) -> None:
            seen.append(event)
            changed.set()

        async def expect(what: str, check: Callable[[LinkEvent], bool]) -> None:
            deadline = time.monotonic() + 5
            while not any(check(e) for e in seen):
                changed.clear()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no link event: {what}; saw {seen}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)

        try:
            watcher.attach(asyncio.get_running_loop(), on_event)
            watcher.request_dump()
            await expect("snapshot of eth1", lambda e: e.ifname == "eth1" and e.usable)
            seen.clear()
            lab.link_set(pair.a, "eth1", up=False)
            await expect("eth1 admin down", lambda e: e.ifname == "eth1" and not e.up)
            lab.link_set(pair.a, "eth1", up=True)
            await expect("eth1 back", lambda e: e.ifname == "eth1" and e.usable)
            # carrier loss: the far end goes down, ours stays admin-up but not running
            lab.link_set(pair.b, "eth1", up=False)
            await expect("eth1 no carrier", lambda e: e.ifname == "eth1" and e.up and not e.running)
            lab.ip(pair.a, "link", "del", "eth1")
            await expect("eth1 deleted", lambda e: e.ifname == "eth1" and e.deleted)
            return seen
        finally:
            watcher.close()

    events = asyncio.run(scenario())
    assert events
