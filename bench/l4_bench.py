"""L4 side by side: HAProxy 2.6 `mode tcp`, nginx 1.22 `stream`, hakeeper's userspace L4 proxy.

One run measures, with the same backend and the same load generator (anchors/measured.md):
- backend: nginx 1.22 (1 worker) answering a 100-byte body from a `return 200` location,
  pinned to CPU 1 together with wrk;
- HAProxy 2.6 `mode tcp`, `nbthread 1`, pinned to CPU 0;
- nginx 1.22 `stream { proxy_pass }`, 1 worker, pinned to CPU 0 (needs libnginx-mod-stream);
- hakeeper `dataplane.userspace.UserspaceDataplane`, one process on uvloop, pinned to CPU 0;
each with `wrk -t1 -c50 -d10s --latency` keep-alive and with `-H 'Connection: close'` (a new
TCP connection through the proxy per request). CPU% is the proxy's utime+stime delta from
/proc/PID/stat; req/s per proxy core = req/s / (CPU% / 100), the fair figure when CPU 1
(wrk + backend) saturates first. Ratios are per core, vs HAProxy in the same run.

Usage: .venv/bin/python bench/l4_bench.py [--duration 10] [--connections 50] [--sched wlc]
       [--only haproxy,nginx,hakeeper] [--runs 3] [--profile out.prof] [--json out.json]
With `--runs N` every target is measured N times, round-robin (run 1 of each target, then
run 2...), and a summary gives the median and range of each figure: the machine is shared,
so single runs disagree by 15-35 %.
Everything listens on 127.0.0.1; every process started here is stopped at exit.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from wrktools import free_port, parse_wrk, stop, wait_port, wrk_argv

BODY = "x" * 100
CLK_TCK = os.sysconf("SC_CLK_TCK")
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"

NGINX_BACKEND = """
worker_processes 1;
daemon off;
pid {dir}/backend.pid;
error_log {dir}/backend.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{ return 200 "{body}"; }}
  }}
}}
"""

NGINX_STREAM = """
load_module {module};
worker_processes 1;
daemon off;
pid {dir}/stream.pid;
error_log {dir}/stream.err warn;
events {{ worker_connections 4096; }}
stream {{
  upstream backend {{ server 127.0.0.1:{backend}; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    proxy_pass backend;
  }}
}}
"""

HAPROXY_TCP = """
global
  nbthread 1
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend l4
  bind 127.0.0.1:{port}
  default_backend pool
backend pool
  server s1 127.0.0.1:{backend}
"""

HAKEEPER_SERVE = """
import asyncio, signal, sys, uvloop
from hakeeper.dataplane.userspace import Backend, L4Service, UserspaceDataplane

port, backend, sched, profile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]

async def main() -> None:
    dp = UserspaceDataplane()
    await dp.apply([L4Service("127.0.0.1", port, "TCP", sched, (Backend("127.0.0.1", backend),))])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await dp.close()

if profile != "-":
    import cProfile
    cProfile.run("uvloop.run(main())", profile)
else:
    uvloop.run(main())
"""

BARE_RELAY = """
import asyncio, signal, sys, uvloop
port, backend = int(sys.argv[1]), int(sys.argv[2])

class Up(asyncio.Protocol):
    def __init__(self, down):
        self.down = down
    def connection_made(self, t):
        self.t = t
    def data_received(self, data):
        self.down.t.write(data)
    def eof_received(self):
        if not self.down.t.is_closing():
            self.down.t.write_eof()
        return True
    def connection_lost(self, exc):
        self.down.t.close()

class Down(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t
        self.up = None
        self.early = []
        asyncio.get_running_loop().create_task(self.connect())
    async def connect(self):
        t, up = await loop.create_connection(lambda: Up(self), "127.0.0.1", backend)
        if self.t.is_closing():
            t.close()
            return
        self.up = up
        t.writelines(self.early)
    def data_received(self, data):
        if self.up is None:
            self.early.append(data)
        else:
            self.up.t.write(data)
    def eof_received(self):
        if self.up is not None and not self.up.t.is_closing():
            self.up.t.write_eof()
        return True
    def connection_lost(self, exc):
        if self.up is not None:
            self.up.t.close()

async def main():
    global loop
    loop = asyncio.get_running_loop()
    await loop.create_server(Down, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()

uvloop.run(main())
"""


@dataclass
class Result:
    target: str
    mode: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_pct: float
    per_core: float
    errors: int
    run: int = 1


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def worker_pid(pid: int) -> int:
    """nginx forks its worker: measure the child when there is one (the master idles)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pid
    return int(kids[0]) if kids else pid


def run_wrk(
    port: int, duration: int, connections: int, close: bool
) -> tuple[float, float, float, int]:
    cmd = wrk_argv(duration, connections, close, "1")
    cmd.append(f"http://127.0.0.1:{port}/")
    out = subprocess.run(
        cmd, check=False, capture_output=True, text=True, timeout=duration + 30
    ).stdout
    return parse_wrk(out)


def measure(name: str, pid: int | None, port: int, args: argparse.Namespace) -> list[Result]:
    """Both modes against one target; a target that dies mid-run is reported, not fatal."""
    try:
        return _measure(name, pid, port, args)
    except (AttributeError, subprocess.TimeoutExpired) as e:
        print(f"  {name:24} FAILED (process died or wrk gave no result: {e!r})", flush=True)
        return []


def _measure(name: str, pid: int | None, port: int, args: argparse.Namespace) -> list[Result]:
    results = []
    for mode, close in (("keep-alive", False), ("close", True)):
        if mode not in args.modes.split(","):
            continue
        run_wrk(port, 1, args.connections, close)  # warm-up
        wpid = worker_pid(pid) if pid is not None else None
        t0 = time.monotonic()
        c0 = cpu_ticks(wpid) if wpid else 0
        rps, p50, p99, errors = run_wrk(port, args.duration, args.connections, close)
        t1 = time.monotonic()
        c1 = cpu_ticks(wpid) if wpid else 0
        cpu = 100.0 * (c1 - c0) / CLK_TCK / (t1 - t0)
        per_core = rps / (cpu / 100.0) if cpu > 0 else float("nan")
        results.append(Result(name, mode, rps, p50, p99, cpu, per_core, errors))
        print(
            f"  {name:24} {mode:10} {rps:9.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
            f"CPU {cpu:5.1f}%  per core {per_core:8.0f}  errors {errors}",
            flush=True,
        )
    return results


def table(results: list[Result]) -> str:
    ref = {r.mode: r for r in results if r.target.startswith("haproxy")}
    lines = [
        "| target | mode | req/s | p50 / p99 ms | proxy CPU % | req/s per proxy core "
        "| vs HAProxy (per core) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = ref.get(r.mode)
        ratio = "-"
        if base is not None and r.cpu_pct > 0 and base.per_core == base.per_core:
            ratio = f"{r.per_core / base.per_core:.2f}x"
        cpu = f"{r.cpu_pct:.0f}" if r.cpu_pct > 0 else "-"
        per_core = f"{r.per_core:,.0f}" if r.cpu_pct > 0 else "-"
        lines.append(
            f"| {r.target} | {r.mode} | {r.rps:,.0f} | {r.p50_ms:.2f} / {r.p99_ms:.2f} "
            f"| {cpu} | {per_core} | {ratio} |"
        )
    return "\n".join(lines)


def _ratios(results: list[Result]) -> dict[tuple[str, str], list[float]]:
    """Per-core ratio vs HAProxy of each (target, mode), one per run (same run's HAProxy)."""
    ref = {(r.run, r.mode): r for r in results if r.target.startswith("haproxy")}
    out: dict[tuple[str, str], list[float]] = {}
    for r in results:
        base = ref.get((r.run, r.mode))
        if base is not None and r.cpu_pct > 0 and base.per_core == base.per_core:
            out.setdefault((r.target, r.mode), []).append(r.per_core / base.per_core)
    return out


def _mr(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    med = format(statistics.median(values), fmt)
    if len(values) == 1:
        return med
    return f"{med} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def summary(results: list[Result]) -> str:
    """Median (min–max) over the runs of each target and mode."""
    ratios = _ratios(results)
    lines = [
        "| target | mode | runs | req/s | p99 ms | proxy CPU % | req/s per proxy core "
        "| vs HAProxy (per core) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys: list[tuple[str, str]] = []
    for r in results:
        if (r.target, r.mode) not in keys:
            keys.append((r.target, r.mode))
    for target, mode in keys:
        rs = [r for r in results if r.target == target and r.mode == mode]
        cpu = [r.cpu_pct for r in rs if r.cpu_pct > 0]
        per_core = [r.per_core for r in rs if r.cpu_pct > 0]
        ratio = ratios.get((target, mode), [])
        lines.append(
            f"| {target} | {mode} | {len(rs)} | {_mr([r.rps for r in rs], ',.0f')} "
            f"| {_mr([r.p99_ms for r in rs], '.2f')} | {_mr(cpu, '.0f')} "
            f"| {_mr(per_core, ',.0f')} | {_mr(ratio, '.2f')}{'x' if ratio else ''} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--sched", default="wlc", help="hakeeper's scheduler (keepalived default)")
    ap.add_argument(
        "--only",
        default="direct,haproxy,nginx,hakeeper",
        help="add `floor` for a 40-line uvloop transport relay without scheduling, counts or "
        "timeouts (it crashes uvloop with 'double free' in some runs)",
    )
    ap.add_argument("--modes", default="keep-alive,close")
    ap.add_argument("--runs", type=int, default=1, help="measure every target this many times")
    ap.add_argument("--profile", type=Path, help="cProfile output of the hakeeper proxy")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    only = set(args.only.split(","))
    for tool in ("nginx", "wrk", "taskset", "haproxy"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin") is None:
            print(f"missing {tool}", file=sys.stderr)
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin") or "haproxy"
    work = Path(tempfile.mkdtemp(prefix=f"hk-l4bench-{secrets.token_hex(3)}-"))
    procs: list[subprocess.Popen[bytes]] = []
    results: list[Result] = []
    try:
        bport = free_port()
        (work / "backend.conf").write_text(NGINX_BACKEND.format(dir=work, port=bport, body=BODY))
        backend = subprocess.Popen(
            ["taskset", "-c", "1", nginx, "-p", str(work), "-c", str(work / "backend.conf")]
        )
        procs.append(backend)
        wait_port(bport)
        print(f"backend: nginx return 200 (100-byte body) on :{bport}, CPU 1 with wrk")
        for run in range(1, args.runs + 1):
            if args.runs > 1:
                print(f"-- run {run}/{args.runs}", flush=True)
            before = len(results)
            if "direct" in only:
                results += measure("no proxy (direct)", None, bport, args)

            if "haproxy" in only:
                port = free_port()
                (work / "haproxy.cfg").write_text(HAPROXY_TCP.format(port=port, backend=bport))
                ha = subprocess.Popen(
                    ["taskset", "-c", "0", haproxy, "-db", "-f", str(work / "haproxy.cfg")]
                )
                procs.append(ha)
                wait_port(port)
                results += measure("haproxy 2.6 mode tcp", ha.pid, port, args)
                stop(ha)

            if "nginx" in only:
                if not Path(STREAM_MODULE).exists():
                    print(f"  nginx stream: skipped ({STREAM_MODULE} missing: libnginx-mod-stream)")
                else:
                    port = free_port()
                    (work / "stream.conf").write_text(
                        NGINX_STREAM.format(
                            module=STREAM_MODULE, dir=work, port=port, backend=bport
                        )
                    )
                    ng = subprocess.Popen(
                        [
                            "taskset",
                            "-c",
                            "0",
                            nginx,
                            "-p",
                            str(work),
                            "-c",
                            str(work / "stream.conf"),
                        ]
                    )
                    procs.append(ng)
                    wait_port(port)
                    results += measure("nginx 1.22 stream", ng.pid, port, args)
                    stop(ng)

            if "hakeeper" in only:
                port = free_port()
                env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
                prof = str(args.profile) if args.profile else "-"
                cmd = [
                    sys.executable,
                    "-c",
                    HAKEEPER_SERVE,
                    str(port),
                    str(bport),
                    args.sched,
                    prof,
                ]
                hk = subprocess.Popen(["taskset", "-c", "0", *cmd], env=env)
                procs.append(hk)
                wait_port(port)
                results += measure(f"hakeeper userspace ({args.sched})", hk.pid, port, args)
                stop(hk)

            if "floor" in only:
                port = free_port()
                cmd = [sys.executable, "-c", BARE_RELAY, str(port), str(bport)]
                fl = subprocess.Popen(["taskset", "-c", "0", *cmd])
                procs.append(fl)
                wait_port(port)
                results += measure("floor: bare uvloop relay", fl.pid, port, args)
                stop(fl)
            for r in results[before:]:
                r.run = run
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)
    print()
    for run in range(1, args.runs + 1):
        if args.runs > 1:
            print(f"run {run}:")
        print(table([r for r in results if r.run == run]))
    if args.runs > 1:
        print()
        print(f"median (min–max) over {args.runs} runs:")
        print(summary(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
