"""VRRP events in the daemon: tracker results into drivers, sync groups, notify on transitions.

keepalived(8) behaviours: `track_script`/`track_interface`/`track_file` results change
priorities or put instances in FAULT (the arithmetic is `hakeeper.vrrp.track`);
`vrrp_sync_group` members move all-or-nothing; every transition runs the notify scripts
with keepalived's arguments (`notify_master` ... and `notify TYPE NAME STATE PRIO`),
writes `notify_fifo`/`vrrp_notify_fifo` lines and sends `smtp_alert` mail.
"""

from __future__ import annotations

import logging

from hakeeper.conf.model import KeepalivedConfig, SyncGroup, VrrpInstance
from hakeeper.runtime import accept
from hakeeper.runtime.daemon_base import DaemonBase
from hakeeper.runtime.driver import InstanceDriver
from hakeeper.runtime.notify import NotifyScripts, RunAs
from hakeeper.vrrp import machine as m
from hakeeper.vrrp import track

log = logging.getLogger("hakeeper.daemon")


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


def group_of(cfg: KeepalivedConfig, name: str) -> SyncGroup | None:
    """The sync group instance `name` belongs to, if any."""
    return next((g for g in cfg.sync_groups if name in g.group), None)


class VrrpEventsMixin(DaemonBase):
    """Tracking, sync groups and transition side effects."""

    def _on_track_change(self) -> None:
        self._retrack_all()

    def _retrack_all(self) -> None:
        """Push tracker results into every driver; start instances no longer pending."""
        cfg = self.config
        for run in self.instances.values():
            drv = run.driver
            if drv is None:
                continue
            ev = self.tracker.evaluate(run.inst, group_of(cfg, run.inst.name))
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
        accept.on_state(self, inst, change.new)  # no_accept: drop VIP traffic while MASTER
        state = "STOP" if change.new is m.State.INIT else change.new.value
        self.notify.transition(
            _scripts(inst, self._default_run_as()), "INSTANCE", name, state, change.priority
        )
        for fifo in self.fifos:
            fifo.transition("INSTANCE", name, state, change.priority)
        if self.smtp is not None and self._smtp_enabled(inst.smtp_alert):
            self.smtp.vrrp_transition(name, state)
        self._vrrp_state_changed()
        if change.new is m.State.INIT:
            return
        sg = group_of(self.config, name)
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
