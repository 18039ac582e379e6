"""IPVS data plane: reconcile plans as IPVS generic-netlink messages (pyroute2).

Follows keepalived's ipvswrapper.c / ipvsadm(8) semantics (read for facts, not copied): one
IPVS service per frontend (a virtual_server_group expands to several), every backend a
destination of each; persistence = IP_VS_SVC_F_PERSISTENT + timeout + netmask (granularity);
`sh-fallback`/`mh-fallback` = IP_VS_SVC_F_SCHED1, `sh-port`/`mh-port` = SCHED2, `ops` =
IP_VS_SVC_F_ONEPACKET; forwarding method in the destination (kernel values: MASQ 0,
TUNNEL 2, DROUTE 3). A destination without a port gets its service's port.

**This workplace's kernel has no IPVS** (CONFIG_IP_VS is not set; the "IPVS" generic
netlink family does not exist), so only message construction is tested here (attributes and
encoded bytes, tests/unit/dataplane/test_ipvs_messages.py); `IpvsDataplane` sends the same
messages through pyroute2's `IPVS` socket on kernels that have it. See docs/dataplanes.md.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2.ipvs import IPVSDest, IPVSService
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.generic import ipvs as genl

from hakeeper.dataplane.desired import Backend, DesiredState, Frontend, Service, ServiceKey
from hakeeper.dataplane.reconcile import (
    AddBackend,
    AddService,
    Change,
    DeleteBackend,
    DeleteService,
    Plan,
    UpdateBackend,
    UpdateService,
    plan,
)

log = logging.getLogger("hakeeper.dataplane.ipvs")

IP_VS_SVC_F_PERSISTENT = 0x0001
IP_VS_SVC_F_ONEPACKET = 0x0004
IP_VS_SVC_F_SCHED1 = 0x0008
IP_VS_SVC_F_SCHED2 = 0x0010
IP_VS_SVC_F_SCHED3 = 0x0020
FWD_METHODS = {"NAT": 0, "TUN": 2, "DR": 3}
PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "sctp": 132}
SCHED_FLAGS = {
    "flag-1": IP_VS_SVC_F_SCHED1,
    "sh-fallback": IP_VS_SVC_F_SCHED1,
    "mh-fallback": IP_VS_SVC_F_SCHED1,
    "flag-2": IP_VS_SVC_F_SCHED2,
    "sh-port": IP_VS_SVC_F_SCHED2,
    "mh-port": IP_VS_SVC_F_SCHED2,
    "flag-3": IP_VS_SVC_F_SCHED3,
}
_CMD = {
    "add_service": genl.IPVS_CMD_NEW_SERVICE,
    "set_service": genl.IPVS_CMD_SET_SERVICE,
    "del_service": genl.IPVS_CMD_DEL_SERVICE,
    "add_dest": genl.IPVS_CMD_NEW_DEST,
    "set_dest": genl.IPVS_CMD_SET_DEST,
    "del_dest": genl.IPVS_CMD_DEL_DEST,
}
_FLAGS = {
    "add": NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    "set": NLM_F_REQUEST | NLM_F_ACK,
    "del": NLM_F_REQUEST | NLM_F_ACK,
}


@dataclass(frozen=True)
class IpvsOp:
    """One IPVS request: `op` is add/set/del + _service/_dest."""

    op: str
    service: IPVSService
    dest: IPVSDest | None = None

    @property
    def cmd(self) -> int:
        return int(_CMD[self.op])

    def message(self) -> Any:
        """The generic-netlink message pyroute2's IPVS socket sends for this op."""
        msg = genl.ipvsmsg()
        msg["cmd"] = self.cmd
        msg["version"] = genl.GENL_VERSION
        if self.dest is None:
            msg["attrs"] = [("IPVS_CMD_ATTR_SERVICE", self.service.dump_nla())]
        else:
            msg["attrs"] = [
                ("IPVS_CMD_ATTR_SERVICE", self.service.dump_key()),
                ("IPVS_CMD_ATTR_DEST", self.dest.dump_nla()),
            ]
        msg["header"]["flags"] = _FLAGS[self.op.split("_")[0]]
        return msg

    def encode(self, family_id: int = 0x20, seq: int = 1) -> bytes:
        msg = self.message()
        msg["header"]["type"] = family_id
        msg["header"]["sequence_number"] = seq
        msg.encode()
        return bytes(msg.data)


def _netmask(service: Service) -> str:
    """IPv4: the mask; IPv6: the prefix length as a host-order u32 (what ipvsadm and keepalived
    put there), spelled as the little-endian bytes of pyroute2's ip4addr attribute type."""
    if service.family == 6:
        plen = service.persistence_prefix if service.persistence_prefix is not None else 128
        return f"{plen}.0.0.0"
    prefix = service.persistence_prefix if service.persistence_prefix is not None else 32
    return ipaddress_v4_mask(prefix)


def ipaddress_v4_mask(prefix: int) -> str:
    mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    return ".".join(str((mask >> s) & 0xFF) for s in (24, 16, 8, 0))


def ipvs_service(service: Service, frontend: Frontend) -> IPVSService:
    """IPVS_CMD_ATTR_SERVICE for one frontend of `service`."""
    af = socket.AF_INET if service.family == 4 else socket.AF_INET6
    flags = 0
    if service.persistent:
        flags |= IP_VS_SVC_F_PERSISTENT
    if service.ops:
        flags |= IP_VS_SVC_F_ONEPACKET
    for f in service.sched_flags:
        flags |= SCHED_FLAGS.get(f, 0)
    attrs: dict[str, Any] = {
        "sched_name": service.scheduler,
        "timeout": service.persistence_timeout or 0,
        "flags": {"flags": flags, "mask": 0xFFFF},
        "netmask": _netmask(service),
    }
    if frontend.fwmark is not None:
        return IPVSService(fwmark=frontend.fwmark, af=af, **attrs)
    return IPVSService(
        addr=str(frontend.address),
        af=af,
        port=frontend.port or 0,
        protocol=PROTOCOLS[service.protocol],
        **attrs,
    )


def ipvs_dest(service: Service, frontend: Frontend, backend: Backend) -> IPVSDest:
    port = backend.port if backend.port is not None else (frontend.port or 0)
    return IPVSDest(
        addr=str(backend.address),
        port=port,
        weight=backend.weight,
        fwd_method=FWD_METHODS.get(backend.method, 0),
        addr_family=socket.AF_INET if backend.address.version == 4 else socket.AF_INET6,
    )


def _ops_for(change: Change) -> Iterator[IpvsOp]:
    s = change.service
    if isinstance(change, AddService):
        for f in s.frontends:
            yield IpvsOp("add_service", ipvs_service(s, f))
    elif isinstance(change, UpdateService):
        old = change.old
        for f in old.frontends:
            if f not in s.frontends:
                yield IpvsOp("del_service", ipvs_service(old, f))
        for f in s.frontends:
            if f in old.frontends:
                yield IpvsOp("set_service", ipvs_service(s, f))
            else:  # a new frontend of an existing service gets every current backend
                yield IpvsOp("add_service", ipvs_service(s, f))
                for b in old.backends:
                    yield IpvsOp("add_dest", ipvs_service(s, f), ipvs_dest(s, f, b))
    elif isinstance(change, DeleteService):
        for f in s.frontends:
            yield IpvsOp("del_service", ipvs_service(s, f))
    else:
        op = {AddBackend: "add_dest", UpdateBackend: "set_dest", DeleteBackend: "del_dest"}
        for f in s.frontends:
            yield IpvsOp(op[type(change)], ipvs_service(s, f), ipvs_dest(s, f, change.backend))


def ipvs_ops(the_plan: Plan) -> list[IpvsOp]:
    """Every IPVS request the plan needs, in the plan's order."""
    out: list[IpvsOp] = []
    for change in the_plan.changes:
        out += _ops_for(change)
    return out


class IpvsDataplane:
    """LVS services in the kernel's IPVS (untestable here: this kernel has no IPVS)."""

    name = "ipvs"

    def __init__(self) -> None:
        self.actual = DesiredState()
        self.sock: Any = None
        self.sent = 0
        self.failures = 0
        self.last_error: str | None = None
        self.unsupported: dict[ServiceKey, str] = {}

    def supports(self, service: Service) -> str | None:
        return None if service.frontends else "no frontends"

    async def start(self) -> None:
        from pyroute2 import IPVS  # noqa: PLC0415 (opening the socket needs the IPVS family)

        self.sock = await asyncio.to_thread(IPVS)

    async def apply(self, desired: DesiredState) -> Plan:
        the_plan = plan(desired, self.actual)
        ops = ipvs_ops(the_plan)
        await asyncio.to_thread(self._send, ops)
        self.actual = desired
        return the_plan

    def _send(self, ops: list[IpvsOp]) -> None:
        for op in ops:
            kind, what = op.op.split("_")
            verb = {"add": "add", "set": "set", "del": "del"}[kind]
            try:
                if what == "service":
                    self.sock.service(verb, service=op.service)
                else:
                    self.sock.dest(verb, service=op.service, dest=op.dest)
                self.sent += 1
            except Exception as exc:  # a refused op is logged and counted, the rest go on
                self.failures += 1
                self.last_error = f"{op.op}: {exc}"
                log.error("IPVS %s failed: %s", op.op, exc)

    async def stop(self) -> None:
        if self.sock is None:
            return
        await self.apply(DesiredState())
        await asyncio.to_thread(self.sock.close)
        self.sock = None

    def status(self) -> dict[str, Any]:
        return {
            "dataplane": self.name,
            "sent": self.sent,
            "failures": self.failures,
            "last_error": self.last_error,
        }


__all__ = ["IpvsDataplane", "IpvsOp", "ipvs_dest", "ipvs_ops", "ipvs_service"]
