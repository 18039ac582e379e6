"""Latency of the VRRP I/O adapters on the real kernel, in two network namespaces.

Run as root: `.venv/bin/python bench/io_adapters.py [--rounds N]`. Prints medians and p95 of
  * advert one-way: VrrpSocket.send_to in ns A -> readable + recv in ns B (multicast v4, v6)
  * VIP add / remove through Netlink (pyroute2), each call awaited
  * link event: Netlink.set_link(down/up) -> LinkWatcher event
  * GARP send cost (AF_PACKET) and script runner spawn+wait of /bin/true
Bounded: every loop has a fixed count and every wait a deadline. Nothing touches the root
namespace; the namespaces are deleted on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import select
import socket
import statistics
import time
from collections.abc import Callable

from hakeeper.io.arp import NeighbourAnnouncer
from hakeeper.io.linkwatch import LinkWatcher
from hakeeper.io.netlink import Netlink, VirtualAddress
from hakeeper.io.scripts import run_script
from hakeeper.io.vrrp_socket import VrrpSocket, VrrpSocketConfig
from hakeeper.lab.netns import Lab, entered

ADVERT = bytes.fromhex("2133640100010000c61200640000000000000000")


def summary(name: str, samples_ms: list[float]) -> str:
    samples = sorted(samples_ms)
    p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
    med = statistics.median(samples)
    return f"{name:<34} n={len(samples):<4} median {med:8.3f} ms   p95 {p95:8.3f} ms"


def advert_latency(lab: Lab, a: str, b: str, family: int, rounds: int) -> list[float]:
    with entered(a):
        tx = VrrpSocket(VrrpSocketConfig("eth0", family))
    with entered(b):
        rx = VrrpSocket(VrrpSocketConfig("eth0", family))
    out = []
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            tx.send_to(ADVERT, tx.destinations[0])
            ready, _, _ = select.select([rx.fileno()], [], [], 1.0)
            if ready and rx.recv_nowait() is not None:
                out.append((time.perf_counter() - t0) * 1000)
    finally:
        tx.close()
        rx.close()
    return out


async def netlink_latency(a: str, rounds: int) -> tuple[list[float], list[float], list[float]]:
    with entered(a):
        nl = await Netlink().open()
        watcher = LinkWatcher()
    add, remove, link = [], [], []
    try:
        for i in range(rounds):
            vip = VirtualAddress.parse(f"198.18.1.{1 + i % 200}/24", "eth0")
            t0 = time.perf_counter()
            await nl.add_address(vip)
            t1 = time.perf_counter()
            await nl.remove_address(vip)
            t2 = time.perf_counter()
            add.append((t1 - t0) * 1000)
            remove.append((t2 - t1) * 1000)
        for i in range(rounds):
            watcher.poll()  # flush
            up = i % 2 == 1
            t0 = time.perf_counter()
            await nl.set_link("eth1", up=up)
            deadline = t0 + 2.0
            while time.perf_counter() < deadline:
                select.select([watcher.fileno()], [], [], 0.1)
                if any(e.ifname == "eth1" and e.up == up for e in watcher.poll()):
                    link.append((time.perf_counter() - t0) * 1000)
                    break
    finally:
        nl.close()
        watcher.close()
    return add, remove, link


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    rounds = max(5, min(parser.parse_args().rounds, 2000))
    with Lab() as lab:
        sw = lab.add_switch()
        a, b = lab.add_ns("a"), lab.add_ns("b")
        lab.connect(a, sw)
        lab.connect(b, sw)
        lab.veth(a, "eth1", b, "eth1")
        lab.addr(a, "eth0", "198.18.0.1/24")
        lab.addr(b, "eth0", "198.18.0.2/24")
        print(summary("advert one-way v4 (multicast)", advert_latency(lab, a, b, socket.AF_INET,
                                                                      rounds)))  # fmt: skip
        print(summary("advert one-way v6 (multicast)", advert_latency(lab, a, b, socket.AF_INET6,
                                                                      rounds)))  # fmt: skip
        add, remove, link = asyncio.run(netlink_latency(a, min(rounds, 100)))
        print(summary("netlink VIP add", add))
        print(summary("netlink VIP remove", remove))
        print(summary("link set -> LinkWatcher event", link))
        with entered(a):
            garp = NeighbourAnnouncer("eth0")
        try:
            print(summary("GARP send (AF_PACKET)", timed(lambda: garp.garp("198.18.0.100"),
                                                         rounds)))  # fmt: skip
        finally:
            garp.close()
        spawn = [asyncio.run(_spawn_ms()) for _ in range(min(rounds, 30))]
        print(summary("script runner /bin/true", spawn))


async def _spawn_ms() -> float:
    t0 = time.perf_counter()
    await run_script(["/bin/true"], timeout=5)
    return (time.perf_counter() - t0) * 1000


if __name__ == "__main__":
    main()
