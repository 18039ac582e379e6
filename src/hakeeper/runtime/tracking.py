"""Runtime side of tracking: vrrp_script runners and interface link state, fed to the policy.

keepalived.conf(5) `vrrp_script` / `track_script` / `track_interface`: each script runs every
`interval` seconds (bounded by `timeout`, its process group killed on expiry; never blocking
the loop) and its exit status goes through keepalived's rise/fall counter; interfaces are
followed through netlink link events (`hakeeper.io.linkwatch`, primed by one dump);
`vrrp_track_file` values are re-read every 0.5 s (keepalived uses inotify). After any
flip `on_change()` tells the daemon to re-evaluate the instances, and every link event is
passed on to `on_link` (interfaces appearing or recreated, see the daemon). The arithmetic
(weights, reverse, FAULT for weight 0, clamping, sync-group stripping) is the pure policy in
`hakeeper.vrrp.track`; this module only gathers the current tracker states for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from hakeeper.conf.model import (
    KeepalivedConfig,
    SyncGroup,
    TrackFile,
    TrackRef,
    VrrpInstance,
    VrrpScript,
)
from hakeeper.runtime.notify import Exec, RunAs, split_command
from hakeeper.vrrp import track

log = logging.getLogger("hakeeper.track")

FILE_POLL_INTERVAL = 0.5


def read_track_file(path: str) -> int:
    """keepalived's track_file value: the integer the file starts with; 0 if absent/garbage."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            words = f.read(64).split()
    except OSError:
        return 0
    if not words:
        return 0
    try:
        return int(words[0])
    except ValueError:
        return 0


class ScriptRunner:
    """One vrrp_script: its definition, rise/fall counter and last exit status."""

    def __init__(self, script: VrrpScript) -> None:
        self.script = script
        self.counter = track.ScriptCounter(script.rise, script.fall, init_fail=script.init_fail)
        self.runs = 0
        self.last_status: int | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def status(self) -> track.ScriptStatus:
        return self.counter.status


class Tracker:
    """Runs the referenced vrrp_scripts and follows links; calls `on_change()` after a flip."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        exec_fn: Exec,
        on_change: Callable[[], None],
        netlink: Any = None,
        *,
        watch_links: bool = True,
        on_link: Callable[[Any], None] | None = None,
    ) -> None:
        self.loop = loop
        self.exec_fn = exec_fn
        self.on_change = on_change
        self.netlink = netlink
        self.scripts: dict[str, ScriptRunner] = {}
        self.links: dict[str, bool] = {}
        self.files: dict[str, TrackFile] = {}
        self.file_values: dict[str, int] = {}
        self._file_task: asyncio.Task[None] | None = None
        self.warnings_logged: set[str] = set()
        self._watcher: Any = None
        self.default_user: str | None = None
        self.default_group: str | None = None
        self._watch_links = watch_links
        self.on_link = on_link  # every link event (io.linkwatch.LinkEvent), after set_link

    # ------------------------------------------------------------------ config

    def configure(self, cfg: KeepalivedConfig) -> None:
        """Start/stop/restart script runners to match `cfg`; unchanged scripts keep state."""
        self.default_user = cfg.global_defs.script_user
        self.default_group = cfg.global_defs.script_group
        wanted = {s.name: s for s in cfg.vrrp_scripts if self._referenced(cfg, s.name)}
        for name in list(self.scripts):
            if name not in wanted or wanted[name] != self.scripts[name].script:
                self._stop_script(name)
        for name, script in wanted.items():
            if name not in self.scripts:
                runner = ScriptRunner(script)
                self.scripts[name] = runner
                runner.task = self.loop.create_task(self._run_script(runner), name=f"script-{name}")
        refs = {r.name for i in cfg.vrrp_instances for r in i.track_files}
        refs |= {r.name for g in cfg.sync_groups for r in g.track_files}
        self.files = {f.name: f for f in cfg.track_files if f.name in refs}
        for tf in self.files.values():
            if tf.init_file is not None and (tf.init_overwrite or not os.path.exists(tf.file)):
                try:
                    with open(tf.file, "w", encoding="ascii") as f:
                        f.write(f"{tf.init_file}\n")
                except OSError as exc:
                    log.warning("track_file %s: cannot initialise %s: %s", tf.name, tf.file, exc)
        self.file_values = {n: read_track_file(tf.file) for n, tf in self.files.items()}
        if self.files and self._file_task is None:
            self._file_task = self.loop.create_task(self._poll_files(), name="track-files")

    @staticmethod
    def _referenced(cfg: KeepalivedConfig, name: str) -> bool:
        refs = [r for i in cfg.vrrp_instances for r in i.track_scripts]
        refs += [r for g in cfg.sync_groups for r in g.track_scripts]
        return any(r.name == name for r in refs)

    def _stop_script(self, name: str) -> None:
        runner = self.scripts.pop(name, None)
        if runner is not None and runner.task is not None:
            runner.task.cancel()

    async def close(self) -> None:
        tasks = [r.task for r in self.scripts.values() if r.task is not None]
        if self._file_task is not None:
            tasks.append(self._file_task)
            self._file_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.scripts.clear()
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    # ------------------------------------------------------------------ scripts

    async def _run_script(self, runner: ScriptRunner) -> None:
        script = runner.script
        argv = split_command(script.script)
        if not argv:
            log.error("VRRP_Script(%s) is empty", script.name)
            return
        timeout = script.timeout or script.interval
        user = script.user or self.default_user
        group = script.group if script.user else self.default_group
        who = RunAs(user, group).kwargs()
        while True:
            started = self.loop.time()
            try:
                status = await self.exec_fn(argv, timeout, **who)
            except Exception:  # a runner bug counts as a failed run, the loop goes on
                log.exception("VRRP_Script(%s) could not be run", script.name)
                status = None
            runner.runs += 1
            runner.last_status = status
            if runner.counter.record(status == 0):
                good = runner.status is track.ScriptStatus.GOOD
                log.info("VRRP_Script(%s) %s", script.name, "succeeded" if good else "failed")
                self.on_change()
            delay = script.interval - (self.loop.time() - started)
            await asyncio.sleep(max(0.0, delay))

    async def _poll_files(self) -> None:
        """Re-read tracked files (keepalived uses inotify; a cheap poll gives the same values)."""
        while self.files:
            await asyncio.sleep(FILE_POLL_INTERVAL)
            changed = False
            for name, tf in list(self.files.items()):
                value = read_track_file(tf.file)
                if self.file_values.get(name) != value:
                    self.file_values[name] = value
                    log.info("track_file %s (%s) is now %d", name, tf.file, value)
                    changed = True
            if changed:
                self.on_change()
        self._file_task = None

    # ------------------------------------------------------------------ links

    async def start_links(self) -> None:
        """Read every interface's state once, then follow netlink link events.

        The event socket is subscribed before the read: a link that changes between the
        two (a cable plugged in while the daemon starts) is then still reported, where
        subscribing after the read lost that event and left the link down for good. The
        queued events are applied after the read, in order, so the last one wins."""
        if self._watch_links:
            try:
                from hakeeper.io.linkwatch import LinkWatcher  # noqa: PLC0415

                self._watcher = LinkWatcher()
            except OSError as exc:
                log.error("cannot watch links: %s", exc)
        if self.netlink is not None:
            try:
                for info in await self.netlink.interfaces():
                    self.links[info.name] = bool(info.up and info.running)
            except Exception as exc:
                log.warning("cannot read interfaces: %s", exc)
        if self._watcher is not None:
            self._watcher.attach(self.loop, self._on_link_event)

    def _on_link_event(self, event: Any) -> None:
        self.set_link(event.ifname, bool(event.usable))
        if self.on_link is not None:
            self.on_link(event)

    def set_link(self, ifname: str, up: bool) -> None:
        previous = self.links.get(ifname)
        if previous == up:
            return
        self.links[ifname] = up
        if previous is not None or not up:
            log.info("Netlink reports %s %s", ifname, "UP" if up else "DOWN")
            self.on_change()

    # ------------------------------------------------------------------ evaluation

    def _script_state(self, ref: TrackRef) -> tuple[track.TrackedScript, track.ScriptStatus] | None:
        runner = self.scripts.get(ref.name)
        if runner is None:
            return None
        s = runner.script
        weight = ref.weight if ref.weight is not None else s.weight
        reverse = ref.reverse if ref.reverse is not None else s.reverse
        return track.TrackedScript(ref.name, weight, reverse), runner.status

    def evaluate(self, inst: VrrpInstance, group: SyncGroup | None) -> track.Evaluation:
        """Effective priority and faults of `inst` from the current tracker states."""
        script_refs = list(inst.track_scripts)
        iface_refs = list(inst.track_interfaces)
        if group is not None:
            script_refs += list(group.track_scripts)
            iface_refs += list(group.track_interfaces)
        file_refs = list(inst.track_files) + (list(group.track_files) if group is not None else [])
        scripts = [st for st in map(self._script_state, script_refs) if st is not None]
        files = [self._file_tracked(r) for r in file_refs if r.name in self.files]
        ifaces = [
            track.TrackedInterface(r.name, r.weight or 0, bool(r.reverse)) for r in iface_refs
        ]
        if group is not None:
            stripped = track.strip_for_sync_group(
                inst.name,
                [s for s, _ in scripts],
                ifaces,
                files,
                tracking_weight=group.sync_group_tracking_weight,
            )
            for warning in stripped.warnings:
                if warning not in self.warnings_logged:
                    self.warnings_logged.add(warning)
                    log.warning("%s", warning)
            kept = {s.name for s in stripped.scripts}
            scripts = [(s, st) for s, st in scripts if s.name in kept]
            ifaces = list(stripped.interfaces)
            files = list(stripped.files)
        if inst.interface and not inst.dont_track_primary:
            ifaces.append(track.TrackedInterface(inst.interface, 0))
        return track.evaluate(
            inst.priority,
            scripts=scripts,
            interfaces=[(i, self.links.get(i.name, True)) for i in ifaces],
            files=[(f, self.file_values.get(f.name, 0)) for f in files],
        )

    def _file_tracked(self, ref: TrackRef) -> track.TrackedFile:
        tf = self.files[ref.name]
        weight = ref.weight if ref.weight is not None else tf.weight
        reverse = ref.reverse if ref.reverse is not None else tf.reverse
        return track.TrackedFile(ref.name, weight, reverse)

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "state": r.status.value,
                "runs": r.runs,
                "last_status": r.last_status,
                "weight": r.script.weight,
                "interval": r.script.interval,
                "rise": r.script.rise,
                "fall": r.script.fall,
            }
            for name, r in sorted(self.scripts.items())
        ]
