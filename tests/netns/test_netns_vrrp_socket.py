"""VRRP raw sockets between two namespaces on a bridge: multicast v4/v6, unicast, TTL 255."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Callable

import pytest
from netns_wire import v2_advert, v3_advert

from conftest import Pair
from hakeeper.io.vrrp_socket import ReceivedPacket, VrrpSocket, VrrpSocketConfig
from hakeeper.lab.netns import entered, wait_until

pytestmark = pytest.mark.root


def open_in(ns: str, cfg: VrrpSocketConfig) -> VrrpSocket:
    with entered(ns):
        return VrrpSocket(cfg)


def recv(sock: VrrpSocket, timeout: float = 3.0) -> ReceivedPacket:
    result: ReceivedPacket = wait_until(sock.recv_nowait, timeout=timeout, what="a VRRP packet")
    return result


def test_multicast_v4_exchange_ttl_255(pair: Pair) -> None:
    cfg = VrrpSocketConfig("eth0", socket.AF_INET)
    a, b = open_in(pair.a, cfg), open_in(pair.b, cfg)
    try:
        assert a.source == pair.a_ip
        assert a.destinations == ("224.0.0.18",)
        payload = v2_advert(51, 100, ["198.18.0.100"])
        assert a.send(lambda src, dst: payload) == 1
        pkt = recv(b)
        assert pkt.payload == payload
        assert (pkt.src, pkt.dst, pkt.ttl) == (pair.a_ip, "224.0.0.18", 255)
        assert pkt.ifindex == b.ifindex
        assert pkt.ip_header[1] == 0xC0  # TOS internetwork control
        # Loopback of our own multicast is off: the sender's receiver sees nothing.
        time.sleep(0.05)
        assert a.recv_nowait() is None
        assert (a.stats.tx, b.stats.rx) == (1, 1)
    finally:
        a.close()
        b.close()


def test_multicast_v6_exchange_hop_limit_255(pair: Pair) -> None:
    cfg = VrrpSocketConfig("eth0", socket.AF_INET6)
    a, b = open_in(pair.a, cfg), open_in(pair.b, cfg)
    try:
        assert a.source is not None and a.source.startswith("fe80:")
        sent = a.send(lambda src, dst: v3_advert(7, 200, ["fe80::7"], str(src), dst))
        assert sent == 1
        pkt = recv(b)
        assert (pkt.src, pkt.dst, pkt.ttl) == (a.source, "ff02::12", 255)
        assert pkt.payload == v3_advert(7, 200, ["fe80::7"], str(a.source), "ff02::12")
        assert pkt.family == socket.AF_INET6 and pkt.ifindex == b.ifindex
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_unicast_peers_with_explicit_source(pair: Pair, family: int) -> None:
    v6 = family == socket.AF_INET6
    a_ip, b_ip = (pair.a6, pair.b6) if v6 else (pair.a_ip, pair.b_ip)
    a = open_in(pair.a, VrrpSocketConfig("eth0", family, src_ip=a_ip, unicast_peers=(b_ip,)))
    b = open_in(pair.b, VrrpSocketConfig("eth0", family, src_ip=b_ip, unicast_peers=(a_ip,)))
    try:
        assert a.destinations == (b_ip,)
        assert a.send(lambda src, dst: v3_advert(9, 150, [a_ip], str(src), dst)) == 1
        pkt = recv(b)
        assert (pkt.src, pkt.dst, pkt.ttl) == (a_ip, b_ip, 255)
        assert pkt.payload == v3_advert(9, 150, [a_ip], a_ip, b_ip)
        # and back
        assert b.send(lambda src, dst: v3_advert(9, 100, [b_ip], str(src), dst)) == 1
        assert recv(a).src == b_ip
    finally:
        a.close()
        b.close()


def test_unicast_ttl_is_configurable(pair: Pair) -> None:
    a = open_in(pair.a, VrrpSocketConfig("eth0", unicast_peers=(pair.b_ip,), unicast_ttl=64))
    b = open_in(pair.b, VrrpSocketConfig("eth0", unicast_peers=(pair.a_ip,)))
    try:
        a.send(lambda src, dst: v2_advert(1, 100, [pair.a_ip]))
        assert recv(b).ttl == 64
    finally:
        a.close()
        b.close()


def test_multicast_source_override_mcast_src_ip(pair: Pair) -> None:
    pair.lab.addr(pair.a, "eth0", "198.18.0.11/24")
    a = open_in(pair.a, VrrpSocketConfig("eth0", src_ip="198.18.0.11"))
    b = open_in(pair.b, VrrpSocketConfig("eth0"))
    try:
        a.send(lambda src, dst: v2_advert(3, 100, ["198.18.0.100"]))
        assert recv(b).src == "198.18.0.11"
    finally:
        a.close()
        b.close()


def test_asyncio_reader_survives_a_failing_handler(pair: Pair) -> None:
    a = open_in(pair.a, VrrpSocketConfig("eth0"))
    b = open_in(pair.b, VrrpSocketConfig("eth0"))

    async def scenario() -> list[ReceivedPacket]:
        got: list[ReceivedPacket] = []
        done = asyncio.Event()

        def handler(pkt: ReceivedPacket) -> None:
            got.append(pkt)
            if len(got) == 1:
                raise RuntimeError("handler bug")
            done.set()

        b.attach(asyncio.get_running_loop(), handler)
        for prio in (100, 101):
            a.send(lambda src, dst, p=prio: v2_advert(51, p, ["198.18.0.100"]))
            await asyncio.sleep(0)
        await asyncio.wait_for(done.wait(), timeout=3)
        b.detach()
        return got

    try:
        got = asyncio.run(scenario())
        assert [p.payload[2] for p in got] == [100, 101]
        assert b.stats.callback_errors == 1
    finally:
        a.close()
        b.close()


def test_interface_filter_other_vrids_other_links(pair: Pair) -> None:
    """A socket bound to eth1 does not see adverts arriving on eth0."""
    lab = pair.lab
    lab.veth(pair.b, "eth1", pair.a, "eth1")
    a = open_in(pair.a, VrrpSocketConfig("eth0"))
    b_eth1 = open_in(pair.b, VrrpSocketConfig("eth1"))
    b_eth0 = open_in(pair.b, VrrpSocketConfig("eth0"))
    try:
        a.send(lambda src, dst: v2_advert(51, 100, ["198.18.0.100"]))
        recv(b_eth0)
        time.sleep(0.05)
        assert b_eth1.recv_nowait() is None
    finally:
        for s in (a, b_eth0, b_eth1):
            s.close()


def wait_listening(cap: subprocess.Popen[bytes]) -> None:
    """tcpdump prints "listening on" to stderr once the capture is armed (bounded read)."""
    assert cap.stderr is not None
    lines = []
    for _ in range(5):
        lines.append(cap.stderr.readline().decode())
        if "listening" in lines[-1]:
            return
    raise AssertionError(f"tcpdump did not start: {lines}")


def _tshark_decode(pair: Pair, send: Callable[[], None], prefs: tuple[str, ...] = ()) -> str:
    """Capture on b:eth0 with tcpdump while `send()` runs, decode with tshark -V."""
    lab = pair.lab
    pcap = f"/tmp/{pair.b}-vrrp.pcap"
    cap = lab.popen(
        pair.b,
        ["tcpdump", "-i", "eth0", "-U", "-w", pcap, "-c", "1", "ip proto 112 or ip6 proto 112"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(cap)
        deadline = time.monotonic() + 5
        while cap.poll() is None and time.monotonic() < deadline:
            send()
            time.sleep(0.05)
        assert cap.wait(timeout=5) == 0
        out = subprocess.run(
            ["tshark", "-r", pcap, "-V", *prefs],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return out.stdout + out.stderr
    finally:
        lab.stop(cap)
        subprocess.run(["rm", "-f", pcap], check=False)


def test_tshark_decodes_our_v2_advert_with_good_checksum(pair: Pair) -> None:
    a = open_in(pair.a, VrrpSocketConfig("eth0"))
    try:
        text = _tshark_decode(
            pair, lambda: a.send(lambda s, d: v2_advert(51, 100, ["198.18.0.100"]))
        )
    finally:
        a.close()
    assert "Virtual Router Redundancy Protocol" in text, text
    assert "Time to Live: 255" in text
    assert "Virtual Rtr ID: 51" in text
    assert "[Checksum Status: Good]" in text, text


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_tshark_decodes_our_v3_advert_with_pseudo_header_checksum(pair: Pair, family: int) -> None:
    a = open_in(pair.a, VrrpSocketConfig("eth0", family))
    vip = "fe80::51" if family == socket.AF_INET6 else "198.18.0.100"
    prefs = ("-o", "vrrp.v3_checksum_as_in_v2:FALSE")
    try:
        text = _tshark_decode(
            pair, lambda: a.send(lambda s, d: v3_advert(51, 100, [vip], str(s), d)), prefs
        )
    finally:
        a.close()
    assert "Virtual Router Redundancy Protocol" in text, text
    assert ("Hop Limit: 255" if family == socket.AF_INET6 else "Time to Live: 255") in text
    assert "Version: 3" in text or "Version 3" in text, text
    assert "[Checksum Status: Good]" in text, text


def test_send_datagram_keeps_our_ip_header_for_ah(pair: Pair) -> None:
    """IP_HDRINCL path: protocol 51 (AH), our IP ID and TTL survive to the receiver."""
    from hakeeper.io.vrrp_socket import IPPROTO_AH, build_ipv4_header

    cfg = VrrpSocketConfig("eth0", protocol=IPPROTO_AH)
    a, b = open_in(pair.a, cfg), open_in(pair.b, cfg)
    try:
        body = bytes(range(40))
        header = build_ipv4_header(pair.a_ip, "224.0.0.18", len(body), ident=0x1234,
                                   protocol=IPPROTO_AH)  # fmt: skip
        assert a.send_datagram(header + body, "224.0.0.18")
        pkt = recv(b)
        assert pkt.payload == body
        assert pkt.ip_header[4:6] == b"\x12\x34" and pkt.ip_header[9] == IPPROTO_AH
        assert (pkt.src, pkt.dst, pkt.ttl) == (pair.a_ip, "224.0.0.18", 255)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_membership_survives_link_down_up(pair: Pair, family: int) -> None:
    a = open_in(pair.a, VrrpSocketConfig("eth0", family))
    b = open_in(pair.b, VrrpSocketConfig("eth0", family))

    def build(src: str | None, dst: str) -> bytes:
        return v3_advert(5, 100, [pair.a_ip if family == socket.AF_INET else "fe80::5"],
                         str(src), dst)  # fmt: skip

    try:
        pair.lab.link_set(pair.b, "eth0", up=False)
        assert a.send(build) == 1  # into the void: B's link is down
        time.sleep(0.05)
        pair.lab.link_set(pair.b, "eth0", up=True)
        while b.recv_nowait() is not None:
            pass

        def delivered() -> ReceivedPacket | None:
            a.send(build)
            time.sleep(0.02)
            return b.recv_nowait()

        wait_until(delivered, timeout=5, what="multicast again after link up")
    finally:
        a.close()
        b.close()


def test_socket_on_a_vmac_with_explicit_source(pair: Pair) -> None:
    """use_vmac: adverts leave through vrrp.VRID (source MAC 00:00:5e:00:01:VRID)."""
    import asyncio

    from hakeeper.io.netlink import Netlink

    async def make() -> None:
        with entered(pair.a):
            nl = await Netlink().open()
        try:
            await nl.create_vmac("eth0", 51)
        finally:
            nl.close()

    asyncio.run(make())
    a = open_in(pair.a, VrrpSocketConfig("vrrp.51", src_ip=pair.a_ip))
    b = open_in(pair.b, VrrpSocketConfig("eth0"))
    cap = pair.lab.popen(pair.b, ["tcpdump", "-eni", "eth0", "-c", "1", "-l", "ip proto 112"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_listening(cap)
        payload = v2_advert(51, 100, ["198.18.0.100"])

        def delivered() -> ReceivedPacket | None:
            a.send_to(payload, "224.0.0.18")
            time.sleep(0.02)
            return b.recv_nowait()

        pkt: ReceivedPacket = wait_until(delivered, timeout=5, what="advert from the VMAC")
        assert (pkt.src, pkt.ttl) == (pair.a_ip, 255)
        assert cap.wait(timeout=5) == 0
        assert cap.stdout is not None
        line = cap.stdout.read().decode()
        assert "00:00:5e:00:01:33 > 01:00:5e:00:00:12" in line, line
    finally:
        pair.lab.stop(cap)
        a.close()
        b.close()
