"""L7 side-by-side benchmark: nginx 1.22 as reverse proxy vs hakeeper's proxy engine.

One run measures, with the same backend and the same load generator:
- backend: nginx itself (1 worker) answering a 100-byte body from a `return 200`
  location on its own port, pinned to CPU 1 with wrk (as in anchors/measured.md);
- nginx proxy: 1 worker, `upstream { keepalive 64; }`, `proxy_http_version 1.1`,
  `proxy_set_header Connection ""`, pinned to CPU 0;
- hakeeper: the `hakeeper.proxy` engine, 1 worker (one process), same settings,
  pinned to CPU 0; optionally 2 workers (SO_REUSEPORT, both CPUs; noisy on 2 vCPUs);
each with `wrk -t1 -c50 -d10s --latency` keep-alive and with `-H 'Connection: close'`.
It records req/s, p50/p99 latency, the proxy processes' CPU% from /proc/PID/stat deltas,
and req/s per proxy core = req/s / (CPU% / 100), then prints a table with ratios vs nginx.

- `--routed`: `hakeeper run --nginx` on the same nginx.conf as the nginx proxy
  (`worker_processes 1`, pinned to CPU 0): the path operators run, through the nginx
  reader and the routing table (a lone `location /` must stay on the plain fast path);
- `--nginx2`: nginx with `worker_processes 2` (not pinned, like hakeeper's 2 workers), to
  compare 2-worker scaling on this 2-vCPU box where wrk and the backend share the cores;
- `--runs N`: repeat everything N times (one backend) and print per-target medians
  and ranges;
- `--tls`: HTTPS instead: nginx and `hakeeper run --nginx` on the same nginx.conf with
  `listen ... ssl` (a throw-away P-256 certificate, TLSv1.2+1.3), wrk on https://
  (keep-alive: one handshake per connection; close: one per request).

Usage: .venv/bin/python bench/l7_bench.py [--duration 10] [--connections 50]
       [--workers2] [--nginx2] [--routed] [--floor] [--reload] [--tls] [--runs 3]
       [--json out.json]
Needs nginx, wrk and taskset. Everything listens on 127.0.0.1 and is stopped at exit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from wrktools import free_port, parse_wrk, stop, wait_port, wrk_argv

BODY = b"x" * 100
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_tree(pid: int) -> list[int]:
    out = [pid]
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for k in kids:
        out.extend(proc_tree(int(k)))
    return out


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


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

NGINX_PROXY = """
worker_processes {workers};
daemon off;
pid {dir}/proxy.pid;
error_log {dir}/proxy.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""

NGINX_TLS = NGINX_PROXY.replace(
    "listen 127.0.0.1:{port} backlog=4096;",
    "listen 127.0.0.1:{port} ssl backlog=4096;\n    ssl_certificate {dir}/tls.crt;\n"
    "    ssl_certificate_key {dir}/tls.key;\n    ssl_protocols TLSv1.2 TLSv1.3;",
)


def make_cert(work: Path) -> None:
    """A self-signed P-256 certificate for --tls (both proxies serve the same one)."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=bench.test", "-keyout", str(work / "tls.key"),
         "-out", str(work / "tls.crt")],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


HAKEEPER_SERVE = """
import signal, sys, asyncio, uvloop
from hakeeper.proxy.config import Limits, Peer, ProxyConfig, keepalive_headers
from hakeeper.proxy.engine import Engine
from hakeeper.proxy.server import Master, tune_gc

port, backend, workers = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
config = ProxyConfig(
    peers=(Peer("127.0.0.1", backend),), http_version="1.1", headers=keepalive_headers(),
    upstream_keepalive=64, limits=Limits(keepalive_requests=1_000_000),
)
if workers == 1:
    async def main() -> None:
        tune_gc()
        engine = Engine(config)
        await engine.start_listening("127.0.0.1", port, backlog=4096)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        engine.close()
    uvloop.run(main())
else:
    master = Master(config, port=port, workers=workers)
    master.start()
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])  # after the fork only
    signal.sigwait([signal.SIGTERM])
    master.stop(graceful=False)
"""


BARE_UVLOOP = """
import asyncio, signal, sys, uvloop
RESP = b"HTTP/1.1 200 OK\\r\\nContent-Length: 100\\r\\n\\r\\n" + b"x" * 100
CLOSE = b"HTTP/1.1 200 OK\\r\\nContent-Length: 100\\r\\nConnection: close\\r\\n\\r\\n" + b"x" * 100

class Answer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        if b"onnection: close" in data:
            self.transport.write(CLOSE)
            self.transport.close()
        else:
            self.transport.write(RESP)

async def main():
    loop = asyncio.get_running_loop()
    await loop.create_server(Answer, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()

uvloop.run(main())
"""


BARE_EPOLL = """
import select, signal, socket, sys
RESP = b"HTTP/1.1 200 OK\\r\\nContent-Length: 100\\r\\n\\r\\n" + b"x" * 100
CLOSE = b"HTTP/1.1 200 OK\\r\\nContent-Length: 100\\r\\nConnection: close\\r\\n\\r\\n" + b"x" * 100
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
lsock = socket.socket()
lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lsock.bind(("127.0.0.1", int(sys.argv[1])))
lsock.listen(4096)
lsock.setblocking(False)
ep = select.epoll()
lfd = lsock.fileno()
ep.register(lfd, select.EPOLLIN | select.EPOLLET)
conns = {}
IN_ET = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
while True:
    for fd, ev in ep.poll(1.0, 256):
        if fd == lfd:
            while True:
                try:
                    c, _ = lsock.accept()
                except BlockingIOError:
                    break
                c.setblocking(False)
                conns[c.fileno()] = c
                ep.register(c.fileno(), IN_ET)
            continue
        c = conns[fd]
        while True:
            try:
                data = c.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                del conns[fd]; c.close(); break
            if b"onnection: close" in data:
                c.send(CLOSE); del conns[fd]; c.close(); break
            c.send(RESP)
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


def run_wrk(
    port: int, duration: int, connections: int, close: bool, cpu: str, *, scheme: str = "http"
) -> tuple[float, float, float, int]:
    cmd = wrk_argv(duration, connections, close, cpu)
    cmd.append(f"{scheme}://127.0.0.1:{port}/")
    out = subprocess.run(
        cmd, check=False, capture_output=True, text=True, timeout=duration + 30
    ).stdout
    return parse_wrk(out)


def measure(name: str, pid: int, port: int, args: argparse.Namespace, wrk_cpu: str) -> list[Result]:
    results = []
    scheme = "https" if getattr(args, "tls", False) else "http"
    for mode, close in (("keep-alive", False), ("close", True)):
        # short warm-up so pools and caches are filled
        run_wrk(port, 1, args.connections, close, wrk_cpu, scheme=scheme)
        pids = proc_tree(pid)
        t0, c0 = time.monotonic(), cpu_ticks(pids)
        rps, p50, p99, errors = run_wrk(
            port, args.duration, args.connections, close, wrk_cpu, scheme=scheme
        )
        t1, c1 = time.monotonic(), cpu_ticks(proc_tree(pid))
        cpu = 100.0 * (c1 - c0) / CLK_TCK / (t1 - t0)
        per_core = rps / (cpu / 100.0) if cpu > 0 else float("nan")
        results.append(Result(name, mode, rps, p50, p99, cpu, per_core, errors))
        print(
            f"  {name:22} {mode:10} {rps:9.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
            f"CPU {cpu:5.1f}%  per core {per_core:8.0f}  errors {errors}",
            flush=True,
        )
    return results


RELOAD_CONF = """
worker_processes 2;
pid {dir}/reload.pid;
error_log {dir}/reload.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} reuseport;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def reload_runs(
    args: argparse.Namespace, work: Path, bport: int, nginx: str, env: dict[str, str]
) -> None:
    """wrk while the proxy reloads every second: lost requests show as wrk errors."""
    for name in ("nginx 1.22", "hakeeper run --nginx"):
        port = free_port()
        conf = work / f"reload-{port}.conf"
        text = RELOAD_CONF.format(dir=work, backend=bport, port=port)
        if name.startswith("nginx"):
            conf.write_text("daemon off;\n" + text)
            cmd = [nginx, "-p", str(work), "-c", str(conf)]
        else:
            conf.write_text(text)
            cmd = [sys.executable, "-m", "hakeeper", "run", "--nginx", str(conf)]
        proc = subprocess.Popen(cmd, env=env)
        try:
            wait_port(port)
            for mode, close in (("keep-alive", False), ("close", True)):
                wrk = ["taskset", "-c", "1", "wrk", "-t1", f"-c{args.connections}"]
                wrk += [f"-d{args.duration}s"]
                if close:
                    wrk += ["-H", "Connection: close"]
                wrk.append(f"http://127.0.0.1:{port}/")
                load = subprocess.Popen(wrk, stdout=subprocess.PIPE, text=True)
                reloads = 0
                while load.poll() is None and reloads < args.duration - 1:
                    time.sleep(1.0)
                    proc.send_signal(signal.SIGHUP)
                    reloads += 1
                out = load.communicate(timeout=args.duration + 30)[0]
                total = re.search(r"(\d+) requests in", out)
                errs = re.search(r"Socket errors: (.*)", out)
                non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
                print(
                    f"  reload x{reloads} {name:22} {mode:10} requests "
                    f"{total.group(1) if total else '?'}  socket errors: "
                    f"{errs.group(1) if errs else 'none'}  non-2xx: "
                    f"{non2xx.group(1) if non2xx else 0}",
                    flush=True,
                )
        finally:
            stop(proc)


def summary(runs: list[list[Result]]) -> str:
    """Medians over runs (ranges in brackets) of req/s, per-core ratio and p99 ratio."""
    from statistics import median  # noqa: PLC0415

    keys: list[tuple[str, str]] = []
    for run in runs:
        for r in run:
            if (r.target, r.mode) not in keys:
                keys.append((r.target, r.mode))
    lines = [
        f"medians of {len(runs)} runs [min-max]",
        "| target | mode | req/s | p99 ms | req/s per proxy core | vs nginx (per core) "
        "| p99 vs nginx |",
        "|---|---|---|---|---|---|---|",
    ]

    def fmt(vals: list[float], spec: str, suffix: str = "") -> str:
        if not vals:
            return "-"
        return (
            f"{format(median(vals), spec)}{suffix} "
            f"[{format(min(vals), spec)}-{format(max(vals), spec)}]"
        )

    for target, mode in keys:
        rows, ratios, p99r = [], [], []
        for run in runs:
            ref = {r.mode: r for r in run if r.target == "nginx 1.22"}
            for r in run:
                if (r.target, r.mode) == (target, mode):
                    rows.append(r)
                    base = ref.get(mode)
                    if base is not None:
                        ratios.append(r.per_core / base.per_core)
                        p99r.append(r.p99_ms / base.p99_ms)
        lines.append(
            f"| {target} | {mode} | {fmt([r.rps for r in rows], ',.0f')} "
            f"| {fmt([r.p99_ms for r in rows], '.2f')} "
            f"| {fmt([r.per_core for r in rows], ',.0f')} | {fmt(ratios, '.2f', 'x')} "
            f"| {fmt(p99r, '.2f', 'x')} |"
        )
    return "\n".join(lines)


def table(results: list[Result]) -> str:
    ref = {r.mode: r for r in results if r.target == "nginx 1.22"}
    lines = [
        "| target | mode | req/s | p50 / p99 ms | proxy CPU % | req/s per proxy core "
        "| vs nginx (per core) | p99 vs nginx |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = ref.get(r.mode)
        ratio = f"{r.per_core / base.per_core:.2f}x" if base else "-"
        p99r = f"{r.p99_ms / base.p99_ms:.2f}x" if base else "-"
        lines.append(
            f"| {r.target} | {r.mode} | {r.rps:,.0f} | {r.p50_ms:.2f} / {r.p99_ms:.2f} "
            f"| {r.cpu_pct:.0f} | {r.per_core:,.0f} | {ratio} | {p99r} |"
        )
    return "\n".join(lines)


def start_pinned(cmd: list[str], cpu: str | None, env: dict[str, str]) -> subprocess.Popen[bytes]:
    argv = ["taskset", "-c", cpu, *cmd] if cpu else cmd
    return subprocess.Popen(argv, env=env)


def one_run(
    args: argparse.Namespace,
    work: Path,
    bport: int,
    nginx: str,
    *,
    env: dict[str, str],
    procs: list[subprocess.Popen[bytes]],
) -> list[Result]:
    results: list[Result] = []

    def target(name: str, cmd: list[str], cpu: str | None, port: int, wrk_cpu: str) -> None:
        proc = start_pinned(cmd, cpu, env)
        procs.append(proc)
        try:
            wait_port(port)
            results.extend(measure(name, proc.pid, port, args, wrk_cpu))
        finally:
            stop(proc)

    if args.tls:  # HTTPS: nginx and `hakeeper run --nginx` on the same nginx.conf
        make_cert(work)
        print("--tls: HTTPS (TLSv1.3, P-256 certificate) on both proxies", flush=True)
        for name in ("nginx 1.22", "hakeeper run --nginx"):  # nginx's name: the ratio base
            tport = free_port()
            conf = work / f"tls-{tport}.conf"
            text = NGINX_TLS.format(dir=work, port=tport, backend=bport, workers=1)
            if name.startswith("nginx"):
                conf.write_text(text)
                cmd = [nginx, "-p", str(work), "-c", str(conf)]
            else:
                conf.write_text(text.replace("daemon off;\n", ""))
                cmd = [sys.executable, "-m", "hakeeper", "run", "--nginx", str(conf)]
            target(name, cmd, "0", tport, "1")
        return results

    if not args.skip_nginx:
        nport = free_port()
        (work / "proxy.conf").write_text(
            NGINX_PROXY.format(dir=work, port=nport, backend=bport, workers=1)
        )
        target(
            "nginx 1.22", [nginx, "-p", str(work), "-c", str(work / "proxy.conf")], "0", nport, "1"
        )

    hport = free_port()
    serve = [sys.executable, "-c", HAKEEPER_SERVE, str(hport), str(bport)]
    target("hakeeper (1 worker)", [*serve, "1"], "0", hport, "1")

    if args.routed:
        rport = free_port()
        conf = work / f"routed-{rport}.conf"
        text = NGINX_PROXY.format(dir=work, port=rport, backend=bport, workers=1)
        conf.write_text(text.replace("daemon off;\n", ""))
        cmd = [sys.executable, "-m", "hakeeper", "run", "--nginx", str(conf)]
        target("hakeeper run --nginx", cmd, "0", rport, "1")

    if args.floor:
        fport = free_port()
        target(
            "floor: bare uvloop", [sys.executable, "-c", BARE_UVLOOP, str(fport)], "0", fport, "1"
        )

    if args.floor_epoll:
        eport = free_port()
        target(
            "floor: bare epoll",
            [sys.executable, "-c", BARE_EPOLL, str(eport)],
            "0",
            eport,
            "1",
        )

    if args.reload:
        reload_runs(args, work, bport, nginx, env)

    if args.nginx2:
        nport2 = free_port()
        (work / "proxy2.conf").write_text(
            NGINX_PROXY.format(dir=work, port=nport2, backend=bport, workers=2)
        )
        target(
            "nginx 1.22 (2 workers)",
            [nginx, "-p", str(work), "-c", str(work / "proxy2.conf")],
            None,
            nport2,
            "0,1",
        )

    if args.workers2:
        hport2 = free_port()
        serve2 = [sys.executable, "-c", HAKEEPER_SERVE, str(hport2), str(bport), "2"]
        target("hakeeper (2 workers)", serve2, None, hport2, "0,1")
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--workers2", action="store_true", help="also run hakeeper with 2 workers")
    ap.add_argument("--nginx2", action="store_true", help="also run nginx with 2 workers")
    ap.add_argument(
        "--routed", action="store_true", help="also run `hakeeper run --nginx` (routing path)"
    )
    ap.add_argument("--skip-nginx", action="store_true")
    ap.add_argument(
        "--reload", action="store_true", help="also count requests lost to reloads under load"
    )
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also measure a bare uvloop server answering itself (no proxying): "
        "the per-connection/per-request cost any uvloop Protocol pays on this box",
    )
    ap.add_argument(
        "--floor-epoll",
        action="store_true",
        help="also measure a bare responder on raw sockets + one edge-triggered select.epoll "
        "(the dataplane/relay.py technique): the floor without uvloop transports",
    )
    ap.add_argument(
        "--tls",
        action="store_true",
        help="HTTPS instead: nginx vs `hakeeper run --nginx` with `listen ... ssl`",
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin") is None:
            print(f"missing {tool}", file=sys.stderr)
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix=f"hk-l7bench-{secrets.token_hex(3)}-"))
    procs: list[subprocess.Popen[bytes]] = []
    runs: list[list[Result]] = []
    try:
        bport = free_port()
        (work / "backend.conf").write_text(
            NGINX_BACKEND.format(dir=work, port=bport, body=BODY.decode())
        )
        backend = subprocess.Popen(
            ["taskset", "-c", "1", nginx, "-p", str(work), "-c", str(work / "backend.conf")]
        )
        procs.append(backend)
        wait_port(bport)
        print(f"backend: nginx return 200 (100-byte body) on :{bport}, CPU 1")
        rps, _p50, p99, _ = run_wrk(bport, 3, args.connections, False, "1")
        print(f"  direct (no proxy, same CPU as wrk): {rps:.0f} req/s p99 {p99:.2f} ms")
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
        for i in range(args.runs):
            if args.runs > 1:
                print(f"run {i + 1}/{args.runs}", flush=True)
            runs.append(one_run(args, work, bport, nginx, env=env, procs=procs))
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)
    for run in runs:
        print()
        print(table(run))
    if len(runs) > 1:
        print()
        print(summary(runs))
    if args.json:
        args.json.write_text(json.dumps([[asdict(r) for r in run] for run in runs], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
