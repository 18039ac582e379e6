"""One InstanceDriver on a real loop with fake I/O: advert cache, lazy timer, log limiting."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from hakeeper.conf.model import VirtualAddress, VrrpInstance
from hakeeper.runtime.driver import InstanceDriver
from hakeeper.vrrp import machine as m
from hakeeper.vrrp.packet import Advert, decode

ME = ipaddress.ip_address("198.18.0.2")
PEER = ipaddress.ip_address("198.18.0.1")
VIP = ipaddress.ip_interface("198.18.0.100/24")
GROUP = ipaddress.ip_address("224.0.0.18")


class Sender:
    source = str(ME)
    destinations = (str(GROUP),)

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_to(self, payload: bytes, dst: str) -> bool:
        self.sent.append(payload)
        return True


class Host:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def add_addresses(self, ifname: str, vips: Sequence[VirtualAddress]) -> None:
        self.calls.append(("add", ifname, len(vips)))

    def remove_addresses(self, ifname: str, vips: Sequence[VirtualAddress]) -> None:
        self.calls.append(("remove", ifname, len(vips)))

    def gratuitous(self, ifname: str, vips: Sequence[VirtualAddress], count: int) -> None:
        self.calls.append(("garp", ifname, count))

    def add_routes(self, ifname: str, routes: Sequence[Any], rules: Sequence[Any]) -> None:
        self.calls.append(("routes+", ifname, len(routes) + len(rules)))

    def remove_routes(self, ifname: str, routes: Sequence[Any], rules: Sequence[Any]) -> None:
        self.calls.append(("routes-", ifname, len(routes) + len(rules)))


def make(loop: asyncio.AbstractEventLoop, prio: int) -> tuple[InstanceDriver, Sender, Host]:
    inst = VrrpInstance(
        name="VI_1",
        interface="eth0",
        virtual_router_id=51,
        priority=prio,
        advert_int=0.02,
        version=3,
        virtual_ipaddresses=(VirtualAddress(VIP),),
    )
    params = m.VrrpParams(
        name="VI_1", vrid=51, primary_ip=ME, priority=prio, version=3, advert_int=0.02,
        vips=(VIP.ip,), garp_master_delay=0,
    )  # fmt: skip
    sender, host = Sender(), Host()
    return InstanceDriver(loop, inst, params, sender, host), sender, host


def peer_advert(prio: int, vips: tuple[ipaddress.IPv4Address, ...] = (VIP.ip,)) -> Advert:
    return Advert(version=3, vrid=51, priority=prio, addresses=vips, interval_cs=2, source=PEER)


def test_master_encodes_once_per_priority_and_sends_every_interval() -> None:
    async def go() -> tuple[InstanceDriver, Sender, Host]:
        loop = asyncio.get_running_loop()
        drv, sender, host = make(loop, 255)
        drv.start()
        deadline = loop.time() + 3.0
        while len(sender.sent) < 20 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        drv.stop()
        return drv, sender, host

    drv, sender, host = asyncio.run(go())
    assert len(sender.sent) >= 20
    assert len({p for p in sender.sent[:-1]}) == 1, "steady adverts are one cached payload"
    last = decode(sender.sent[-1], src=ME, dst=GROUP)
    assert getattr(last, "priority", None) == 0, "stop() resigns with priority 0"
    assert host.calls[0] == ("add", "eth0", 1)
    assert ("garp", "eth0", 5) in host.calls
    assert host.calls[-1] == ("remove", "eth0", 1)
    assert not drv.running


def test_backup_timer_wakes_rarely_while_master_is_heard() -> None:
    async def go() -> InstanceDriver:
        loop = asyncio.get_running_loop()
        drv, _sender, _host = make(loop, 100)
        drv.start()
        # the master advertises 0.1 s (Master_Down_Interval ~0.36 s, learned by a v3 backup)
        # so a loaded box stalling this loop for a few 20 ms ticks cannot fake a master loss
        advert = dataclasses.replace(peer_advert(150), interval_cs=10)
        for _ in range(60):  # 60 adverts at 20 ms: well inside Master_Down_Interval each time
            drv.on_advert(advert)
            await asyncio.sleep(0.02)
        assert drv.state is m.State.BACKUP
        drv.stop()
        return drv

    drv = asyncio.run(go())
    assert drv.counters.timer_wakeups < 30, drv.counters.timer_wakeups


def test_mismatch_warnings_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    other = (ipaddress.ip_address("198.18.0.111"),)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        drv, _s, _h = make(loop, 100)
        drv.start()
        for _ in range(50):
            drv.on_advert(peer_advert(150, other))
        drv.stop()

    with caplog.at_level(logging.INFO, logger="hakeeper.vrrp"):
        asyncio.run(go())
    mismatch = [r for r in caplog.records if "VIP list differs" in r.getMessage()]
    assert len(mismatch) == 1


def test_priority_change_advertises_at_once_with_new_bytes() -> None:
    async def go() -> tuple[Sender, InstanceDriver]:
        loop = asyncio.get_running_loop()
        drv, sender, _h = make(loop, 100)
        drv.start()
        drv.force_master("test")
        n = len(sender.sent)
        drv.set_priority(90)
        assert len(sender.sent) == n + 1
        drv.stop()
        return sender, drv

    sender, drv = asyncio.run(go())
    prios = [getattr(decode(p, src=ME, dst=GROUP), "priority", None) for p in sender.sent]
    assert prios[0] == 100 and 90 in prios and prios[-1] == 0
    assert drv.status()["effective_priority"] == 90
