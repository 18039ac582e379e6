"""Socket-free cost of nginx's response header rules on the L7 relay: µs per request.

Drives the plain fast path (a lone `location / { proxy_pass http://backend; ... }` read
from nginx.conf, upstream keep-alive) with fake transports, as bench/l7_socketfree.py
does, once with the location's `ResponseRules` (what `hakeeper run --nginx` runs: the
upstream's Server/Date/X-Accel-* hidden, our Server and Date added, the default
`proxy_redirect http://backend/ /`) and once without them (`ProxyConfig.response=None`,
the relay as it was before these rules). Upstream answers:

- `bare`: `Content-Length` only, 100-byte body;
- `nginx`: what nginx as a backend sends (Server, Date, Content-Type, Connection): the
  same bytes every time, so the raw path's per-second memo answers;
- `varying`: the same plus a changing `X-Request-Id` (no memo hit: the full filter);
- `late`: what a Node/Express backend sends (no Server, its Date after the other fields,
  a changing ETag): the hidden line is cut from the middle of the head;
- `redirect`: a 302 with `Location: http://backend/x` (rewritten and made absolute).

Client modes: `ka` (HTTP/1.1 keep-alive: raw relay), `close` (`Connection: close`: the
closing raw relay, head rewritten anyway), `http10` (HTTP/1.0 keep-alive: parsed path).

Usage: .venv/bin/python bench/response_head_bench.py [--n 2000] [--repeat 15] [--wall]
Prints best and median µs per request over interleaved rounds and the difference
(best-of is the least noisy figure on a shared box). Times are this process's CPU time
(time.process_time: everything here runs in it, and time the box gives to other
processes is not counted), or wall-clock time with `--wall`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import statistics
import time
from collections.abc import Callable

from l7_socketfree import FakeTransport, _pooled

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import read_nginx
from hakeeper.proxy.engine import Engine
from hakeeper.proxy.from_nginx import listeners

CONF = """
http {
  upstream backend { server 127.0.0.1:9; keepalive 64; }
  server {
    listen 127.0.0.1:8080;
    keepalive_requests 1000000000;
    location / { proxy_pass http://backend; proxy_http_version 1.1;
                 proxy_set_header Connection ""; }
  }
}
"""
BODY = b"x" * 100
BARE = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + BODY
NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 18:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n" + BODY
)
LATE = (
    b"HTTP/1.1 200 OK\r\nX-Powered-By: Express\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b'Content-Length: 100\r\nETag: W/"64-%d"\r\nDate: Mon, 23 Nov 2026 18:00:00 GMT\r\n'
    b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n" + BODY
)
REDIRECT = (
    b"HTTP/1.1 302 Found\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 18:00:00 GMT\r\n"
    b"Location: http://backend/x\r\nContent-Length: 100\r\n\r\n" + BODY
)
REQUESTS = {
    "ka": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    "close": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n",
    "http10": b"GET / HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nConnection: keep-alive\r\n\r\n",
}


def answers() -> dict[str, Callable[[], bytes]]:
    counter = itertools.count()
    return {
        "bare": lambda: BARE,
        "nginx": lambda: NGINX,
        "varying": lambda: NGINX.replace(
            b"\r\n\r\n", b"\r\nX-Request-Id: %d\r\n\r\n" % next(counter)
        ),
        "late": lambda: LATE % next(counter),
        "redirect": lambda: REDIRECT,
    }


def engine(with_rules: bool) -> Engine:
    diags = Diagnostics()
    cfg = read_nginx(parse_nginx_text(CONF, "bench.conf", diags), diags)
    (route,) = listeners(cfg, diags)
    assert not diags.has_errors, [d.format() for d in diags.sorted()]
    assert route.config.routes is None and route.config.response is not None  # fast path
    config = route.config if with_rules else dataclasses.replace(route.config, response=None)
    return Engine(config, route.balancer)


CLOCK = time.process_time


def run(e: Engine, request: bytes, answer: Callable[[], bytes], n: int) -> float:
    """Seconds for `n` requests (answers built before the clock starts), a new client
    connection per request in close mode."""
    close = b"Connection: close" in request
    datas = [answer() for _ in range(n)]
    client = e.protocol_factory()
    client.connection_made(FakeTransport())  # type: ignore[arg-type]
    pool = e.pool
    start = CLOCK()
    for data in datas:
        if not pool.count:
            _pooled(e)
        if close:
            client = e.protocol_factory()
            client.connection_made(FakeTransport())  # type: ignore[arg-type]
        client.data_received(request)
        up = client.up
        assert up is not None
        up.data_received(data)
        if close:
            client.connection_lost(None)
    elapsed = CLOCK() - start
    assert e.stats.responses >= n, e.stats
    return elapsed


async def main(n: int, repeat: int) -> None:
    cases = [(m, a) for m in REQUESTS for a in answers()]
    results: dict[tuple[str, str, bool], list[float]] = {}
    for _ in range(repeat):  # interleaved: drift on a shared box hits every case
        for mode, name in cases:
            for with_rules in (False, True):
                e = engine(with_rules)
                took = run(e, REQUESTS[mode], answers()[name], n)
                results.setdefault((mode, name, with_rules), []).append(took / n * 1e6)
                e.close()
    print(
        "| client | upstream answer | no rules best / median µs | rules best / median µs "
        "| difference (best) |"
    )
    print("|---|---|---|---|---|")
    for mode, name in cases:
        off, on = results[(mode, name, False)], results[(mode, name, True)]
        print(
            f"| {mode} | {name} | {min(off):.2f} / {statistics.median(off):.2f} "
            f"| {min(on):.2f} / {statistics.median(on):.2f} | {min(on) - min(off):+.2f} |"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--wall", action="store_true", help="wall-clock time, not CPU time")
    args = ap.parse_args()
    if args.wall:
        CLOCK = time.perf_counter
    asyncio.run(main(args.n, args.repeat))
