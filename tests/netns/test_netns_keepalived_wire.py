"""The adapters against the real keepalived 2.2.7 on the wire (with the project's codec).

keepalived -> us: our VrrpSocket receives its VRRPv2 (PASS) and VRRPv3 adverts with TTL 255
and the codec accepts their checksums. us -> keepalived: a keepalived BACKUP hearing our
higher-priority adverts stays BACKUP and logs no protocol complaint.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Pair
from hakeeper.io.vrrp_socket import ReceivedPacket, VrrpSocket, VrrpSocketConfig
from hakeeper.lab.netns import entered, wait_until
from hakeeper.vrrp.packet import Advert, AuthType, decode, encode, pass_auth_data

pytestmark = [pytest.mark.root, pytest.mark.interop("keepalived")]
VIP = "198.18.0.100"
COMPLAINTS = ("invalid", "bad ", "checksum", "not present", "mismatch", "error", "wrong")


def keepalived_conf(
    *, state: str, prio: int, version: int, advert_int: str, auth_type: str = "PASS"
) -> str:
    auth = (
        ""
        if version == 3
        else f"authentication {{\n  auth_type {auth_type}\n  auth_pass secret12\n }}"
    )
    return f"""
global_defs {{
 router_id hk_ka
 vrrp_version {version}
 vrrp_garp_master_delay 0
}}
vrrp_instance VI_1 {{
 state {state}
 interface eth0
 virtual_router_id 51
 priority {prio}
 advert_int {advert_int}
 {auth}
 virtual_ipaddress {{
  {VIP}/24
 }}
}}
"""


def start_keepalived(pair: Pair, tmp_path: Path, conf: str) -> tuple[subprocess.Popen[bytes], Path]:
    cfg = tmp_path / "keepalived.conf"
    cfg.write_text(conf)
    log = tmp_path / "keepalived.log"
    argv = ["keepalived", "-n", "-l", "-D", "-G", "-P", "-f", str(cfg),
            "-p", str(tmp_path / "ka.pid"), "-r", str(tmp_path / "vrrp.pid")]  # fmt: skip
    with log.open("wb") as out:
        proc = pair.lab.popen(pair.a, argv, stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def first_advert(sock: VrrpSocket, timeout: float) -> ReceivedPacket:
    pkt: ReceivedPacket = wait_until(sock.recv_nowait, timeout=timeout, what="a keepalived advert")
    return pkt


@pytest.mark.parametrize(
    ("version", "advert_int"), [pytest.param(2, "1", marks=pytest.mark.slow), (3, "0.1")]
)
def test_we_receive_and_decode_keepalived_adverts(
    pair: Pair, tmp_path: Path, version: int, advert_int: str
) -> None:
    with entered(pair.b):
        sock = VrrpSocket(VrrpSocketConfig("eth0"))
    proc, log = start_keepalived(
        pair,
        tmp_path,
        keepalived_conf(state="MASTER", prio=150, version=version, advert_int=advert_int),
    )
    try:
        pkt = first_advert(sock, timeout=8)
        assert (pkt.src, pkt.dst, pkt.ttl) == (pair.a_ip, "224.0.0.18", 255)
        advert = decode(pkt.payload, src=ipaddress.ip_address(pkt.src),
                        dst=ipaddress.ip_address(pkt.dst), ttl=pkt.ttl)  # fmt: skip
        assert isinstance(advert, Advert), (advert, log.read_text())
        assert (advert.version, advert.vrid, advert.priority) == (version, 51, 150)
        assert advert.addresses == (ipaddress.ip_address(VIP),)
        if version == 2:
            assert advert.auth_type is AuthType.PASS
            assert advert.auth_data == pass_auth_data("secret12")
    finally:
        pair.lab.stop(proc)
        sock.close()


@pytest.mark.parametrize(
    ("version", "advert_int", "listen_s"),
    [pytest.param(2, 1, 4.5, marks=pytest.mark.slow), (3, 0.1, 1.5)],
)
def test_keepalived_accepts_our_adverts(
    pair: Pair, tmp_path: Path, version: int, advert_int: float, listen_s: float
) -> None:
    """keepalived BACKUP prio 100 hears us at prio 200: it must never become MASTER."""
    with entered(pair.b):
        sock = VrrpSocket(VrrpSocketConfig("eth0"))
    advert = Advert(
        version=version,
        vrid=51,
        priority=200,
        addresses=(ipaddress.ip_address(VIP),),
        interval_cs=int(advert_int * 100),
        auth_type=AuthType.PASS if version == 2 else AuthType.NONE,
        auth_data=pass_auth_data("secret12") if version == 2 else b"",
    )

    def build(src: str | None, dst: str) -> bytes:
        assert src is not None
        return encode(advert, src=ipaddress.ip_address(src), dst=ipaddress.ip_address(dst))

    sock.send(build)  # before keepalived starts listening: it starts in BACKUP anyway
    proc, log = start_keepalived(
        pair,
        tmp_path,
        keepalived_conf(state="BACKUP", prio=100, version=version, advert_int=str(advert_int)),
    )
    try:
        wait_until(lambda: "Entering BACKUP STATE" in log.read_text(), timeout=8,
                   what="keepalived BACKUP")  # fmt: skip
        deadline = time.monotonic() + listen_s
        while time.monotonic() < deadline:
            assert sock.send(build) == 1
            time.sleep(advert_int / 2)
        text = log.read_text()
        assert "Entering MASTER STATE" not in text, text
        complaints = [
            line for line in text.splitlines()
            if "VI_1" in line and any(word in line.lower() for word in COMPLAINTS)
        ]  # fmt: skip
        assert not complaints, text
        assert proc.poll() is None, text
    finally:
        pair.lab.stop(proc)
        sock.close()


def test_keepalived_takes_over_when_we_send_priority_zero(pair: Pair, tmp_path: Path) -> None:
    """The counter-proof that keepalived really listens: our resign (prio 0) makes it MASTER."""
    with entered(pair.b):
        sock = VrrpSocket(VrrpSocketConfig("eth0", socket.AF_INET))
    vip = (ipaddress.ip_address(VIP),)

    def advert(prio: int) -> bytes:
        return encode(Advert(3, 51, prio, vip, 10), src=ipaddress.ip_address(pair.b_ip))

    proc, log = start_keepalived(
        pair, tmp_path, keepalived_conf(state="BACKUP", prio=100, version=3, advert_int="0.1")
    )
    try:
        wait_until(lambda: "Entering BACKUP STATE" in log.read_text(), timeout=8,
                   what="keepalived BACKUP")  # fmt: skip
        for _ in range(10):
            sock.send_to(advert(200), "224.0.0.18")
            time.sleep(0.05)
        assert "Entering MASTER STATE" not in log.read_text()
        sock.send_to(advert(0), "224.0.0.18")
        wait_until(lambda: "Entering MASTER STATE" in log.read_text(), timeout=3,
                   what="keepalived MASTER after our priority-0 advert")  # fmt: skip
    finally:
        pair.lab.stop(proc)
        sock.close()


@pytest.mark.slow
def test_ah_both_ways_with_keepalived(pair: Pair, tmp_path: Path) -> None:
    """auth_type AH: we verify keepalived's ICV; keepalived accepts ours and obeys our prio 0."""
    from hakeeper.io.ah import AhSigner, AhVerified, ah_key, ah_verify
    from hakeeper.io.vrrp_socket import IPPROTO_AH

    with entered(pair.b):
        sock = VrrpSocket(VrrpSocketConfig("eth0", protocol=IPPROTO_AH))
    signer = AhSigner("secret12")
    vip = (ipaddress.ip_address(VIP),)

    def send(prio: int) -> None:
        advert = Advert(2, 51, prio, vip, 100, auth_type=AuthType.AH, auth_data=bytes(8))
        datagram = signer.wrap(encode(advert), src=pair.b_ip, dst="224.0.0.18")
        assert sock.send_datagram(datagram, "224.0.0.18")

    # keepalived BACKUP prio 100 hears us at prio 200 for > Master_Down_Interval
    send(200)
    proc, log = start_keepalived(
        pair, tmp_path,
        keepalived_conf(state="BACKUP", prio=100, version=2, advert_int="1", auth_type="AH"),
    )  # fmt: skip
    try:
        wait_until(lambda: "Entering BACKUP STATE" in log.read_text(), timeout=8,
                   what="keepalived BACKUP")  # fmt: skip
        for _ in range(9):
            send(200)
            time.sleep(0.5)
        text = log.read_text()
        assert "Entering MASTER STATE" not in text, text
        send(0)
        wait_until(lambda: "Entering MASTER STATE" in log.read_text(), timeout=3,
                   what="keepalived MASTER after our AH priority-0 advert")  # fmt: skip
        # now keepalived is master and sends AH adverts: verify its ICV
        deadline = time.monotonic() + 3
        verified = None
        while verified is None and time.monotonic() < deadline:
            pkt = sock.recv_nowait()
            if pkt is None:
                time.sleep(0.02)
                continue
            result = ah_verify(pkt, ah_key("secret12"))
            assert isinstance(result, AhVerified), result
            verified = result
        assert verified is not None, "no AH advert from keepalived"
        inner = decode(verified.packet.payload, src=ipaddress.ip_address(pair.a_ip),
                       dst=ipaddress.ip_address("224.0.0.18"), ttl=verified.packet.ttl)  # fmt: skip
        assert isinstance(inner, Advert) and inner.auth_type is AuthType.AH
        assert inner.priority == 100
        complaints = [
            line for line in log.read_text().splitlines()
            if "VI_1" in line and any(word in line.lower() for word in COMPLAINTS)
        ]  # fmt: skip
        assert not complaints, log.read_text()
    finally:
        pair.lab.stop(proc)
        sock.close()
