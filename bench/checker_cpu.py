"""Checker CPU: 1,000 virtual servers x 10 real servers, TCP_CHECK every 5 s (2,000 probes/s).

The backends are `--ports` listening sockets on 127.0.0.1 served by a child process that
accepts and closes (its CPU is not counted); real server j of virtual server i probes port
base + (i % (ports/10)) * 10 + j, so every virtual server has ten distinct real servers. The
checker engine runs in this process (uvloop by default, like `hakeeper run`); after a
warm-up of one delay_loop plus the bootstrap second, CPU (utime+stime of this process via
getrusage) is sampled over `--seconds` and reported as % of one core, with probes/s and
failed probes. RLIMIT_NOFILE is raised to the hard limit. Target: < 10 % of one core.

    .venv/bin/python bench/checker_cpu.py [--vs 1000] [--rs 10] [--delay-loop 5]
        [--seconds 30] [--no-uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hakeeper.check.engine import CheckerEngine
from hakeeper.conf.model import CheckerCommon, RealServer, TcpCheck, VirtualServer

LISTENER = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
ports = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1024)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    ports.append(s.getsockname()[1])
print(" ".join(map(str, ports)), flush=True)
while True:
    for key, _ in sel.select():
        try:
            while True:
                c, _ = key.fileobj.accept()
                c.close()
        except BlockingIOError:
            pass
"""


def build(n_vs: int, n_rs: int, ports: list[int], delay_loop: float) -> list[VirtualServer]:
    common = CheckerCommon(connect_timeout=3.0, delay_loop=delay_loop, retry=1)
    groups = max(1, len(ports) // n_rs)
    out = []
    for i in range(n_vs):
        base = (i % groups) * n_rs
        reals = tuple(
            RealServer(
                ipaddress.IPv4Address("127.0.0.1"),
                ports[(base + j) % len(ports)],
                checkers=(TcpCheck(common),),
            )
            for j in range(n_rs)
        )
        vip = ipaddress.IPv4Address("198.18.0.0") + i
        out.append(
            VirtualServer(vip, 80, delay_loop=delay_loop, lvs_sched="rr", real_servers=reals)
        )
    return out


async def run(args: argparse.Namespace, ports: list[int]) -> dict[str, float]:
    vss = build(args.vs, args.rs, ports, args.delay_loop)
    engine = CheckerEngine(vss)
    t0 = time.monotonic()
    engine.start()
    setup = time.monotonic() - t0
    if args.gc_freeze:
        gc.freeze()  # what a daemon does after loading its config: long-lived objects leave GC
    await asyncio.sleep(1.0 + args.delay_loop + 1.0)  # bootstrap + warmup spread
    loop = asyncio.get_running_loop()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    p0, w0, lag = engine.probes_started, time.monotonic(), 0.0
    end = w0 + args.seconds
    while time.monotonic() < end:
        t = loop.time()
        await asyncio.sleep(0.05)
        lag = max(lag, loop.time() - t - 0.05)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - w0
    probes = engine.probes_started - p0
    down = sum(not r.alive for s in engine.status() for r in s.real_servers)
    await engine.stop()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {
        "setup_s": setup,
        "cpu_pct": 100 * cpu / wall,
        "user_pct": 100 * (r1.ru_utime - r0.ru_utime) / wall,
        "sys_pct": 100 * (r1.ru_stime - r0.ru_stime) / wall,
        "probes_per_s": probes / wall,
        "us_per_probe": 1e6 * cpu / max(probes, 1),
        "servers_down": down,
        "max_loop_lag_ms": lag * 1000,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vs", type=int, default=1000)
    ap.add_argument("--rs", type=int, default=10)
    ap.add_argument("--ports", type=int, default=100)
    ap.add_argument("--delay-loop", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--no-uvloop", action="store_true")
    ap.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after setup")
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    child = subprocess.Popen(
        [sys.executable, "-c", LISTENER, str(args.ports)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        ports = [int(p) for p in child.stdout.readline().split()]
        if args.no_uvloop:
            result = asyncio.run(run(args, ports))
        else:
            import uvloop  # noqa: PLC0415

            result = uvloop.run(run(args, ports))
    finally:
        child.terminate()
        child.wait(5)
    loop_name = "asyncio" if args.no_uvloop else "uvloop"
    print(
        f"checker_cpu: {args.vs} VS x {args.rs} RS TCP_CHECK every {args.delay_loop:g}s "
        f"({loop_name}, {args.seconds:g}s window)"
    )
    for k, v in result.items():
        print(f"  {k:16} {v:10.2f}")
    verdict = "PASS" if result["cpu_pct"] < 10 else "FAIL"
    print(f"  target < 10% of one core: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
