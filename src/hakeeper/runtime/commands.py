"""`hakeeper run` and `hakeeper status`: the daemon's command line (keepalived(8) spellings).

`hakeeper run -f FILE [-n|--dont-fork|--foreground] [-l|--log-console] [-D|--debug]
[-p|--pid FILE] [--control PATH] [--status-file PATH] [-i|--config-id ID] [--no-uvloop]
[--nginx NGINX_CONF] [--metrics HOST:PORT]` loads FILE (refusing to start on config errors,
exit 1), forks to the background unless told not to, writes the pid file, and runs until
SIGTERM/SIGINT (exit 0). `--metrics` serves Prometheus text at GET /metrics
(runtime.metrics_http); the control socket answers `metrics` with the same text.
With `-f FILE --nginx NGINX_CONF` one daemon also serves the nginx.conf (runtime.l7);
`--nginx NGINX_CONF` without `-f` runs the L7 proxy alone in the foreground (proxy.run).
`hakeeper status [--control PATH] [--json | --metrics]` asks a running daemon (or `run
--nginx` alone) over its control socket; `--metrics` prints the Prometheus text instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from hakeeper.runtime.control import DEFAULT_CONTROL_PATH, ControlError, query

log = logging.getLogger("hakeeper.daemon")

DEFAULT_CONFIG = "/etc/keepalived/keepalived.conf"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the VRRP daemon (keepalived-compatible config)")
    run.add_argument(
        "-f",
        "--use-file",
        dest="config",
        default=None,
        metavar="FILE",
        help=f"keepalived.conf (default {DEFAULT_CONFIG}, unless only --nginx is given)",
    )
    run.add_argument(
        "-n",
        "--dont-fork",
        "--foreground",
        dest="foreground",
        action="store_true",
        help="stay in the foreground",
    )
    run.add_argument("-l", "--log-console", action="store_true", help="log to stderr, not syslog")
    run.add_argument("-D", "--debug", action="store_true", help="debug logging")
    run.add_argument("-p", "--pid", dest="pid_file", default=None, metavar="FILE")
    run.add_argument(
        "--control",
        default=DEFAULT_CONTROL_PATH,
        metavar="PATH",
        help=f"control socket (default {DEFAULT_CONTROL_PATH}; 'none' disables)",
    )
    run.add_argument(
        "--status-file",
        default="/tmp/hakeeper.json",
        metavar="PATH",
        help="where SIGUSR1 writes the status JSON",
    )
    run.add_argument("-i", "--config-id", default=None, metavar="ID")
    run.add_argument("--no-uvloop", action="store_true", help="use the stdlib event loop")
    run.add_argument(
        "--dataplane",
        choices=("auto", "nftables", "userspace", "ipvs"),
        default="auto",
        help="L4 data plane for virtual_server blocks (auto: nftables if root, else userspace)",
    )
    run.add_argument(
        "--nginx",
        default=None,
        metavar="FILE",
        help="serve this nginx.conf with the L7 proxy: beside VRRP in the same daemon with "
        "-f FILE, alone (in the foreground) without -f",
    )
    run.add_argument(
        "--metrics",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9109)",
    )
    run.set_defaults(handler=cmd_run)

    status = sub.add_parser("status", help="show the state of a running daemon's instances")
    status.add_argument("--control", default=DEFAULT_CONTROL_PATH, metavar="PATH")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.add_argument(
        "--metrics", action="store_true", help="print the metrics (Prometheus text format)"
    )
    status.set_defaults(handler=cmd_status)


def cmd_run(args: argparse.Namespace) -> int:
    nginx = getattr(args, "nginx", None)
    control = None if args.control in ("", "none") else args.control
    metrics = None
    if getattr(args, "metrics", None):
        from hakeeper.runtime.metrics_http import parse_addr  # noqa: PLC0415

        try:
            metrics = parse_addr(args.metrics)
        except ValueError as exc:
            print(f"hakeeper run: --metrics: {exc}", file=sys.stderr)
            return 2
    if nginx and args.config is None:
        from hakeeper.proxy.run import run_nginx  # noqa: PLC0415

        given: dict[str, Any] = {"control": control} if control != DEFAULT_CONTROL_PATH else {}
        if metrics is not None:
            given["metrics"] = metrics
        return run_nginx(nginx, **given)  # its defaults are the daemon's
    from hakeeper.runtime.daemon import Daemon, DaemonOptions  # noqa: PLC0415
    from hakeeper.runtime.process import (  # noqa: PLC0415
        PidFileError,
        daemonize,
        loop_factory,
        remove_pid_file,
        setup_logging,
        write_pid_file,
    )

    options = DaemonOptions(
        config_file=args.config or DEFAULT_CONFIG,
        config_id=args.config_id,
        control_path=control,
        status_file=args.status_file,
        dataplane=args.dataplane,
        nginx_file=nginx or None,
        settle_gc=True,
        metrics_addr=metrics,
    )
    if not args.foreground:
        daemonize()
    setup_logging(console=args.log_console or False, debug=args.debug)
    if args.pid_file:
        try:
            write_pid_file(args.pid_file)
        except (PidFileError, OSError) as exc:
            log.error("%s", exc)
            return 1
    try:
        with asyncio.Runner(loop_factory=loop_factory(not args.no_uvloop)) as runner:
            return runner.run(Daemon(options).run())
    except KeyboardInterrupt:
        return 0
    finally:
        if args.pid_file:
            remove_pid_file(args.pid_file)


def _format_status(data: dict[str, Any]) -> str:
    if data.get("mode") == "nginx":  # `hakeeper run --nginx` alone
        head = f"hakeeper pid {data.get('pid')}  uptime {data.get('uptime')}s"
        return "\n".join([head, *_format_l7(data.get("l7") or {})])
    lines = [
        f"hakeeper pid {data.get('pid')}  config {data.get('config_file')}"
        f"  uptime {data.get('uptime')}s"
    ]
    header = f"{'INSTANCE':<16} {'STATE':<8} {'PRIO':>9} {'VRID':>4}  {'MASTER':<16} VIPS"
    lines.append(header)
    for inst in data.get("instances", []):
        prio = f"{inst.get('effective_priority', '-')}/{inst.get('priority', '-')}"
        lines.append(
            f"{inst.get('name', '?'):<16} {inst.get('state', '?'):<8} {prio:>9}"
            f" {inst.get('vrid', '-')!s:>4}  {inst.get('master') or '-':<16}"
            f" {', '.join(inst.get('vips', []))}"
        )
        if inst.get("faults"):
            lines.append(f"{'':<16} faults: {', '.join(inst['faults'])}")
        if inst.get("error"):
            lines.append(f"{'':<16} error: {inst['error']}")
    for group in data.get("sync_groups", []):
        lines.append(
            f"sync group {group['name']}: {group.get('state')} ({', '.join(group['members'])})"
        )
    if data.get("virtual_servers"):
        from hakeeper.dataplane.lvs import format_status  # noqa: PLC0415

        lines += format_status(data["virtual_servers"])
    if data.get("l7"):
        lines += _format_l7(data["l7"])
    return "\n".join(lines)


def _format_l7(l7: dict[str, Any]) -> list[str]:
    lines = [
        f"L7 proxy {l7.get('config_file')}: {'serving' if l7.get('serving') else 'NOT SERVING'}"
        f"  reloads {l7.get('reloads', {}).get('ok', 0)} ok"
        f" / {l7.get('reloads', {}).get('failed', 0)} failed"
    ]
    for lst in l7.get("listeners", []):
        workers = lst.get("workers", [])
        text = f"  listen {lst.get('listen')}: {len(workers)} worker(s)"
        if workers:
            text += f" (pids {', '.join(str(p) for p in workers)})"
        if lst.get("error"):
            text += f" error: {lst['error']}"
        lines.append(text)
        peers = [u.get("peer", "?") for u in lst.get("upstreams", [])]
        if peers:
            lines.append(f"    upstream {', '.join(peers)}")
    if l7.get("stream_pid"):
        lines.append(f"  stream pid {l7['stream_pid']}")
    health = l7.get("health")
    if isinstance(health, dict) and health.get("error"):
        lines.append(f"  health checks: {health['error']}")
    elif health:
        lines.append(f"  {'UPSTREAM':<16} {'SERVER':<22} {'STATE':<9} {'CHECKS':>7} {'FAILED':>7}")
        for row in health:
            since = row.get("since")
            lines.append(
                f"  {row.get('upstream', '?'):<16} {row.get('server', '?'):<22}"
                f" {row.get('state', '?'):<9} {row.get('checks', 0):>7} {row.get('failures', 0):>7}"
                + ("" if since is None else f"  since {since}s")
                + f"  {row.get('last', '')}"
            )
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    try:
        data = query(args.control, "metrics" if getattr(args, "metrics", False) else "status")
    except ControlError as exc:
        print(f"hakeeper status: {exc}", file=sys.stderr)
        return 1
    if isinstance(data, str):  # the metrics text
        print(data, end="")
        return 0
    if args.json or not isinstance(data, dict):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(_format_status(data))
    return 0
