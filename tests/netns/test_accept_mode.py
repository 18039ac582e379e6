"""Accept_Mode on the real kernel: a `no_accept` MASTER refuses traffic to its VIP.

`hakeeper run` in namespace `a` holds the VIP 198.18.0.100 as MASTER (priority 100, not the
owner); the client in namespace `b` pings it and opens a TCP connection to a listener in
`a`. With `no_accept` both go unanswered (table inet hakeeper_vrrp drops them) while `a`'s
own address still answers; with `accept` (keepalived's default) both get through. SIGTERM
removes the table with the VIP.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_daemon_vrrp import A_IP, VIP, Node, instance_conf

from hakeeper.lab.netns import Lab, wait_until

pytestmark = pytest.mark.root

PORT = 8080
TABLE = "hakeeper_vrrp"
LISTENER = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind(('0.0.0.0', {PORT})); s.listen(16)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hi'); c.close()\n"
)
CONNECT = (
    "import socket, sys\n"
    "try:\n"
    f"    c = socket.create_connection((sys.argv[1], {PORT}), timeout=float(sys.argv[2]))\n"
    "    sys.exit(0 if c.recv(2) == b'hi' else 2)\n"
    "except OSError:\n"
    "    sys.exit(1)\n"
)


@pytest.fixture
def setup(lab: Lab) -> Iterator[tuple[Lab, Node, str]]:
    sw = lab.add_switch()
    a = lab.add_ns("a")
    b = lab.add_ns("b")
    lab.connect(a, sw)
    lab.connect(b, sw)
    lab.addr(a, "eth0", f"{A_IP}/24")
    lab.addr(b, "eth0", "198.18.0.2/24")
    lab.popen(a, [sys.executable, "-c", LISTENER])
    workdir = Path(tempfile.mkdtemp(prefix="hkaccept-"))  # not tmp_path: see test_daemon_vrrp
    node = Node(lab, a, "a", workdir)
    try:
        yield lab, node, b
    finally:
        if node.proc is not None and node.proc.poll() is None:
            lab.stop(node.proc)
        shutil.rmtree(workdir, ignore_errors=True)


def pings(lab: Lab, ns: str, addr: str) -> bool:
    return lab.run(ns, ["ping", "-c", "1", "-W", "1", "-q", addr], check=False).returncode == 0


def connects(lab: Lab, ns: str, addr: str, timeout: float = 5.0) -> bool:
    """A TCP connect + the listener's greeting within `timeout` (generous by default: the
    listener is a Python process that a loaded box may schedule late)."""
    cmd = [sys.executable, "-c", CONNECT, addr, str(timeout)]
    proc = lab.run(ns, cmd, check=False, timeout=timeout + 10)
    return proc.returncode == 0


def table(lab: Lab, ns: str) -> dict[str, Any] | None:
    proc = lab.run(ns, ["nft", "-j", "list", "table", "inet", TABLE], check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def dropped_addresses(lab: Lab, ns: str) -> list[str]:
    data = table(lab, ns) or {"nftables": []}
    for item in data["nftables"]:
        s = item.get("set")
        if s and s["name"] == "vips4":
            return [str(e) for e in s.get("elem", [])]
    return []


def start_master(node: Node, extra: str) -> None:
    node.start(instance_conf(prio=100, extra=extra))
    node.wait_state("MASTER")
    wait_until(lambda: node.has(VIP), what="VIP on a")


def test_no_accept_master_drops_traffic_to_its_vip(setup: tuple[Lab, Node, str]) -> None:
    lab, node, client = setup
    wait_until(lambda: connects(lab, client, A_IP), timeout=20, what="listener up in a")
    start_master(node, "no_accept")
    wait_until(lambda: dropped_addresses(lab, node.ns) == [VIP], what="no_accept rule")
    assert pings(lab, client, A_IP) and connects(lab, client, A_IP)  # the node itself answers
    assert not pings(lab, client, VIP)
    assert not connects(lab, client, VIP, timeout=1.0)  # dropped: no answer at all
    # the VIP is still answered at layer 2: the client learned a's MAC for it
    assert lab.neighbours(client, "eth0").get(VIP) == lab.mac(node.ns, "eth0")
    node.signal(signal.SIGTERM)
    assert node.wait_exit() == 0
    assert table(lab, node.ns) is None and not node.has(VIP)


def test_accept_master_answers_on_its_vip(setup: tuple[Lab, Node, str]) -> None:
    lab, node, client = setup
    wait_until(lambda: connects(lab, client, A_IP), timeout=20, what="listener up in a")
    start_master(node, "accept")
    assert pings(lab, client, VIP)
    assert connects(lab, client, VIP)
    assert table(lab, node.ns) is None
