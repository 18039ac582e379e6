"""nginx `stream { }` servers on the userspace L4 proxy, with nginx's balancing and retries.

Follows ngx_stream_proxy_module / ngx_stream_upstream_round_robin (facts in
../shared/anchors/dataplane.md 1.4, 1.5, 1.7): each new TCP connection (or UDP client
flow) gets a peer from the upstream's method (smooth weighted round-robin by default,
`least_conn`, `hash KEY [consistent]`, `random [two]`) through
`hakeeper.balance.upstream.UpstreamGroup`; a failed or timed-out connect
(`proxy_connect_timeout`) is a failed try for passive health (`max_fails` /
`fail_timeout`, effective weight cut) and, when `proxy_next_upstream on` and the
`_tries` / `_timeout` budget allows, the connection moves to the next peer; when no peer
is left the client connection is closed, as nginx does. A session that ends frees its
peer as a success (the `conns` count for least_conn / max_conns). As in nginx, the first
EOF ends a TCP session unless `proxy_half_close on`. A session also ends after
`proxy_timeout` without data either way: UDP flows by the relay's idle timer, TCP
sessions by a sweep that reads each socket's last send/receive time from TCP_INFO (so the
relay's hot path keeps no per-read timestamps).

The relay is the userspace data plane's (`hakeeper.dataplane.userspace` TcpService /
UdpService); this module plugs nginx's choice into its `ServiceCore` hooks. `StreamRunner`
reconciles the listeners with a config (on reload: kept listeners get a fresh balancer,
as new nginx workers do, established connections finish on the old one; removed ones stop
accepting); `StreamProcess` runs it in a child process of `hakeeper run --nginx` (so the
HTTP workers forked later never hold the stream sockets) and reloads it on SIGHUP.
nginx Plus's active checks (`health_check` in a stream server) run on the runner's loop
(`proxy.health.HealthHub`, once per upstream server and check): a server is skipped while
any check bound to it says down, a reload keeps the state of unchanged checks, and when
every server is down a new client is closed ("no live upstreams").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import select
import signal
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

from hakeeper.balance.upstream import UpstreamGroup
from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.nginx import Upstream
from hakeeper.conf.nginx_stream import StreamConfig, StreamServer
from hakeeper.dataplane.relay import TcpService, open_listener
from hakeeper.dataplane.userspace import Backend, BackendState, L4Service, ServiceCore
from hakeeper.dataplane.userspace_udp import UdpFlow, UdpService
from hakeeper.proxy.from_nginx import balanced_server
from hakeeper.proxy.health import GroupBinding, HealthHub, stream_targets

log = logging.getLogger("hakeeper.stream")

#: Variables a stream `hash` key may use here (others are reported by `stream_services`).
KEY_VARIABLES = ("$remote_addr", "$remote_port")


@dataclass(frozen=True, slots=True)
class StreamService:
    """One stream listener: the relay's spec plus the nginx server and upstream behind it."""

    spec: L4Service
    server: StreamServer
    upstream: Upstream

    @property
    def key(self) -> tuple[str, str, int]:
        return self.spec.key


def stream_services(stream: StreamConfig, diags: Diagnostics) -> list[StreamService]:
    """What `hakeeper run --nginx` serves for `stream { }`: one service per `listen`."""
    out: list[StreamService] = []
    for server in stream.servers:
        upstream = stream.target(server)
        if upstream is None:
            continue  # the reader reported it
        if upstream.method in ("hash", "hash_consistent"):
            rest = upstream.hash_key
            for var in KEY_VARIABLES:
                rest = rest.replace(var, "")
            if "$" in rest:
                diags.warning(
                    upstream.loc,
                    f'hash key "{upstream.hash_key}": only {", ".join(KEY_VARIABLES)} are '
                    "expanded; other variables hash as empty text",
                )
        backends = tuple(Backend(s.host, s.port, s.weight) for s in upstream.servers)
        for listen in server.listens:
            spec = L4Service(
                host=listen.host,
                port=listen.port,
                protocol="UDP" if listen.udp else "TCP",
                scheduler="rr",  # unused: NginxStreamCore chooses
                backends=backends,
                connect_timeout=server.connect_timeout,
                udp_idle_timeout=server.timeout,
                freebind=False,
            )
            out.append(StreamService(spec, server, upstream))
    return out


def make_group(upstream: Upstream, rng: random.Random | None = None) -> UpstreamGroup[str]:
    """The nginx balancer of an upstream, its peers named by backend key ("host:port")."""
    entries = []
    for i, s in enumerate(upstream.servers):
        key = Backend(s.host, s.port).key
        entries.append((key, balanced_server(i, key, s, f"{s.host}:{s.port}")))
    return UpstreamGroup(upstream.method, entries, rng=rng)


class NginxStreamCore(ServiceCore):
    """ServiceCore whose pick is nginx's upstream choice, with passive health and retries."""

    hooks = True

    def __init__(self, service: StreamService, rng: random.Random) -> None:
        self.service = service
        self.group = make_group(service.upstream, rng)
        self.tries = self.group.count()
        if service.server.next_upstream_tries:
            self.tries = min(self.tries, service.server.next_upstream_tries)
        self.key_template = (
            service.upstream.hash_key
            if service.upstream.method in ("hash", "hash_consistent")
            else ""
        )
        self.live = 0  # picks not yet released
        #: the core this one replaced at a reload, while it still has live sessions: the
        #: relay releases through the listener's current core, and a session picked by an
        #: older one is passed on to it (told apart by its BackendState object)
        self.previous: NginxStreamCore | None = None
        super().__init__(service.spec, rng)

    def succeed(self, old: ServiceCore | None) -> None:
        """Become the listener's core after `old`; keep the older cores that have sessions."""
        chain = old if isinstance(old, NginxStreamCore) else None
        while chain is not None and chain.live <= 0:
            chain = chain.previous
        self.previous = chain
        while chain is not None:
            nxt = chain.previous
            while nxt is not None and nxt.live <= 0:
                nxt = nxt.previous
            chain.previous = nxt
            chain = nxt

    def _configure(self, spec: L4Service, first: bool) -> None:
        super()._configure(spec, first)
        self.needs_flow = bool(self.key_template)  # the relay then passes the peer address

    def _key(self, client: tuple[str, int] | None) -> str:
        if not self.key_template or client is None:
            return ""
        host = client[0].partition("%")[0]
        with contextlib.suppress(ValueError):
            host = str(ip_address(host))
        return self.key_template.replace("$remote_addr", host).replace(
            "$remote_port", str(client[1])
        )

    def pick(
        self,
        client: tuple[str, int] | None,
        now: float,
        exclude: frozenset[str] | set[str] = frozenset(),
    ) -> BackendState | None:
        chosen = self.group.pick(self._key(client), exclude, now)
        if chosen is None:
            self.no_backend += 1
            log.error("%s: no live upstreams", self.service.upstream.name)
            return None
        st = self.by_key[chosen]
        st.connections += 1
        self.live += 1
        return st

    def released(self, backend: BackendState, failed: bool, now: float) -> None:
        owner: NginxStreamCore | None = self
        while owner is not None and owner.by_key.get(backend.key) is not backend:
            owner = owner.previous
        if owner is not None:
            owner.live -= 1
            owner.group.report(backend.key, not failed, now)

    def may_retry(self, tries: int, started: float, now: float) -> bool:
        server = self.service.server
        if not server.next_upstream or tries >= self.tries:
            return False
        timeout = server.next_upstream_timeout
        return not (timeout and now - started >= timeout)


# ------------------------------------------------------------------------------------ UDP


class _StreamFlow(UdpFlow):
    """A UDP flow whose end frees its nginx peer (a socket that cannot open is a failure)."""

    __slots__ = ("failed",)

    async def open(self) -> None:
        self.failed = True
        await super().open()
        if not self.closed:
            self.failed = False

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        core = self.service.core
        if core.hooks:
            core.released(self.backend, getattr(self, "failed", False), self.service.loop.time())


class StreamUdpService(UdpService):
    """The data plane's UDP relay with flows that report to the nginx balancer."""

    flow_class = _StreamFlow


# ------------------------------------------------------------------------- proxy_timeout

#: struct tcp_info: tcpi_last_data_sent at byte 44, tcpi_last_data_recv at byte 52 (ms ago).
_TCP_INFO_LAST = struct.Struct("=I4xI")
_TCP_INFO_LEN = 104


def idle_seconds(sock: Any) -> float | None:
    """Seconds since `sock` last sent or received data (the kernel's TCP_INFO), or None."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    except (OSError, AttributeError, ValueError):
        return None
    if len(info) < 56:
        return None
    sent, received = _TCP_INFO_LAST.unpack_from(info, 44)
    return float(min(sent, received)) / 1000.0


def session_idle(conn: Any) -> float | None:
    """How long a relayed TCP session saw no data either way (None: not established)."""
    client, backend = getattr(conn, "cs", None), getattr(conn, "bs", None)
    if client is None or backend is None:
        return None
    a, b = idle_seconds(client), idle_seconds(backend)
    if a is None or b is None:
        return None
    return min(a, b)


# --------------------------------------------------------------------------------- runner


class StreamRunner:
    """The stream listeners of one process; `apply()` reconciles them with a config."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None = None, *, rng: random.Random | None = None
    ) -> None:
        self._loop = loop
        self.rng = rng if rng is not None else random.Random()
        self.tcp: dict[tuple[str, str, int], TcpService] = {}
        self.udp: dict[tuple[str, str, int], StreamUdpService] = {}
        self.errors: dict[tuple[str, str, int], str] = {}
        self._idle_timer: asyncio.TimerHandle | None = None
        #: TCP sessions closed by proxy_timeout
        self.timed_out = 0
        self.health: HealthHub | None = None  # active health checks, made on first use

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def core(self, key: tuple[str, str, int]) -> NginxStreamCore:
        relay = self.tcp.get(key) or self.udp[key]
        assert isinstance(relay.core, NginxStreamCore)
        return relay.core

    def sockname(self, key: tuple[str, str, int]) -> tuple[str, int]:
        relay = self.tcp.get(key) or self.udp[key]
        return relay.sockname

    async def apply(self, services: Sequence[StreamService]) -> None:
        """Open, keep (with a fresh balancer) or close listeners to match `services`."""
        wanted = {s.key: s for s in services}
        self.errors = {}
        for key in [k for k in self.tcp if k not in wanted]:
            await self.tcp.pop(key).stop()
        for key in [k for k in self.udp if k not in wanted]:
            self.udp.pop(key).stop()
        cores: list[NginxStreamCore] = []
        for key, service in wanted.items():
            core = NginxStreamCore(service, self.rng)
            cores.append(core)
            tcp = self.tcp.get(key)
            udp = self.udp.get(key)
            if tcp is not None:
                core.succeed(tcp.core)
                tcp.core = core  # new connections only; live ones release to the old one
                tcp.half_close = service.server.half_close
                continue
            if udp is not None:
                core.succeed(udp.core)
                udp.core = core
                continue
            try:
                if key[0] == "TCP":
                    tcp = TcpService(core, self.loop)
                    tcp.half_close = service.server.half_close
                    await tcp.start()
                    self.tcp[key] = tcp
                else:
                    udp = StreamUdpService(core, self.loop)
                    await udp.start(open_listener(service.spec, socket.SOCK_DGRAM))
                    self.udp[key] = udp
            except OSError as e:
                self.errors[key] = str(e)
                log.error("stream %s %s:%d: cannot listen: %s", *key, e)
        self._check_health(cores)
        self._arm_idle()

    def _check_health(self, cores: Sequence[NginxStreamCore]) -> None:
        """Point the checks at the new cores' balancers (unchanged checks keep state)."""
        if self.health is None:
            if not any(c.service.server.health_check for c in cores):
                return
            self.health = HealthHub(self.loop)  # its own rng: jitter must not shift picks
        binding = GroupBinding(self.health)
        targets = []
        for core in cores:
            check = core.service.server.health_check
            if check is None:
                continue
            for peer, target in stream_targets(core.service.upstream, core.group, check):
                binding.bind(core.group, peer, target.key)
                targets.append(target)
        self.health.on_change = binding.on_change
        self.health.update(targets)
        binding.apply_all()

    def _arm_idle(self) -> None:
        """One timer for every TCP listener's proxy_timeout, at a quarter of the shortest."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        timeouts = [_timeout(tcp) for tcp in self.tcp.values()]
        if timeouts:
            step = min(max(min(timeouts) / 4, 0.05), 30.0)
            self._idle_timer = self.loop.call_later(step, self._idle_tick)

    def _idle_tick(self) -> None:
        self._idle_timer = None
        self.sweep_idle()
        self._arm_idle()

    def sweep_idle(self) -> int:
        """Close (FIN both ways) sessions without data for proxy_timeout; how many."""
        closed = 0
        for tcp in self.tcp.values():
            limit = _timeout(tcp)
            for conn in list(tcp.clients):
                idle = session_idle(conn)
                if idle is not None and idle >= limit:
                    log.info("%s: session timed out after %.1f s idle", tcp.name, idle)
                    conn.close()
                    closed += 1
        self.timed_out += closed
        return closed

    async def close(self) -> None:
        """Stop every listener and drop relayed connections."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self.health is not None:
            await self.health.aclose()
        for tcp in self.tcp.values():
            await tcp.stop(drop=True)
        for udp in self.udp.values():
            udp.stop()
        self.tcp.clear()
        self.udp.clear()


def _timeout(tcp: TcpService) -> float:
    core = tcp.core
    return core.service.server.timeout if isinstance(core, NginxStreamCore) else 600.0


# -------------------------------------------------------------------------------- process

Loader = Callable[[str, Diagnostics], StreamConfig]


async def serve_stream(path: str, loader: Loader, ready: Callable[[str], None]) -> None:
    """Serve the file's stream servers until SIGTERM/SIGINT; SIGHUP re-reads the file."""
    loop = asyncio.get_running_loop()
    runner = StreamRunner(loop)
    stop = asyncio.Event()
    hup = asyncio.Event()

    def services() -> list[StreamService] | None:
        diags = Diagnostics()
        config = loader(path, diags)
        found = stream_services(config, diags)
        for d in diags.sorted():
            log.log(logging.ERROR if d.severity == "error" else logging.WARNING, "%s", d.format())
        return None if diags.has_errors else found

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    first = services()
    await runner.apply(first or [])
    if first is None or runner.errors:
        ready("; ".join(runner.errors.values()) or "configuration errors")
        await runner.close()
        return
    ready("")
    while not stop.is_set():
        waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(hup.wait())}
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            w.cancel()
        if hup.is_set() and not stop.is_set():
            hup.clear()
            found = services()
            if found is None:
                log.error("stream reload of %s refused; old config kept", path)
                continue
            await runner.apply(found)
            log.info("stream servers reloaded from %s", path)
    await runner.close()


class StreamProcess:
    """The child process that serves `stream { }` for `hakeeper run --nginx`."""

    def __init__(self, path: str, loader: Loader) -> None:
        self.path = path
        self.loader = loader
        self.pid = 0

    def start(self, ready_timeout: float = 10.0, inherited: Sequence[socket.socket] = ()) -> None:
        """Fork, serve, and return once every listener is open (RuntimeError otherwise).

        `inherited`: the parent's other listening sockets, closed in the child so that it
        never keeps them open (a stream block added by a reload forks after the HTTP ones).
        """
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                os.close(r)
                for sock in inherited:
                    sock.close()
                code = _child_main(self.path, self.loader, w)
            finally:
                os._exit(code)
        os.close(w)
        self.pid = pid
        try:
            ok, _, _ = select.select([r], [], [], ready_timeout)
            message = os.read(r, 4096).decode(errors="replace") if ok else "no answer"
        finally:
            os.close(r)
        if message != "ok":
            self.stop()
            raise RuntimeError(f"stream servers did not start: {message}")

    def reload(self) -> None:
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.pid:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while True:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, 0)
                break
            time.sleep(0.01)
        self.pid = 0


def _child_main(path: str, loader: Loader, ready_fd: int) -> int:
    import uvloop  # noqa: PLC0415 (only in the child)

    from hakeeper.proxy.server import (  # noqa: PLC0415
        _die_with_parent,
        _forget_parent_signals,
        _release_inherited_fds,
    )

    _die_with_parent()
    # forked from the daemon (`run -f ... --nginx ...`): drop its signal wiring and fds
    _forget_parent_signals()
    _release_inherited_fds({ready_fd})

    def ready(error: str) -> None:
        os.write(ready_fd, (error or "ok").encode())
        os.close(ready_fd)

    try:
        uvloop.run(serve_stream(path, loader, ready))
    except Exception:  # pragma: no cover - logged; the parent sees the pipe close
        log.exception("stream process failed")
        return 1
    return 0


__all__ = [
    "NginxStreamCore",
    "StreamProcess",
    "StreamRunner",
    "StreamService",
    "make_group",
    "serve_stream",
    "stream_services",
]
