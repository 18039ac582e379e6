"""The daemon's shared state: options, per-instance records and the attributes every part uses.

`hakeeper.runtime.daemon.Daemon` is assembled from one mixin per concern (instances,
VRRP events, reload, status, L4/L7 services); each mixin derives from `DaemonBase`, which
declares the state they share and the few methods one part calls in another, so mypy
checks every part on its own. Nothing here does I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hakeeper.conf.model import KeepalivedConfig, VrrpInstance
from hakeeper.runtime.control import DEFAULT_CONTROL_PATH, ControlServer
from hakeeper.runtime.driver import InstanceDriver
from hakeeper.runtime.host import NetlinkHost
from hakeeper.runtime.notify import Exec, FifoNotifier, NotifyRunner
from hakeeper.runtime.process import LoopWatchdog
from hakeeper.runtime.smtp import SmtpAlerter
from hakeeper.runtime.sockets import SocketFactory, SocketGroup, SocketPool
from hakeeper.runtime.tracking import Tracker
from hakeeper.vrrp import machine as m
from hakeeper.vrrp import track

Loader = Callable[[str, str | None], tuple[KeepalivedConfig | None, Any]]


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    config_file: str
    config_id: str | None = None
    control_path: str | None = DEFAULT_CONTROL_PATH
    status_file: str = "/tmp/hakeeper.json"
    use_netlink: bool = True
    dataplane: str = "auto"  # L4 data plane for virtual_server blocks (hakeeper.dataplane.lvs)
    nginx_file: str | None = None  # nginx.conf served by the embedded L7 proxy (runtime.l7)
    settle_gc: bool = False  # freeze start-up objects for the collector (the CLI daemon)
    metrics_addr: tuple[str, int] | None = None  # Prometheus GET /metrics (runtime.metrics_http)


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


class DaemonBase:
    """State shared by the daemon's parts (set in `Daemon.__init__` / `Daemon.run`)."""

    options: DaemonOptions
    loader: Loader
    socket_factory: SocketFactory | None
    exec_fn: Exec
    config: KeepalivedConfig
    instances: dict[str, Running]
    reloads: ReloadStats
    started_wall: float
    _events: asyncio.Queue[str]
    _loop: asyncio.AbstractEventLoop | None
    _group_state: dict[str, str]
    sync_groups: dict[str, track.SyncGroup]
    _by_machine: dict[int, InstanceDriver]
    smtp: SmtpAlerter | None
    fifos: list[FifoNotifier]
    control: ControlServer | None
    metrics_http: Any  # runtime.metrics_http.MetricsHttpServer with --metrics
    watchdog: LoopWatchdog | None
    lvs: Any  # hakeeper.dataplane.lvs.LvsService while virtual servers exist
    l7: Any  # hakeeper.runtime.l7.L7Service while an nginx.conf is served
    suspended: dict[tuple[str, ...], bool]  # ha_suspend virtual servers: key -> suspended
    netlink: Any
    host: NetlinkHost
    pool: SocketPool
    notify: NotifyRunner
    tracker: Tracker

    def request(self, event: str) -> None:
        """Queue `term`, `hup` or `usr1` (signal handlers call only this)."""
        self._events.put_nowait(event)

    # implemented by the parts (runtime.instances, runtime.vrrp_events, runtime.services)
    async def _start_instance(self, inst: VrrpInstance) -> None:
        raise NotImplementedError

    def _stop_instance(self, name: str, successor: VrrpInstance | None = None) -> None:
        raise NotImplementedError

    def _rebuild_sync_groups(self) -> None:
        raise NotImplementedError

    def _retrack_all(self) -> None:
        raise NotImplementedError

    def _on_state(self, driver: InstanceDriver, change: m.StateChanged) -> None:
        raise NotImplementedError

    async def _sync_services(self, cfg: KeepalivedConfig) -> None:
        raise NotImplementedError

    def _vrrp_state_changed(self) -> None:
        raise NotImplementedError
