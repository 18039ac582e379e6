"""nginx `stream {}` side by side: nginx 1.22 vs `hakeeper run --nginx` on the same config file.

Same backend, load and CPU accounting as `l4_bench.py` (nginx `return 200` with a 100-byte
body on CPU 1 with wrk; the proxy on CPU 0; wrk -t1 -c50, keep-alive and `Connection:
close`; req/s per proxy core from the proxy process's utime+stime). Both proxies read the
very same nginx.conf text (l4_bench.NGINX_STREAM: one `upstream` with one server), so the
hakeeper figure includes nginx's balancer choice, the passive-health bookkeeping and the
proxy_timeout sweep on top of the userspace relay. The CPU measured for hakeeper is its
stream child process (the `run` master only waits for signals).

Usage: .venv/bin/python bench/stream_bench.py [--duration 5] [--connections 50] [--runs 1]
       [--plain]   (also the plain userspace proxy with IPVS rr, to attribute the cost)
Everything listens on 127.0.0.1; every process started here is stopped at exit.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from l4_bench import HAKEEPER_SERVE, NGINX_BACKEND, NGINX_STREAM, STREAM_MODULE, Result, measure
from wrktools import free_port, stop, wait_port

BODY = "x" * 100


def table(results: list[tuple[int, Result]]) -> str:
    ref: dict[tuple[str, int], Result] = {}
    lines = [
        "| run | target | mode | req/s | p50 / p99 ms | proxy CPU % | req/s per proxy core "
        "| vs nginx (per core) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run, r in results:
        if r.target.startswith("nginx"):
            ref[(r.mode, run)] = r
        base = ref.get((r.mode, run))
        ratio = f"{r.per_core / base.per_core:.2f}x" if base is not None and r.cpu_pct else "-"
        lines.append(
            f"| {run + 1} | {r.target} | {r.mode} | {r.rps:,.0f} | {r.p50_ms:.2f} / "
            f"{r.p99_ms:.2f} | {r.cpu_pct:.0f} | {r.per_core:,.0f} | {ratio} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--modes", default="keep-alive,close")
    ap.add_argument(
        "--plain", action="store_true", help="also l4_bench's plain userspace proxy (rr)"
    )
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin") is None:
            print(f"missing {tool}", file=sys.stderr)
            return 2
    if not Path(STREAM_MODULE).exists():
        print(f"missing {STREAM_MODULE} (libnginx-mod-stream)", file=sys.stderr)
        return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix=f"hk-streambench-{secrets.token_hex(3)}-"))
    procs: list[subprocess.Popen[bytes]] = []
    results: list[tuple[int, Result]] = []
    try:
        bport = free_port()
        (work / "backend.conf").write_text(NGINX_BACKEND.format(dir=work, port=bport, body=BODY))
        backend = subprocess.Popen(
            ["taskset", "-c", "1", nginx, "-p", str(work), "-c", str(work / "backend.conf")]
        )
        procs.append(backend)
        wait_port(bport)
        targets = ["nginx 1.22 stream", "hakeeper run --nginx"]
        if args.plain:
            targets.append("hakeeper userspace (rr)")
        for run in range(args.runs):
            for name in targets:
                port = free_port()
                conf = work / "stream.conf"
                conf.write_text(
                    NGINX_STREAM.format(module=STREAM_MODULE, dir=work, port=port, backend=bport)
                )
                if name.startswith("nginx"):
                    argv = [nginx, "-p", str(work), "-c", str(conf)]
                elif name.startswith("hakeeper run"):
                    argv = [sys.executable, "-m", "hakeeper", "run", "--nginx", str(conf)]
                else:  # l4_bench's plain UserspaceDataplane, for attribution
                    argv = [sys.executable, "-c", HAKEEPER_SERVE, str(port), str(bport), "rr", "-"]
                proc = subprocess.Popen(["taskset", "-c", "0", *argv])
                procs.append(proc)
                wait_port(port)
                results += [(run, r) for r in measure(name, proc.pid, port, args)]
                stop(proc)
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
