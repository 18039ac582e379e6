"""`hakeeper run` with virtual servers, end to end in namespaces.

1. Seed 003 (LVS-NAT, rr, ICMP_CHECK) under the daemon with `--dataplane nftables`: exact
   rotation, a pulled cable takes the real server out (status shows it DOWN with its
   transition time), SIGTERM removes our table.
2. The seeds' LVS-DR pair: two directors share the VIP through VRRP (v3, 0.1 s adverts) and
   carry the same DR virtual_server (seed 002's: wrr, persistence, TCP_CHECK); when the active
   director is lost (daemon killed and link down) the other one keeps the service up.
Addresses are lab addresses; check timings are shortened (delay_loop 1...).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dataplane_lab
import pytest
from dataplane_lab import VIP, L4Lab, add_dr_backends, nat_lab
from test_dataplane_lvs import SEED_002, SEED_003

from hakeeper.lab.netns import Lab, wait_until

pytestmark = pytest.mark.root


class Director(dataplane_lab.Director):
    """One `hakeeper run --dataplane nftables` with router_id NAME, files under `workdir`."""

    def __init__(self, lab: Lab, ns: str, name: str, workdir: Path, body: str) -> None:
        conf = f"global_defs {{\n    router_id {name}\n}}\n{body}"
        super().__init__(lab, ns, name, workdir, conf)

    def reals(self) -> dict[str, dict[str, Any]]:
        (vs,) = self.status()["virtual_servers"]["virtual_servers"]
        return {r["server"]: r for r in vs["real_servers"]}


def test_daemon_runs_seed_003_and_cleans_up(lab: Lab, workdir: Path) -> None:
    nat = nat_lab(lab)
    d = Director(lab, nat.lb, "lvs1", workdir, SEED_003)
    assert nat.counts(30) == {"web1": 10, "web2": 10, "web3": 10}
    nat.lab.link_set(nat.backends["web2"], "eth0", up=False)
    wait_until(lambda: not d.reals()["198.18.1.2:80"]["alive"], timeout=15, what="web2 DOWN")
    assert d.reals()["198.18.1.2:80"]["changed_at"]
    assert nat.counts(20) == {"web1": 10, "web3": 10}
    text = subprocess.run(
        [sys.executable, "-m", "hakeeper", "status", "--control", d.sock],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout
    assert "198.18.1.2:80" in text and "DOWN" in text, text
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0
    assert "hakeeper" not in d.tables()


def _pair_conf(prio: int) -> str:
    return f"""
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 61
    priority {prio}
    advert_int 0.1
    version 3
    virtual_ipaddress {{
        {VIP}/32
    }}
}}
{SEED_002}
"""


def test_lvs_dr_pair_keeps_serving_when_the_active_director_dies(lab: Lab, workdir: Path) -> None:
    sw = lab.add_switch()
    client = lab.add_ns("client")
    lab.connect(client, sw)
    lab.addr(client, "eth0", "198.18.0.2/24")
    l4 = L4Lab(lab, client, "")
    lbs = []
    for i in (1, 2):
        ns = lab.add_ns(f"lb{i}")
        lab.connect(ns, sw)
        lab.addr(ns, "eth0", f"198.18.0.{i + 2}/24")
        lbs.append(ns)
    add_dr_backends(l4, sw, 2)
    d1 = Director(lab, lbs[0], "lvs1", workdir, _pair_conf(100))
    d2 = Director(lab, lbs[1], "lvs2", workdir, _pair_conf(90))
    wait_until(
        lambda: any(a.startswith(VIP) for a in lab.addresses(lbs[0], "eth0")),
        timeout=5,
        what="lvs1 holds the VIP",
    )
    assert "netdev hakeeper" in d2.tables()  # the standby carries the same virtual server
    got = l4.counts(10, port=81)
    assert len(got) == 1 and sum(got.values()) == 10
    # the active director is lost: its daemon dies and its link goes down
    d1.proc.send_signal(signal.SIGKILL)
    d1.proc.wait(5)
    lab.link_set(lbs[0], "eth0", up=False)
    t0 = time.monotonic()
    wait_until(
        lambda: l4.connect(1, port=81)[0].startswith("web"),
        timeout=10,
        what="service back through lvs2",
    )
    outage = time.monotonic() - t0
    got = l4.counts(10, port=81)
    assert set(got) <= {"web1", "web2"} and sum(got.values()) == 10, got
    assert outage < 5.0
