"""Takeover fast path: VIPs + GARP before the first advert, raw RTM_NEWADDR encoding, and
the host queue falling back to its worker whenever work is pending."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import struct
from collections.abc import Sequence

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from tests.unit.runtime.test_runtime_driver import Host, Sender, make

from hakeeper.conf.model import VirtualAddress
from hakeeper.io import netlink as nl
from hakeeper.runtime.host import Announcers, NetlinkHost
from hakeeper.vrrp import machine as m


class OrderedHost(Host):
    def __init__(self, order: list[str]) -> None:
        super().__init__()
        self.order = order

    def add_addresses(self, ifname: str, vips: Sequence[VirtualAddress]) -> None:
        self.order.append("add")

    def gratuitous(self, ifname: str, vips: Sequence[VirtualAddress], count: int) -> None:
        self.order.append("garp")


class OrderedSender(Sender):
    def __init__(self, order: list[str]) -> None:
        super().__init__()
        self.order = order

    def send_to(self, payload: bytes, dst: str) -> bool:
        self.order.append("advert")
        return True


def test_becoming_master_adds_vips_and_garps_before_the_first_advert() -> None:
    order: list[str] = []

    async def go() -> None:
        drv, _s, _h = make(asyncio.get_running_loop(), 100)
        drv.host = OrderedHost(order)
        drv.sender = OrderedSender(order)
        states: list[str] = []
        drv.on_state = lambda d, ch: states.append(f"{ch.new.value}:{order[:]}")
        drv.start()
        drv.force_master("test")
        assert drv.state is m.State.MASTER
        assert states[-1] == "MASTER:['add', 'garp']", "state callbacks come after VIP + GARP"
        drv.stop()

    asyncio.run(go())
    assert order[:3] == ["add", "garp", "advert"]


def _decode(msg: bytes) -> dict[str, object]:
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", msg)
    assert length == len(msg) and kind == nl.RTM_NEWADDR
    assert flags == nl.NLM_F_REQUEST | nl.NLM_F_ACK | nl.NLM_F_CREATE | nl.NLM_F_EXCL
    parsed = ifaddrmsg(msg)
    parsed.decode()
    return {
        "family": parsed["family"],
        "prefixlen": parsed["prefixlen"],
        "scope": parsed["scope"],
        "index": parsed["index"],
        "seq": seq,
        "attrs": {name: value for name, value in parsed["attrs"]},
    }


def test_newaddr_message_is_what_ip_addr_add_sends() -> None:
    v4 = nl.VirtualAddress("198.18.0.100", 24, "eth0", broadcast="+", label="eth0:vip")
    got = _decode(nl.newaddr_message(v4, 7, 42))
    assert (got["family"], got["prefixlen"], got["scope"], got["index"], got["seq"]) == (
        socket.AF_INET, 24, 0, 7, 42,
    )  # fmt: skip
    assert got["attrs"] == {
        "IFA_LOCAL": "198.18.0.100",
        "IFA_ADDRESS": "198.18.0.100",
        "IFA_BROADCAST": "198.18.0.255",
        "IFA_LABEL": "eth0:vip",
    }
    v6 = nl.VirtualAddress("2001:db8::64", 64, "eth0", scope="link")
    got6 = _decode(nl.newaddr_message(v6, 3, 1))
    assert (got6["family"], got6["prefixlen"], got6["scope"]) == (socket.AF_INET6, 64, 253)
    attrs = got6["attrs"]
    assert isinstance(attrs, dict)
    assert attrs["IFA_ADDRESS"] == "2001:db8::64" and attrs["IFA_FLAGS"] == nl.IFA_F_NODAD


def test_parse_acks_reads_errors_and_success() -> None:
    def ack(seq: int, code: int) -> bytes:
        return struct.pack("=IHHIIi", 36, nl.NLMSG_ERROR, 0, seq, 0, code) + bytes(16)

    data = ack(5, 0) + ack(6, -errno.EEXIST) + ack(7, -errno.ENODEV)
    assert nl.parse_acks(data) == [(5, 0), (6, errno.EEXIST), (7, errno.ENODEV)]
    assert nl.parse_acks(b"\0" * 10) == []


class FakeRaw:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.pending: dict[int, nl.VirtualAddress] = {}
        self.sock = self

    def message(self, vip: nl.VirtualAddress) -> bytes:
        if vip.ifname == "gone":
            raise OSError(errno.ENODEV, "no such device")
        return nl.newaddr_message(vip, 1, 9)

    def send(self, msg: bytes) -> int:
        self.sent.append(msg)
        return len(msg)

    def read_acks(self) -> list[tuple[nl.VirtualAddress | None, int]]:
        return []

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


class FakeAnnouncer:
    def __init__(self, sent: list[str]) -> None:
        self.sent = sent

    def announce(self, address: str) -> bool:
        self.sent.append(address)
        return True

    def close(self) -> None:
        pass


def test_host_goes_direct_only_when_nothing_is_queued() -> None:
    garps: list[str] = []
    v = VirtualAddress(ipaddress.ip_interface("198.18.0.100/24"))

    async def go() -> None:
        host = NetlinkHost(None, Announcers(factory=lambda _if: FakeAnnouncer(garps)))
        raw = FakeRaw()
        host.raw = raw  # type: ignore[assignment]
        host.add_addresses("eth0", [v])
        host.gratuitous("eth0", [v], 3)
        assert len(raw.sent) == 1 and garps == ["198.18.0.100"] * 3, "sent synchronously"
        assert host.status()["fast_adds"] == 1 and host.status()["fast_garps"] == 1
        host.remove_addresses("eth0", [v])  # queued: the worker is not running
        host.add_addresses("eth0", [v])
        host.gratuitous("eth0", [v], 1)
        assert len(raw.sent) == 1 and len(garps) == 3, "behind queued work: queued too"
        assert host.status()["queued"] == 3
        host.start()
        assert await host.drain(2.0)
        host.add_addresses("gone", [v])  # unknown interface: left to the worker (logs it)
        assert len(raw.sent) == 1
        assert await host.drain(2.0)
        await host.close()

    asyncio.run(go())
    assert garps == ["198.18.0.100"] * 4
