"""`hakeeper run --nginx FILE`: load an nginx.conf and serve it with proxy worker processes.

Reads FILE like `nginx -c` (includes relative to the file's directory, globs sorted,
as `ngx_conf_include`), refuses to start on any config error (exit 1, messages as
`file:line:col: error: ...`), then runs one `server.Master` per `listen` with
`worker_processes` workers. SIGHUP re-reads the file and, if it is valid, reloads
hitlessly (new workers on the same listening sockets, old ones drain); on errors the old
config keeps running. SIGTERM/SIGINT stop gracefully (in-flight requests finish).
`stream { }` servers run in one child process on the userspace L4 proxy
(`hakeeper.proxy.stream`), which re-reads the file on SIGHUP. Active `health_check`s of
http upstreams run once, in this process (`health.MasterChecks`: a checker thread); the
workers of every listener follow its verdicts through shared memory, across reloads.
"""

from __future__ import annotations

import glob
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from hakeeper.conf.diagnostics import Diagnostics, Location
from hakeeper.conf.lexer import parse_nginx_file
from hakeeper.conf.nginx import NginxConfig, read_nginx
from hakeeper.conf.nginx_status import is_ignored_warning
from hakeeper.conf.nginx_stream import StreamConfig
from hakeeper.conf.tree import Node
from hakeeper.proxy import health
from hakeeper.proxy.from_nginx import Route, listeners
from hakeeper.proxy.server import BalancerFactory, Master, worker_count
from hakeeper.proxy.stream import StreamProcess, stream_services
from hakeeper.proxy.tls import absolute_paths, check_files
from hakeeper.runtime.control import DEFAULT_CONTROL_PATH

log = logging.getLogger("hakeeper.proxy")


def load(path: str, diags: Diagnostics) -> tuple[NginxConfig, list[Route]]:
    """Read, check and translate an nginx.conf; errors are collected in `diags`."""
    config = read_file(path, diags)
    routes = listeners(config, diags) if not diags.has_errors else []
    return config, routes


def read_file(path: str, diags: Diagnostics) -> NginxConfig:
    """Read and check an nginx.conf like `nginx -t` (includes relative to its directory)."""
    base = os.path.dirname(os.path.abspath(path))

    def include(pattern: str, loc: Location, d: Diagnostics) -> Sequence[Node]:
        full = pattern if os.path.isabs(pattern) else os.path.join(base, pattern)
        names = sorted(glob.glob(full)) if glob.has_magic(full) else [full]
        if not names and not glob.has_magic(full):
            d.error(loc, f'open() "{full}" failed (No such file or directory)')
        nodes: list[Node] = []
        for name in names:
            nodes.extend(parse_nginx_file(name, d))
        return nodes

    config = read_nginx(parse_nginx_file(path, diags), diags, include)
    if not diags.has_errors:
        config = absolute_paths(config, base)  # relative to nginx.conf's directory
        check_files(config.servers, diags)  # nginx -t loads the certificates
    return config


def run_nginx(
    path: str,
    *,
    control: str | None = DEFAULT_CONTROL_PATH,
    metrics: tuple[str, int] | None = None,
) -> int:
    """Serve `path` until SIGTERM/SIGINT; SIGHUP reloads. Returns the exit code.

    `control`: the control socket's path (`status`, `metrics`; not opening it is logged,
    serving goes on; None: no socket); `metrics`: host, port of the Prometheus endpoint (must
    open)."""
    from hakeeper.runtime.nginx_control import ControlThread, NginxRuntime  # noqa: PLC0415

    diags = Diagnostics()
    config, routes = load(path, diags)
    streams = stream_services(config.stream, diags) if not diags.has_errors else []
    for d in diags.sorted():
        print(d.format(), file=sys.stderr)
    if diags.has_errors or not (routes or streams):
        print(f"hakeeper: configuration file {path} test failed", file=sys.stderr)
        return 1
    workers = worker_count(config.worker_processes)
    checks = health.MasterChecks()
    masters = [
        Master(
            r.config,
            host=r.listen.host,
            port=r.listen.port,
            workers=workers,
            balancer_factory=_fixed(r),
            health_table=checks.table,
        )
        for r in routes
    ]
    started: list[Master] = []
    stream = StreamProcess(path, read_stream_file) if streams else None
    runtime = NginxRuntime(path, checks.snapshot)
    ctl = ControlThread(
        runtime.handlers(), control_path=control, metrics_addr=metrics, render=runtime.metrics
    )
    # block before the first worker serves, or an early SIGHUP would kill the master
    # (workers unblock for themselves after the fork)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
    try:
        if stream is not None:  # forked first: it must not inherit the HTTP sockets
            try:
                stream.start()
            except RuntimeError as e:
                print(f"hakeeper: {e}", file=sys.stderr)
                return 1
        checks.update(routes)  # after the stream fork, before the workers'
        for m in masters:
            m.start()
            started.append(m)
        runtime.masters, runtime.stream = list(started), stream
        for error in ctl.start():  # after the signals are blocked: its thread keeps them so
            log.error("control: %s", error)
        if metrics is not None and ctl.metrics is None:
            return 1
        shown = [f"{m.host}:{m.port}" for m in masters]
        shown += [f"{s.spec.host}:{s.spec.port}/{s.spec.protocol.lower()}" for s in streams]
        log.info("serving %s on %s", path, ", ".join(shown))
        while True:
            sig = signal.sigwait({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
            if sig != signal.SIGHUP:
                return 0
            started = _reload(path, started, checks, runtime)
            if stream is not None:
                stream.reload()  # it re-reads the file and keeps its config on errors
            else:
                stream = _late_stream(path, started)
            runtime.stream = stream
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
        ctl.stop()
        for m in started:
            m.stop()
        if stream is not None:
            stream.stop()
        checks.stop()


def read_stream_file(path: str, diags: Diagnostics) -> StreamConfig:
    """The stream process's loader: the master already printed the warnings about
    accepted-but-ignored directives of this file, so they are not logged twice."""
    own = Diagnostics()
    stream = read_file(path, own).stream
    diags.items.extend(d for d in own if not is_ignored_warning(d))
    return stream


def _late_stream(path: str, masters: list[Master]) -> StreamProcess | None:
    """A `stream { }` block that a reload added: start its process (None if none/invalid)."""
    diags = Diagnostics()
    found = stream_services(read_stream_file(path, diags), diags)
    if diags.has_errors or not found:
        return None
    stream = StreamProcess(path, read_stream_file)
    try:
        stream.start(inherited=[s for m in masters for s in m.socks])
    except RuntimeError as e:
        log.error("%s", e)
        return None
    return stream


def _reload(
    path: str, masters: list[Master], checks: health.MasterChecks, runtime: Any = None
) -> list[Master]:
    diags = Diagnostics()
    _, routes = load(path, diags)
    by_addr = {(r.listen.host, r.listen.port): r for r in routes}
    if diags.has_errors or set(by_addr) != {(m.host, m.port) for m in masters}:
        for d in diags.sorted():
            log.error("%s", d.format())
        log.error(
            "reload of %s refused (errors, or listen addresses changed); old config kept", path
        )
        if runtime is not None:  # runtime.nginx_control.NginxRuntime
            errors = [d.format() for d in diags.sorted() if d.severity == "error"]
            runtime.reloaded(False, "; ".join(errors[:5]) or "listen addresses changed")
        return masters
    checks.update(routes)  # unchanged checks keep their state; before the new workers fork
    for m in masters:
        route = by_addr[(m.host, m.port)]
        health.ramp_added(m, route)  # servers the reload added slow-start
        m.balancer_factory = _fixed(route)
        m.reload(route.config)
    log.info("reloaded %s", path)
    if runtime is not None:
        runtime.reloaded(True)
    return masters


def _fixed(route: Route) -> BalancerFactory:
    """Workers are forked, so each one gets its own copy of the balancer state (like
    nginx workers without a `zone`)."""
    return lambda _config: route.balancer
