"""Four-way diff of two keepalived models for reloads: removed / added / changed / unchanged.

Objects are matched by identity key, as keepalived (and exabgp) do on reload so that
unchanged objects keep their live state: vrrp_instance, vrrp_script, track_file,
vrrp_track_process, vrrp_sync_group and virtual_server_group by name; virtual_server
by address+port+protocol, fwmark+protocol or group+protocol; real_server by ip+port
within its virtual server. Equality ignores source locations (`loc` is compare=False),
so moving a block within the file is not a change.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar

from hakeeper.conf.model import (
    KeepalivedConfig,
    RealServer,
    SyncGroup,
    TrackFile,
    TrackProcess,
    VirtualServer,
    VirtualServerGroup,
    VrrpInstance,
    VrrpScript,
)

__all__ = ["ConfigDiff", "KindDiff", "VirtualServerChange", "diff_configs", "diff_objects"]

T = TypeVar("T")


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)


@dataclass(frozen=True, slots=True)
class KindDiff(Generic[T]):
    """The diff of one kind of object; `changed` pairs are (old, new)."""

    removed: tuple[T, ...] = ()
    added: tuple[T, ...] = ()
    changed: tuple[tuple[T, T], ...] = ()
    unchanged: tuple[T, ...] = ()

    @property
    def has_changes(self) -> bool:
        return bool(self.removed or self.added or self.changed)


@dataclass(frozen=True, slots=True)
class VirtualServerChange:
    """A changed virtual server with the diff of its real servers."""

    old: VirtualServer
    new: VirtualServer
    real_servers: KindDiff[RealServer]

    @property
    def service_changed(self) -> bool:
        """True when the service itself changed, not only its real servers."""
        return replace(self.old, real_servers=()) != replace(self.new, real_servers=())


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    global_defs_changed: bool
    vrrp_scripts: KindDiff[VrrpScript]
    track_files: KindDiff[TrackFile]
    track_processes: KindDiff[TrackProcess]
    vrrp_instances: KindDiff[VrrpInstance]
    sync_groups: KindDiff[SyncGroup]
    virtual_server_groups: KindDiff[VirtualServerGroup]
    virtual_servers: KindDiff[VirtualServer]
    virtual_server_changes: tuple[VirtualServerChange, ...]
    static_changed: bool

    @property
    def has_changes(self) -> bool:
        kinds = (
            self.vrrp_scripts,
            self.track_files,
            self.track_processes,
            self.vrrp_instances,
            self.sync_groups,
            self.virtual_server_groups,
            self.virtual_servers,
        )
        return self.global_defs_changed or self.static_changed or any(k.has_changes for k in kinds)

    def summary(self) -> str:
        """One line per kind with changes, e.g. `vrrp_instances: +1 -0 ~2 =3`."""
        out = []
        for name in (
            "vrrp_scripts",
            "track_files",
            "track_processes",
            "vrrp_instances",
            "sync_groups",
            "virtual_server_groups",
            "virtual_servers",
        ):
            d: KindDiff[Any] = getattr(self, name)
            if d.has_changes:
                counts = (len(d.added), len(d.removed), len(d.changed), len(d.unchanged))
                out.append("{}: +{} -{} ~{} ={}".format(name, *counts))
        if self.global_defs_changed:
            out.append("global_defs changed")
        if self.static_changed:
            out.append("static addresses/routes/rules changed")
        return "\n".join(out) if out else "no changes"


def diff_objects(old: Iterable[T], new: Iterable[T], key: Callable[[T], Hashable]) -> KindDiff[T]:
    """Match `old` and `new` by `key`; order follows `new` (removed: `old`'s order)."""
    old_by_key = {key(o): o for o in old}
    new_list = list(new)
    new_keys = {key(n) for n in new_list}
    added: list[T] = []
    changed: list[tuple[T, T]] = []
    unchanged: list[T] = []
    for obj in new_list:
        before = old_by_key.get(key(obj))
        if before is None:
            added.append(obj)
        elif before == obj:
            unchanged.append(obj)
        else:
            changed.append((before, obj))
    removed = tuple(o for k, o in old_by_key.items() if k not in new_keys)
    return KindDiff(removed, tuple(added), tuple(changed), tuple(unchanged))


def _by_name(old: Iterable[N], new: Iterable[N]) -> KindDiff[N]:
    return diff_objects(old, new, lambda obj: obj.name)


def diff_configs(old: KeepalivedConfig, new: KeepalivedConfig) -> ConfigDiff:
    servers = diff_objects(old.virtual_servers, new.virtual_servers, lambda vs: vs.key)
    changes = tuple(
        VirtualServerChange(
            before, after, diff_objects(before.real_servers, after.real_servers, lambda rs: rs.key)
        )
        for before, after in servers.changed
    )
    return ConfigDiff(
        global_defs_changed=old.global_defs != new.global_defs,
        vrrp_scripts=_by_name(old.vrrp_scripts, new.vrrp_scripts),
        track_files=_by_name(old.track_files, new.track_files),
        track_processes=_by_name(old.track_processes, new.track_processes),
        vrrp_instances=_by_name(old.vrrp_instances, new.vrrp_instances),
        sync_groups=_by_name(old.sync_groups, new.sync_groups),
        virtual_server_groups=_by_name(old.virtual_server_groups, new.virtual_server_groups),
        virtual_servers=servers,
        virtual_server_changes=changes,
        static_changed=(old.static_ipaddresses, old.static_routes, old.static_rules)
        != (new.static_ipaddresses, new.static_routes, new.static_rules),
    )
