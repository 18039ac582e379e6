"""IPVS generic-netlink messages built from reconcile plans.

This kernel has no IPVS (CONFIG_IP_VS is not set), so the driver is tested at the message
level only: command, attributes and the encoded bytes decoded back by pyroute2.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

from pyroute2.netlink.generic import ipvs as genl

from hakeeper.conf.model import LvsMethod, RealServer, VirtualServer
from hakeeper.dataplane.desired import DesiredState, desired_state
from hakeeper.dataplane.ipvs import (
    IP_VS_SVC_F_PERSISTENT,
    IP_VS_SVC_F_SCHED2,
    ipvs_ops,
)
from hakeeper.dataplane.reconcile import plan

A = ipaddress.ip_address


def _vs(**kw: Any) -> VirtualServer:
    reals = (RealServer(A("198.18.1.1"), 8080, weight=3),
             RealServer(A("198.18.1.2"), None, weight=1, lvs_method=LvsMethod("DR")))  # fmt: skip
    base: dict[str, Any] = {"address": A("198.18.0.10"), "port": 80, "lvs_sched": "wrr",
                            "real_servers": reals}  # fmt: skip
    base.update(kw)
    return VirtualServer(**base)


def _attrs(nla: dict[str, Any]) -> dict[str, Any]:
    return dict(nla["attrs"])


def _decode(data: bytes) -> Any:
    msg = genl.ipvsmsg(data)
    msg.decode()
    return msg


def test_add_service_then_dests_with_kernel_values() -> None:
    ops = ipvs_ops(plan(desired_state([_vs()]), DesiredState()))
    assert [o.op for o in ops] == ["add_service", "add_dest", "add_dest"]
    svc = _attrs(ops[0].message().get("IPVS_CMD_ATTR_SERVICE"))
    assert svc["IPVS_SVC_ATTR_ADDR"] == "198.18.0.10"
    assert svc["IPVS_SVC_ATTR_PORT"] == 80
    assert svc["IPVS_SVC_ATTR_PROTOCOL"] == socket.IPPROTO_TCP
    assert svc["IPVS_SVC_ATTR_SCHED_NAME"] == "wrr"
    assert svc["IPVS_SVC_ATTR_FLAGS"]["flags"] == 0
    d1 = _attrs(ops[1].message().get("IPVS_CMD_ATTR_DEST"))
    d2 = _attrs(ops[2].message().get("IPVS_CMD_ATTR_DEST"))
    assert (d1["IPVS_DEST_ATTR_PORT"], d1["IPVS_DEST_ATTR_WEIGHT"]) == (8080, 3)
    assert d1["IPVS_DEST_ATTR_FWD_METHOD"] == 0  # IP_VS_CONN_F_MASQ
    assert d2["IPVS_DEST_ATTR_PORT"] == 80  # no port: the service's
    assert d2["IPVS_DEST_ATTR_FWD_METHOD"] == 3  # IP_VS_CONN_F_DROUTE
    # a dest message names its service by key attributes only
    key = _attrs(ops[1].message().get("IPVS_CMD_ATTR_SERVICE"))
    assert set(key) == {"IPVS_SVC_ATTR_ADDR", "IPVS_SVC_ATTR_AF", "IPVS_SVC_ATTR_PORT",
                        "IPVS_SVC_ATTR_PROTOCOL"}  # fmt: skip


def test_encoded_bytes_round_trip_with_header() -> None:
    (op,) = ipvs_ops(plan(desired_state([_vs(real_servers=())]), DesiredState()))
    data = op.encode(family_id=0x2A, seq=7)
    length, mtype, flags, seq = struct.unpack_from("=IHHI", data)
    assert length == len(data) and mtype == 0x2A and seq == 7
    assert flags == 0x1 | 0x4 | 0x400 | 0x200  # REQUEST|ACK|CREATE|EXCL
    assert data[16] == genl.IPVS_CMD_NEW_SERVICE and data[17] == genl.GENL_VERSION
    back = _decode(data)
    assert _attrs(back.get("IPVS_CMD_ATTR_SERVICE"))["IPVS_SVC_ATTR_SCHED_NAME"] == "wrr"


def test_persistence_flags_fwmark_and_sched_flags() -> None:
    vs = VirtualServer(fwmark=7, lvs_sched="sh", sched_flags=("sh-port",), persistence_timeout=50,
                       persistence_granularity="255.255.255.0",
                       real_servers=(RealServer(A("198.18.1.1"), None),))  # fmt: skip
    ops = ipvs_ops(plan(desired_state([vs]), DesiredState()))
    svc = _attrs(ops[0].message().get("IPVS_CMD_ATTR_SERVICE"))
    assert svc["IPVS_SVC_ATTR_FWMARK"] == 7 and "IPVS_SVC_ATTR_ADDR" not in svc
    assert svc["IPVS_SVC_ATTR_FLAGS"]["flags"] == IP_VS_SVC_F_PERSISTENT | IP_VS_SVC_F_SCHED2
    assert svc["IPVS_SVC_ATTR_TIMEOUT"] == 50
    assert svc["IPVS_SVC_ATTR_NETMASK"] == "255.255.255.0"
    back = _decode(ops[0].encode())
    assert _attrs(back.get("IPVS_CMD_ATTR_SERVICE"))["IPVS_SVC_ATTR_NETMASK"] == "255.255.255.0"


def test_pool_change_is_set_and_del_dest_and_service_change_is_set_service() -> None:
    vs = _vs()
    old = desired_state([vs])
    new = desired_state([_vs(lvs_sched="rr")], {vs.key: [(vs.real_servers[0], 5)]})
    ops = ipvs_ops(plan(new, old))
    assert [o.op for o in ops] == ["set_service", "set_dest", "del_dest"]
    assert ops[0].message()["header"]["flags"] == 0x1 | 0x4
    assert _attrs(ops[1].message().get("IPVS_CMD_ATTR_DEST"))["IPVS_DEST_ATTR_WEIGHT"] == 5
    assert [o.op for o in ipvs_ops(plan(DesiredState(), old))] == ["del_service"]
