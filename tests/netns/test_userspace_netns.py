"""`hakeeper run --dataplane userspace` in namespaces: client -> LB (userspace proxy) -> 3 backends.

The NAT lab of dataplane_lab.py (client 198.18.0.2, LB with VIP 198.18.0.10 on eth0 and
198.18.1.254 on eth1, backends web1-3 at 198.18.1.1-3 answering their name on TCP and UDP
ports 80 and 81). The daemon serves three virtual servers through the userspace L4 proxy:
- TCP 80, rr, TCP_CHECK (delay_loop 1, connect_timeout 1, retry 0): the exact rotation, and
  a stopped backend leaves it within delay_loop + connect_timeout (and comes back);
- TCP 81, wrr 3:2:1: exact weighted shares;
- UDP 81, rr: every datagram from a new source port is a new flow, rotated exactly.
No nftables table is created: the proxy is a plain process in the LB namespace.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dataplane_lab import VIP, Director, L4Lab, nat_lab

from hakeeper.lab.netns import Lab, wait_until

pytestmark = pytest.mark.root

DELAY_LOOP = 1
CONNECT_TIMEOUT = 1


def _real(i: int, port: int, weight: int = 1, check: bool = False) -> str:
    probe = (
        f"""
    TCP_CHECK {{
      connect_timeout {CONNECT_TIMEOUT}
      retry 0
    }}"""
        if check
        else ""
    )
    return f"""
  real_server 198.18.1.{i} {port} {{
    weight {weight}{probe}
  }}"""


CONFIG = f"""
global_defs {{
    router_id lvs-user
}}
virtual_server {VIP} 80 {{
  delay_loop {DELAY_LOOP}
  lb_algo rr
  lb_kind NAT
  protocol TCP
{"".join(_real(i, 80, check=True) for i in (1, 2, 3))}
}}
virtual_server {VIP} 81 {{
  delay_loop {DELAY_LOOP}
  lb_algo wrr
  lb_kind NAT
  protocol TCP
{"".join(_real(i, 81, weight=w) for i, w in ((1, 3), (2, 2), (3, 1)))}
}}
virtual_server {VIP} 81 {{
  delay_loop {DELAY_LOOP}
  lb_algo rr
  lb_kind NAT
  protocol UDP
{"".join(_real(i, 81) for i in (1, 2, 3))}
}}
"""


class UserspaceDirector(Director):
    """`hakeeper run --dataplane userspace` in the LB namespace; files under `workdir`."""

    def __init__(self, lab: Lab, ns: str, workdir: Path) -> None:
        super().__init__(lab, ns, "lvs", workdir, CONFIG, dataplane="userspace", timeout=20)

    def ready(self) -> bool:
        # listening on the VIP for both TCP services and the UDP one
        ss = self.lab.run(self.ns, ["ss", "-Hlntu"]).stdout
        return all(f"{VIP}:{p}" in ss for p in (80, 81))

    def reals(self, port: int = 80, protocol: str = "TCP") -> dict[str, dict[str, Any]]:
        for vs in self.status()["virtual_servers"]["virtual_servers"]:
            if vs["name"] == f"{VIP} {port}" and vs["protocol"].upper() == protocol:
                return {r["server"]: r for r in vs.get("real_servers", ())}
        raise AssertionError(f"no virtual server {port}/{protocol} in status")


@pytest.fixture
def nat() -> Iterator[L4Lab]:
    with Lab() as lab:
        yield nat_lab(lab)


@pytest.fixture
def director(nat: L4Lab, workdir: Path) -> Iterator[UserspaceDirector]:
    d = UserspaceDirector(nat.lab, nat.lb, workdir)
    try:
        yield d
    finally:
        if d.proc.poll() is None:
            d.proc.send_signal(signal.SIGTERM)
            try:
                d.proc.wait(10)
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait(5)


def _cycles(seen: list[str]) -> bool:
    """The sequence repeats its first len(set) names: an exact rotation."""
    k = len(set(seen))
    return all(seen[i] == seen[i % k] for i in range(len(seen)))


def test_rr_wrr_and_udp_rotate_exactly_through_the_userspace_proxy(
    nat: L4Lab, director: UserspaceDirector
) -> None:
    seen = nat.connect(30, 80)
    assert sorted(set(seen)) == ["web1", "web2", "web3"], seen
    assert _cycles(seen), seen
    assert nat.counts(60, 81) == {"web1": 30, "web2": 20, "web3": 10}
    flows = nat.connect(30, 81, udp=True)
    assert sorted(set(flows)) == ["web1", "web2", "web3"], flows
    assert _cycles(flows), flows
    # the proxy is a process: the LB namespace has no hakeeper nftables table
    assert "hakeeper" not in nat.lab.run(nat.lb, ["nft", "list", "tables"]).stdout


def test_a_stopped_backend_leaves_rotation_within_delay_loop_plus_connect_timeout(
    nat: L4Lab, director: UserspaceDirector
) -> None:
    wait_until(
        lambda: all(r["alive"] for r in director.reals(80).values()),
        timeout=10,
        what="all real servers UP",
    )
    assert nat.counts(30, 80) == {"web1": 10, "web2": 10, "web3": 10}
    t0 = time.monotonic()
    nat.stop_backend("web2")
    wait_until(
        lambda: not director.reals(80)["198.18.1.2:80"]["alive"],
        timeout=10,
        what="web2 DOWN",
    )
    took = time.monotonic() - t0
    # the first probe after the stop fails at once (refused): within one delay_loop, plus
    # connect_timeout for a probe in flight, plus scheduling slack on a shared machine
    assert took <= DELAY_LOOP + CONNECT_TIMEOUT + 1.0, took
    # out of the rotation: exact shares over the two others (a failed pick would be
    # redispatched to the next server and skew them)
    assert nat.counts(20, 80) == {"web1": 10, "web3": 10}
    nat.start_backend("web2")
    wait_until(
        lambda: director.reals(80)["198.18.1.2:80"]["alive"], timeout=10, what="web2 back UP"
    )
    assert nat.counts(30, 80) == {"web1": 10, "web2": 10, "web3": 10}
