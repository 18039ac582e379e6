"""Reload of keepalived.conf in the daemon: load aside, diff, touch only what changed.

exabgp-style (shared/STYLE.md): the file is loaded aside; on any error the diagnostics are
logged and the running config stays; otherwise instances are sorted into removed / added /
changed / unchanged and only the first three are touched: an unchanged instance keeps its
state, its VIPs and its timers; a changed MASTER is replaced without resigning (no
priority 0, VIPs it keeps are never removed) and its successor starts as MASTER.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from hakeeper.conf.model import KeepalivedConfig, VrrpInstance
from hakeeper.runtime.daemon_base import DaemonBase
from hakeeper.runtime.host import Announcers
from hakeeper.runtime.notify import FifoNotifier
from hakeeper.runtime.params import ParamsError, socket_key
from hakeeper.runtime.smtp import SmtpAlerter, SmtpSettings
from hakeeper.runtime.vrrp_events import group_of
from hakeeper.vrrp import machine as m

log = logging.getLogger("hakeeper.daemon")


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


class ReloadMixin(DaemonBase):
    """SIGHUP / control `reload`: keepalived.conf diffed into the running instances."""

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
        await self._sync_services(cfg)
        self.reloads.ok += 1
        self.reloads.last_error = ""
        self.reloads.last_summary = summary
        log.info(
            "reload done: %s",
            ", ".join(f"{k} {len(v)}" for k, v in summary.items()),
        )

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
                or group_of(old, name) != group_of(cfg, name)
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
