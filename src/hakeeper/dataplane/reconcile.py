"""Reconcile: desired vs actual data-plane state -> the minimal, ordered list of changes.

Pure. The changes are the IPVS vocabulary (keepalived's ipwrapper/ipvswrapper do the same
walk: add/edit/delete service, add/edit/delete destination), so the IPVS driver sends one
message per change; the nftables driver turns the same plan into one atomic batch that only
touches the chains and sets of the services named in it, so unchanged services (and their
persistence state) are left alone and the counts stay reportable.

Order: removed services first (frees their frontends), then new services, then changed
service settings, then per service added backends, changed backends and removed backends
last, so a pool that swaps one server for another never passes through empty.
"""

from __future__ import annotations

from dataclasses import dataclass

from hakeeper.dataplane.desired import Backend, DesiredState, Service, ServiceKey


@dataclass(frozen=True, slots=True)
class AddService:
    service: Service


@dataclass(frozen=True, slots=True)
class UpdateService:
    """Settings changed (scheduler, persistence, frontends, method...)."""

    service: Service
    old: Service


@dataclass(frozen=True, slots=True)
class DeleteService:
    service: Service


@dataclass(frozen=True, slots=True)
class AddBackend:
    service: Service
    backend: Backend


@dataclass(frozen=True, slots=True)
class UpdateBackend:
    """Weight or forwarding method changed."""

    service: Service
    backend: Backend
    old: Backend


@dataclass(frozen=True, slots=True)
class DeleteBackend:
    service: Service
    backend: Backend


Change = AddService | UpdateService | DeleteService | AddBackend | UpdateBackend | DeleteBackend


@dataclass(frozen=True, slots=True)
class Plan:
    """The ordered changes plus which services they leave untouched."""

    changes: tuple[Change, ...] = ()
    unchanged: tuple[ServiceKey, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.changes)

    @property
    def touched(self) -> tuple[ServiceKey, ...]:
        """Keys of services any change names, in first-mention order."""
        out: dict[ServiceKey, None] = {}
        for c in self.changes:
            out[c.service.key] = None
        return tuple(out)

    def counts(self) -> dict[str, int]:
        names = {
            AddService: "services_added",
            UpdateService: "services_changed",
            DeleteService: "services_removed",
            AddBackend: "backends_added",
            UpdateBackend: "backends_changed",
            DeleteBackend: "backends_removed",
        }
        out = dict.fromkeys(names.values(), 0)
        for c in self.changes:
            out[names[type(c)]] += 1
        out["services_unchanged"] = len(self.unchanged)
        return out


def _backend_changes(new: Service, old: Service | None) -> list[Change]:
    old_by = {b.ident: b for b in old.backends} if old is not None else {}
    new_ids = {b.ident for b in new.backends}
    adds: list[Change] = []
    edits: list[Change] = []
    for b in new.backends:
        prev = old_by.get(b.ident)
        if prev is None:
            adds.append(AddBackend(new, b))
        elif prev != b:
            edits.append(UpdateBackend(new, b, prev))
    dels: list[Change] = [
        DeleteBackend(new, b) for b in (old.backends if old else ()) if b.ident not in new_ids
    ]
    return adds + edits + dels


def plan(desired: DesiredState, actual: DesiredState) -> Plan:
    """Changes that turn `actual` into `desired`, ordered as the module docstring says."""
    wanted = {s.key: s for s in desired.services}
    have = {s.key: s for s in actual.services}
    removed: list[Change] = [DeleteService(s) for s in actual.services if s.key not in wanted]
    added: list[Change] = []
    updated: list[Change] = []
    per_service: list[Change] = []
    unchanged: list[ServiceKey] = []
    for s in desired.services:
        old = have.get(s.key)
        if old is None:
            added.append(AddService(s))
            per_service += _backend_changes(s, None)
            continue
        if s == old:
            unchanged.append(s.key)
            continue
        if s.settings != old.settings:
            updated.append(UpdateService(s, old))
        per_service += _backend_changes(s, old)
    return Plan(tuple(removed + added + updated + per_service), tuple(unchanged))


__all__ = [
    "AddBackend",
    "AddService",
    "Change",
    "DeleteBackend",
    "DeleteService",
    "Plan",
    "UpdateBackend",
    "UpdateService",
    "plan",
]
