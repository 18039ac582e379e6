"""Active health checks for L7 upstreams (nginx Plus `health_check`), run in each worker.

The rules are nginx Plus's (ngx_http_upstream_hc_module docs; syntax in
`hakeeper.conf.nginx_health`): each server of an upstream whose location has a
`health_check` gets `GET uri HTTP/1.0` every `interval` (+ a random `jitter`), on its own
address or on `port=`; a connect error, a timeout, a malformed answer or a response the
`match` rejects (default: status not 2xx/3xx) is a failure. `fails` consecutive failures
mark the server down, `passes` consecutive successes mark it up again; with `mandatory` a
server starts down and its first pass brings it up. Down/up go to the balancer through
`UpstreamBalancer.set_health`, which also starts the `slow_start` ramp of a server that
comes back. The request carries `Host: <upstream name>` (nginx's `$proxy_host`).

Design: every worker process runs its own checks on its own loop against its own copy of
the balancer (like nginx Plus without a shared `zone`: N workers probe N times). This
needs no state shared across processes, and a worker's picks can never disagree with the
checks it relies on. `PeerHealth` is the pure counting part (injected `now`); `attach()`
is the single hook the worker calls; `snapshot()` gives the state and counters for
`hakeeper status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from hakeeper.balance.upstream import UpstreamGroup
from hakeeper.check.probe_stream import parse_response
from hakeeper.conf.nginx_health import HealthCheck

if TYPE_CHECKING:
    from hakeeper.proxy.config import ProxyConfig
    from hakeeper.proxy.engine import Engine
    from hakeeper.proxy.from_nginx import Route

log = logging.getLogger("hakeeper.proxy.health")

#: At most this much of a response is read (headers + the start of the body).
MAX_RESPONSE = 256 * 1024
USER_AGENT = "hakeeper-health-check"


# -- the pure part --------------------------------------------------------------------------


class PeerHealth:
    """Consecutive-result counting for one server; `on_result` returns the new verdict
    (True = up, False = down) when it changes, else None."""

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

    def __init__(self, fails: int, passes: int, mandatory: bool) -> None:
        self.fails = fails
        self.passes = passes
        self.up = not mandatory
        self.pending_first = mandatory  # mandatory: the first pass brings it up
        self.in_row_fail = 0
        self.in_row_pass = 0
        self.checks = 0
        self.failures = 0
        self.last_detail = "not checked yet"
        self.changed_at: float | None = None

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


def _headers(head: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return out


def evaluate(check: HealthCheck, raw: bytes) -> tuple[bool, str]:
    """A raw HTTP response against the check's `match`: (passed, reason)."""
    resp = parse_response(raw)
    if resp is None:
        return False, "malformed HTTP response"
    why = check.match.test(resp.status, _headers(resp.head), resp.body)
    if why is not None:
        return False, why
    return True, f"HTTP status {resp.status}"


def build_request(uri: str, host: str) -> bytes:
    return (
        f"GET {uri} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")


_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$")


# -- the adapter ----------------------------------------------------------------------------


async def http_get(host: str, port: int, request: bytes, timeout: float) -> bytes:
    """One request on a fresh connection; the response bytes (to EOF, Content-Length or
    MAX_RESPONSE). Raises OSError / TimeoutError."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request)
            data = bytearray()
            want = -1
            while len(data) < MAX_RESPONSE:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
                if want < 0:
                    end = data.find(b"\r\n\r\n")
                    if end >= 0:
                        m = _CONTENT_LENGTH.search(bytes(data[:end]))
                        want = end + 4 + int(m.group(1)) if m else MAX_RESPONSE
                if 0 <= want <= len(data):
                    break
            return bytes(data)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@dataclass(frozen=True, slots=True)
class CheckedPeer:
    """One server under check: its balancer name and where the probe goes."""

    name: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class UpstreamChecks:
    """The checks of one upstream group: one task per server."""

    def __init__(
        self,
        name: str,
        group: UpstreamGroup[Any],
        check: HealthCheck,
        loop: asyncio.AbstractEventLoop,
        rng: random.Random,
    ) -> None:
        self.name = name
        self.group = group
        self.check = check
        self.loop = loop
        self.rng = rng
        self.request = build_request(check.uri, name)
        self.peers: list[CheckedPeer] = []
        self.health: dict[str, PeerHealth] = {}
        for item, peer in group.state():
            host = str(getattr(item, "host", ""))
            port = check.port or int(getattr(item, "port", 0))
            if not host or not port:
                continue
            cp = CheckedPeer(peer.name, host, port)
            self.peers.append(cp)
            ph = PeerHealth(check.fails, check.passes, check.mandatory)
            self.health[cp.name] = ph
            group.balancer.set_health(cp.name, ph.up, loop.time())
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for cp in self.peers:
            self.tasks.append(self.loop.create_task(self._run(cp), name=f"hc {cp.address}"))

    def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        self.tasks.clear()

    async def probe(self, cp: CheckedPeer) -> tuple[bool, str]:
        try:
            raw = await http_get(cp.host, cp.port, self.request, self.check.probe_timeout)
        except TimeoutError:
            return False, "timed out"
        except OSError as exc:
            return False, f"connect/read error: {exc.strerror or exc}"
        return evaluate(self.check, raw)

    async def _run(self, cp: CheckedPeer) -> None:
        ph = self.health[cp.name]
        while True:
            try:
                ok, detail = await self.probe(cp)
            except Exception as exc:  # a bug in a probe must not stop the checks
                log.exception("health check of %s failed", cp.address)
                ok, detail = False, f"probe error: {exc}"
            now = self.loop.time()
            first = ph.pending_first  # mandatory's first pass: no slow start at start-up
            verdict = ph.on_result(ok, detail, now)
            if verdict is not None:
                self.group.balancer.set_health(cp.name, verdict, now, ramp=not first)
                log.warning(
                    "upstream %s server %s is %s (%s)",
                    self.name,
                    cp.address,
                    "up" if verdict else "down",
                    detail,
                )
            jitter = self.check.jitter * self.rng.random() if self.check.jitter else 0.0
            await asyncio.sleep(self.check.interval + jitter)

    def snapshot(self) -> list[dict[str, Any]]:
        now = self.loop.time()
        out = []
        for cp in self.peers:
            ph = self.health[cp.name]
            out.append(
                {
                    "upstream": self.name,
                    "server": cp.address,
                    "state": "up" if ph.up else "down",
                    "checks": ph.checks,
                    "failures": ph.failures,
                    "fails_in_row": ph.in_row_fail,
                    "passes_in_row": ph.in_row_pass,
                    "last": ph.last_detail,
                    "since": None if ph.changed_at is None else round(now - ph.changed_at, 3),
                    "weight": round(self.group.balancer.weight_now(cp.name, now), 3),
                }
            )
        return out


class HealthChecks:
    """Every upstream check of one worker."""

    def __init__(self, upstreams: list[UpstreamChecks]) -> None:
        self.upstreams = upstreams

    def start(self) -> None:
        for u in self.upstreams:
            u.start()

    def close(self) -> None:
        for u in self.upstreams:
            u.close()

    def snapshot(self) -> list[dict[str, Any]]:
        return [row for u in self.upstreams for row in u.snapshot()]


_CURRENT: list[HealthChecks] = []


def attach(engine: Engine, rng: random.Random | None = None) -> HealthChecks | None:
    """Start the checks of every upstream group the engine (or its routed children) uses
    that carries a `health_check`; None when there is none. Call `close()` at shutdown."""
    groups: dict[int, UpstreamGroup[Any]] = {}
    for e in (engine, *engine.children.values()):
        b = e.balancer
        if isinstance(b, UpstreamGroup) and b.health_check is not None:
            groups.setdefault(id(b), b)
    if not groups:
        return None
    r = rng if rng is not None else random.Random()
    checks = HealthChecks(
        [
            UpstreamChecks(g.name, g, g.health_check, engine.loop, r)
            for g in groups.values()
            if g.health_check is not None
        ]
    )
    checks.start()
    _CURRENT.append(checks)
    return checks


def detach(checks: HealthChecks) -> None:
    checks.close()
    with contextlib.suppress(ValueError):
        _CURRENT.remove(checks)


def snapshot() -> list[dict[str, Any]]:
    """The state and counters of every health-checked server in this process."""
    return [row for c in _CURRENT for row in c.snapshot()]


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
