"""The LVS service: keepalived's virtual servers + checker pools driven onto one data plane.

Owns what keepalived's checker process does with IPVS (check_daemon.c / ipwrapper.c, read
for facts): at start every virtual server is installed with the pools the checkers report
(everything up unless `alpha`), each pool change is reconciled, a reload (`update`) diffs the
new configuration against what is installed, and at exit everything installed is removed.

The data plane is `nftables` (kernel; NAT and DR), `userspace` (the L4 proxy of
`dataplane.userspace`, every scheduler) or `ipvs` (kernels with IPVS). `auto` picks nftables
when we are root and `nft` can create a table, else userspace. Reconciles are coalesced: any
number of pool changes while one apply runs lead to one more apply with the latest state. A
failing apply is logged and counted and never ends the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from hakeeper.conf.model import KeepalivedConfig
from hakeeper.dataplane import DataPlane
from hakeeper.dataplane.desired import (
    DesiredState,
    PoolEntry,
    Service,
    ServiceCache,
    ServiceKey,
    desired_state,
)
from hakeeper.dataplane.reconcile import Plan, plan

log = logging.getLogger("hakeeper.lvs")

DATAPLANES = ("auto", "nftables", "userspace", "ipvs")


def choose_dataplane(requested: str = "auto") -> str:
    """The data plane name `auto` resolves to here (nftables if root and nft works)."""
    if requested != "auto":
        if requested not in DATAPLANES:
            raise ValueError(f"unknown data plane {requested!r}; one of {', '.join(DATAPLANES)}")
        return requested
    if os.geteuid() == 0:
        from hakeeper.dataplane.nft import Nft  # noqa: PLC0415 (ctypes load only when needed)

        if Nft().works():
            return "nftables"
    return "userspace"


class UserspaceAdapter:
    """`DataPlane` face of the userspace L4 proxy (address:port TCP/UDP services)."""

    name = "userspace"

    def __init__(self) -> None:
        from hakeeper.dataplane.userspace import UserspaceDataplane  # noqa: PLC0415

        self.proxy = UserspaceDataplane()
        self.actual = DesiredState()

    def supports(self, service: Service) -> str | None:
        if service.protocol not in ("tcp", "udp"):
            return f"protocol {service.protocol} is not proxied"
        if any(f.fwmark is not None or f.port is None for f in service.frontends):
            return "fwmark and port-less frontends need a kernel data plane"
        return None if service.frontends else "no frontends"

    async def start(self) -> None:
        return None

    async def apply(self, desired: DesiredState) -> Plan:
        from hakeeper.dataplane.userspace import Backend, L4Service  # noqa: PLC0415

        specs = []
        for s in desired.services:
            for f in s.frontends:
                assert f.address is not None and f.port is not None
                backends = tuple(
                    Backend(str(b.address), b.port if b.port is not None else f.port, b.weight)
                    for b in s.backends
                )
                specs.append(
                    L4Service(
                        host=str(f.address),
                        port=f.port,
                        protocol=s.protocol.upper(),
                        scheduler=s.scheduler,
                        backends=backends,
                        sched_flags=s.sched_flags,
                        persistence_timeout=s.persistence_timeout,
                        persistence_granularity=str(s.persistence_prefix)
                        if s.persistence_prefix is not None
                        else None,
                    )
                )
        the_plan = plan(desired, self.actual)
        await self.proxy.apply(specs)
        self.actual = desired
        return the_plan

    async def stop(self) -> None:
        await self.proxy.close()
        self.actual = DesiredState()

    def status(self) -> dict[str, Any]:
        return {"dataplane": self.name, "services": len(self.proxy.services)}


def make_dataplane(name: str, *, netns: str | None = None, masquerade: bool = False) -> DataPlane:
    if name == "nftables":
        from hakeeper.dataplane.nft import Nft, NftDataplane  # noqa: PLC0415

        return NftDataplane(Nft(netns=netns), masquerade=masquerade)
    if name == "ipvs":
        from hakeeper.dataplane.ipvs import IpvsDataplane  # noqa: PLC0415

        return IpvsDataplane()
    if name == "userspace":
        return UserspaceAdapter()
    raise ValueError(f"unknown data plane {name!r}")


class LvsService:
    """Virtual servers of one configuration on one data plane, fed by the checker engine."""

    def __init__(
        self,
        config: KeepalivedConfig,
        *,
        dataplane: str | DataPlane = "auto",
        checks: bool = True,
        masquerade: bool = False,
        netns: str | None = None,
    ) -> None:
        self.config = config
        self._requested = dataplane
        self.checks = checks
        self.masquerade = masquerade
        self.netns = netns
        self.dp: DataPlane | None = None
        self.engine: Any = None
        self.pools: dict[object, list[PoolEntry]] = {}
        self.desired = DesiredState()
        self._cache: ServiceCache = {}
        self.skipped: dict[ServiceKey, str] = {}
        self.reconciles = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_plan: dict[str, int] = {}
        self._wanted = 0
        self._done = 0
        self._kick = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Pick and start the data plane, start the checkers, install every service."""
        if isinstance(self._requested, str):
            name = choose_dataplane(self._requested)
            self.dp = make_dataplane(name, netns=self.netns, masquerade=self.masquerade)
        else:
            self.dp = self._requested
        await self.dp.start()
        if self.checks and self.config.virtual_servers:
            from hakeeper.check.engine import CheckerEngine  # noqa: PLC0415

            self.engine = CheckerEngine(
                self.config.virtual_servers,
                on_pool_change=self._on_pool_change,
                track_files=self.config.track_files,
                log_all_failures=self.config.global_defs.checker_log_all_failures,
            )
            self.engine.start()
            self.pools.update(self.engine.pools())
        self._task = asyncio.create_task(self._run(), name="lvs-reconcile")
        self._request()
        await self.wait_applied()
        log.info(
            "LVS: %d virtual server(s) on the %s data plane",
            len(self.desired.services),
            self.dp.name,
        )

    async def stop(self) -> None:
        """Stop the checkers and remove everything the data plane installed."""
        if self.engine is not None:
            with contextlib.suppress(Exception):
                await self.engine.stop()
            self.engine = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.dp is not None:
            try:
                await self.dp.stop()
            except Exception as exc:
                log.error("LVS: removing the %s data plane failed: %s", self.dp.name, exc)

    def update(self, config: KeepalivedConfig) -> None:
        """Reload: new virtual servers start, removed ones go, changed ones are reconciled."""
        self.config = config
        keys = {vs.key for vs in config.virtual_servers}
        self.pools = {k: v for k, v in self.pools.items() if k in keys}
        if self.engine is not None:
            self.engine.update(config.virtual_servers)
            self.pools.update(self.engine.pools())
        self._request()

    def set_pool(self, key: object, pool: Sequence[PoolEntry]) -> None:
        """Feed a pool by hand (VirtualServer.key or label); for runs without checkers."""
        self.pools[key] = list(pool)
        self._request()

    def set_pools(self, pools: Mapping[object, Sequence[PoolEntry]]) -> None:
        for k, v in pools.items():
            self.pools[k] = list(v)
        self._request()

    async def wait_applied(self, timeout: float = 10.0) -> bool:
        """Wait until every change requested so far has been applied (or failed)."""
        target = self._wanted
        try:
            async with asyncio.timeout(timeout):
                while self._done < target:
                    self._idle.clear()
                    await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # -- reconcile loop ----------------------------------------------------------------
    def _on_pool_change(self, key: object, pool: Sequence[PoolEntry]) -> None:
        self.pools[key] = list(pool)
        self._request()

    def _request(self) -> None:
        self._wanted += 1
        self._kick.set()

    async def _run(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            target = self._wanted
            await self._reconcile()
            self._done = target
            self._idle.set()

    async def _reconcile(self) -> None:
        assert self.dp is not None
        full = desired_state(self.config, self.pools, self._cache)
        keep: list[Service] = []
        self.skipped = {}
        for s in full.services:
            why = self.dp.supports(s)
            if why is None:
                keep.append(s)
            else:
                self.skipped[s.key] = why
        self.desired = DesiredState(tuple(keep))
        try:
            applied = await self.dp.apply(self.desired)
        except Exception as exc:  # never let one failed apply end the loop
            self.errors += 1
            self.last_error = str(exc)
            log.error("LVS: %s apply failed: %s", self.dp.name, exc)
            return
        self.reconciles += 1
        if applied:
            self.last_plan = applied.counts()
            log.info("LVS: %s", ", ".join(f"{k} {v}" for k, v in self.last_plan.items() if v))

    # -- status ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        checks: dict[tuple[str, ...], dict[str, Any]] = {}
        if self.engine is not None:
            for vs in self.engine.status_dict():
                checks[tuple(vs["key"])] = vs
        services = []
        for vs in self.config.virtual_servers:
            s = self.desired.get(vs.key)
            entry: dict[str, Any] = {
                "name": vs.label,
                "protocol": vs.protocol,
                "scheduler": vs.lvs_sched,
                "method": vs.lvs_method.method,
                "persistence_timeout": vs.persistence_timeout,
                "installed": s is not None,
                "backends": [
                    {"server": b.key, "weight": b.weight, "method": b.method}
                    for b in (s.backends if s is not None else ())
                ],
            }
            if vs.key in self.skipped:
                entry["unsupported"] = self.skipped[vs.key]
            if s is not None and s.notes:
                entry["notes"] = list(s.notes)
            health = checks.get(vs.key)
            if health is not None:
                entry["quorum_up"] = health["quorum_up"]
                entry["sorry_active"] = health["sorry_active"]
                entry["real_servers"] = health["real_servers"]
            services.append(entry)
        return {
            "dataplane": self.dp.name if self.dp is not None else None,
            "dataplane_status": self.dp.status() if self.dp is not None else {},
            "reconciles": self.reconciles,
            "errors": self.errors,
            "last_error": self.last_error,
            "last_plan": self.last_plan,
            "virtual_servers": services,
        }


async def sync_lvs(
    current: LvsService | None, config: KeepalivedConfig, dataplane: str | DataPlane = "auto"
) -> LvsService | None:
    """The daemon's one call at start and on reload: start, update or stop the LVS service
    so that it serves `config`'s virtual servers (None when there are none). Failures are
    logged; VRRP keeps running whatever happens here."""
    try:
        if not config.virtual_servers:
            if current is not None:
                await current.stop()
            return None
        if current is None:
            svc = LvsService(config, dataplane=dataplane)
            await svc.start()
            return svc
        current.update(config)
        await current.wait_applied()
        return current
    except Exception:
        log.exception("LVS: could not install the virtual servers")
        return current


def format_status(status: Mapping[str, Any]) -> list[str]:
    """`hakeeper status` lines for the LVS part of the daemon status."""
    lines = [
        f"LVS data plane: {status.get('dataplane')} "
        f"(reconciles {status.get('reconciles')}, errors {status.get('errors')})"
    ]
    for vs in status.get("virtual_servers", []):
        extra = f"  [{vs['unsupported']}]" if vs.get("unsupported") else ""
        quorum = "" if vs.get("quorum_up") in (None, True) else "  QUORUM DOWN"
        lines.append(
            f"  {vs['name']} {vs['protocol']} {vs['scheduler']} {vs['method']}{quorum}{extra}"
        )
        reals = vs.get("real_servers")
        if reals is None:
            for b in vs.get("backends", []):
                lines.append(f"    {b['server']:24} weight {b['weight']}")
            continue
        for r in reals:
            health = "UP" if r.get("alive") else "DOWN"
            last = r.get("last_result")
            last_txt = "-" if last is None else ("ok" if last else "failed")
            since = r.get("changed_at")
            since_txt = "" if since is None else f"  since {_clock(since)}"
            lines.append(
                f"    {r['server']:24} weight {r['weight']:<4} {health:4}  "
                f"last check {last_txt}{since_txt}"
            )
    return lines


def _clock(wall: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))


__all__ = [
    "DATAPLANES",
    "LvsService",
    "UserspaceAdapter",
    "choose_dataplane",
    "format_status",
    "make_dataplane",
    "sync_lvs",
]
