"""From the config model to what the runtime needs: machine parameters and socket keys.

Pure mapping (no I/O): `hakeeper.conf.model.VrrpInstance` + `GlobalDefs` ->
`hakeeper.vrrp.machine.VrrpParams`, following keepalived's precedence (instance keyword,
else the global_defs default, else the RFC default): `state` is only the initial wish,
`nopreempt` -> preempt False, global `vrrp_skip_check_adv_addr`/`vrrp_lower_prio_no_advert`
OR the instance's own, the advert source is `mcast_src_ip`/`unicast_src_ip` or the
interface's primary address (found by the socket adapter). `SocketKey` groups instances that
can share one raw socket (same interface, family, source, peers and group), so 20 instances
on one interface cost one receive path, demultiplexed by VRID.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from hakeeper.conf.model import GlobalDefs, VrrpInstance
from hakeeper.vrrp.machine import State, VrrpParams
from hakeeper.vrrp.packet import AuthType, IPAddress


class ParamsError(ValueError):
    """The instance cannot run as configured (reported, the instance is skipped)."""


class NoSourceAddressError(ParamsError):
    """The interface has no address yet: the daemon retries when it may have one."""


@dataclass(frozen=True, slots=True)
class SocketKey:
    ifname: str
    family: int
    src_ip: str | None
    unicast_peers: tuple[str, ...]
    group: str | None
    protocol: int = 112  # 51 (IPsec AH wrapping VRRP) for VRRPv2 `auth_type AH` over IPv4


def instance_family(inst: VrrpInstance) -> int:
    if inst.family == 6:
        return 6
    addrs = inst.virtual_ipaddresses
    if addrs and addrs[0].address.version == 6:
        return 6
    return 4


def uses_ah(inst: VrrpInstance) -> bool:
    """keepalived `auth_type AH`: only VRRPv2 over IPv4 (ignored for v3 and IPv6)."""
    return (
        (inst.auth_type or "").upper() == "AH" and inst.version == 2 and instance_family(inst) == 4
    )


def socket_key(inst: VrrpInstance, gdefs: GlobalDefs) -> SocketKey:
    if not inst.interface:
        raise ParamsError(f"{inst.name}: no interface")
    fam = instance_family(inst)
    src = inst.unicast_src_ip or inst.mcast_src_ip
    peers = tuple(str(p.address) for p in inst.unicast_peers)
    group: str | None = None
    if not peers:
        if inst.mcast_dst_ip is not None:
            group = str(inst.mcast_dst_ip)
        elif fam == 4 and gdefs.vrrp_mcast_group4 != ipaddress.IPv4Address("224.0.0.18"):
            group = str(gdefs.vrrp_mcast_group4)
        elif fam == 6 and gdefs.vrrp_mcast_group6 != ipaddress.IPv6Address("ff02::12"):
            group = str(gdefs.vrrp_mcast_group6)
    return SocketKey(
        ifname=inst.interface,
        family=socket.AF_INET6 if fam == 6 else socket.AF_INET,
        src_ip=str(src) if src is not None else None,
        unicast_peers=peers,
        group=group,
        protocol=51 if uses_ah(inst) else 112,
    )


def _auth(inst: VrrpInstance) -> tuple[AuthType, str]:
    kind = (inst.auth_type or "").upper()
    if kind == "PASS":
        return AuthType.PASS, (inst.auth_pass or "")[:8]
    if kind == "AH":
        return AuthType.AH, (inst.auth_pass or "")[:8]
    return AuthType.NONE, ""


def _initial_state(inst: VrrpInstance) -> State | None:
    if not inst.state_configured:
        return None
    return State.MASTER if inst.state.upper() == "MASTER" else State.BACKUP


def instance_params(
    inst: VrrpInstance, gdefs: GlobalDefs, primary_ip: IPAddress | None
) -> VrrpParams:
    """Machine parameters for `inst`; `primary_ip` is the address adverts are sent from."""
    if inst.virtual_router_id is None:
        raise ParamsError(f"{inst.name}: no virtual_router_id")
    if primary_ip is None:
        raise NoSourceAddressError(
            f"{inst.name}: no source address on {inst.interface} (set mcast_src_ip or an address)"
        )
    fam = instance_family(inst)
    version = 3 if fam == 6 else inst.version
    advert_int = inst.advert_int
    if version == 2:
        advert_int = float(max(1, round(advert_int)))
    auth_type, auth_pass = _auth(inst)
    if version == 3:
        auth_type, auth_pass = AuthType.NONE, ""
    preempt = not inst.nopreempt
    preempt_delay = inst.preempt_delay
    if inst.priority == 255 or _initial_state(inst) is State.MASTER:
        # keepalived clears nopreempt/preempt_delay for owners and `state MASTER`
        preempt, preempt_delay = True, 0.0
    try:
        return VrrpParams(
            name=inst.name,
            vrid=inst.virtual_router_id,
            primary_ip=primary_ip,
            priority=inst.priority,
            version=version,
            advert_int=advert_int,
            vips=tuple(v.address.ip for v in inst.virtual_ipaddresses),
            preempt=preempt,
            preempt_delay=preempt_delay,
            accept=inst.accept,
            initial_state=_initial_state(inst),
            auth_type=auth_type,
            auth_pass=auth_pass,
            down_timer_adverts=inst.down_timer_adverts or gdefs.vrrp_down_timer_adverts,
            lower_prio_no_advert=inst.lower_prio_no_advert or gdefs.vrrp_lower_prio_no_advert,
            skip_check_adv_addr=inst.skip_check_adv_addr or gdefs.vrrp_skip_check_adv_addr,
            garp_master_delay=inst.garp_master_delay,
            garp_master_repeat=inst.garp_master_repeat,
            garp_master_refresh=inst.garp_master_refresh,
            garp_master_refresh_repeat=inst.garp_master_refresh_repeat,
        )
    except ValueError as exc:
        raise ParamsError(str(exc)) from exc
