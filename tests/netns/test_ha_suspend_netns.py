"""ha_suspend end to end: two `hakeeper run` nodes share a VIP carrying a virtual server.

The virtual server's only real server refuses connections (a closed port), so a running
TCP_CHECK takes it DOWN within about one delay_loop. With `ha_suspend` only the node
holding the VIP (VRRP MASTER) acts on results: the BACKUP keeps the server as configured
(up) and reports the virtual server suspended; when the MASTER stops, the other node takes
the VIP, resumes its checkers and takes the server DOWN.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_dataplane_daemon import Director

from conftest import Pair
from hakeeper.lab.netns import wait_until

pytestmark = pytest.mark.root

VIP = "198.18.0.100"
RS = "198.18.0.1:9"


def _conf(prio: int) -> str:
    return f"""
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 71
    priority {prio}
    advert_int 0.1
    version 3
    virtual_ipaddress {{
        {VIP}/24
    }}
}}
virtual_server {VIP} 80 {{
    delay_loop 1
    lb_algo rr
    lb_kind NAT
    protocol TCP
    ha_suspend
    real_server 198.18.0.1 9 {{
        TCP_CHECK {{
            connect_timeout 1
            retry 0
        }}
    }}
}}
"""


@pytest.fixture
def nodes(pair: Pair, workdir: Path) -> Iterator[tuple[Director, Director]]:
    a = Director(pair.lab, pair.a, "ha1", workdir, _conf(150))
    b = Director(pair.lab, pair.b, "ha2", workdir, _conf(100))
    try:
        yield a, b
    finally:
        for d in (a, b):
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
                d.proc.wait(10)


def _state(d: Director) -> str:
    (inst,) = d.status()["instances"]
    return str(inst["state"])


def test_only_the_vip_holder_acts_on_check_results(nodes: tuple[Director, Director]) -> None:
    a, b = nodes
    wait_until(lambda: _state(a) == "MASTER" and _state(b) == "BACKUP", timeout=10, what="roles")
    wait_until(lambda: not a.reals()[RS]["alive"], timeout=10, what="MASTER takes the RS down")
    assert a.status()["ha_suspend"] == {f"{VIP} 80 TCP": False}
    assert b.status()["ha_suspend"] == {f"{VIP} 80 TCP": True}
    # the BACKUP's checker keeps ticking but its results are ignored: watched for more
    # than two delay_loops + connect_timeout, the server stays up there
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert b.reals()[RS]["alive"]
        time.sleep(0.2)
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(10) == 0
    wait_until(lambda: _state(b) == "MASTER", timeout=10, what="B takes the VIP")
    assert b.status()["ha_suspend"] == {f"{VIP} 80 TCP": False}
    wait_until(lambda: not b.reals()[RS]["alive"], timeout=10, what="B resumes checking")
