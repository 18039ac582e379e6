"""Listeners and worker processes for the L7 proxy: `worker_processes N|auto`, hitless reload.

Follows nginx's process model (master + N workers, `listen ... reuseport` giving each
worker its own SO_REUSEPORT socket so the kernel spreads connections) and HAProxy's
seamless reload (`expose-fd listeners`, management.txt section 4.4): the listening
sockets belong to the master and outlive workers. A reload forks new workers on the
*same* sockets, waits until they are serving, then asks the old ones to drain (SIGTERM:
stop accepting, finish in-flight requests, exit); connections waiting in a socket's
accept queue are picked up by the new worker on that socket, so none is refused.
`send_listeners`/`recv_listeners` pass the sockets over a UNIX socket (SCM_RIGHTS) for an
upgrade that re-executes the binary. Workers run `Engine` on uvloop. Active health checks
run in the master (`proxy.health.HealthHub`); a Master given a `health_table` passes it to
its workers, which follow the verdicts in it (`health.follow`); without one each worker
checks for itself (`health.attach`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hakeeper.proxy import health
from hakeeper.proxy.balancer import Balancer
from hakeeper.proxy.config import ProxyConfig
from hakeeper.proxy.engine import Engine
from hakeeper.proxy.health_shared import HealthTable
from hakeeper.proxy.tls import drain, start_listener

log = logging.getLogger(__name__)

BalancerFactory = Callable[[ProxyConfig], Balancer]


def worker_count(spec: str | int) -> int:
    """`worker_processes N|auto`: auto = the CPUs this process may run on."""
    if isinstance(spec, int) or spec.isdigit():
        n = int(spec)
        if n < 1:
            raise ValueError("worker_processes must be at least 1")
        return n
    if spec == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - non-Linux
            return max(1, os.cpu_count() or 1)
    raise ValueError(f"invalid worker_processes {spec!r}")


IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux <linux/in.h>


def bind_listeners(
    host: str,
    port: int,
    count: int,
    reuse_port: bool = True,
    backlog: int = 511,
    *,
    freebind: bool = False,
) -> list[socket.socket]:
    """`count` listening sockets on host:port (SO_REUSEPORT each), or one shared socket;
    `freebind`: the address may not be on this host yet (a VIP on a BACKUP node)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    try:
        for _ in range(count if reuse_port else 1):
            s = socket.socket(family, socket.SOCK_STREAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if freebind:
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            s.bind((host, port))
            port = s.getsockname()[1]  # port 0: the others join the first's port
            s.listen(backlog)
            s.setblocking(False)
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


def _die_with_parent() -> None:
    """Linux PR_SET_PDEATHSIG: SIGTERM this worker if the master goes away."""
    try:
        import ctypes  # noqa: PLC0415

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _forget_parent_signals() -> None:
    """A worker forked from the asyncio daemon (`hakeeper run -f ... --nginx ...`) inherits
    its Python signal handlers and wakeup fd: a signal must not be written into the
    daemon's loop. SIGHUP is ignored (nginx workers ignore it too; the master reloads)."""
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _release_inherited_fds(keep: set[int]) -> None:
    """A worker forked from a daemon inherits all its fds (VRRP and checker sockets, client
    connections of the control socket, pipes, other listeners): point each one it does not
    need at /dev/null, so those connections/files are held by the daemon alone (a client
    waiting for EOF is not kept waiting by a worker). dup2 rather than close: the fd numbers
    stay taken, so an inherited Python object closing its fd later cannot hit one of ours."""
    try:
        fds = [int(x) for x in os.listdir("/proc/self/fd")]
    except OSError:  # pragma: no cover - no /proc
        return
    null = os.open(os.devnull, os.O_RDWR)
    for fd in fds:
        if fd > 2 and fd != null and fd not in keep:
            with contextlib.suppress(OSError):
                os.dup2(null, fd, inheritable=False)
    os.close(null)


def tune_gc() -> None:
    """Worker GC settings: move start-up objects out of the collector's sight and collect
    less often (connections free themselves by reference counting; see connection_lost)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def send_listeners(chan: socket.socket, socks: Sequence[socket.socket]) -> None:
    """Hand listening sockets to another process (SCM_RIGHTS), with their addresses."""
    meta = json.dumps([list(s.getsockname()[:2]) for s in socks]).encode()
    socket.send_fds(chan, [meta], [s.fileno() for s in socks])


def recv_listeners(chan: socket.socket, max_fds: int = 64) -> list[socket.socket]:
    """The receiving side of `send_listeners`."""
    _meta, fds, _flags, _addr = socket.recv_fds(chan, 65536, max_fds)
    out = []
    for fd in fds:
        s = socket.socket(fileno=fd)
        s.setblocking(False)
        out.append(s)
    return out


async def serve(
    config: ProxyConfig,
    socks: Sequence[socket.socket],
    balancer: Balancer | None = None,
    on_ready: Callable[[Engine], None] | None = None,
    drain_timeout: float = 30.0,
    *,
    health_table: HealthTable | None = None,
) -> Engine:
    """Run one worker until SIGTERM (drain) or SIGINT/SIGQUIT (hard stop)."""
    loop = asyncio.get_running_loop()
    tune_gc()
    engine = Engine(config, balancer, loop)
    # active health checks: the master's verdicts, or (no master checker) our own probes
    followed = health.follow(engine, health_table) if health_table is not None else None
    checks = health.attach(engine) if health_table is None else None
    for s in socks:
        # a dup, so closing our listener on drain leaves the master's socket open;
        # TLS when the config says `listen ... ssl` (proxy/tls.py)
        await start_listener(engine, s.dup())
    stop = asyncio.Event()
    mode = {"graceful": True}

    def graceful() -> None:
        stop.set()

    def hard() -> None:
        mode["graceful"] = False
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, graceful)
    loop.add_signal_handler(signal.SIGINT, hard)
    loop.add_signal_handler(signal.SIGQUIT, hard)
    if on_ready is not None:
        on_ready(engine)
    await stop.wait()
    if mode["graceful"]:
        await drain(engine, drain_timeout)  # TLS: lets running handshakes finish first
    if checks is not None:
        health.detach(checks)
    if followed is not None:
        followed.close()
    engine.close()
    await asyncio.sleep(0)
    return engine


def _worker_main(
    config: ProxyConfig,
    socks: Sequence[socket.socket],
    factory: BalancerFactory | None,
    ready_fd: int,
    health_table: HealthTable | None = None,
) -> int:
    import uvloop  # noqa: PLC0415 (only in the worker)

    def ready(_engine: Engine) -> None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)

    balancer = factory(config) if factory is not None else None
    try:
        uvloop.run(serve(config, socks, balancer, ready, health_table=health_table))
    except Exception:  # pragma: no cover - logged, the master restarts workers
        log.exception("proxy worker failed")
        return 1
    return 0


def _await_ready(pipes: Sequence[int], timeout: float) -> None:
    """Wait for each new worker's "1" on its pipe (closing every pipe); RuntimeError when
    one dies or stays silent past `timeout`."""
    import select  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    try:
        for r in pipes:
            os.set_blocking(r, True)
            remaining = max(0.0, deadline - time.monotonic())
            ok, _, _ = select.select([r], [], [], remaining)
            if not ok or os.read(r, 1) != b"1":
                raise RuntimeError("a proxy worker did not become ready")
    finally:
        for r in pipes:
            os.close(r)


@dataclass
class Master:
    """Forks and supervises proxy workers over listening sockets it keeps open."""

    config: ProxyConfig
    host: str = "127.0.0.1"
    port: int = 0
    workers: int = 1
    balancer_factory: BalancerFactory | None = None
    socks: list[socket.socket] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    #: the master's health verdicts (shared memory) the workers follow; None: they check
    health_table: HealthTable | None = None

    def start(self) -> None:
        if not self.socks:
            self.socks = bind_listeners(self.host, self.port, self.workers)
            self.port = self.socks[0].getsockname()[1]
        self.pids = self._spawn(self.config)

    def _spawn(self, config: ProxyConfig, ready_timeout: float = 10.0) -> list[int]:
        pids: list[int] = []
        pipes: list[int] = []
        per_worker = [[s] for s in self.socks] if len(self.socks) > 1 else None
        for i in range(self.workers):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child
                code = 1
                try:
                    # the master may fork from a sigwait() loop: start with no signal
                    # blocked, and die with the master rather than linger on the socket
                    signal.pthread_sigmask(signal.SIG_SETMASK, set())
                    _forget_parent_signals()
                    _die_with_parent()
                    os.close(r)
                    mine = per_worker[i] if per_worker is not None else self.socks
                    _release_inherited_fds({w, *(s.fileno() for s in mine)})
                    code = _worker_main(config, mine, self.balancer_factory, w, self.health_table)
                finally:
                    os._exit(code)
            os.close(w)
            pids.append(pid)
            pipes.append(r)
        try:
            _await_ready(pipes, ready_timeout)
        except BaseException:
            # none of this batch serves: stop and reap all of it (the running workers of
            # a reload stay), rather than leave forked workers nobody tracks
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self._reap(pids, 5.0)
            raise
        return pids

    def reload(self, config: ProxyConfig | None = None) -> None:
        """Hitless: new workers on the same sockets first, then the old ones drain."""
        old = self.replace_workers(config)
        self._reap(old, 30.0)

    def replace_workers(self, config: ProxyConfig | None = None) -> list[int]:
        """`reload` without the wait: new workers serve, the old ones are told to drain
        (SIGTERM); returns their pids for the caller to reap (the daemon polls them)."""
        config = config if config is not None else self.config
        new = self._spawn(config)  # raises (nothing changed) when they cannot start
        self.config, old, self.pids = config, self.pids, new
        for pid in old:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        return old

    def stop(self, graceful: bool = True, timeout: float = 10.0) -> None:
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        self._reap(self.pids, timeout)
        self.pids = []
        for s in self.socks:
            s.close()
        self.socks = []

    @staticmethod
    def _reap(pids: Sequence[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = set(pids)
        while pending:
            for pid in list(pending):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    pending.discard(pid)
            if not pending:
                break
            if time.monotonic() > deadline:
                for pid in pending:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                for pid in pending:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, 0)
                break
            time.sleep(0.01)
