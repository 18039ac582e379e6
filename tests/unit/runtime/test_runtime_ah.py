"""keepalived `auth_type AH` in the runtime: proto-51 sockets, ICV check, anti-replay.

Whole daemons over the fake wire (IP_HDRINCL datagrams carry the IP header, which the
ICV covers) plus the receive demultiplexer fed hand-built packets.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any

from test_runtime_daemon import A_IP, B_IP, Harness, conf, run_scenario, state, until

from hakeeper.conf.keepalived import load_keepalived
from hakeeper.io.vrrp_socket import ReceivedPacket
from hakeeper.runtime.params import socket_key
from hakeeper.vrrp.auth_ah import decode_ipv4, encode_ipv4
from hakeeper.vrrp.packet import Advert, AuthType, encode

GROUP = "224.0.0.18"


def ah_inst(prio: int, password: str = "s3cret", *, body: str = "") -> str:
    return f"""
vrrp_instance VI_1 {{
    interface eth0
    virtual_router_id 51
    priority {prio}
    advert_int 1
    {body}
    authentication {{
        auth_type AH
        auth_pass {password}
    }}
    virtual_ipaddress {{
        198.18.0.100/24
    }}
}}
"""


def test_socket_key_uses_protocol_51_only_for_v2_ipv4(tmp_path: Path) -> None:
    path = tmp_path / "k.conf"
    path.write_text(
        conf(ah_inst(100))
        + conf(ah_inst(100).replace("VI_1", "VI_3") + "").replace(
            "advert_int 1", "advert_int 1\n    version 3"
        )
    )
    cfg, _ = load_keepalived(str(path))
    assert cfg is not None
    keys = {i.name: socket_key(i, cfg.global_defs) for i in cfg.vrrp_instances}
    assert keys["VI_1"].protocol == 51
    assert keys["VI_3"].protocol == 112  # keepalived ignores AH for VRRPv3


def test_ah_election_priority_zero_and_wire_format(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        a = h.start("a", A_IP, conf(ah_inst(150)))
        b = h.start("b", B_IP, conf(ah_inst(100)))
        # keepalived (and our loader) refuse `state MASTER` with AH: a full down timer
        await until(
            lambda: state(a) == "MASTER" and state(b) == "BACKUP", timeout=6.0, what="election"
        )
        await until(lambda: b.instances["VI_1"].driver.machine.master_ip is not None)  # type: ignore[union-attr]
        await until(lambda: len([s for s, _ in h.wire.datagrams if s == A_IP]) >= 2)
        assert h.wire.sent == []  # nothing left as plain protocol 112
        seqs = []
        for src, dgram in h.wire.datagrams:
            got = decode_ipv4(dgram, password="s3cret")
            assert not isinstance(got, Exception) and hasattr(got, "seq"), got
            assert dgram[9] == 51 and dgram[8] == 255 and dgram[1] == 0xC0
            if src == A_IP:
                seqs.append(got.seq)
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        drv = b.instances["VI_1"].driver
        assert drv is not None and drv.status()["counters"]["dropped"] == {}
        assert drv.machine.master_ip == ipaddress.ip_address(A_IP)
        a.request("term")
        assert await h.tasks["a"] == 0
        await until(lambda: state(b) == "MASTER", timeout=5.0, what="b takes over on prio 0")
        assert drv.machine.counters.priority_zero_received >= 1

    run_scenario(tmp_path, body)


def test_ah_wrong_password_is_counted_and_dropped(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        a = h.start("a", A_IP, conf(ah_inst(150, "right")))
        b = h.start("b", B_IP, conf(ah_inst(100, "wrong")))
        await until(lambda: state(a) == "MASTER", timeout=6.0, what="a master")
        await until(lambda: state(b) == "MASTER", timeout=6.0, what="b never hears a")
        dropped = b.instances["VI_1"].driver.status()["counters"]["dropped"]  # type: ignore[union-attr]
        assert dropped.get("AUTH_MISMATCH", 0) >= 1

    run_scenario(tmp_path, body)


class _Sock:
    source = B_IP
    destinations = (GROUP,)

    def send_to(self, payload: bytes, dst: str) -> bool:
        return True

    def send_datagram(self, datagram: bytes, dst: str) -> bool:
        return True


def _packet(seq: int, password: str = "s3cret", prio: int = 150) -> ReceivedPacket:
    vip = (ipaddress.IPv4Address("198.18.0.100"),)
    adv = Advert(2, 51, prio, vip, 100, AuthType.AH, bytes(8))
    src, dst = ipaddress.IPv4Address(A_IP), ipaddress.IPv4Address(GROUP)
    vrrp = encode(adv, src=src, dst=dst)
    dgram = encode_ipv4(vrrp, src=src, dst=dst, password=password, seq=seq, ip_id=seq)
    return ReceivedPacket(socket.AF_INET, dgram[20:], A_IP, GROUP, 255, 1, dgram[:20])


def test_demux_verifies_icv_and_refuses_replayed_sequence_numbers(tmp_path: Path) -> None:
    import asyncio

    from hakeeper.runtime.driver import InstanceDriver
    from hakeeper.runtime.params import instance_params
    from hakeeper.runtime.sockets import SocketGroup

    path = tmp_path / "d.conf"
    path.write_text(conf(ah_inst(100)))
    cfg, _ = load_keepalived(str(path))
    assert cfg is not None
    inst = cfg.vrrp_instances[0]
    params = instance_params(inst, cfg.global_defs, ipaddress.IPv4Address(B_IP))
    loop = asyncio.new_event_loop()
    try:
        host: Any = None
        drv = InstanceDriver(loop, inst, params, _Sock(), host)
        drv._running = True  # receive path only: no timers, no host calls
        got: list[Advert] = []
        drv.on_advert = got.append  # type: ignore[method-assign]
        group = SocketGroup(socket_key(inst, cfg.global_defs), _Sock())  # type: ignore[arg-type]
        group.drivers[51] = drv
        group.on_packet(_packet(5))
        group.on_packet(_packet(5))  # replayed
        group.on_packet(_packet(4))  # older
        group.on_packet(_packet(6, password="other"))  # bad ICV
        group.on_packet(_packet(7))
        bad = _packet(8)
        group.on_packet(ReceivedPacket(**{**bad.__dict__, "payload": bad.payload[:-1] + b"x"}))
        assert [a.priority for a in got] == [150, 150]
        assert drv.counters.decode_errors == {"AH_REPLAY": 2, "AUTH_MISMATCH": 2}
        group.on_packet(_packet(9))  # later numbers still pass
        assert len(got) == 3
    finally:
        loop.close()
