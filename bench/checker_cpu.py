"""Checker CPU: 1,000 virtual servers x 10 real servers, TCP_CHECK every 5 s (2,000 probes/s).

The backends are `--ports` listening sockets on 127.0.0.1 served by a child process that
accepts and closes (its CPU is not counted); real server j of virtual server i probes port
base + (i % (ports/10)) * 10 + j, so every virtual server has ten distinct real servers. The
checker engine runs in this process (uvloop by default, like `hakeeper run`); after a
warm-up of one delay_loop plus the bootstrap second, CPU (utime+stime of this process via
getrusage) is sampled over `--seconds` and reported as % of one core, with probes/s and
failed probes. RLIMIT_NOFILE is raised to the hard limit. Target: < 10 % of one core.

    .venv/bin/python bench/checker_cpu.py [--vs 1000] [--rs 10] [--delay-loop 5]
        [--seconds 30] [--repeat 3] [--no-uvloop] [--gc-freeze] [--keepalived]

`--keepalived` (root) then runs Debian's keepalived checker process (`-C`) on the same
workload for comparison, inside a throwaway namespace with its own listeners; this kernel
has no IPVS, so it gets the fake-IPVS LD_PRELOAD shim of tests/interop (built with gcc).
Its CPU is the checker child's utime+stime from /proc/PID/stat over the same window.
With `--repeat N` the two alternate N times; the median and range of each, and of the
per-pair ratio, close the report. User and system time are reported separately: on
loopback the system share includes the backend side of every handshake (the listener's
SYN and ACK processing runs in the prober's context), for keepalived as for us.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hakeeper.check.engine import CheckerEngine
from hakeeper.conf.model import CheckerCommon, RealServer, TcpCheck, VirtualServer

LISTENER = r"""
import selectors, socket, sys, time
sel = selectors.DefaultSelector()
accepted, last = 0, time.monotonic()
ports = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind((sys.argv[2], 0))
    s.listen(1024)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    ports.append(s.getsockname()[1])
print(" ".join(map(str, ports)), flush=True)
while True:
    for key, _ in sel.select(1.0):
        try:
            while True:
                c, _ = key.fileobj.accept()
                c.close()
                accepted += 1
        except BlockingIOError:
            pass
    if time.monotonic() - last >= 1.0:
        print(accepted, flush=True)  # running total, read by the bench to check the rate
        last = time.monotonic()
"""


def accepted_rate(stdout: object, seconds: float) -> float:
    """Connections/s the listener accepted over `seconds` (from its once-a-second totals)."""
    readline = stdout.readline  # type: ignore[attr-defined]
    fd = stdout.fileno()  # type: ignore[attr-defined]
    first = int(readline())
    os.set_blocking(fd, False)  # skip the totals buffered during the warm-up
    try:
        while line := readline():
            first = int(line)
    finally:
        os.set_blocking(fd, True)
    t0 = time.monotonic()
    last = first
    while time.monotonic() - t0 < seconds:
        last = int(readline())
    return (last - first) / (time.monotonic() - t0)


def build(
    n_vs: int, n_rs: int, ports: list[int], delay_loop: float, host: str = "127.0.0.1"
) -> list[VirtualServer]:
    common = CheckerCommon(connect_timeout=3.0, delay_loop=delay_loop, retry=1)
    groups = max(1, len(ports) // n_rs)
    out = []
    for i in range(n_vs):
        base = (i % groups) * n_rs
        reals = tuple(
            RealServer(
                ipaddress.IPv4Address(host),
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


async def run(args: argparse.Namespace, ports: list[int], host: str) -> dict[str, float]:
    vss = build(args.vs, args.rs, ports, args.delay_loop, host)
    engine = CheckerEngine(vss)
    t0 = time.monotonic()
    engine.start()
    setup = time.monotonic() - t0
    if args.gc_freeze:
        gc.freeze()  # what a daemon does after loading its config: long-lived objects leave GC
    await asyncio.sleep(1.0 + args.delay_loop + 1.0)  # bootstrap + warmup spread
    loop = asyncio.get_running_loop()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    s0 = softirq_s(args.rx_cpu)
    p0, w0, lag = engine.probes_started, time.monotonic(), 0.0
    end = w0 + args.seconds
    while time.monotonic() < end:
        t = loop.time()
        await asyncio.sleep(0.05)
        lag = max(lag, loop.time() - t - 0.05)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    s1 = softirq_s(args.rx_cpu)
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
        **({"rx_softirq_pct": 100 * (s1 - s0) / wall} if args.topology == "veth" else {}),
    }


def keepalived_config(
    n_vs: int, n_rs: int, ports: list[int], delay_loop: float, host: str = "127.0.0.1"
) -> str:
    out = []
    groups = max(1, len(ports) // n_rs)
    for i in range(n_vs):
        vip = ipaddress.IPv4Address("198.18.0.0") + i
        base = (i % groups) * n_rs
        out.append(f"virtual_server {vip} 80 {{\n  delay_loop {delay_loop:g}\n  lvs_sched rr\n")
        out.append("  protocol TCP\n")
        for j in range(n_rs):
            port = ports[(base + j) % len(ports)]
            out.append(f"  real_server {host} {port} {{\n    TCP_CHECK {{\n")
            out.append("      connect_timeout 3\n    }\n  }\n")
        out.append("}\n")
    return "".join(out)


def proc_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of one process from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def softirq_s(cpu: int) -> float:
    """Softirq seconds spent on `cpu` so far (/proc/stat), whoever it was for."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            return int(line.split()[7]) / os.sysconf("SC_CLK_TCK")
    return 0.0


class Topology:
    """Where the prober and the listeners live: one namespace on loopback, or two joined by
    a veth pair whose receive processing is steered (RPS) to `rx_cpu` while the prober is
    pinned to `cpu`, as a NIC's interrupts would be handled apart from the process."""

    def __init__(self, args: argparse.Namespace) -> None:
        from hakeeper.lab.netns import Lab  # noqa: PLC0415

        self.lab = Lab("hkbench")
        self.veth = args.topology == "veth"
        self.rx_cpu = args.rx_cpu
        if not self.veth:
            self.prober = self.backends = self.lab.add_ns("ka")
            self.host = "127.0.0.1"
            return
        self.prober, self.backends = self.lab.add_ns("chk"), self.lab.add_ns("be")
        self.lab.veth(self.prober, "c0", self.backends, "b0")
        self.lab.addr(self.prober, "c0", "198.18.1.1/24")
        self.lab.addr(self.backends, "b0", "198.18.1.2/24")
        self.host = "198.18.1.2"
        mask = f"{1 << args.rx_cpu:x}"
        for ns, dev in ((self.prober, "c0"), (self.backends, "b0")):
            self.lab.run(
                ns, ["sh", "-c", f"echo {mask} > /sys/class/net/{dev}/queues/rx-0/rps_cpus"]
            )

    def listener(self, n_ports: int) -> tuple[subprocess.Popen[str], list[int]]:
        argv = [sys.executable, "-c", LISTENER, str(n_ports), self.host]
        if self.veth:
            argv = ["taskset", "-c", str(self.rx_cpu), *argv]
        proc = self.lab.popen(self.backends, argv, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        return proc, [int(p) for p in proc.stdout.readline().split()]

    def close(self) -> None:
        self.lab.close()


def measure_keepalived(args: argparse.Namespace) -> dict[str, float]:
    """keepalived -C on the same workload in namespaces of its own (needs root + gcc)."""
    from hakeeper.lab.netns import wait_until  # noqa: PLC0415

    shim_src = Path(__file__).resolve().parents[1] / "tests" / "interop" / "fake_ipvs.c"
    topo = Topology(args)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            lab, ns = topo.lab, topo.prober
            work = Path(tmp)
            shim = work / "fake_ipvs.so"
            subprocess.run(["gcc", "-shared", "-fPIC", "-nostdlib", "-O1", "-o", str(shim),
                            str(shim_src)], check=True, timeout=60)  # fmt: skip
            listener, ports = topo.listener(args.ports)
            conf = work / "keepalived.conf"
            conf.write_text(keepalived_config(args.vs, args.rs, ports, args.delay_loop, topo.host))
            pids = {n: work / f"{n}.pid" for n in ("main", "vrrp", "check", "bfd")}
            pin = ["taskset", "-c", str(args.cpu)] if topo.veth else []
            lab.popen(ns, [
                *pin, "env", f"LD_PRELOAD={shim}", "keepalived", "-n", "-C", "-R", "-f",
                str(conf), "-p", str(pids["main"]), "-r", str(pids["vrrp"]), "-c",
                str(pids["check"]), "-b", str(pids["bfd"]),
            ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            wait_until(lambda: pids["check"].exists() and pids["check"].read_text().strip(),
                       timeout=30, interval=0.2, what="keepalived checker pid")  # fmt: skip
            child = int(pids["check"].read_text())
            main_pid = int(pids["main"].read_text())
            time.sleep(1.0 + args.delay_loop + 1.0)
            c0, m0, t0 = proc_cpu(child), proc_cpu(main_pid), time.monotonic()
            s0 = softirq_s(args.rx_cpu)
            rate = accepted_rate(listener.stdout, args.seconds)
            c1, m1, wall = proc_cpu(child), proc_cpu(main_pid), time.monotonic() - t0
            s1 = softirq_s(args.rx_cpu)
            user, sys_ = 100 * (c1[0] - c0[0]) / wall, 100 * (c1[1] - c0[1]) / wall
            out = {
                "cpu_pct": user + sys_,
                "user_pct": user,
                "sys_pct": sys_,
                "parent_cpu_pct": 100 * (sum(m1) - sum(m0)) / wall,
                "accepted_per_s": rate,
            }
            if topo.veth:
                out["rx_softirq_pct"] = 100 * (s1 - s0) / wall
            return out
        finally:
            topo.close()


@contextlib.contextmanager
def loopback_listeners(count: int) -> Iterator[list[int]]:
    """`count` listeners on 127.0.0.1 in a child process (accepting and closing); their ports."""
    child = subprocess.Popen(
        [sys.executable, "-c", LISTENER, str(count), "127.0.0.1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        yield [int(p) for p in child.stdout.readline().split()]
    finally:
        child.terminate()
        child.wait(5)


def measure_hakeeper(args: argparse.Namespace) -> dict[str, float]:
    if args.topology == "veth":
        from hakeeper.lab.netns import entered  # noqa: PLC0415

        topo = Topology(args)
        affinity = os.sched_getaffinity(0)
        try:
            _listener, ports = topo.listener(args.ports)
            os.sched_setaffinity(0, {args.cpu})
            with entered(topo.prober):  # this thread (the loop) probes from the namespace
                return run_loop(args, ports, topo.host)
        finally:
            os.sched_setaffinity(0, affinity)
            topo.close()
    with loopback_listeners(args.ports) as ports:
        return run_loop(args, ports, "127.0.0.1")


def measure_floor(args: argparse.Namespace) -> dict[str, float]:
    """The kernel floor on loopback: only socket() + connect() + close() in a plain loop,
    paced like the engine (the same probes per 10 ms), against the same listeners."""
    import _socket  # noqa: PLC0415

    with loopback_listeners(args.ports) as ports:
        addrs = [("127.0.0.1", p) for p in ports]
        per_tick = max(1, round(args.vs * args.rs / args.delay_loop / 100))
        kind = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        r0, t0, n = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), 0
        due = t0
        while time.monotonic() - t0 < args.seconds:
            for _ in range(per_tick):
                sock = _socket.socket(socket.AF_INET, kind)
                sock.connect_ex(addrs[n % len(addrs)])
                sock.close()
                n += 1
            due += 0.01
            time.sleep(max(0.0, due - time.monotonic()))
        r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - t0
    user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    return {
        "cpu_pct": 100 * (user + sys_) / wall,
        "user_pct": 100 * user / wall,
        "sys_pct": 100 * sys_ / wall,
        "connects_per_s": n / wall,
    }


def run_loop(args: argparse.Namespace, ports: list[int], host: str) -> dict[str, float]:
    if args.no_uvloop:
        return asyncio.run(run(args, ports, host))
    import uvloop  # noqa: PLC0415

    return uvloop.run(run(args, ports, host))


def show(title: str, result: dict[str, float]) -> None:
    print(title)
    for k, v in result.items():
        print(f"  {k:16} {v:10.2f}", flush=True)


def summary(name: str, runs: list[dict[str, float]]) -> None:
    """Median and range over the repeats of CPU, user and system %."""
    print(f"{name}: n={len(runs)}")
    for k in ("cpu_pct", "user_pct", "sys_pct"):
        vals = sorted(r[k] for r in runs)
        print(f"  {k:10} median {statistics.median(vals):6.2f}  range {vals[0]:.2f}-{vals[-1]:.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vs", type=int, default=1000)
    ap.add_argument("--rs", type=int, default=10)
    ap.add_argument("--ports", type=int, default=100)
    ap.add_argument("--delay-loop", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=1, help="runs (alternating with keepalived)")
    ap.add_argument("--no-uvloop", action="store_true")
    ap.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after setup")
    ap.add_argument("--keepalived", action="store_true", help="also measure keepalived -C")
    ap.add_argument("--topology", choices=("loopback", "veth"), default="loopback",
                    help="veth (root): listeners in another netns, RX on --rx-cpu")  # fmt: skip
    ap.add_argument("--floor", action="store_true",
                    help="also time bare socket/connect/close at that rate (loopback)")  # fmt: skip
    ap.add_argument("--tick", type=float, help="override the engine's timer tick (seconds)")
    ap.add_argument("--cpu", type=int, default=0, help="veth: CPU the prober is pinned to")
    ap.add_argument("--rx-cpu", type=int, default=1, help="veth: CPU doing receive (RPS)")
    args = ap.parse_args()
    if args.tick:
        from hakeeper.check import engine  # noqa: PLC0415

        engine.TICK_S, engine._PER_TICK = args.tick, 1.0 / args.tick
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop_name = "asyncio" if args.no_uvloop else "uvloop"
    ours: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    floors: list[dict[str, float]] = []
    for n in range(args.repeat):
        result = measure_hakeeper(args)
        ours.append(result)
        show(f"[{n + 1}] hakeeper checker: {args.vs} VS x {args.rs} RS TCP_CHECK every "
             f"{args.delay_loop:g}s ({loop_name}, {args.seconds:g}s window)", result)  # fmt: skip
        print(f"  target < 10% of one core: {'PASS' if result['cpu_pct'] < 10 else 'FAIL'}")
        if args.keepalived:
            ref = measure_keepalived(args)
            theirs.append(ref)
            show(f"[{n + 1}] keepalived 2.2 -C, same workload ({args.seconds:g}s window):", ref)
            print(
                f"  hakeeper / keepalived CPU: {result['cpu_pct'] / max(ref['cpu_pct'], 0.01):.2f}x"
            )
        if args.floor:
            floors.append(measure_floor(args))
            show(f"[{n + 1}] floor: bare socket+connect+close, same rate, loopback:", floors[-1])
    summary("hakeeper", ours)
    if floors:
        summary("floor (bare syscalls)", floors)
    if theirs:
        summary("keepalived -C", theirs)
        ratios = sorted(
            a["cpu_pct"] / max(b["cpu_pct"], 0.01) for a, b in zip(ours, theirs, strict=True)
        )
        print(f"hakeeper / keepalived CPU per pair: median {statistics.median(ratios):.2f}x "
              f"range {ratios[0]:.2f}-{ratios[-1]:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
