"""The embedded L7 proxy of `hakeeper run -f keepalived.conf --nginx nginx.conf`.

One daemon serves both files, as the seeds run keepalived beside nginx: the nginx.conf is
read like `nginx -t` (`hakeeper.proxy.run.load`), each `listen` gets a `proxy.server.Master`
(listening sockets kept here, `worker_processes` forked workers) and `stream {}` its
`StreamProcess`. The blocking parts (bind, fork, wait for workers to be ready) run in one
dedicated thread so VRRP adverts never wait for them; workers that exit are reaped from the
loop by a 1 s poll (non-blocking `waitpid` on our own pids only).

nginx's master behaviours kept: a worker that dies is replaced (new workers on the same
sockets, at most every RESPAWN_BACKOFF seconds); SIGHUP reloads hitlessly (new workers
first, the old ones drain, in-flight requests finish) and a bad file keeps the running
config; a listen address added on reload is opened, a removed one closed after its workers
drain. `serving()` is what the built-in tracker `vrrp_script { script "hakeeper-proxy" }`
reports: every listener open with at least one live worker (and the stream process alive).
Listening sockets are bound with IP_FREEBIND: `listen VIP:80` opens while this node is
BACKUP (the VIP is not local yet), as nginx does beside keepalived with
`net.ipv4.ip_nonlocal_bind = 1`; otherwise the proxy could never serve, the built-in tracker
would keep the instance in FAULT and the VIP would never come.

Active `health_check`s of http upstreams run once, on the daemon's loop (`health.HealthHub`,
beside the keepalived checkers), not in each worker: the verdicts go to a shared-memory
`HealthTable` that every worker follows, so a respawned worker or a reload's new workers
start from the current state (a reload keeps the state of unchanged checks).

Note (Linux PR_SET_PDEATHSIG): workers are told to die with the *thread* that forked them,
so that thread lives as long as this service.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.proxy import health
from hakeeper.proxy.from_nginx import Route, route_balancers
from hakeeper.proxy.health_shared import HealthTable
from hakeeper.proxy.server import BalancerFactory, Master, bind_listeners, worker_count

log = logging.getLogger("hakeeper.proxy")

POLL_INTERVAL = 1.0
RESPAWN_BACKOFF = 2.0
DRAIN_TIMEOUT = (
    30.0  # old workers still running after this are killed (nginx: worker_shutdown_timeout)
)
STOP_TIMEOUT = 10.0


Addr = tuple[str, int]
T = TypeVar("T")


@dataclass(slots=True)
class L7Stats:
    reloads_ok: int = 0
    reloads_failed: int = 0
    last_error: str = ""
    worker_exits: int = 0  # workers that exited while they should have served
    respawns: int = 0


@dataclass(frozen=True, slots=True)
class Loaded:
    """One reading of the nginx.conf: the HTTP listeners and whether `stream {}` serves."""

    workers: int
    routes: dict[Addr, Route]
    has_stream: bool


def _fixed(route: Route) -> BalancerFactory:
    """Each forked worker gets its own copy of the balancer (nginx without `zone`)."""
    return lambda _config: route.balancer


def read(path: str) -> tuple[Loaded | None, Diagnostics]:
    """Read and check `path`; None (with the errors in the diagnostics) if it cannot serve."""
    from hakeeper.proxy.run import load  # noqa: PLC0415
    from hakeeper.proxy.stream import stream_services  # noqa: PLC0415

    diags = Diagnostics()
    try:
        config, routes = load(path, diags)
        streams = stream_services(config.stream, diags) if not diags.has_errors else []
        workers = worker_count(config.worker_processes)
    except (OSError, ValueError) as exc:
        return None, _with_error(diags, f"{path}: {exc}")
    if diags.has_errors:
        return None, diags
    if not routes and not streams:
        return None, _with_error(diags, f"{path}: no listen address to serve")
    by_addr = {(r.listen.host, r.listen.port): r for r in routes}
    return Loaded(workers, by_addr, bool(streams)), diags


def bind_freebind(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` SO_REUSEPORT listening sockets on host:port that may bind an address this
    host does not have yet (a VIP)."""
    return bind_listeners(host, port, count, freebind=True)


def _with_error(diags: Diagnostics, message: str) -> Diagnostics:
    diags.error(None, message)
    return diags


class L7Service:
    """The nginx.conf side of the daemon: masters, their workers, the stream process."""

    def __init__(
        self,
        path: str,
        *,
        health_snapshot: Callable[[], Any] | None = None,
    ) -> None:
        self.path = path
        self.health_table = HealthTable()  # made before any worker forks
        self.health: health.HealthHub | None = None  # on the daemon's loop, on first use
        self.health_snapshot = health_snapshot or self._health_rows
        self.masters: dict[Addr, Master] = {}
        self.failed: dict[Addr, str] = {}  # listeners that could not open (retried)
        self.loaded: Loaded | None = None
        self.stream: Any = None  # hakeeper.proxy.stream.StreamProcess
        self.stats = L7Stats()
        self._draining: dict[int, float] = {}  # old worker pid -> kill deadline (monotonic)
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hakeeper-l7")
        self._busy = 0
        self._last_respawn: dict[Addr, float] = {}
        self._poller: asyncio.Task[None] | None = None
        self.started_wall = time.time()

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> bool:
        """Open every listener and start its workers; False if the file cannot serve."""
        loaded, diags = read(self.path)
        for d in diags.sorted():
            (log.error if d.severity == "error" else log.warning)("%s", d.format())
        if loaded is None:
            log.error("nginx configuration %s has errors; not starting", self.path)
            return False
        self.loaded = loaded
        if loaded.has_stream:  # forked first: it must not inherit the HTTP sockets
            await self._start_stream()
        self._update_health(loaded)
        for addr, route in loaded.routes.items():
            await self._open(addr, route, loaded.workers)
        self._poller = asyncio.create_task(self._poll_loop(), name="l7-poll")
        log.info(
            "L7 proxy serving %s on %s",
            self.path,
            ", ".join(f"{h}:{p}" for h, p in self.masters) or "(no HTTP listener open)",
        )
        return True

    async def reload(self) -> bool:
        """SIGHUP: re-read the file; keep everything running if it is bad."""
        loaded, diags = read(self.path)
        if loaded is None:
            errors = [d.format() for d in diags.sorted() if d.severity == "error"]
            for line in errors:
                log.error("nginx reload: %s", line)
            log.error("nginx reload failed: keeping the running configuration")
            self.stats.reloads_failed += 1
            self.stats.last_error = "; ".join(errors[:5]) or "unreadable"
            return False
        for d in diags.sorted():
            log.warning("nginx reload: %s", d.format())
        self.loaded = loaded
        self._update_health(loaded)  # before the new workers fork
        for addr in [a for a in list(self.masters) + list(self.failed) if a not in loaded.routes]:
            self.failed.pop(addr, None)
            master = self.masters.pop(addr, None)
            if master is not None:
                self._retire(master.pids)
                master.pids = []
                await self._call(_close_sockets, master)
                log.info("L7 listener %s:%d removed", *addr)
        for addr, route in loaded.routes.items():
            master = self.masters.get(addr)
            if master is None:
                await self._open(addr, route, loaded.workers)
                continue
            health.ramp_added(master, route)  # servers the reload added slow-start
            master.balancer_factory = _fixed(route)
            if loaded.workers != master.workers:  # one SO_REUSEPORT socket per worker
                log.warning("%s:%d: worker_processes changes on restart only", *addr)
            await self._replace(addr, master, route)
        if loaded.has_stream and self.stream is None:
            await self._start_stream()
        elif self.stream is not None and not loaded.has_stream:
            await self._call(self.stream.stop)
            self.stream = None
        elif self.stream is not None:
            self.stream.reload()  # it re-reads the file and keeps its config on errors
        self.stats.reloads_ok += 1
        self.stats.last_error = ""
        log.info("nginx configuration %s reloaded", self.path)
        return True

    async def stop(self) -> None:
        """Drain: workers stop accepting and finish in-flight requests, then exit."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        for addr, master in list(self.masters.items()):
            try:
                await self._call(master.stop, True, STOP_TIMEOUT)
            except Exception:
                log.exception("L7 listener %s:%d: stop failed", *addr)
        self.masters = {}
        if self.stream is not None:
            with contextlib.suppress(Exception):
                await self._call(self.stream.stop)
            self.stream = None
        await self._call(_reap_all, dict(self._draining), STOP_TIMEOUT)
        self._draining = {}
        if self.health is not None:
            await self.health.aclose()
            self.health = None
        self._pool.shutdown(wait=True)
        log.info("L7 proxy stopped")

    # -- state -------------------------------------------------------------------------
    def serving(self) -> bool:
        """Every listener open with a live worker, and the stream process alive."""
        if self.loaded is None or self.failed:
            return False
        if self._busy == 0:
            self._reap()
        if any(not m.pids for m in self.masters.values()):
            return False
        return self.stream is None or bool(self.stream.pid)

    def pids(self) -> list[int]:
        """Every process of ours that is running: workers, draining workers, stream."""
        out = [pid for m in self.masters.values() for pid in m.pids]
        out += list(self._draining)
        if self.stream is not None and self.stream.pid:
            out.append(self.stream.pid)
        return out

    def status(self) -> dict[str, Any]:
        listeners = []
        for (host, port), master in sorted(self.masters.items()):
            route = self.loaded.routes.get((host, port)) if self.loaded is not None else None
            listeners.append(
                {
                    "listen": f"{host}:{port}",
                    "workers": list(master.pids),
                    "configured_workers": master.workers,
                    "upstreams": _upstreams(route) if route is not None else [],
                }
            )
        for (host, port), error in sorted(self.failed.items()):
            listeners.append({"listen": f"{host}:{port}", "workers": [], "error": error})
        health = None
        if self.health_snapshot is not None:
            try:
                health = self.health_snapshot()
            except Exception as exc:  # a status call must not fail for it
                health = {"error": str(exc)}
        return {
            "config_file": self.path,
            "serving": self.serving(),
            "listeners": listeners,
            "stream_pid": self.stream.pid if self.stream is not None else None,
            "draining_workers": sorted(self._draining),
            "reloads": {
                "ok": self.stats.reloads_ok,
                "failed": self.stats.reloads_failed,
                "last_error": self.stats.last_error,
            },
            "worker_exits": self.stats.worker_exits,
            "respawns": self.stats.respawns,
            "health": health,
        }

    # -- internals ---------------------------------------------------------------------
    def _update_health(self, loaded: Loaded) -> None:
        """The checks of this config (unchanged ones keep their state and their task)."""
        targets = health.route_targets(list(loaded.routes.values()))
        if self.health is None:
            if not targets:
                return
            self.health = health.HealthHub(asyncio.get_running_loop(), table=self.health_table)
        self.health.update(targets)

    def _health_rows(self) -> list[dict[str, Any]]:
        return self.health.snapshot() if self.health is not None else []

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking master operation on the L7 thread."""
        self._busy += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, fn, *args)
        finally:
            self._busy -= 1

    async def _open(self, addr: Addr, route: Route, workers: int) -> None:
        master = Master(
            route.config,
            host=addr[0],
            port=addr[1],
            workers=workers,
            balancer_factory=_fixed(route),
            health_table=self.health_table,
        )
        try:
            master.socks = await self._call(bind_freebind, addr[0], addr[1], workers)
            await self._call(master.start)
        except (OSError, RuntimeError) as exc:
            if master.pids:  # some workers started before another failed
                self._retire(master.pids)
            await self._call(_close_sockets, master)
            self.failed[addr] = str(exc)
            log.error("L7 listener %s:%d cannot start: %s (retried)", addr[0], addr[1], exc)
            return
        self.failed.pop(addr, None)
        self.masters[addr] = master

    async def _replace(self, addr: Addr, master: Master, route: Route | None) -> None:
        """New workers on the same sockets, the old ones drain (reaped by the poll)."""
        try:
            old = await self._call(master.replace_workers, route.config if route else None)
        except (OSError, RuntimeError) as exc:
            log.error("L7 listener %s:%d: new workers failed: %s", addr[0], addr[1], exc)
            return
        self._retire(old, signal_them=False)  # replace_workers signalled them

    async def _start_stream(self) -> None:
        from hakeeper.proxy.run import read_stream_file  # noqa: PLC0415
        from hakeeper.proxy.stream import StreamProcess  # noqa: PLC0415

        # its loader drops the ignored-directive warnings the daemon already logged
        stream = StreamProcess(self.path, read_stream_file)
        try:
            await self._call(stream.start)
        except RuntimeError as exc:
            log.error("nginx stream {}: %s", exc)
            return
        self.stream = stream

    def _retire(self, pids: list[int], *, signal_them: bool = True) -> None:
        """Tell workers to drain (SIGTERM) and reap them later from the poll."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        for pid in pids:
            if signal_them:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            self._draining[pid] = deadline

    def _reap(self) -> list[Addr]:
        """Non-blocking: forget exited workers; returns listeners that lost one."""
        lost: list[Addr] = []
        for addr, master in self.masters.items():
            alive = [pid for pid in master.pids if not _exited(pid)]
            if len(alive) != len(master.pids):
                self.stats.worker_exits += len(master.pids) - len(alive)
                log.error(
                    "L7 listener %s:%d: %d worker(s) exited",
                    addr[0],
                    addr[1],
                    len(master.pids) - len(alive),
                )
                master.pids = alive
            if len(master.pids) < master.workers:
                lost.append(addr)
        now = time.monotonic()
        for pid, deadline in list(self._draining.items()):
            if _exited(pid):
                del self._draining[pid]
            elif now > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.stream is not None and self.stream.pid and _exited(self.stream.pid):
            log.error("nginx stream {} process exited")
            self.stream.pid = 0
        return lost

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                await self._poll_once()
            except Exception:  # never let supervision die
                log.exception("L7 supervision failed")

    async def _poll_once(self) -> None:
        if self._busy:
            return
        lost = self._reap()
        now = time.monotonic()
        loaded = self.loaded
        if loaded is None:
            return
        for addr in lost:
            if now - self._last_respawn.get(addr, -RESPAWN_BACKOFF) < RESPAWN_BACKOFF:
                continue
            master = self.masters.get(addr)
            if master is None:
                continue
            self._last_respawn[addr] = now
            self.stats.respawns += 1
            log.warning("L7 listener %s:%d: replacing its workers", addr[0], addr[1])
            await self._replace(addr, master, None)
        for addr in list(self.failed):
            if now - self._last_respawn.get(addr, -RESPAWN_BACKOFF) < RESPAWN_BACKOFF:
                continue
            self._last_respawn[addr] = now
            route = loaded.routes.get(addr)
            if route is not None:
                await self._open(addr, route, loaded.workers)


def _exited(pid: int) -> bool:
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done != 0


def _close_sockets(master: Master) -> None:
    for s in master.socks:
        s.close()
    master.socks = []


def _reap_all(pids: dict[int, float], timeout: float) -> None:
    """At exit: wait for draining workers, killing what is left after `timeout`."""
    deadline = time.monotonic() + timeout
    pending = set(pids)
    while pending:
        pending = {pid for pid in pending if not _exited(pid)}
        if not pending:
            return
        if time.monotonic() > deadline:
            for pid in pending:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            return
        time.sleep(0.02)


def _upstreams(route: Route) -> list[dict[str, Any]]:
    """The peers a listener's fast-path balancer was configured with (cheap, config-side;
    live per-worker health is in the workers: see `health_snapshot`)."""
    out: list[dict[str, Any]] = []
    for balancer in route_balancers(route):  # a routed listener: one per upstream it uses
        peers = getattr(balancer, "peers", None) or getattr(route.config, "peers", None)
        for p in peers or ():
            out.append({"peer": f"{getattr(p, 'host', '?')}:{getattr(p, 'port', '?')}"})
    return out
