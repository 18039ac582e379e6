"""The namespace toolkit itself: topology, processes ended by PID, nothing left behind."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from hakeeper.lab.netns import Lab, entered, ns_exists, wait_until

pytestmark = pytest.mark.root


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_lab_builds_switch_and_cleans_up_everything() -> None:
    with Lab() as lab:
        sw = lab.add_switch()
        a, b = lab.add_ns("a"), lab.add_ns("b")
        lab.connect(a, sw)
        lab.connect(b, sw, mac="02:00:00:00:00:0b")
        lab.addr(a, "eth0", "198.18.0.1/24")
        lab.addr(b, "eth0", "198.18.0.2/24")
        # the bridge lives in the switch namespace, not in ours
        assert lab.ip_json(sw, "link", "show", "br0")[0]["ifname"] == "br0"
        assert "br0" not in subprocess.run(["ip", "-br", "link"], capture_output=True,
                                           text=True, check=True).stdout  # fmt: skip
        assert lab.mac(b, "eth0") == "02:00:00:00:00:0b"
        assert "1 received" in lab.run(a, ["ping", "-c1", "-W2", "198.18.0.2"]).stdout
        sleeper = lab.popen(a, ["sleep", "60"])
        with entered(a):
            inside = os.readlink("/proc/thread-self/ns/net")
        assert inside != os.readlink("/proc/thread-self/ns/net")  # and we came back
        names = list(lab.namespaces.values())
    assert not alive(sleeper.pid)
    assert not any(ns_exists(n) for n in names)


def test_async_spawn_and_stop() -> None:
    async def scenario(lab: Lab, ns: str) -> tuple[int, int]:
        quick = await lab.spawn(ns, ["sh", "-c", "exit 7"])
        rc = await asyncio.wait_for(quick.wait(), 5)
        slow = await lab.spawn(ns, ["sleep", "60"])
        assert alive(slow.pid)
        assert await lab.astop(slow) < 0  # ended by a signal
        return rc, slow.pid

    with Lab() as lab:
        ns = lab.add_ns("solo")
        rc, pid = asyncio.run(scenario(lab, ns))
        assert rc == 7
        assert not alive(pid)


def test_stop_escalates_to_kill() -> None:
    with Lab() as lab:
        ns = lab.add_ns("solo")
        proc = lab.popen(ns, ["sh", "-c", "trap '' TERM; sleep 60 & wait"])
        wait_until(lambda: alive(proc.pid), timeout=2)
        lab.stop(proc, timeout=0.3)
        assert not alive(proc.pid)
