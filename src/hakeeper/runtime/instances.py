"""VRRP instances of the daemon: start/stop with their sockets and VMACs, dynamic interfaces.

keepalived(8) behaviours: an instance whose interface or source address is missing is
recorded and retried (`dynamic_interfaces`: it starts when its interface appears, a socket
whose interface was recreated with a new ifindex is reopened); `use_vmac` creates the
macvlan (00:00:5e:00:01:VRID) and runs the instance on it, recreating it if it is deleted
under a running instance; a MASTER replaced on reload hands over without resigning.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from dataclasses import replace
from typing import Any

from hakeeper.conf.model import VrrpInstance
from hakeeper.io.vrrp_socket import interface_ipv4, interface_ipv6_linklocal
from hakeeper.runtime.daemon_base import DaemonBase, Running
from hakeeper.runtime.driver import InstanceDriver
from hakeeper.runtime.params import (
    NoSourceAddressError,
    ParamsError,
    instance_family,
    instance_params,
    socket_key,
)
from hakeeper.runtime.sockets import SocketGroup
from hakeeper.vrrp import machine as m

log = logging.getLogger("hakeeper.daemon")


class InstancesMixin(DaemonBase):
    """Starting, stopping and restarting VRRP instance drivers."""

    async def _with_vmac(self, inst: VrrpInstance) -> tuple[VrrpInstance, str]:
        """keepalived `use_vmac`: create the macvlan and run the instance on it.

        Adverts and VIPs move to the VMAC interface (so they leave with 00:00:5e:00:01:VRID);
        the source address stays the parent's primary one, as keepalived does.
        """
        if self.netlink is None or not inst.interface or inst.virtual_router_id is None:
            raise ParamsError(f"{inst.name}: use_vmac needs netlink, an interface and a VRID")
        v6 = instance_family(inst) == 6
        src = inst.unicast_src_ip or inst.mcast_src_ip
        if src is None:
            text = (interface_ipv6_linklocal if v6 else interface_ipv4)(inst.interface)
            src = ipaddress.ip_address(text) if text else None
        nl = self.netlink.netlink
        assert nl is not None
        info = await self.netlink.call(
            functools.partial(
                nl.create_vmac,
                inst.interface,
                inst.virtual_router_id,
                family=socket.AF_INET6 if v6 else socket.AF_INET,
                name=inst.vmac_name,
            )
        )
        live = replace(
            inst,
            interface=info.name,
            mcast_src_ip=inst.mcast_src_ip if inst.unicast_src_ip else src,
        )
        log.info("VRRP_Instance(%s) using VMAC %s (%s)", inst.name, info.name, info.mac)
        return live, info.name

    async def _start_instance(self, inst: VrrpInstance) -> None:
        assert self._loop is not None
        group: SocketGroup | None = None
        vmac: str | None = None
        try:
            live = inst
            if inst.use_vmac:
                live, vmac = await self._with_vmac(inst)
            key = socket_key(live, self.config.global_defs)
            group = self.pool.acquire(
                key,
                inst.unicast_ttl,
                check_unicast_src=self.config.global_defs.vrrp_check_unicast_src,
            )
            source = group.sock.source
            primary = ipaddress.ip_address(source) if source else None
            params = instance_params(live, self.config.global_defs, primary)
            driver = InstanceDriver(
                self._loop, live, params, group.sock, self.host, on_state=self._on_state
            )
            self.pool.register(group, driver)
        except Exception as exc:  # ParamsError, OSError (no such interface), netlink errors
            retry = isinstance(exc, (OSError, NoSourceAddressError))
            old = self.instances.get(inst.name)
            if old is not None and old.error == str(exc):
                log.debug("VRRP_Instance(%s) still cannot start: %s", inst.name, exc)
            else:
                log.error(
                    "VRRP_Instance(%s) cannot start: %s%s",
                    inst.name,
                    exc,
                    " (waiting for the interface)" if retry else "",
                )
            if group is not None and not group.drivers:
                group.close()
                self.pool.groups.pop(group.key, None)
            if vmac is not None:
                self.host.delete_link(vmac)
            self.instances[inst.name] = Running(inst, None, None, str(exc), retry=retry)
            return
        self.instances[inst.name] = Running(inst, driver, group, vmac=vmac)

    def _stop_instance(self, name: str, successor: VrrpInstance | None = None) -> None:
        """Stop an instance; with a `successor` (reload of a MASTER) hand over quietly."""
        run = self.instances.pop(name, None)
        if run is None or run.driver is None:
            return
        if successor is not None and run.vmac is None:
            keep = successor.virtual_ipaddresses + successor.virtual_ipaddress_excluded
            run.driver.hand_over(keep)
        else:
            run.driver.stop()
        if run.group is not None:
            self.pool.release(run.group, run.driver)
        if run.vmac is not None:
            self.host.delete_link(run.vmac)

    # ------------------------------------------------------------------ dynamic interfaces

    def _on_link(self, event: Any) -> None:
        """A link event (from the tracker's watcher): queue work if it concerns us.

        keepalived `dynamic_interfaces`: an instance whose interface (or VMAC parent) was
        missing starts when it appears; a socket whose interface was deleted and recreated
        (new ifindex) is reopened; a deleted VMAC of a running instance is recreated.
        """
        name = event.ifname
        if event.deleted:
            if any(r.vmac == name and r.driver is not None for r in self.instances.values()):
                self.request(f"link {name} -")
            return
        if any(r.retry and r.inst.interface == name for r in self.instances.values()) or any(
            g.key.ifname == name and getattr(g.sock, "ifindex", event.ifindex) != event.ifindex
            for g in self.pool.groups.values()
        ):
            self.request(f"link {name} {event.ifindex}")

    async def _link_event(self, ifname: str, ifindex: int | None) -> None:
        """`ifname` now has `ifindex` (None: it was deleted)."""
        if ifindex is None:
            for name, run in list(self.instances.items()):
                if run.vmac == ifname and run.driver is not None and self._vmac_gone(ifname):
                    await self._recreate_vmac(name)
            return
        for group in list(self.pool.groups.values()):
            if group.key.ifname != ifname:
                continue
            if getattr(group.sock, "ifindex", None) in (None, ifindex):
                continue
            try:
                self.pool.reopen(group)
            except OSError as exc:
                log.warning("%s: cannot reopen VRRP socket yet: %s", ifname, exc)
        await self._retry_waiting(ifname)

    async def _retry_waiting(self, ifname: str | None) -> None:
        """Start instances that failed for want of `ifname` (None: of any interface)."""
        started = False
        for name, run in list(self.instances.items()):
            if not run.retry or (ifname is not None and run.inst.interface != ifname):
                continue
            await self._start_instance(run.inst)
            started = started or self.instances[name].driver is not None
        if started:
            self._rebuild_sync_groups()
            self._retrack_all()

    @staticmethod
    def _vmac_gone(ifname: str) -> bool:
        """The deletion may be of a VMAC we already replaced (reload): check it is gone."""
        try:
            socket.if_nametoindex(ifname)
        except OSError:
            return True
        return False

    async def _recreate_vmac(self, name: str) -> None:
        """Our VMAC was deleted under a running instance: rebuild it, keep the role."""
        run = self.instances[name]
        driver = run.driver
        assert driver is not None
        log.warning("VRRP_Instance(%s) VMAC %s was deleted; recreating it", name, run.vmac)
        was_master = driver.state is m.State.MASTER
        driver.hand_over(driver.vips)  # quiet stop; the addresses went with the link
        if run.group is not None:
            self.pool.release(run.group, driver)
        del self.instances[name]
        await self._start_instance(run.inst)
        new_run = self.instances[name]
        new_run.promote = was_master and new_run.driver is not None
        self._rebuild_sync_groups()
        self._retrack_all()
