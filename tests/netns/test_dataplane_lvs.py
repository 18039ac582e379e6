"""LvsService end to end with the real checker engine: seeds 002 (DR, wrr, persistence) and 003
(NAT, rr, ICMP_CHECK) adapted to lab addresses, on the nftables data plane.

The service runs on an event loop whose thread lives in the LB namespace, so the checkers'
probes leave from the LB as keepalived's would. Adaptations to the seed configs: addresses
(lab ranges), and shorter check timings (delay_loop 1, retry 1, delay_before_retry 1,
connect_timeout 1) so a failure is seen within seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dataplane_lab import VIP, L4Lab, NsLoop, dr_lab, nat_lab

from hakeeper.conf.keepalived import load_keepalived
from hakeeper.conf.model import KeepalivedConfig
from hakeeper.dataplane.lvs import LvsService
from hakeeper.lab.netns import Lab, wait_until

pytestmark = pytest.mark.root

SEED_003 = f"""
! seed 003 (LVS-NAT, lb_algo rr, ICMP_CHECK) with lab addresses
virtual_server {VIP} 80 {{
  delay_loop 1
  lb_algo rr
  lb_kind NAT
  protocol TCP

  real_server 198.18.1.1 80 {{
  weight 1
  ICMP_CHECK {{
    connect_timeout 1
  }}
  }}
  real_server 198.18.1.2 80 {{
  weight 1
  ICMP_CHECK {{
    connect_timeout 1
  }}
  }}
  real_server 198.18.1.3 80 {{
  weight 1
  ICMP_CHECK {{
    connect_timeout 1
  }}
  }}
}}
"""

SEED_002 = f"""
! seed 002 (LVS-DR, wrr, persistence_timeout 50, TCP_CHECK on port 81) with lab addresses
virtual_server {VIP} 81 {{
    delay_loop 1
    lb_algo wrr
    lb_kind DR
    persistence_timeout 50
    protocol TCP
    real_server 198.18.0.11 81 {{
    weight 1
    TCP_CHECK {{
       connect_timeout 1
       retry 1
       delay_before_retry 1
       connect_port 81
       }}
    }}
     real_server 198.18.0.12 81 {{
     weight 1
     TCP_CHECK {{
       connect_timeout 1
       retry 1
       delay_before_retry 1
       connect_port 81
       }}
     }}
}}
"""


def _config(tmp_path: Path, text: str) -> KeepalivedConfig:
    path = tmp_path / "keepalived.conf"
    path.write_text(text)
    cfg, _diags = load_keepalived(str(path))
    assert cfg is not None
    return cfg


@pytest.fixture
def nat() -> Iterator[L4Lab]:
    with Lab() as lab:
        yield nat_lab(lab)


@pytest.fixture
def dr() -> Iterator[L4Lab]:
    with Lab() as lab:
        yield dr_lab(lab)


def _pool(ns: NsLoop, svc: LvsService) -> set[str]:
    async def read() -> set[str]:
        await svc.wait_applied()
        return {b.key for s in svc.desired.services for b in s.backends if b.weight > 0}

    result: set[str] = ns.call(read())
    return result


def test_seed_003_nat_rr_with_icmp_check(nat: L4Lab, tmp_path: Path) -> None:
    cfg = _config(tmp_path, SEED_003)
    ns = NsLoop(nat.lb)
    svc = LvsService(cfg, dataplane="nftables", netns=nat.lb)
    try:
        ns.call(svc.start())
        assert nat.counts(30) == {"web1": 10, "web2": 10, "web3": 10}
        # the seed's log: a pulled cable removes the real server, its return re-adds it
        nat.lab.link_set(nat.backends["web2"], "eth0", up=False)
        wait_until(
            lambda: _pool(ns, svc) == {"198.18.1.1:80", "198.18.1.3:80"},
            timeout=15,
            what="web2 removed after failed ICMP checks",
        )
        assert nat.counts(20) == {"web1": 10, "web3": 10}
        nat.lab.link_set(nat.backends["web2"], "eth0", up=True)
        nat.lab.route(nat.backends["web2"], "default", "via", "198.18.1.254")  # gone with the link
        wait_until(lambda: len(_pool(ns, svc)) == 3, timeout=15, what="web2 back in the pool")
        assert nat.counts(30) == {"web1": 10, "web2": 10, "web3": 10}
        status = ns.call(_status(svc))
        (vs,) = status["virtual_servers"]
        assert status["dataplane"] == "nftables" and vs["installed"]
        assert {r["server"] for r in vs["real_servers"]} == {
            "198.18.1.1:80",
            "198.18.1.2:80",
            "198.18.1.3:80",
        }
        assert all(
            r["changed_at"] for r in vs["real_servers"] if r["server"].startswith("198.18.1.2")
        )
    finally:
        ns.call(svc.stop())
        ns.close()
    assert "hakeeper" not in nat.lab.run(nat.lb, ["nft", "list", "tables"]).stdout


async def _status(svc: LvsService) -> dict[str, object]:
    return svc.status()


def test_seed_002_dr_wrr_persistence_with_tcp_check(dr: L4Lab, tmp_path: Path) -> None:
    cfg = _config(tmp_path, SEED_002)
    ns = NsLoop(dr.lb)
    svc = LvsService(cfg, dataplane="nftables", netns=dr.lb)
    try:
        ns.call(svc.start())
        got = dr.counts(20, port=81)
        assert len(got) == 1 and sum(got.values()) == 20  # persistence_timeout 50
        (first,) = got
        other = "web2" if first == "web1" else "web1"
        dr.stop_backend(first)
        wait_until(
            lambda: _pool(ns, svc) == {f"{dr.addrs[other]}:81"},
            timeout=15,
            what=f"{first} removed after a failed TCP_CHECK",
        )
        got = dr.counts(10, port=81)
        assert got == {other: 10}, dr.lab.run(dr.lb, ["nft", "list", "ruleset"]).stdout
        dr.start_backend(first)
        wait_until(lambda: len(_pool(ns, svc)) == 2, timeout=15, what=f"{first} back")
        assert dr.counts(10, port=81) == {other: 10}  # the client stays where it was pinned
    finally:
        ns.call(svc.stop())
        ns.close()
    assert "hakeeper" not in dr.lab.run(dr.lb, ["nft", "list", "tables"]).stdout


QUORUM = f"""
virtual_server {VIP} 80 {{
  delay_loop 1
  lb_algo rr
  lb_kind NAT
  protocol TCP
  quorum 2
  sorry_server 198.18.1.3 80
  real_server 198.18.1.1 80 {{
    ICMP_CHECK {{
      connect_timeout 1
    }}
  }}
  real_server 198.18.1.2 80 {{
    ICMP_CHECK {{
      connect_timeout 1
    }}
  }}
}}
"""


def test_quorum_loss_installs_the_sorry_server(nat: L4Lab, tmp_path: Path) -> None:
    cfg = _config(tmp_path, QUORUM)
    ns = NsLoop(nat.lb)
    svc = LvsService(cfg, dataplane="nftables", netns=nat.lb)
    try:
        ns.call(svc.start())
        assert nat.counts(10) == {"web1": 5, "web2": 5}
        nat.lab.link_set(nat.backends["web1"], "eth0", up=False)
        wait_until(
            lambda: _pool(ns, svc) == {"198.18.1.3:80"},
            timeout=15,
            what="quorum lost: the sorry server alone",
        )
        assert nat.counts(6) == {"web3": 6}
        nat.lab.link_set(nat.backends["web1"], "eth0", up=True)
        nat.lab.route(nat.backends["web1"], "default", "via", "198.18.1.254")
        wait_until(
            lambda: _pool(ns, svc) == {"198.18.1.1:80", "198.18.1.2:80"},
            timeout=15,
            what="quorum back: the sorry server leaves",
        )
        assert nat.counts(10) == {"web1": 5, "web2": 5}
    finally:
        ns.call(svc.stop())
        ns.close()
