"""Services the daemon supervises beside VRRP: L4 virtual servers, `ha_suspend`, the L7 proxy.

keepalived's checker side (check_daemon.c, read for facts): `virtual_server` blocks are
installed at start and re-synced on reload (`hakeeper.dataplane.lvs.sync_lvs`), removed at
exit. `ha_suspend` (keepalived.conf(5): "suspend healthchecker's activity, until the VIP
is set on this node"): the checkers of such a virtual server ignore their results while
this node does not hold the virtual server's address. Here "holds" is decided from VRRP:
the address is a VIP of an instance that is MASTER; an address no instance owns is held
when it is a local address (a bind to it succeeds). Suspension is recomputed after every
VRRP transition and after every start/reload of the virtual servers.

With `--nginx FILE` the daemon also serves that nginx.conf (`runtime.l7.L7Service`): checked
with keepalived.conf before anything starts, serving before any instance can become
MASTER, reloaded on SIGHUP after keepalived.conf (each keeps its running config when its
new file is bad), drained at exit after the VIPs are gone. The built-in tracker
`vrrp_script NAME { script "hakeeper-proxy" }` answers from the daemon itself (0 while the
proxy serves, 1 otherwise; no process is run), the equivalent of the seeds'
`script "killall -0 nginx"`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hakeeper.conf.model import IPAddress, KeepalivedConfig, VirtualServer
from hakeeper.runtime.daemon_base import DaemonBase
from hakeeper.vrrp import machine as m

log = logging.getLogger("hakeeper.daemon")

BUILTIN_CHECK = "hakeeper-proxy"  # vrrp_script { script "hakeeper-proxy" }: the L7 serves


def vs_addresses(cfg: KeepalivedConfig, vs: VirtualServer) -> list[tuple[IPAddress, IPAddress]]:
    """The address ranges a virtual server answers on (one address, or its group's ranges);
    empty for fwmark services (no address: never suspended)."""
    if vs.address is not None:
        return [(vs.address, vs.address)]
    if vs.group is not None:
        group = next((g for g in cfg.virtual_server_groups if g.name == vs.group), None)
        if group is not None:
            return [
                (e.first, e.last if e.last is not None else e.first)
                for e in group.entries
                if e.first is not None
            ]
    return []


def ha_suspensions(
    cfg: KeepalivedConfig,
    vip_held: Mapping[IPAddress, bool],
    is_local: Callable[[IPAddress], bool],
) -> dict[tuple[str, ...], bool]:
    """Which `ha_suspend` virtual servers are suspended (key -> True) or active (False).

    `vip_held` maps every VRRP VIP to whether an instance owning it is MASTER here;
    `is_local` answers for addresses no instance owns. Pure: no I/O of its own."""
    out: dict[tuple[str, ...], bool] = {}
    for vs in cfg.virtual_servers:
        if not vs.ha_suspend:
            continue
        ranges = vs_addresses(cfg, vs)
        if not ranges:
            continue
        owned = [
            held
            for vip, held in vip_held.items()
            if any(
                type(vip) is type(lo) and lo <= vip <= hi  # type: ignore[operator]
                for lo, hi in ranges
            )
        ]
        if owned:
            out[vs.key] = not any(owned)
        else:
            out[vs.key] = not any(is_local(lo) for lo, _hi in ranges)
    return out


def is_local_address(addr: IPAddress) -> bool:
    """Whether `addr` is configured on this host (a bind without IP_FREEBIND succeeds)."""
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((str(addr), 0))
    except OSError:
        return False
    return True


class ServicesMixin(DaemonBase):
    """L4 virtual servers (with ha_suspend) beside the VRRP instances."""

    async def _sync_services(self, cfg: KeepalivedConfig) -> None:
        """Start, update or stop the virtual servers so they serve `cfg` (start / reload)."""
        await self._sync_lvs(cfg)
        self._apply_ha_suspend()

    async def _sync_lvs(self, cfg: KeepalivedConfig) -> None:
        from hakeeper.dataplane.lvs import sync_lvs  # noqa: PLC0415 (only with virtual servers)

        if cfg.virtual_servers or self.lvs is not None:
            self.lvs = await sync_lvs(self.lvs, cfg, self.options.dataplane)

    def _vip_held(self) -> dict[IPAddress, bool]:
        held: dict[IPAddress, bool] = {}
        for run in self.instances.values():
            master = run.driver is not None and run.driver.state is m.State.MASTER
            for va in run.inst.virtual_ipaddresses + run.inst.virtual_ipaddress_excluded:
                held[va.address.ip] = held.get(va.address.ip, False) or master
        return held

    def _apply_ha_suspend(self) -> None:
        """Suspend/resume the checkers of `ha_suspend` virtual servers (after a transition,
        a start or a reload)."""
        engine = getattr(self.lvs, "engine", None)
        wanted = ha_suspensions(self.config, self._vip_held(), is_local_address)
        previous = self.suspended
        self.suspended = wanted
        if engine is None:
            return
        # a virtual server that lost ha_suspend (or its address) on reload resumes
        lifted = {k: False for k, was in previous.items() if was and k not in wanted}
        for key, suspended in (wanted | lifted).items():
            with contextlib.suppress(KeyError):  # not (yet) bound in the engine / removed
                engine.set_suspended(key, suspended)
                if previous.get(key) != suspended:
                    log.info(
                        "virtual server %s: checkers %s (ha_suspend)",
                        " ".join(key[1:]),
                        "suspended" if suspended else "resumed",
                    )

    def _vrrp_state_changed(self) -> None:
        """A VRRP instance changed state: ha_suspend may flip."""
        if self.lvs is not None:
            self._apply_ha_suspend()

    # -- L7 (nginx.conf) -------------------------------------------------------------
    def _check_l7(self) -> bool:
        """Refuse to start on a bad nginx.conf, as on a bad keepalived.conf."""
        path = self.options.nginx_file
        if not path:
            return True
        from hakeeper.runtime.l7 import read  # noqa: PLC0415

        loaded, diags = read(path)
        for d in diags.sorted():
            (log.error if d.severity == "error" else log.warning)("%s", d.format())
        if loaded is None:
            log.error("configuration %s has errors; not starting", path)
            return False
        return True

    async def _start_l7(self) -> None:
        path = self.options.nginx_file
        if not path:
            return
        from hakeeper.runtime.l7 import L7Service  # noqa: PLC0415

        l7 = L7Service(path)
        self.l7 = l7
        if not await l7.start():  # the file changed since _check_l7: serve nothing
            log.error("L7 proxy not started")

    async def _reload_l7(self) -> None:
        if self.l7 is not None:
            await self.l7.reload()

    async def _stop_l7(self) -> None:
        if self.l7 is not None:
            l7, self.l7 = self.l7, None
            await l7.stop()

    async def _track_exec(self, argv: Sequence[str], timeout: float, **who: Any) -> int | None:
        """The tracker's exec: `hakeeper-proxy` is answered here, anything else runs."""
        if len(argv) == 1 and argv[0] == BUILTIN_CHECK:
            return 0 if self.l7 is not None and self.l7.serving() else 1
        return await self.exec_fn(argv, timeout, **who)
