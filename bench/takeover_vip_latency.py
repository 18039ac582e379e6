"""Takeover critical path: time from "add VIPs + send GARPs" to both done, fast vs queued.

In a throwaway namespace (a veth pair, eth0 up, 198.18.0.2/24) a child process builds the
daemon's real host stack (`NetlinkThread`, `Announcers`, `NetlinkHost`) on uvloop and, n
times, adds one VIP and sends garp_master_repeat=5 GARPs exactly as the driver does when it
becomes MASTER, then removes the VIP again. "fast" is the runtime's default (raw rtnetlink
socket + synchronous GARP from the loop thread, taken when nothing is queued); "queued" is
the previous path (the ordered worker shipping the add to the pyroute2 thread). Done = the
VIP is bindable and all GARPs were handed to the packet socket. Usage (root):

    .venv/bin/python bench/takeover_vip_latency.py [-n 200] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

VIP = "198.18.0.100/24"


def _bindable(ip: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ip, 0))
        except OSError:
            return False
    return True


async def _measure(n: int, mode: str) -> dict[str, Any]:
    from hakeeper.conf.model import VirtualAddress  # noqa: PLC0415
    from hakeeper.runtime.host import Announcers, NetlinkHost, NetlinkThread  # noqa: PLC0415

    vip = VirtualAddress(ipaddress.ip_interface(VIP))
    ip = str(vip.address.ip)
    netlink = await NetlinkThread().open()
    announcers = Announcers()
    host = NetlinkHost(netlink, announcers)
    host.start()
    if mode == "queued" and host.raw is not None:
        asyncio.get_running_loop().remove_reader(host.raw.fileno())
        host.raw.close()
        host.raw = None
    samples: list[float] = []
    present_at_return = 0
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            host.add_addresses("eth0", [vip])
            host.gratuitous("eth0", [vip], 5)
            if mode == "fast":
                t1 = time.perf_counter()
                present_at_return += _bindable(ip)
            else:
                await host.drain(2.0)
                t1 = time.perf_counter()
            samples.append((t1 - t0) * 1e3)
            host.remove_addresses("eth0", [vip])
            await host.drain(2.0)
            await asyncio.sleep(0.002)  # let acks and other loop work settle
        assert not _bindable(ip)
    finally:
        await host.close()
        announcers.close()
        netlink.close()
    samples.sort()
    return {
        "mode": mode,
        "n": n,
        "median_ms": round(statistics.median(samples), 3),
        "p90_ms": round(samples[int(0.9 * (n - 1))], 3),
        "max_ms": round(samples[-1], 3),
        "vip_present_at_return": present_at_return,
        "garps_sent": announcers.sent,
        "errors": host.errors,
        "fast_adds": host.fast_adds,
    }


def child(n: int) -> None:
    import uvloop  # noqa: PLC0415

    out = [uvloop.run(_measure(n, mode)) for mode in ("fast", "queued")]
    print(json.dumps(out))


def run(n: int) -> list[dict[str, Any]]:
    from hakeeper.lab.netns import Lab  # noqa: PLC0415

    with Lab() as lab:
        a = lab.add_ns("a")
        b = lab.add_ns("b")
        lab.veth(a, "eth0", b, "eth0")
        lab.link_set(a, "eth0", up=True)
        lab.link_set(b, "eth0", up=True)
        lab.addr(a, "eth0", "198.18.0.2/24")
        proc = lab.run(a, [sys.executable, __file__, "--child", "-n", str(n)], timeout=120)
    result: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.child:
        child(args.n)
        return
    rows = run(args.n)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(
            f"{r['mode']:7s} n={r['n']} median {r['median_ms']:.3f} ms  p90 {r['p90_ms']:.3f}"
            f"  max {r['max_ms']:.3f}  VIP present at return {r['vip_present_at_return']}"
            f"  GARPs {r['garps_sent']}  errors {r['errors']}"
        )


if __name__ == "__main__":
    main()
