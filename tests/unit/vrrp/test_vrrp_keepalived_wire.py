"""Our codec + machine against a live keepalived 2.2.7, in two throw-away namespaces.

One namespace runs keepalived, the other a minimal router built from hakeeper's pure core
(keepalived_peer.py). Covered both ways, for VRRPv2 + PASS, VRRPv2 + AH and VRRPv3:
the higher priority wins on either side, a priority-0 resignation hands over in Skew_Time
in both directions, and neither side logs or counts a protocol error.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SRC = HERE.parents[2] / "src"

KEEPALIVED_CONF = """
vrrp_instance V2PASS {
    state BACKUP
    interface hka
    virtual_router_id 51
    priority 100
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass secretpw99
    }
    virtual_ipaddress {
        198.18.201.51
    }
}
vrrp_instance V2AH {
    state BACKUP
    interface hka
    virtual_router_id 55
    priority 100
    advert_int 1
    authentication {
        auth_type AH
        auth_pass ahsecret9
    }
    virtual_ipaddress {
        198.18.201.55
    }
}
vrrp_instance V3 {
    version 3
    state BACKUP
    interface hka
    virtual_router_id 52
    priority 100
    advert_int 0.1
    virtual_ipaddress {
        198.18.201.52
    }
}
"""

# ours wins 51 and 55 and resigns at 3.0 s; keepalived wins 52 and resigns when stopped
PEER = {
    "duration": 7.0,
    "instances": [
        {
            "vrid": 51,
            "version": 2,
            "priority": 150,
            "advert_int": 1,
            "vips": ["198.18.201.51"],
            "auth": "pass",
            "password": "secretpw99",
            "stop_at": 3.0,
            "initial": "MASTER",
        },
        {
            "vrid": 55,
            "version": 2,
            "priority": 150,
            "advert_int": 1,
            "vips": ["198.18.201.55"],
            "auth": "ah",
            "password": "ahsecret9",
            "stop_at": 3.0,
            "initial": "MASTER",
        },
        {
            "vrid": 52,
            "version": 3,
            "priority": 50,
            "advert_int": 0.1,
            "vips": ["198.18.201.52"],
            "auth": "none",
        },
    ],
}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def two_namespaces() -> Iterator[tuple[str, str]]:
    a = "hk" + secrets.token_hex(3)
    b = a + "p"
    try:
        _ip("netns", "add", a)
        _ip("netns", "add", b)
        _ip("-n", a, "link", "add", "hka", "type", "veth", "peer", "name", "hkb", "netns", b)
        _ip("-n", a, "addr", "add", "198.18.200.1/24", "dev", "hka")
        _ip("-n", b, "addr", "add", "198.18.200.2/24", "dev", "hkb")
        for ns, dev in ((a, "hka"), (b, "hkb")):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", dev, "up")
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)


def _wait_for(path: Path, text: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.root
@pytest.mark.interop("keepalived")
@pytest.mark.slow
def test_codec_and_machine_interoperate_with_keepalived(
    two_namespaces: tuple[str, str], tmp_path: Path
) -> None:
    ns_k, ns_h = two_namespaces
    conf = tmp_path / "k.conf"
    conf.write_text(KEEPALIVED_CONF)
    klog = tmp_path / "k.log"
    with klog.open("w") as out:
        kproc = subprocess.Popen(
            ["ip", "netns", "exec", ns_k, "keepalived", "-n", "-l", "-D", "-P", "-f", str(conf),
             "-p", str(tmp_path / "k.pid"), "-r", str(tmp_path / "v.pid")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    peer = None
    try:
        assert _wait_for(klog, "(V3) Entering MASTER STATE", time.monotonic() + 10)
        peer = subprocess.Popen(
            ["ip", "netns", "exec", ns_h, sys.executable, str(HERE / "keepalived_peer.py"),
             str(SRC), "hkb", "198.18.200.2", json.dumps(PEER)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        # our resignation (priority 0) at 3.0 s hands 51 and 55 to keepalived
        assert _wait_for(klog, "(V2PASS) Entering MASTER STATE", time.monotonic() + 8)
        assert _wait_for(klog, "(V2AH) Entering MASTER STATE", time.monotonic() + 3)
        time.sleep(0.5)  # 52 keeps running on both sides
        t_term = time.monotonic()
        kproc.send_signal(signal.SIGTERM)  # keepalived resigns 52 with priority 0
        kproc.wait(timeout=10)
        out, _err = peer.communicate(timeout=15)
    finally:
        for proc in (peer, kproc):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    t0 = lines[0]["t0"]
    events = lines[1:]
    assert not [e for e in events if "error" in e], events
    changes = {(e["vrid"], e["new"]): e for e in events if "new" in e}
    log = klog.read_text(errors="replace")

    # ours won 51 and 55 (state MASTER wish: one interval) and keepalived stayed BACKUP until
    # our priority-0 resignation; then it took over exactly once
    assert changes[(51, "MASTER")]["t"] < 1.5 and changes[(55, "MASTER")]["t"] < 1.5, events
    for name in ("V2PASS", "V2AH"):
        assert log.count(f"({name}) Entering MASTER STATE") == 1, log
        assert f"({name}) Received advert from 198.18.200.2 with lower priority" not in log
    # keepalived won 52; ours followed it (never master) until its priority-0 resignation
    m52 = [e for e in events if e.get("vrid") == 52 and e.get("new") == "MASTER"]
    assert len(m52) == 1, events
    handover = t0 + m52[0]["t"] - t_term
    assert 0 < handover < 0.5, handover  # Skew_Time (50): 80 ms + keepalived's exit path
    # no protocol complaints from keepalived about our packets
    bad = [
        ln
        for ln in log.splitlines()
        if any(
            w in ln.lower()
            for w in ("invalid", "checksum", "passwd", "ipsec", "mismatch", "ttl", "too short",
                      "too long", "not present", "wrong")
        )
    ]  # fmt: skip
    assert bad == [], bad
