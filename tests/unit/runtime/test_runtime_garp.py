"""Gratuitous ARP/NA spacing (vrrp_garp_interval / vrrp_gna_interval), the lower-priority
GARP bursts of a MASTER (garp_lower_prio_delay/repeat) and vrrp_startup_delay."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from pathlib import Path

from test_runtime_daemon import A_IP, Harness, conf, inst, run_scenario, state, until
from test_runtime_driver import make, peer_advert

from hakeeper.runtime.host import Announcers
from hakeeper.vrrp import machine as m


class Recorder:
    def __init__(self, log: list[tuple[str, str, float]], ifname: str) -> None:
        self.log = log
        self.ifname = ifname

    def announce(self, address: str) -> bool:
        self.log.append((self.ifname, address, time.monotonic()))
        return True

    def close(self) -> None:
        pass


def _gaps(log: list[tuple[str, str, float]], ifname: str, v6: bool) -> list[float]:
    times = [t for i, a, t in log if i == ifname and (":" in a) == v6]
    return [b - a for a, b in itertools.pairwise(times)]


def test_announcements_are_paced_per_interface_and_family() -> None:
    sent: list[tuple[str, str, float]] = []

    async def go() -> float:
        ann = Announcers(factory=lambda ifname: Recorder(sent, ifname))
        ann.garp_interval, ann.gna_interval = 0.05, 0.02
        t0 = time.monotonic()
        await ann("eth0", "198.18.0.100", 3)
        await ann("eth0", "198.18.0.101", 2)  # another instance, same interface: same pace
        await ann("eth0", "2001:db8::1", 3)
        await ann("eth1", "198.18.1.100", 3)
        queued_in = time.monotonic() - t0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.0
        while len(sent) < 11 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        ann.close()
        return queued_in

    queued_in = asyncio.run(go())
    assert queued_in < 0.1, "the host-ops queue is not held up by the pacing"
    assert len(sent) == 11
    assert [a for i, a, _ in sent if i == "eth0" and ":" not in a] == ["198.18.0.100"] * 3 + [
        "198.18.0.101"
    ] * 2
    assert min(_gaps(sent, "eth0", False)) >= 0.045
    assert min(_gaps(sent, "eth0", True)) >= 0.015
    assert min(_gaps(sent, "eth1", False)) >= 0.045
    first = {i: min(t for j, _, t in sent if j == i) for i in ("eth0", "eth1")}
    assert abs(first["eth0"] - first["eth1"]) < 0.1, "interfaces are paced independently"


def test_without_intervals_announcements_go_at_once() -> None:
    sent: list[tuple[str, str, float]] = []

    async def go() -> None:
        ann = Announcers(factory=lambda ifname: Recorder(sent, ifname))
        await ann("eth0", "198.18.0.100", 5)
        assert len(sent) == 5 and ann.sent == 5

    asyncio.run(go())


def test_master_hearing_a_lower_priority_sends_two_garp_bursts() -> None:
    async def go() -> list[tuple[str, str, int]]:
        loop = asyncio.get_running_loop()
        drv, _sender, host = make(loop, 200)
        drv.instance = dataclasses.replace(
            drv.instance, garp_lower_prio_delay=0.05, garp_lower_prio_repeat=2
        )
        drv.start()
        drv.force_master("test")
        assert drv.state is m.State.MASTER
        host.calls.clear()
        drv.on_advert(peer_advert(100))
        drv.on_advert(peer_advert(100))  # second burst not scheduled twice
        assert host.calls.count(("garp", "eth0", 2)) == 2
        deadline = loop.time() + 2.0
        while host.calls.count(("garp", "eth0", 2)) < 3 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        drv.stop()
        return host.calls

    calls = asyncio.run(go())
    assert calls.count(("garp", "eth0", 2)) == 3


def test_lower_priority_repeat_zero_sends_nothing() -> None:
    async def go() -> list[tuple[str, str, int]]:
        loop = asyncio.get_running_loop()
        drv, _sender, host = make(loop, 200)
        drv.instance = dataclasses.replace(drv.instance, garp_lower_prio_repeat=0)
        drv.start()
        drv.force_master("test")
        host.calls.clear()
        drv.on_advert(peer_advert(100))
        drv.stop()
        return host.calls

    assert not [c for c in asyncio.run(go()) if c[0] == "garp"]


def test_startup_delay_holds_instances_and_a_term_ends_it(tmp_path: Path) -> None:
    # 1 s of delay against 0.15 s of looking: room for a loaded box's scheduling stalls
    extra = "global_defs {\n    vrrp_startup_delay 1\n}\n"

    async def body(h: Harness) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        a = h.start("a", A_IP, conf(inst(prio=150), extra=extra))
        await asyncio.sleep(0.15)
        assert a.instances == {}, "nothing runs during vrrp_startup_delay"
        a.request("usr1")  # held, then handled
        await until(lambda: state(a) == "MASTER", what="started after the delay")
        assert loop.time() - t0 >= 1.0
        await until((tmp_path / "a.json").exists, what="held USR1 handled")
        b = h.start("b", "198.18.0.2", conf(inst(prio=100), extra=extra))
        await asyncio.sleep(0.05)
        b.request("term")
        assert await asyncio.wait_for(h.tasks["b"], 5.0) == 0
        assert b.instances == {}

    run_scenario(tmp_path, body)
