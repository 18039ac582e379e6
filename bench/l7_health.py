"""How fast an active health check takes a failing upstream out of rotation, and its cost.

Default mode: three loopback backends behind the L7 engine (one worker, in this process)
read from an nginx.conf with `health_check interval=I fails=F passes=P`; a client sends
sequential keep-alive requests while one backend switches to 500 and later back to 200.
Reported per run: time from the switch to "down" (and to the last 5xx a client saw), the
5xx count, and the time from the fix to "up". Expected: down within I*F plus one probe
round trip. The switch falls at a random phase between two probes.

`--workers N`: the same through `hakeeper run --nginx` with N workers and the one checker
in the master (verdicts to the workers through shared memory). The client opens a new
connection per request (the kernel spreads them over the workers); the failing backend
records the time of every client request it still gets, so "out" is the time from the
switch to the LAST client request any worker sent it; "decided" is when the probe that
completed `fails` failures reached the backend (out - decided = the verdict's way to the
workers: probe answer, table write, the workers' 50 ms poll).

`--cpu`: the checker's CPU with `--servers` (100) backends checked every `--cpu-interval`
(1 s): `hakeeper run --nginx` with one worker, utime+stime of the master (the checker
thread) and of the worker (its 50 ms table poll) from /proc/PID/stat over `--seconds`.

    .venv/bin/python bench/l7_health.py [--runs 5] [--interval 0.2] [--fails 2] [--passes 2]
    .venv/bin/python bench/l7_health.py --workers 2 [--runs 5]
    .venv/bin/python bench/l7_health.py --cpu [--servers 100] [--cpu-interval 1] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hakeeper.balance.upstream import UpstreamGroup
from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import read_nginx
from hakeeper.proxy import health
from hakeeper.proxy.engine import Engine
from hakeeper.proxy.from_nginx import listeners

#: The switch to 500 falls at a random point between two probes (seeded: repeatable).
PHASE = random.Random(5)


class Backend:
    def __init__(self) -> None:
        self.status = 200
        self.server: asyncio.Server | None = None
        self.port = 0
        self.client_times: list[float] = []  # loop time of each client (non-probe) request
        self.probe_times: list[float] = []  # and of each health probe

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                now = asyncio.get_running_loop().time()
                if head.startswith(b"GET /hc "):
                    self.probe_times.append(now)
                else:
                    self.client_times.append(now)
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n\r\nok" % self.status)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]


async def one_run(interval: float, fails: int, passes: int) -> dict[str, float]:
    backends = [Backend() for _ in range(3)]
    for b in backends:
        await b.start()
    servers = " ".join(f"server 127.0.0.1:{b.port};" for b in backends)
    ms = int(interval * 1000)
    text = f"""events {{}} http {{ upstream app {{ {servers} }}
      server {{ listen 127.0.0.1:8080; location / {{ proxy_pass http://app;
        proxy_http_version 1.1; proxy_set_header Connection "";
        health_check interval={ms}ms fails={fails} passes={passes} uri=/hc; }} }} }}"""
    diags = Diagnostics()
    (route,) = listeners(read_nginx(parse_nginx_text(text, "bench", diags), diags), diags)
    assert isinstance(route.balancer, UpstreamGroup)
    engine = Engine(route.config, route.balancer)
    await engine.start_listening("127.0.0.1", 0)
    checks = health.attach(engine)
    assert checks is not None
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", engine.ports()[0])

    async def get() -> int:
        writer.write(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        return int(head.split(b" ", 2)[1])

    def state() -> str:
        return str(checks.snapshot()[1]["state"])

    try:
        await asyncio.sleep(interval * (2 + PHASE.random()))  # a random phase vs the probes
        backends[1].status = 500
        t0 = loop.time()
        n5xx, last5xx, down_at = 0, t0, 0.0
        while loop.time() - t0 < interval * (fails + 3):
            if await get() >= 500:
                n5xx += 1
                last5xx = loop.time()
            if not down_at and state() == "down":
                down_at = loop.time()
            await asyncio.sleep(0.002)
        backends[1].status = 200
        t1 = loop.time()
        while state() != "up":
            if loop.time() - t1 > interval * (passes + 5):
                raise RuntimeError("did not come back")
            await asyncio.sleep(0.002)
        up_at = loop.time()
        return {
            "down_s": down_at - t0,
            "last_5xx_s": last5xx - t0,
            "n_5xx": n5xx,
            "up_s": up_at - t1,
        }
    finally:
        writer.close()
        health.detach(checks)
        engine.close()
        for b in backends:
            if b.server is not None:
                b.server.close()


# -- hakeeper run --nginx: N workers, one checker in the master ------------------------------

RUN_CONF = """worker_processes {workers}; events {{}}
http {{ upstream app {{ {servers} }}
  server {{ listen 127.0.0.1:{port} reuseport;
    location / {{ proxy_pass http://app;
      health_check interval={ms}ms fails={fails} passes={passes} uri=/hc; }}
    location = /ready {{ return 200 "ok"; }} }} }}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def run_nginx(text: str) -> Iterator[subprocess.Popen[bytes]]:
    """`hakeeper run --nginx` on `text` (a temporary file); SIGTERM and reap at the end."""
    work = tempfile.mkdtemp(prefix="hk-l7-health-")
    conf = os.path.join(work, "nginx.conf")
    Path(conf).write_text(text)
    proc = subprocess.Popen([sys.executable, "-m", "hakeeper", "run", "--nginx", conf])
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        os.unlink(conf)
        os.rmdir(work)


async def get_new_conn(port: int, path: str = "/") -> int:
    """One request on a new connection: its status (0 when the proxy does not answer)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 5)
        return int(data.split(b" ", 2)[1]) if data else 0
    except (OSError, TimeoutError, ValueError, IndexError):
        return 0
    finally:
        writer.close()


async def wait_ready(proc: subprocess.Popen[bytes], port: int, limit: float = 20.0) -> None:
    end = time.monotonic() + limit
    while await get_new_conn(port, "/ready") != 200:
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError("hakeeper run --nginx did not come up")
        await asyncio.sleep(0.05)


async def workers_run(args: argparse.Namespace) -> dict[str, float]:
    backends = [Backend() for _ in range(3)]
    for b in backends:
        await b.start()
    port = free_port()
    text = RUN_CONF.format(
        workers=args.workers,
        servers=" ".join(f"server 127.0.0.1:{b.port};" for b in backends),
        port=port,
        ms=int(args.interval * 1000),
        fails=args.fails,
        passes=args.passes,
    )
    loop = asyncio.get_running_loop()
    try:
        with run_nginx(text) as proc:
            await wait_ready(proc, port)
            await asyncio.sleep(args.interval * (2 + PHASE.random()))  # random probe phase
            bad = backends[1]
            bad.status = 500
            t0 = loop.time()
            n5xx = requests = 0
            while loop.time() - t0 < args.interval * (args.fails + 3):
                statuses = await asyncio.gather(*(get_new_conn(port) for _ in range(4)))
                requests += len(statuses)
                n5xx += sum(1 for s in statuses if s >= 500)
            after = [t - t0 for t in bad.client_times if t >= t0]
            failed = [t - t0 for t in bad.probe_times if t >= t0]
            bad.status = 200
            decided = failed[args.fails - 1] if len(failed) >= args.fails else float("nan")
            return {
                "decided_s": decided,  # the probe that made it `fails` in a row (sent)
                "out_s": max(after) if after else 0.0,
                "n_5xx": n5xx,
                "req_per_s": requests / (loop.time() - t0),
            }
    finally:
        for b in backends:
            if b.server is not None:
                b.server.close()


def proc_cpu(pid: int) -> float:
    """utime + stime seconds of one process (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


async def cpu_run(args: argparse.Namespace) -> dict[str, float]:
    backends = [Backend() for _ in range(args.servers)]
    for b in backends:
        await b.start()
    port = free_port()
    text = RUN_CONF.format(
        workers=1,
        servers=" ".join(f"server 127.0.0.1:{b.port};" for b in backends),
        port=port,
        ms=int(args.cpu_interval * 1000),
        fails=1,
        passes=1,
    )
    try:
        with run_nginx(text) as proc:
            await wait_ready(proc, port)
            await asyncio.sleep(args.cpu_interval * 2)  # start-up done, probes in steady state
            (worker,) = children(proc.pid)
            m0, w0, t0 = proc_cpu(proc.pid), proc_cpu(worker), time.monotonic()
            await asyncio.sleep(args.seconds)
            m1, w1, t1 = proc_cpu(proc.pid), proc_cpu(worker), time.monotonic()
            wall = t1 - t0
            return {
                "master_pct": 100 * (m1 - m0) / wall,
                "worker_pct": 100 * (w1 - w0) / wall,
                "probes_per_s": args.servers / args.cpu_interval,
            }
    finally:
        for b in backends:
            if b.server is not None:
                b.server.close()


def report(title: str, rows: list[dict[str, float]]) -> None:
    print(title)
    for key in rows[0]:
        vals = [r[key] for r in rows]
        print(
            f"  {key:12s} median {statistics.median(vals):.3f}  min {min(vals):.3f}  "
            f"max {max(vals):.3f}"
        )


async def main(args: argparse.Namespace) -> None:
    if args.cpu:
        rows = [await cpu_run(args) for _ in range(args.runs)]
        report(
            f"checker CPU: {args.servers} servers x {args.cpu_interval}s, "
            f"{args.seconds}s windows, runs={args.runs}",
            rows,
        )
        return
    if args.workers:
        rows = [await workers_run(args) for _ in range(args.runs)]
        report(
            f"run --nginx workers={args.workers} interval={args.interval}s fails={args.fails} "
            f"runs={args.runs}: switch to 500 -> last client request any worker sent it",
            rows,
        )
        return
    rows = [await one_run(args.interval, args.fails, args.passes) for _ in range(args.runs)]
    print(f"interval={args.interval}s fails={args.fails} passes={args.passes} runs={args.runs}")
    for key in ("down_s", "last_5xx_s", "n_5xx", "up_s"):
        vals = [r[key] for r in rows]
        print(
            f"  {key:11s} median {statistics.median(vals):.3f}  min {min(vals):.3f}  "
            f"max {max(vals):.3f}"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--fails", type=int, default=2)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0, help="through run --nginx, N workers")
    ap.add_argument("--cpu", action="store_true", help="checker CPU instead of reaction time")
    ap.add_argument("--servers", type=int, default=100)
    ap.add_argument("--cpu-interval", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    asyncio.run(main(ap.parse_args()))
