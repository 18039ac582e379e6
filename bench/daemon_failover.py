"""Fail-over times of two hakeeper daemons in namespaces (priorities 150/100, one VIP).

For each scenario, the time from the fault to the VIP appearing on the backup is measured
by polling `ip -j addr` in the backup's namespace (~5 ms resolution). Scenarios mirror
shared/anchors/measured.md (keepalived 2.2.7 medians there: v2 graceful 650 ms, v2 link
loss 2,868 ms, v3/0.1 s link loss 290 ms, v3 graceful 70 ms, v2 track_script interval 1
fall 2 weight -20: 4,531 ms). Usage (root): .venv/bin/python bench/daemon_failover.py [-n 3]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hakeeper.lab.netns import Lab, wait_until
from hakeeper.runtime.control import ControlError, query

VIP = "198.18.0.100"


def conf(prio: int, version: int, advert: float, extra: str = "", pre: str = "") -> str:
    return f"""{pre}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {prio}
    advert_int {advert}
    version {version}
    {extra}
    virtual_ipaddress {{
        {VIP}/24
    }}
}}
"""


def run_once(scenario: str, tmp: Path) -> float:
    version, advert = (2, 1) if scenario.startswith("v2") else (3, 0.1)
    flag = tmp / "healthy"
    flag.write_text("ok")
    pre = extra = ""
    if "track" in scenario:
        pre = (
            f'vrrp_script chk {{\n    script "/usr/bin/test -e {flag}"\n    interval 1\n'
            "    fall 2\n    rise 1\n    weight -60\n}\n"
        )
        extra = "track_script {\n        chk\n    }"
    with Lab() as lab:
        sw = lab.add_switch()
        procs: dict[str, subprocess.Popen[bytes]] = {}
        nss: dict[str, str] = {}
        for name, ip, prio in (("a", "198.18.0.1", 150), ("b", "198.18.0.2", 100)):
            ns = lab.add_ns(name)
            nss[name] = ns
            lab.connect(ns, sw)
            lab.addr(ns, "eth0", f"{ip}/24")
            path = tmp / f"{name}.conf"
            path.write_text(conf(prio, version, advert, extra if name == "a" else "", pre))
            argv = [sys.executable, "-m", "hakeeper", "run", "-n", "-l", "-f", str(path),
                    "--control", str(tmp / f"{name}.sock")]  # fmt: skip
            with (tmp / f"{name}.log").open("a") as log:
                procs[name] = lab.popen(ns, argv, stdout=log, stderr=subprocess.STDOUT)

        def state(name: str) -> str:
            try:
                return str(query(str(tmp / f"{name}.sock"))["instances"][0]["state"])
            except (ControlError, IndexError, KeyError):
                return "?"

        wait_until(lambda: state("a") == "MASTER" and state("b") == "BACKUP", timeout=20)
        time.sleep(advert * 2 + random.uniform(0, advert))  # fault at a random timer phase

        def b_has_vip() -> bool:
            return any(a.split("/")[0] == VIP for a in lab.addresses(nss["b"], "eth0"))

        faults: dict[str, Callable[[], None]] = {
            "kill9": lambda: os.kill(procs["a"].pid, signal.SIGKILL),
            "sigterm": lambda: os.kill(procs["a"].pid, signal.SIGTERM),
            "linkdown": lambda: lab.link_set(nss["a"], "eth0", up=False),
            "track": flag.unlink,
        }
        kind = scenario.split("_", 1)[1]
        t0 = time.monotonic()
        faults[kind]()
        wait_until(b_has_vip, timeout=20, interval=0.005)
        return (time.monotonic() - t0) * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=3, help="runs per scenario")
    ap.add_argument("scenarios", nargs="*", default=[
        "v2_sigterm", "v2_linkdown", "v2_track", "v3_kill9", "v3_linkdown", "v3_sigterm",
    ])  # fmt: skip
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hkfail"))
    for scenario in args.scenarios:
        times = [run_once(scenario, tmp) for _ in range(args.n)]
        print(
            f"{scenario:<12} median {statistics.median(times):7.0f} ms"
            f"  (min {min(times):.0f}, max {max(times):.0f}, n={len(times)})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
