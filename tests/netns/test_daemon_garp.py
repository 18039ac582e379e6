"""vrrp_garp_interval on the wire: a new master's gratuitous ARPs leave spaced (real kernel,
captured with tcpdump on the neighbour)."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
from test_daemon_vrrp import VIP, Node, instance_conf, nodes  # noqa: F401 (fixtures)

from hakeeper.lab.netns import wait_until

pytestmark = pytest.mark.root


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
def test_gratuitous_arps_are_spaced_by_vrrp_garp_interval(
    nodes: tuple[Node, Node],  # noqa: F811
    workdir: Path,
) -> None:
    a, b = nodes
    out = workdir / "arp.txt"
    err = workdir / "tcpdump.err"
    sender_is_vip = "arp[14:4] = 0x" + "".join(f"{int(o):02x}" for o in VIP.split("."))
    argv = ["tcpdump", "-i", "eth0", "-n", "-tt", "-l", "-c", "4", f"arp and {sender_is_vip}"]
    with out.open("w") as fo, err.open("w") as fe:
        dump = a.lab.popen(b.ns, argv, stdout=fo, stderr=fe)
    try:
        wait_until(lambda: "listening" in err.read_text(), timeout=5.0, what="tcpdump ready")
        body = instance_conf(prio=150, extra="state MASTER\n    garp_master_delay 0\n"
                             "    garp_master_repeat 4")  # fmt: skip
        a.conf.write_text("global_defs {\n    router_id a\n    vrrp_garp_interval 0.2\n}\n" + body)
        a.start()
        a.wait_state("MASTER")
        dump.wait(timeout=5.0)
    finally:
        if dump.poll() is None:
            a.lab.stop(dump)
    stamps = [float(line.split()[0]) for line in out.read_text().splitlines() if VIP in line]
    assert len(stamps) == 4, out.read_text()
    gaps = [y - x for x, y in itertools.pairwise(stamps)]
    assert min(gaps) >= 0.18, gaps
    assert max(gaps) < 1.0, gaps
