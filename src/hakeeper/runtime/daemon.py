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
import logging
import os
import signal
import time
from typing import Any

from hakeeper.conf.model import KeepalivedConfig
from hakeeper.runtime.control import ControlError, ControlServer
from hakeeper.runtime.daemon_base import (
    DaemonOptions,
    Loader,
    ReloadStats,
    Running,
)
from hakeeper.runtime.host import Announcers, NetlinkHost, NetlinkThread
from hakeeper.runtime.instances import InstancesMixin
from hakeeper.runtime.metrics_http import MetricsHttpServer
from hakeeper.runtime.notify import Exec, NotifyRunner, exec_with_timeout
from hakeeper.runtime.process import LoopWatchdog, settle_gc
from hakeeper.runtime.reload import ReloadMixin
from hakeeper.runtime.services import ServicesMixin
from hakeeper.runtime.sockets import SocketFactory, SocketPool
from hakeeper.runtime.status import StatusMixin
from hakeeper.runtime.tracking import Tracker
from hakeeper.runtime.vrrp_events import VrrpEventsMixin

__all__ = ["Daemon", "DaemonOptions", "Loader", "Running", "default_loader"]

log = logging.getLogger("hakeeper.daemon")

SHUTDOWN_DRAIN = 3.0
NOTIFY_STOP_WAIT = 5.0
SMTP_EXIT_WAIT = 3.0
RETRY_INTERVAL = 1.0  # instances waiting for an interface/address are retried this often


def default_loader(path: str, config_id: str | None) -> tuple[KeepalivedConfig | None, Any]:
    from hakeeper.conf.keepalived import load_keepalived  # noqa: PLC0415

    return load_keepalived(path, config_id=config_id)


class Daemon(InstancesMixin, VrrpEventsMixin, ReloadMixin, StatusMixin, ServicesMixin):
    """The whole daemon: one asyncio loop, one event queue, the parts mixed in."""

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
        self.instances = {}
        self.reloads = ReloadStats()
        self.started_wall = time.time()
        self._events = asyncio.Queue()
        self._loop = None
        self._group_state = {}
        self.sync_groups = {}
        self._by_machine = {}
        self.smtp = None
        self.fifos = []
        self.control = None
        self.metrics_http = None
        self.watchdog = None
        self.lvs = None
        self.l7 = None
        self.suspended = {}

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._loop = loop
        cfg = self._load()
        if cfg is None or not self._check_l7():
            return 1
        self.netlink = None
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
            self._track_exec,  # the built-in `hakeeper-proxy` check, else exec_fn
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
                    "metrics": self.metrics_text,
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
        if self.options.metrics_addr is not None:
            host, port = self.options.metrics_addr
            self.metrics_http = MetricsHttpServer(host, port, self.metrics_text)
            try:
                await self.metrics_http.start()
            except OSError as exc:
                log.error("metrics endpoint %s:%d: %s", host, port, exc)
                self.metrics_http = None
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
            await self._start_l7()  # serving before any instance can take a VIP
            stopping = not await self._startup_delay(cfg.global_defs.vrrp_startup_delay)
            if not stopping:
                await self._apply(cfg, initial=True)
                await self._sync_services(cfg)
            if self.options.settle_gc:
                settle_gc()
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
                        await self._reload_all()
                        if self.options.settle_gc:
                            settle_gc()
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

    async def _reload_all(self) -> None:
        """SIGHUP: keepalived.conf, then nginx.conf; each keeps its running config on errors."""
        try:
            await self._reload()
        finally:
            await self._reload_l7()

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

    async def _shutdown(self) -> None:
        log.info("stopping: %d instance(s)", len(self.instances))
        for name in list(self.instances):
            self._stop_instance(name)
        if self.lvs is not None:  # removes the data plane's rules (keepalived clears IPVS)
            await self.lvs.stop()
            self.lvs = None
        await self.host.drain(SHUTDOWN_DRAIN)
        await self._stop_l7()  # after the VIPs went: the peer already takes new clients
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
        if self.metrics_http is not None:
            await self.metrics_http.close()
        if getattr(self, "netlink", None) is not None:
            self.netlink.close()
        for fifo in self.fifos:
            fifo.close()
        announcers: Announcers | None = getattr(self, "announcers", None)
        if announcers is not None:
            announcers.close()
