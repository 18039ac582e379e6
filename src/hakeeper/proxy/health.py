"""Active health checks for L7 and stream upstreams (nginx Plus `health_check`): the checker.

The rules are nginx Plus's (ngx_http_upstream_hc_module / ngx_stream_upstream_hc_module
docs; syntax in `hakeeper.conf.nginx_health`, probes in `health_probes`): each server of a
checked upstream is probed every `interval` (+ a random `jitter`); `fails` consecutive
failures mark it down, `passes` consecutive successes mark it up again; with `mandatory` a
server starts in "checking" (not used) and its first pass brings it up.

Design: checks run ONCE per (upstream name, server address, check spec), in the process
that owns the listeners: `HealthHub` keeps one probe task per check key on an asyncio loop
(the daemon's loop for `hakeeper run -f K --nginx N`, a `HubThread` for `hakeeper run
--nginx`, the stream process's loop for `stream {}`). Its verdicts go to a shared
`HealthTable` (one byte per server, read by every HTTP worker: `health_shared`) and/or to
an `on_change` callback (the stream balancers, or an engine in this process). A reload
calls `update()` with the new targets: a key that is still there keeps its state and its
task (a down server stays down in the new workers without waiting for `fails`); a new key
starts up, or in "checking" with `mandatory`; with `mandatory persistent` a server whose
check changed keeps "up" if it was up. The probes are the asyncio ones of
`health_probes` rather than the keepalived checker engine (`check/engine.py`): that engine
runs keepalived's semantics (retry / delay_before_retry, HTTP_GET status + digest) on
VirtualServer models, while nginx's are consecutive fails/passes with `match` on status,
headers and body regexes, and stream send/expect.

`PeerHealth` is the pure counting part (injected `now`); `attach()` runs the checks of one
in-process engine (tests, benches); `snapshot()` gives the state and counters for `hakeeper
status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from hakeeper.balance.upstream import UpstreamGroup
from hakeeper.conf.nginx_health import HealthCheck, StreamHealthCheck
from hakeeper.proxy.health_probes import build_request, evaluate, http_probe, tcp_probe, udp_probe
from hakeeper.proxy.health_shared import (
    CHECKING,
    DOWN,
    UP,
    HealthTable,
    HubThread,
    WorkerHealth,
)

if TYPE_CHECKING:
    from hakeeper.conf.nginx import Upstream
    from hakeeper.proxy.config import ProxyConfig
    from hakeeper.proxy.engine import Engine
    from hakeeper.proxy.from_nginx import Route
    from hakeeper.proxy.tls import UpstreamTls

log = logging.getLogger("hakeeper.proxy.health")

__all__ = [
    "CheckTarget",
    "GroupBinding",
    "HealthChecks",
    "HealthHub",
    "MasterChecks",
    "PeerHealth",
    "attach",
    "build_request",
    "evaluate",
    "http_targets",
    "snapshot",
    "stream_targets",
]

AnyCheck = HealthCheck | StreamHealthCheck
Key = tuple[str, str, AnyCheck]


# -- the pure part --------------------------------------------------------------------------


class PeerHealth:
    """Consecutive-result counting for one server; `on_result` returns the new verdict
    (True = up, False = down) when it changes, else None. `start_up` overrides the
    initial state (`persistent` across a reload)."""

    __slots__ = (
        "changed_at",
        "checks",
        "fails",
        "failures",
        "in_row_fail",
        "in_row_pass",
        "last_detail",
        "passes",
        "pending_first",
        "up",
    )

    def __init__(
        self, fails: int, passes: int, mandatory: bool, start_up: bool | None = None
    ) -> None:
        self.fails = fails
        self.passes = passes
        self.up = not mandatory if start_up is None else start_up
        self.pending_first = not self.up  # mandatory: the first pass brings it up
        self.in_row_fail = 0
        self.in_row_pass = 0
        self.checks = 0
        self.failures = 0
        self.last_detail = "not checked yet"
        self.changed_at: float | None = None

    @property
    def state(self) -> int:
        """The byte published for this server (health_shared UP / DOWN / CHECKING)."""
        if self.up:
            return UP
        return CHECKING if self.pending_first else DOWN

    def on_result(self, ok: bool, detail: str, now: float) -> bool | None:
        self.checks += 1
        self.last_detail = detail
        if ok:
            self.in_row_fail = 0
            self.in_row_pass += 1
            if not self.up and (self.pending_first or self.in_row_pass >= self.passes):
                return self._set(True, now)
        else:
            self.failures += 1
            self.in_row_pass = 0
            self.in_row_fail += 1
            if self.up and self.in_row_fail >= self.fails:
                return self._set(False, now)
        self.pending_first = False
        return None

    def _set(self, up: bool, now: float) -> bool:
        self.up = up
        self.pending_first = False
        self.in_row_fail = self.in_row_pass = 0
        self.changed_at = now
        return up


def initial_health(check: AnyCheck, previous_up: bool | None) -> PeerHealth:
    """A new check key's starting state: up, or "checking" with `mandatory`; with
    `mandatory persistent` a server that was up before (under another spec) stays up."""
    keep = check.mandatory and check.persistent and previous_up is True
    return PeerHealth(check.fails, check.passes, check.mandatory, True if keep else None)


@dataclass(frozen=True, slots=True)
class CheckTarget:
    """One server under one check: `server` is its configured "host:port" (the identity
    kept across reloads), `host`/`port` where the probe goes, `tls` how (`proxy_pass
    https://`: the location's context and SNI name; None = plain)."""

    upstream: str
    server: str
    host: str
    port: int
    check: AnyCheck  # its `.spec` (no file position)
    tls: UpstreamTls | None = field(default=None, compare=False)

    @property
    def key(self) -> Key:
        return (self.upstream, self.server, self.check)


def http_targets(
    groups: Iterable[UpstreamGroup[Any]],
) -> list[tuple[UpstreamGroup[Any], str, CheckTarget]]:
    """(group, balancer peer name, target) for every server of the http groups that carry
    a `health_check` (their peers are `proxy.upstream.Peer`s with host and port)."""
    out: list[tuple[UpstreamGroup[Any], str, CheckTarget]] = []
    for g in groups:
        hc = g.health_check
        if hc is None:
            continue
        spec = hc.spec
        for item, peer in g.state():
            host = str(getattr(item, "host", ""))
            port = hc.port or int(getattr(item, "port", 0))
            if host and port:
                tls = cast("UpstreamTls | None", g.health_tls)
                target = CheckTarget(g.name, peer.server, host, port, spec, tls)
                out.append((g, peer.name, target))
    return out


# -- the hub --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Check:
    target: CheckTarget
    health: PeerHealth
    request: bytes = b""
    task: asyncio.Task[None] | None = None
    slot: int = -1


OnChange = Callable[[Key, bool, bool], None]  # (key, up, ramp)


@dataclass
class HealthHub:
    """Every check of one process, once per key; see the module docstring."""

    loop: asyncio.AbstractEventLoop
    table: HealthTable | None = None
    on_change: OnChange | None = None
    rng: random.Random = field(default_factory=random.Random)
    checks: dict[Key, _Check] = field(default_factory=dict)
    probes: int = 0

    def update(self, targets: Iterable[CheckTarget]) -> None:
        """Reconcile with a (new) config's targets; call on the hub's loop thread, before
        forking workers that read the table."""
        wanted = {t.key: t for t in targets}
        previous = {(k[0], k[1]): c.health.up for k, c in self.checks.items()}
        for key in [k for k in self.checks if k not in wanted]:
            gone = self.checks.pop(key)
            if gone.task is not None:
                gone.task.cancel()
        added: list[_Check] = []
        for key, target in wanted.items():
            if key in self.checks:
                continue
            c = _Check(target, initial_health(target.check, previous.get(key[:2])))
            if isinstance(target.check, HealthCheck):
                c.request = build_request(target.check.uri, target.upstream)
            self.checks[key] = c
            added.append(c)
        if self.table is not None:
            slots = self.table.assign(self.checks)
            for key, c in self.checks.items():
                c.slot = slots[key]
                self.table.set(c.slot, c.health.state)
        for c in added:
            c.task = self.loop.create_task(self._run(c), name=f"hc {c.target.host}:{c.target.port}")

    def up(self, key: Key) -> bool:
        c = self.checks.get(key)
        return c is None or c.health.up

    def close(self) -> list[asyncio.Task[None]]:
        """Cancel every probe task; returns them (await them to let them unwind)."""
        tasks = [c.task for c in self.checks.values() if c.task is not None]
        for t in tasks:
            t.cancel()
        self.checks = {}
        return tasks

    async def aclose(self) -> None:
        tasks = self.close()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _probe(self, c: _Check) -> tuple[bool, str]:
        t = c.target
        self.probes += 1
        if isinstance(t.check, HealthCheck):
            return await http_probe(t.check, t.host, t.port, c.request, t.tls)
        if t.check.udp:
            return await udp_probe(t.check, t.host, t.port, t.check.interval)
        return await tcp_probe(t.check, t.host, t.port)

    async def _run(self, c: _Check) -> None:
        check = c.target.check
        while True:
            started = self.loop.time()  # one probe starts every interval (nginx Plus)
            try:
                ok, detail = await self._probe(c)
            except Exception as exc:  # a bug in a probe must not stop the checks
                log.exception("health check of %s:%d failed", c.target.host, c.target.port)
                ok, detail = False, f"probe error: {exc}"
            now = self.loop.time()
            first = c.health.pending_first  # mandatory's first pass: no slow start
            verdict = c.health.on_result(ok, detail, now)
            if verdict is not None:
                log.warning(
                    "upstream %s server %s is %s (%s)",
                    c.target.upstream,
                    c.target.server,
                    "up" if verdict else "down",
                    detail,
                )
                self._publish(c, ramp=not first)
            jitter = check.jitter * self.rng.random() if check.jitter else 0.0
            await asyncio.sleep(max(0.0, started + check.interval + jitter - self.loop.time()))

    def _publish(self, c: _Check, ramp: bool) -> None:
        if self.table is not None and c.slot >= 0:
            self.table.set(c.slot, c.health.state)
        if self.on_change is not None:
            try:
                self.on_change(c.target.key, c.health.up, ramp)
            except Exception:
                log.exception("health verdict could not be applied")

    def snapshot(self) -> list[dict[str, Any]]:
        now = self.loop.time()
        out = []
        for c in self.checks.values():
            ph = c.health
            out.append(
                {
                    "upstream": c.target.upstream,
                    "server": c.target.server,
                    "state": "up" if ph.up else ("checking" if ph.pending_first else "down"),
                    "checks": ph.checks,
                    "failures": ph.failures,
                    "fails_in_row": ph.in_row_fail,
                    "passes_in_row": ph.in_row_pass,
                    "last": ph.last_detail,
                    "since": None if ph.changed_at is None else round(now - ph.changed_at, 3),
                }
            )
        return out


class GroupBinding:
    """Applies a hub's verdicts to balancers in this process: a peer is healthy when every
    check bound to it is up (nginx Plus: one failing check makes the server unhealthy)."""

    def __init__(self, hub: HealthHub) -> None:
        self.hub = hub
        self.by_key: dict[Key, list[tuple[UpstreamGroup[Any], str]]] = {}
        self.keys_of: dict[tuple[int, str], list[Key]] = {}

    def bind(self, group: UpstreamGroup[Any], peer: str, key: Key) -> None:
        self.by_key.setdefault(key, []).append((group, peer))
        self.keys_of.setdefault((id(group), peer), []).append(key)

    def apply(self, key: Key, ramp: bool) -> None:
        now = self.hub.loop.time()
        for group, peer in self.by_key.get(key, ()):
            up = all(self.hub.up(k) for k in self.keys_of[(id(group), peer)])
            group.balancer.set_health(peer, up, now, ramp=ramp)

    def apply_all(self) -> None:
        """The current state everywhere (a fresh balancer: no slow start)."""
        for key in self.by_key:
            self.apply(key, ramp=False)

    def on_change(self, key: Key, _up: bool, ramp: bool) -> None:
        self.apply(key, ramp)


class HealthChecks:
    """The checks of one in-process engine (`attach`): a hub bound to its balancers."""

    def __init__(self, hub: HealthHub, binding: GroupBinding) -> None:
        self.hub = hub
        self.binding = binding

    def close(self) -> None:
        self.hub.close()

    def snapshot(self) -> list[dict[str, Any]]:
        now = self.hub.loop.time()
        rows = self.hub.snapshot()
        for row in rows:
            key = next(
                (k for k in self.binding.by_key if k[:2] == (row["upstream"], row["server"])),
                None,
            )
            bound = self.binding.by_key.get(key, []) if key is not None else []
            if bound:
                group, peer = bound[0]
                row["weight"] = round(group.balancer.weight_now(peer, now), 3)
        return rows


_CURRENT: list[HealthChecks] = []


def _engine_groups(engine: Engine) -> list[UpstreamGroup[Any]]:
    groups: dict[int, UpstreamGroup[Any]] = {}
    for e in (engine, *engine.children.values()):
        b = e.balancer
        if isinstance(b, UpstreamGroup) and b.health_check is not None:
            groups.setdefault(id(b), b)
    return list(groups.values())


def attach(engine: Engine, rng: random.Random | None = None) -> HealthChecks | None:
    """Run the checks of every upstream group the engine (or its routed children) uses
    that carries a `health_check`, in this process; None when there is none. Used where
    no master publishes verdicts (an engine run on its own, tests, benches)."""
    found = http_targets(_engine_groups(engine))
    if not found:
        return None
    hub = HealthHub(engine.loop, rng=rng if rng is not None else random.Random())
    binding = GroupBinding(hub)
    for group, peer, target in found:
        binding.bind(group, peer, target.key)
    hub.on_change = binding.on_change
    hub.update(t for _, _, t in found)
    binding.apply_all()
    checks = HealthChecks(hub, binding)
    _CURRENT.append(checks)
    return checks


def detach(checks: HealthChecks) -> None:
    checks.close()
    with contextlib.suppress(ValueError):
        _CURRENT.remove(checks)


def snapshot() -> list[dict[str, Any]]:
    """The state and counters of every health-checked server of this process's engines."""
    return [row for c in _CURRENT for row in c.snapshot()]


# -- masters: one checker for every worker ------------------------------------------------


def route_targets(routes: Sequence[Route]) -> list[CheckTarget]:
    """Every http check target of a config's listeners (each key once)."""
    out: dict[Key, CheckTarget] = {}
    for r in routes:
        for _g, _peer, t in http_targets(upstream_groups(r.config, r.balancer)):
            out.setdefault(t.key, t)
    return list(out.values())


def follow(engine: Engine, table: HealthTable) -> WorkerHealth | None:
    """In a worker: apply the master's verdicts from `table` to this worker's balancers
    (now, then on a timer); None when nothing it uses is checked."""
    bindings = [(g, peer, t.key) for g, peer, t in http_targets(_engine_groups(engine))]
    if not bindings:
        return None
    worker = WorkerHealth(table, bindings, engine.loop)
    worker.start()
    return worker


# -- reloads: servers a reload adds slow-start --------------------------------------------


class _Served(Protocol):
    """What `ramp_added` needs of a `server.Master`: the config and balancer it serves."""

    config: ProxyConfig
    balancer_factory: Callable[[ProxyConfig], Any] | None


def upstream_groups(config: ProxyConfig, balancer: object) -> list[UpstreamGroup[Any]]:
    """The nginx upstream groups a listener uses (its own balancer and its locations')."""
    found: list[object] = [balancer]
    if config.routes is not None:
        found += [p.balancer for p in config.routes.proxied()]
    out: list[UpstreamGroup[Any]] = []
    for b in found:
        if isinstance(b, UpstreamGroup) and all(b is not g for g in out):
            out.append(b)
    return out


def ramp_added_servers(
    old: Iterable[UpstreamGroup[Any]], new: Iterable[UpstreamGroup[Any]], now: float
) -> int:
    """Start the slow-start ramp of every server (by its configured "host:port") that is
    in `new` but was in none of `old`; returns how many ramps started."""
    known = {p.server for g in old for p in g.balancer.peers}
    started = 0
    for g in new:
        for p in g.balancer.peers:
            if p.slow_start and p.server not in known:
                g.balancer.start_ramp(p.name, now)
                started += 1
    return started


def ramp_added(master: _Served, route: Route, now: float | None = None) -> int:
    """Call on reload before `master` forks the workers for `route`: servers the reload
    added start with weight 0 and ramp over their `slow_start` (nginx Plus semantics for
    a server added at run time). `now` is CLOCK_MONOTONIC, the workers' loop clock."""
    factory = master.balancer_factory
    old_balancer = factory(master.config) if factory is not None else None
    return ramp_added_servers(
        upstream_groups(master.config, old_balancer),
        upstream_groups(route.config, route.balancer),
        time.monotonic() if now is None else now,
    )


class MasterChecks:
    """The checks of a master without an event loop of its own (`hakeeper run --nginx`
    waits in `sigwait`): the table exists from the start (workers get it at fork), the
    hub's loop thread starts with the first config that has a `health_check`."""

    def __init__(self) -> None:
        self.table = HealthTable()
        self.thread: HubThread | None = None
        self.hub: HealthHub | None = None

    def update(self, routes: Sequence[Route]) -> None:
        """Before forking the workers of `routes` (start or reload)."""
        targets = route_targets(routes)
        if self.thread is None:
            if not targets:
                return
            self.thread = HubThread()
            self.hub = HealthHub(self.thread.loop, table=self.table)
        assert self.hub is not None
        self.thread.call(self.hub.update, targets)

    def snapshot(self) -> list[dict[str, Any]]:
        if self.thread is None or self.hub is None:
            return []
        return self.thread.call(self.hub.snapshot)

    def stop(self) -> None:
        if self.thread is not None and self.hub is not None:
            self.thread.stop(self.hub.aclose)
        self.thread = self.hub = None


def stream_targets(
    upstream: Upstream, group: UpstreamGroup[Any], check: StreamHealthCheck
) -> list[tuple[str, CheckTarget]]:
    """(balancer peer name, target) for every server of a stream upstream under `check`
    (`group` is `proxy.stream.make_group(upstream)`: peers are named "index:key")."""
    spec = check.spec
    out: list[tuple[str, CheckTarget]] = []
    for peer in group.balancer.peers:
        srv = upstream.servers[int(peer.name.split(":", 1)[0])]
        target = CheckTarget(upstream.name, peer.server, srv.host, check.port or srv.port, spec)
        out.append((peer.name, target))
    return out
