"""Static files side by side: nginx 1.22 vs `hakeeper run --nginx` on the same nginx.conf.

The config is Debian's stock site shape (`root`, `index`, `try_files $uri $uri/ =404`,
the stock /etc/nginx/mime.types, `sendfile on`, `worker_processes 1`); both servers are
pinned to CPU 0 and wrk to CPU 1 (one thread). For `/` (try_files + index: four stats
and an internal redirect), `/index.html` (650 bytes) and `/big.bin` (1 MiB, sendfile)
it records req/s, transfer rate and the server's CPU (master + workers, from
/proc/PID/stat deltas), and prints µs of server CPU per request.

Usage: .venv/bin/python bench/l7_static.py [--duration 5] [--connections 20]
Needs nginx, wrk and taskset. Everything listens on 127.0.0.1 and is stopped at exit.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from l7_bench import cpu_ticks, proc_tree
from wrktools import free_port, stop, wait_port

CONF = """
worker_processes 1;
daemon off;
pid {dir}/{name}.pid;
error_log {dir}/{name}.err warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {dir}/www;
        index index.html;
        location / {{ try_files $uri $uri/ =404; }}
    }}
}}
"""
TICK = os.sysconf("SC_CLK_TCK")


def site(work: str) -> None:
    os.makedirs(os.path.join(work, "www"))
    with open(os.path.join(work, "www", "index.html"), "w") as f:
        f.write("<p>hello</p>\n" * 50)
    with open(os.path.join(work, "www", "big.bin"), "wb") as f:
        f.write(os.urandom(1 << 20))
    for dirpath, _, files in os.walk(work):
        os.chmod(dirpath, 0o755)
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o644)


def measure(pid: int, url: str, duration: int, connections: int) -> tuple[float, str, float]:
    """(req/s, transfer/s text, server CPU µs per request) of one wrk run."""
    pids = proc_tree(pid)
    before = cpu_ticks(pids)
    argv = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    used = (cpu_ticks(pids) - before) / TICK
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    rate = re.search(r"Transfer/sec:\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    return rps, rate, used / max(rps * duration, 1) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=20)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="hk-static-bench-")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        site(work)
        targets = []
        hakeeper = os.path.join(os.path.dirname(sys.executable), "hakeeper")
        for name, argv in (
            ("nginx", [shutil.which("nginx") or "/usr/sbin/nginx", "-p", work, "-c"]),
            ("hakeeper", [hakeeper, "run", "--nginx"]),
        ):
            port = free_port()
            path = os.path.join(work, f"{name}.conf")
            with open(path, "w") as f:
                f.write(CONF.format(dir=work, name=name, port=port))
            proc = subprocess.Popen(
                ["taskset", "-c", "0", *argv, path],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(proc)
            wait_port(port)
            targets.append((name, proc.pid, port))
        time.sleep(0.5)
        print(f"{'server':9} {'url':12} {'req/s':>9} {'transfer':>10} {'CPU us/req':>11}")
        for url, conns in (("/", args.connections), ("/index.html", args.connections),
                           ("/big.bin", 4)):  # fmt: skip
            for name, pid, port in targets:
                rps, rate, us = measure(pid, f"http://127.0.0.1:{port}{url}", args.duration, conns)
                print(f"{name:9} {url:12} {rps:9.0f} {rate:>10} {us:11.1f}")
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
