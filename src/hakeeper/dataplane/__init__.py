"""L4 data planes behind one reconcile step: desired state -> plan -> nftables / IPVS / userspace.

`desired_state(config, pools)` builds the desired services from the keepalived model and the
checker engine's pools; `reconcile.plan(desired, actual)` gives the ordered changes; every data
plane implements `DataPlane` (its `apply(desired)` plans against what it last applied and
returns that plan). `hakeeper.dataplane.lvs.LvsService` picks one and drives it.
"""

from __future__ import annotations

from typing import Any, Protocol

from hakeeper.dataplane.desired import (
    Backend,
    DesiredState,
    Frontend,
    Service,
    ServiceKey,
    desired_state,
)
from hakeeper.dataplane.reconcile import Plan, plan


class DataPlane(Protocol):
    """What LvsService needs from a data plane (nftables, ipvs, userspace)."""

    name: str

    def supports(self, service: Service) -> str | None:
        """None if this data plane can carry `service`, else the reason it cannot."""

    async def start(self) -> None:
        """Take ownership (remove leftovers of a previous run, create base objects)."""

    async def apply(self, desired: DesiredState) -> Plan:
        """Make the data plane match `desired`; returns the applied plan."""

    async def stop(self) -> None:
        """Remove everything this data plane installed."""

    def status(self) -> dict[str, Any]:
        """Counters and notes for `hakeeper status`."""


__all__ = [
    "Backend",
    "DataPlane",
    "DesiredState",
    "Frontend",
    "Plan",
    "Service",
    "ServiceKey",
    "desired_state",
    "plan",
]
