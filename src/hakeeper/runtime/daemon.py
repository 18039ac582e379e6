"""The hakeeper VRRP daemon: builds drivers from the config, signals, reload, status.

keepalived(8) behaviours, exabgp-style structure (shared/STYLE.md):
* signal handlers only queue an event; the main task handles them one at a time;
* SIGTERM/SIGINT: every instance shuts down (a master sends priority 0 and removes its
  VIPs, notify_stop / `notify ... STOP` run), then the process exits 0;
* SIGHUP: the file is loaded aside; on any error the diagnostics are logged and the
  running config stays; otherwise instances are sorted into removed / added / changed /
  unchanged and only the first three are touched: an unchanged instance keeps its state,
  its VIPs and its timers; a changed MASTER is replaced without resigning (no priority 0,
  VIPs it keeps are never removed) and its successor starts as MASTER, then the normal
  election applies; tracked scripts keep their rise/fall state unless they changed;
* SIGUSR1: the status JSON (the same as the control socket's `status`) is written to the
  status file (keepalived writes /tmp/keepalived.data);
* state changes run the notify scripts with keepalived's arguments, write
  `notify_fifo`/`vrrp_notify_fifo` lines, send `smtp_alert` mail, and drive
  `vrrp_sync_group` members all-or-nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from hakeeper.conf.model import KeepalivedConfig, SyncGroup, VrrpInstance
from hakeeper.io.vrrp_socket import interface_ipv4, interface_ipv6_linklocal
from hakeeper.runtime.control import DEFAULT_CONTROL_PATH, ControlError, ControlServer
from hakeeper.runtime.driver import InstanceDriver
from hakeeper.runtime.host import Announcers, NetlinkHost, NetlinkThread
from hakeeper.runtime.notify import (
    Exec,
    FifoNotifier,
    NotifyRunner,
    NotifyScripts,
    RunAs,
    exec_with_timeout,
)
from hakeeper.runtime.params import (
    NoSourceAddressError,
    ParamsError,
    instance_family,
    instance_params,
    socket_key,
)
from hakeeper.runtime.process import LoopWatchdog, write_json_atomic
from hakeeper.runtime.smtp import SmtpAlerter, SmtpSettings
from hakeeper.runtime.sockets import SocketFactory, SocketGroup, SocketPool
from hakeeper.runtime.tracking import Tracker
from hakeeper.vrrp import machine as m
from hakeeper.vrrp import track

log = logging.getLogger("hakeeper.daemon")

SHUTDOWN_DRAIN = 3.0
NOTIFY_STOP_WAIT = 5.0
SMTP_EXIT_WAIT = 3.0
RETRY_INTERVAL = 1.0  # instances waiting for an interface/address are retried this often

Loader = Callable[[str, str | None], tuple[KeepalivedConfig | None, Any]]


def default_loader(path: str, config_id: str | None) -> tuple[KeepalivedConfig | None, Any]:
    from hakeeper.conf.keepalived import load_keepalived  # noqa: PLC0415

    return load_keepalived(path, config_id=config_id)


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    config_file: str
    config_id: str | None = None
    control_path: str | None = DEFAULT_CONTROL_PATH
    status_file: str = "/tmp/hakeeper.json"
    use_netlink: bool = True
    dataplane: str = "auto"  # L4 data plane for virtual_server blocks (hakeeper.dataplane.lvs)


@dataclass(slots=True)
class Running:
    """One configured instance: its model, and its driver when it could be started."""

    inst: VrrpInstance
    driver: InstanceDriver | None
    group: SocketGroup | None
    error: str = ""
    vmac: str | None = None
    promote: bool = False  # reloaded while MASTER: go straight back to MASTER
    retry: bool = False  # failed for want of its interface/address: retried on link events


@dataclass(slots=True)
class ReloadStats:
    ok: int = 0
    failed: int = 0
    last_error: str = ""
    last_summary: dict[str, list[str]] = field(default_factory=dict)


def _scripts(obj: VrrpInstance | SyncGroup, default: RunAs | None = None) -> NotifyScripts:
    """The notify scripts of an instance/group, each with who it runs as."""
    fields = {
        "master": obj.notify_master,
        "backup": obj.notify_backup,
        "fault": obj.notify_fault,
        "stop": obj.notify_stop,
        "notify": obj.notify,
    }
    run_as: dict[str, RunAs] = {}
    for key, script in fields.items():
        if script is not None and script.user:
            run_as[key] = RunAs(script.user, script.group)
        elif script is not None and default is not None:
            run_as[key] = default
    return NotifyScripts(
        **{k: (s.command if s is not None else None) for k, s in fields.items()},
        run_as=run_as or None,
    )


def _smtp_settings(cfg: KeepalivedConfig) -> SmtpSettings | None:
    g = cfg.global_defs
    if not g.smtp_server or not g.notification_email:
        return None
    return SmtpSettings(
        server=g.smtp_server,
        port=g.smtp_port,
        sender=g.notification_email_from or f"keepalived@{os.uname().nodename}",
        recipients=g.notification_email,
        helo_name=g.smtp_helo_name or "localhost",
        connect_timeout=g.smtp_connect_timeout,
        router_id=g.router_id or os.uname().nodename,
    )


class Daemon:
    def __init__(
        self,
        options: DaemonOptions,
        *,
        loader: Loader = default_loader,
        socket_factory: SocketFactory | None = None,
        exec_fn: Exec = exec_with_timeout,
    ) -> None:
        self.options = options
        self.loader = loader
        self.socket_factory = socket_factory
        self.exec_fn = exec_fn
        self.config = KeepalivedConfig()
        self.instances: dict[str, Running] = {}
        self.reloads = ReloadStats()
        self.started_wall = time.time()
        self._events: asyncio.Queue[str] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._group_state: dict[str, str] = {}
        self.sync_groups: dict[str, track.SyncGroup] = {}
        self._by_machine: dict[int, InstanceDriver] = {}
        self.smtp: SmtpAlerter | None = None
        self.fifos: list[FifoNotifier] = []
        self.control: ControlServer | None = None
        self.watchdog: LoopWatchdog | None = None
        self.lvs: Any = None  # hakeeper.dataplane.lvs.LvsService while virtual servers exist

    # ------------------------------------------------------------------ lifecycle

    def request(self, event: str) -> None:
        """Queue `term`, `hup` or `usr1` (signal handlers call only this)."""
        self._events.put_nowait(event)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._loop = loop
        cfg = self._load()
        if cfg is None:
            return 1
        self.netlink: Any = None
        if self.options.use_netlink:
            self.netlink = await NetlinkThread().open()
        self.announcers = Announcers() if self.options.use_netlink else None
        self.host = NetlinkHost(self.netlink, self.announcers)
        self.host.start()
        self.pool = (
            SocketPool(loop, self.socket_factory) if self.socket_factory else SocketPool(loop)
        )
        self.notify = NotifyRunner(self.exec_fn)
        self.tracker = Tracker(
            loop,
            self.exec_fn,
            self._on_track_change,
            self.netlink,
            watch_links=self.options.use_netlink,
            on_link=self._on_link,
        )
        self.watchdog = LoopWatchdog(loop)
        if self.options.control_path:
            self.control = ControlServer(
                self.options.control_path,
                {
                    "status": self.status,
                    "ping": lambda: {"pong": os.getpid()},
                    "reload": self._ctl_reload,
                },
            )
            try:
                await self.control.start()
            except (ControlError, OSError) as exc:
                log.error("control socket: %s", exc)
                await self._close_resources()
                return 1
        for sig, event in (
            (signal.SIGTERM, "term"),
            (signal.SIGINT, "term"),
            (signal.SIGHUP, "hup"),
            (signal.SIGUSR1, "usr1"),
        ):
            loop.add_signal_handler(sig, self.request, event)
        try:
            await self.tracker.start_links()
            stopping = not await self._startup_delay(cfg.global_defs.vrrp_startup_delay)
            if not stopping:
                await self._apply(cfg, initial=True)
                await self._sync_lvs(cfg)
            self.watchdog.start()
            log.info("hakeeper started: %d VRRP instance(s)", len(self.instances))
            while not stopping:
                waiting = any(r.retry for r in self.instances.values())
                try:
                    event = await asyncio.wait_for(
                        self._events.get(), RETRY_INTERVAL if waiting else None
                    )
                except TimeoutError:
                    event = "retry"
                if event == "term":
                    break
                try:
                    if event == "hup":
                        await self._reload()
                    elif event == "usr1":
                        self._dump_status()
                    elif event.startswith("link "):
                        _, ifname, index = event.split(" ")
                        await self._link_event(ifname, int(index) if index != "-" else None)
                    elif event == "retry":
                        await self._retry_waiting(None)
                except Exception:  # keep serving: VIPs stay correct, the bug is logged
                    log.exception("handling %s failed", event)
        finally:
            try:  # also after a crash: masters resign and VIPs go, as on SIGTERM
                await self._shutdown()
            except Exception:
                log.exception("shutdown failed")
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(sig)
            await self._close_resources()
        log.info("hakeeper stopped")
        return 0

    async def _startup_delay(self, delay: float) -> bool:
        """keepalived `vrrp_startup_delay`: no instance runs for `delay` seconds after start
        (boot races). Signals other than TERM are held and handled afterwards; returns
        False if told to stop meanwhile."""
        if delay <= 0:
            return True
        log.info("VRRP instances start in %.1f s (vrrp_startup_delay)", delay)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        held: list[str] = []
        try:
            while (left := deadline - loop.time()) > 0:
                try:
                    event = await asyncio.wait_for(self._events.get(), left)
                except TimeoutError:
                    break
                if event == "term":
                    return False
                held.append(event)
        finally:
            for event in held:
                self._events.put_nowait(event)
        return True

    def _load(self) -> KeepalivedConfig | None:
        cfg, diags = self.loader(self.options.config_file, self.options.config_id)
        for d in diags.sorted() if diags is not None else ():
            (log.error if d.severity == "error" else log.warning)("%s", d.format())
        if cfg is None or (diags is not None and diags.has_errors):
            log.error("configuration %s has errors; not starting", self.options.config_file)
            return None
        return cfg

    async def _sync_lvs(self, cfg: KeepalivedConfig) -> None:
        from hakeeper.dataplane.lvs import sync_lvs  # noqa: PLC0415 (only with virtual servers)

        if cfg.virtual_servers or self.lvs is not None:
            self.lvs = await sync_lvs(self.lvs, cfg, self.options.dataplane)

    async def _shutdown(self) -> None:
        log.info("stopping: %d instance(s)", len(self.instances))
        for name in list(self.instances):
            self._stop_instance(name)
        if self.lvs is not None:  # removes the data plane's rules (keepalived clears IPVS)
            await self.lvs.stop()
            self.lvs = None
        await self.host.drain(SHUTDOWN_DRAIN)
        await self.notify.wait_idle(NOTIFY_STOP_WAIT)
        if self.smtp is not None:  # a dead relay must not hold the exit for long
            await self.smtp.drain(min(SMTP_EXIT_WAIT, self.config.global_defs.smtp_connect_timeout))

    async def _close_resources(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        with contextlib.suppress(AttributeError):
            await self.tracker.close()
        with contextlib.suppress(AttributeError):
            self.pool.close()
        with contextlib.suppress(AttributeError):
            await self.notify.close()
        with contextlib.suppress(AttributeError):
            await self.host.close()
        if self.smtp is not None:
            await self.smtp.close()
        if self.control is not None:
            await self.control.close()
        if getattr(self, "netlink", None) is not None:
            self.netlink.close()
        for fifo in self.fifos:
            fifo.close()
        announcers: Announcers | None = getattr(self, "announcers", None)
        if announcers is not None:
            announcers.close()

    # ------------------------------------------------------------------ config -> runtime

    async def _apply(self, cfg: KeepalivedConfig, *, initial: bool = False) -> dict[str, list[str]]:
        old = self.config
        self.config = cfg
        settings = _smtp_settings(cfg)
        if settings is None and self.smtp is not None:
            await self.smtp.close()  # smtp_server/notification_email removed
            self.smtp = None
        elif settings is not None and self.smtp is not None:
            self.smtp.settings = settings
        elif settings is not None:
            self.smtp = SmtpAlerter(settings)
            self.smtp.start()
        self._configure_fifos(cfg)
        announcers: Announcers | None = getattr(self, "announcers", None)
        if announcers is not None:
            announcers.garp_interval = cfg.global_defs.vrrp_garp_interval
            announcers.gna_interval = cfg.global_defs.vrrp_gna_interval
        self.tracker.configure(cfg)
        old_by_name = {i.name: i for i in old.vrrp_instances} if not initial else {}
        new_by_name = {i.name: i for i in cfg.vrrp_instances}
        summary: dict[str, list[str]] = {"removed": [], "added": [], "changed": [], "unchanged": []}
        for name in list(self.instances):
            if name not in new_by_name:
                self._stop_instance(name)
                summary["removed"].append(name)
        for name, inst in new_by_name.items():
            run = self.instances.get(name)
            if run is None:
                await self._start_instance(inst)
                summary["added"].append(name)
            elif (
                run.driver is None  # failed to start last time (e.g. no interface): retry
                or run.inst != inst
                or self._group_of(old, name) != self._group_of(cfg, name)
                or self._runtime_key(old, run.inst) != self._runtime_key(cfg, inst)
            ):
                was_master = run.driver is not None and run.driver.state is m.State.MASTER
                self._stop_instance(name, successor=inst if was_master else None)
                await self._start_instance(inst)
                new_run = self.instances[name]
                new_run.promote = was_master and new_run.driver is not None
                summary["changed"].append(name)
            else:
                summary["unchanged"].append(name)
        del old_by_name
        for name in list(self._group_state):
            if all(g.name != name for g in cfg.sync_groups):
                del self._group_state[name]
        self._rebuild_sync_groups()
        self._retrack_all()
        return summary

    def _configure_fifos(self, cfg: KeepalivedConfig) -> None:
        g = cfg.global_defs
        paths = [f.command for f in (g.notify_fifo, g.vrrp_notify_fifo) if f is not None]
        if paths == [f.path for f in self.fifos]:
            return
        for fifo in self.fifos:
            fifo.close()
        self.fifos = []
        for path in dict.fromkeys(paths):
            try:
                self.fifos.append(FifoNotifier(path))
            except OSError as exc:
                log.error("notify fifo %s: %s", path, exc)

    @staticmethod
    def _runtime_key(cfg: KeepalivedConfig, inst: VrrpInstance) -> tuple[Any, ...]:
        """What an instance's runtime derives from global_defs (socket, machine defaults)."""
        g = cfg.global_defs
        try:
            key: Any = socket_key(inst, g)
        except ParamsError:
            key = None
        return (
            key,
            g.vrrp_down_timer_adverts,
            g.vrrp_lower_prio_no_advert,
            g.vrrp_skip_check_adv_addr,
        )

    @staticmethod
    def _group_of(cfg: KeepalivedConfig, name: str) -> SyncGroup | None:
        return next((g for g in cfg.sync_groups if name in g.group), None)

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

    # ------------------------------------------------------------------ tracking / sync

    def _on_track_change(self) -> None:
        self._retrack_all()

    def _retrack_all(self) -> None:
        """Push tracker results into every driver; start instances no longer pending."""
        cfg = self.config
        for run in self.instances.values():
            drv = run.driver
            if drv is None:
                continue
            ev = self.tracker.evaluate(run.inst, self._group_of(cfg, run.inst.name))
            drv.set_priority(ev.priority)
            wanted = set(ev.faults)
            current = {f for f in drv.machine.faults if f != track.SYNC_FAULT_SOURCE}
            for source in sorted(wanted - current):
                drv.set_fault(True, source)
            for source in sorted(current - wanted):
                drv.set_fault(False, source)
            if not drv.running:
                if ev.pending:
                    run.error = f"waiting for first result of {', '.join(ev.pending)}"
                else:
                    run.error = ""
                    drv.start(resume_master=run.promote)  # changed on reload while MASTER
                    run.promote = False
        for group in self.sync_groups.values():
            self._reconcile(group, None, [])

    def _rebuild_sync_groups(self) -> None:
        self.sync_groups = {}
        self._by_machine = {}
        for run in self.instances.values():
            if run.driver is not None:
                self._by_machine[id(run.driver.machine)] = run.driver
        for sg in self.config.sync_groups:
            members = [
                self.instances[n].driver
                for n in sg.group
                if n in self.instances and self.instances[n].driver is not None
            ]
            drivers = [d for d in members if d is not None]
            if len(drivers) < 2:
                continue
            self.sync_groups[sg.name] = track.SyncGroup(sg.name, [d.machine for d in drivers])

    def _reconcile(
        self, group: track.SyncGroup, trigger: InstanceDriver | None, actions: list[m.Action]
    ) -> None:
        assert self._loop is not None
        results = group.reconcile(
            self._loop.time(), trigger.machine if trigger is not None else None, actions
        )
        for machine, acts in results:
            driver = self._by_machine.get(id(machine))
            if driver is not None:
                driver.apply(acts)
        state = group.state
        if state is not m.State.INIT and self._group_state.get(group.name) != state.value:
            self._group_state[group.name] = state.value
            sg = next((g for g in self.config.sync_groups if g.name == group.name), None)
            log.info("VRRP_Group(%s) Syncing instances to %s state", group.name, state.value)
            if sg is not None:
                self.notify.transition(
                    _scripts(sg, self._default_run_as()), "GROUP", sg.name, state.value, 0
                )
                for fifo in self.fifos:
                    fifo.transition("GROUP", sg.name, state.value, None)
                if self.smtp is not None and self._smtp_enabled(sg.smtp_alert):
                    self.smtp.vrrp_transition(sg.name, state.value, group=True)

    def _on_state(self, driver: InstanceDriver, change: m.StateChanged) -> None:
        name = driver.name
        inst = driver.instance
        state = "STOP" if change.new is m.State.INIT else change.new.value
        self.notify.transition(
            _scripts(inst, self._default_run_as()), "INSTANCE", name, state, change.priority
        )
        for fifo in self.fifos:
            fifo.transition("INSTANCE", name, state, change.priority)
        if self.smtp is not None and self._smtp_enabled(inst.smtp_alert):
            self.smtp.vrrp_transition(name, state)
        if change.new is m.State.INIT:
            return
        sg = self._group_of(self.config, name)
        group = self.sync_groups.get(sg.name) if sg is not None else None
        if group is not None and self._by_machine.get(id(driver.machine)) is driver:
            self._reconcile(group, driver, [change])

    def _default_run_as(self) -> RunAs | None:
        g = self.config.global_defs
        return RunAs(g.script_user, g.script_group) if g.script_user else None

    def _smtp_enabled(self, own: bool | None) -> bool:
        g = self.config.global_defs
        if own is not None:
            return own
        if g.smtp_alert_vrrp is not None:
            return g.smtp_alert_vrrp
        return bool(g.smtp_alert)

    # ------------------------------------------------------------------ reload / status

    def _ctl_reload(self) -> dict[str, Any]:
        self.request("hup")
        return {"reload": "queued"}

    async def _reload(self) -> None:
        log.info("reloading %s", self.options.config_file)
        cfg, diags = self.loader(self.options.config_file, self.options.config_id)
        problems = diags.sorted() if diags is not None else []
        if cfg is None or (diags is not None and diags.has_errors):
            self.reloads.failed += 1
            errors = [d.format() for d in problems if d.severity == "error"]
            self.reloads.last_error = "; ".join(errors[:5]) or "unreadable"
            for d in problems:
                log.error("reload: %s", d.format())
            log.error("reload failed: keeping the running configuration")
            return
        for d in problems:
            log.warning("reload: %s", d.format())
        summary = await self._apply(cfg)
        await self._sync_lvs(cfg)
        self.reloads.ok += 1
        self.reloads.last_error = ""
        self.reloads.last_summary = summary
        log.info(
            "reload done: %s",
            ", ".join(f"{k} {len(v)}" for k, v in summary.items()),
        )

    def status(self) -> dict[str, Any]:
        instances = []
        for name, run in sorted(self.instances.items()):
            if run.driver is not None:
                instances.append(run.driver.status())
            else:
                instances.append({"name": name, "state": "NOT_RUNNING", "error": run.error})
        groups = []
        for sg in self.config.sync_groups:
            groups.append(
                {
                    "name": sg.name,
                    "members": list(sg.group),
                    "state": self._group_state.get(sg.name),
                }
            )
        return {
            "pid": os.getpid(),
            "config_file": self.options.config_file,
            "router_id": self.config.global_defs.router_id,
            "uptime": round(time.time() - self.started_wall, 3),
            "instances": instances,
            "sync_groups": groups,
            "scripts": self.tracker.status(),
            "sockets": self.pool.status(),
            "reloads": {
                "ok": self.reloads.ok,
                "failed": self.reloads.failed,
                "last_error": self.reloads.last_error,
                "last_summary": self.reloads.last_summary,
            },
            "loop": self.watchdog.status() if self.watchdog else {},
            "notify": {"ran": self.notify.ran, "failed": self.notify.failed},
            "smtp": ({"sent": self.smtp.sent, "failed": self.smtp.failed} if self.smtp else None),
            "host_ops": self.host.status(),
            "virtual_servers": self.lvs.status() if self.lvs is not None else None,
        }

    def _dump_status(self) -> None:
        path = self.options.status_file
        try:
            write_json_atomic(path, json.dumps(self.status(), indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            log.error("cannot write status to %s: %s", path, exc)
            return
        log.info("status written to %s", path)
