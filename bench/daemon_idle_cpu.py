"""Idle cost of the hakeeper daemon: N VRRP instances at advert_int 0.1 (VRRPv3).

Two namespaces on a bridge; node A (priority 150) is master of every instance and node B
(priority 100) is backup of every instance, so A sends N x 10 adverts/s and B receives
them. After the instances settle, CPU (utime+stime from /proc/PID/stat) is sampled over
`--seconds` and RSS read from /proc/PID/status. Usage (root):

    .venv/bin/python bench/daemon_idle_cpu.py [--instances 20] [--seconds 20] [--no-uvloop]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hakeeper.lab.netns import Lab, wait_until
from hakeeper.runtime.control import ControlError, query


def config(name: str, prio: int, count: int) -> str:
    out = [f"global_defs {{\n    router_id {name}\n}}\n"]
    for i in range(count):
        out.append(
            f"vrrp_instance VI_{i} {{\n    state BACKUP\n    interface eth0\n"
            f"    virtual_router_id {i + 1}\n    priority {prio}\n    advert_int 0.1\n"
            f"    version 3\n    virtual_ipaddress {{\n        198.18.1.{i + 1}/24\n    }}\n}}\n"
        )
    return "".join(out)


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of `pid` from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure_keepalived(
    lab: Lab, nodes: dict[str, Any], tmp: Path, seconds: float, count: int
) -> int:
    """keepalived: wait for the VIPs on a, then sum CPU over its parent + VRRP child."""
    ns_a = lab.ns("a")
    wait_until(
        lambda: sum("198.18.1." in a for a in lab.addresses(ns_a, "eth0")) >= count,
        timeout=30, interval=0.2, what="keepalived VIPs",
    )  # fmt: skip
    time.sleep(2.0)
    pids = {}
    for name in nodes:
        vpid = int((tmp / f"{name}.vpid").read_text())
        pids[name] = [int((tmp / f"{name}.pid").read_text()), vpid]
    start = {n: [cpu_times(p) for p in ps] for n, ps in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    for name, ps in pids.items():
        used = sum(
            sum(e) - sum(s0) for e, s0 in zip((cpu_times(p) for p in ps), start[name], strict=True)
        )
        rss = sum(rss_mb(p) for p in ps)
        role = "master" if name == "a" else "backup"
        print(
            f"keepalived {name} ({role}): CPU {100 * used / wall:.2f}% of a core, RSS {rss:.1f} MB"
        )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--no-uvloop", action="store_true")
    ap.add_argument("--keepalived", action="store_true", help="measure Debian's keepalived instead")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hkbench"))
    with Lab() as lab:
        sw = lab.add_switch()
        nodes = {}
        for name, ip, prio in (("a", "198.18.0.1", 150), ("b", "198.18.0.2", 100)):
            ns = lab.add_ns(name)
            lab.connect(ns, sw)
            lab.addr(ns, "eth0", f"{ip}/24")
            conf = tmp / f"{name}.conf"
            conf.write_text(config(name, prio, args.instances))
            sock = str(tmp / f"{name}.sock")
            argv = [sys.executable, "-m", "hakeeper", "run", "-n", "-l", "-f", str(conf),
                    "--control", sock]  # fmt: skip
            if args.no_uvloop:
                argv.append("--no-uvloop")
            if args.keepalived:  # -P: VRRP child only; its pid is the one that works
                pid, vpid = str(tmp / f"{name}.pid"), str(tmp / f"{name}.vpid")
                argv = ["keepalived", "-n", "-l", "-P", "-f", str(conf), "-p", pid, "-r", vpid]
            log = (tmp / f"{name}.log").open("w")
            proc = lab.popen(ns, argv, stdout=log, stderr=subprocess.STDOUT)
            nodes[name] = (proc, sock)

        if args.keepalived:
            return measure_keepalived(lab, nodes, tmp, args.seconds, args.instances)

        def settled() -> bool:
            try:
                sa = query(nodes["a"][1])
                sb = query(nodes["b"][1])
            except ControlError:
                return False
            return all(i["state"] == "MASTER" for i in sa["instances"]) and all(
                i["state"] == "BACKUP" for i in sb["instances"]
            )

        wait_until(settled, timeout=30, interval=0.2, what="all instances settled")
        time.sleep(2.0)  # let start-up garbage and GARP bursts pass before measuring
        start = {n: cpu_times(p.pid) for n, (p, _) in nodes.items()}
        t0 = time.monotonic()
        time.sleep(args.seconds)
        wall = time.monotonic() - t0
        for name, (proc, sock) in nodes.items():
            user, system = (e - s for e, s in zip(cpu_times(proc.pid), start[name], strict=True))
            used = user + system
            st = query(sock)
            sent = sum(i["counters"]["adverts_sent"] for i in st["instances"])
            recv = sum(i["counters"]["adverts_received"] for i in st["instances"])
            role = "master" if name == "a" else "backup"
            print(
                f"{name} ({role} x{args.instances}): CPU {100 * used / wall:.2f}% of a core"
                f" (user {100 * user / wall:.2f}%, sys {100 * system / wall:.2f}%),"
                f" RSS {rss_mb(proc.pid):.1f} MB, adverts sent {sent} received {recv},"
                f" max loop lag {st['loop']['max_lag_ms']} ms"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
