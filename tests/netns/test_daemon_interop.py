"""hakeeper and the real keepalived (Debian 2.2.7) in one VRID, both roles, v2+PASS, v2+AH, v3.

The right node wins, a SIGTERM (priority 0) hands the VIP over fast in both directions, and
neither side reports protocol errors (keepalived's log, hakeeper's drop counters).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_daemon_vrrp import A_IP, B_IP, VIP, Node, nodes  # noqa: F401 (fixtures)

from hakeeper.lab.netns import wait_until

pytestmark = [pytest.mark.root, pytest.mark.interop("keepalived")]

KEEPALIVED = shutil.which("keepalived", path="/usr/sbin:/sbin:/usr/bin") or "keepalived"
BAD_WORDS = ("invalid", "mismatch", "bad ", "error", "wrong", "discard")


MODES = [(2, "PASS"), (2, "AH"), (3, "")]


def conf(version: int, prio: int, auth_type: str = "PASS") -> str:
    auth = f"authentication {{\n        auth_type {auth_type}\n        auth_pass s3cret\n    }}"
    return f"""
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {prio}
    version {version}
    advert_int {1 if version == 2 else 0.1}
    {auth if version == 2 else ""}
    virtual_ipaddress {{
        {VIP}/24
    }}
}}
"""


class Keepalived:
    def __init__(self, node: Node, tmp: Path) -> None:
        self.node = node
        self.tmp = tmp
        self.log = tmp / "keepalived.log"
        self.proc: subprocess.Popen[Any] | None = None

    def start(self, body: str) -> None:
        conf_path = self.tmp / "keepalived.conf"
        conf_path.write_text(f"global_defs {{\n    router_id ka\n}}\n{body}")
        argv = [
            KEEPALIVED, "-n", "-l", "-D", "-P", "-f", str(conf_path),
            "-p", str(self.tmp / "ka.pid"), "-r", str(self.tmp / "ka_vrrp.pid"),
        ]  # fmt: skip
        with self.log.open("w") as log:
            self.proc = self.node.lab.popen(
                self.node.ns, argv, stdout=log, stderr=subprocess.STDOUT
            )

    def problems(self) -> list[str]:
        lines = self.log.read_text().lower().splitlines()
        return [ln for ln in lines if any(w in ln for w in BAD_WORDS)]


@pytest.mark.parametrize(("version", "auth"), MODES)
def test_hakeeper_master_keepalived_backup(
    nodes: tuple[Node, Node],  # noqa: F811
    workdir: Path,
    version: int,
    auth: str,
) -> None:
    a, b = nodes
    ka = Keepalived(b, workdir)
    ka.start(conf(version, 100, auth))
    a.start(conf(version, 150, auth))
    a.wait_state("MASTER", timeout=8.0)
    wait_until(lambda: not b.has(VIP), timeout=8.0, what="keepalived backs off")
    wait_until(lambda: a.instance()["counters"]["adverts_sent"] >= 3, timeout=8.0, what="adverts")
    assert [g["protocol"] for g in a.status()["sockets"]] == [51 if auth == "AH" else 112]
    a.signal(signal.SIGTERM)
    assert a.wait_exit() == 0
    wait_until(lambda: b.has(VIP), timeout=3.0, what="keepalived takes over on priority 0")
    assert ka.problems() == []


@pytest.mark.parametrize(("version", "auth"), MODES)
def test_keepalived_master_hakeeper_backup(
    nodes: tuple[Node, Node],  # noqa: F811
    workdir: Path,
    version: int,
    auth: str,
) -> None:
    a, b = nodes
    ka = Keepalived(a, workdir)
    ka.start(conf(version, 150, auth))
    wait_until(lambda: a.has(VIP), timeout=8.0, what="keepalived master")
    b.start(conf(version, 100, auth))
    b.wait_state("BACKUP")
    wait_until(lambda: b.instance()["master"] == A_IP, timeout=5.0, what="hakeeper sees ka")
    assert b.instance()["counters"]["dropped"] == {}
    assert [g["protocol"] for g in b.status()["sockets"]] == [51 if auth == "AH" else 112]
    assert ka.proc is not None
    ka.proc.send_signal(signal.SIGTERM)
    b.wait_state("MASTER", timeout=3.0)
    wait_until(lambda: b.has(VIP), timeout=3.0, what="hakeeper takes over")
    assert b.instance()["counters"]["priority_zero_received"] >= 1
    assert b.instance()["source"] == B_IP
    assert ka.problems() == []


def test_ah_wrong_key_from_keepalived_is_counted_and_dropped(
    nodes: tuple[Node, Node],  # noqa: F811
    workdir: Path,
) -> None:
    a, b = nodes
    ka = Keepalived(a, workdir)
    ka.start(conf(2, 150, "AH"))
    wait_until(lambda: a.has(VIP), timeout=8.0, what="keepalived master")
    b.start(conf(2, 100, "AH").replace("s3cret", "0ther"))
    b.wait_state("MASTER", timeout=8.0)  # never hears a verifiable advert
    wait_until(
        lambda: b.instance()["counters"]["dropped"].get("AUTH_MISMATCH", 0) >= 2,
        timeout=5.0,
        what="bad ICVs counted",
    )
    assert b.instance()["counters"]["adverts_received"] == 0
