"""Socket-free cost of nginx's rewrite/access phases on a routed listener, µs per request.

Drives `RoutedClientProtocol` with the fake transports of `bench/l7_socketfree.py` (no
kernel, no loop I/O) on one request shape (keep-alive, 10 header fields) and three
listeners that proxy it to the same upstream:
- `routed`: two locations, no rewrite module (the plain routed path; the rewrite
  work must cost it nothing);
- `captures`: the request matches `location ~ ^/api/(?<what>\\w+)` whose
  `proxy_pass http://backend/v2/$what$is_args$args` renders the captures;
- `rewrite`: a server-level `rewrite ... last`-free rewrite, a location `rewrite ...
  break` with a capture, `set`, and `allow`/`deny` (every phase runs);
and `pure-route` / `pure-phases`: the routing decision alone (`RouteTable` lookup +
`VirtualServer.find`, against `rewrite.run_phases` on the `rewrite` listener).

Usage: .venv/bin/python bench/l7_rewrite.py [--n 20000] [--repeat 7]
Prints best and median µs per request over `repeat` interleaved rounds of `n`.
A/B two trees with PYTHONPATH=<tree>/src (the `routed` case runs on both).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from l7_socketfree import TEN, keepalive

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import read_nginx
from hakeeper.proxy.engine import Engine
from hakeeper.proxy.from_nginx import listeners
from hakeeper.proxy.routes import RequestView, normalize_path

HEAD = """
http {
  upstream backend { server 127.0.0.1:9; keepalive 64; }
  server {
    listen 127.0.0.1:8080;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
"""
CONFS = {
    "routed": HEAD
    + """
    location / { proxy_pass http://backend; }
    location /static/ { return 200 "static"; }
  }
}
""",
    "captures": HEAD
    + r"""
    location / { return 404; }
    location ~ ^/api/(?<what>\w+) { proxy_pass http://backend/v2/$what$is_args$args; }
  }
}
""",
    "rewrite": HEAD
    + r"""
    rewrite ^/old/(.*)$ /api/$1;
    allow 10.0.0.0/8;
    allow 127.0.0.1;
    deny all;
    location / { return 404; }
    location /api/ {
      set $tenant "t-$arg_id";
      rewrite ^/api/(\w+)$ /v2/$1 break;
      proxy_pass http://backend;
    }
  }
}
""",
}


def engine_for(text: str) -> Engine:
    diags = Diagnostics()
    cfg = read_nginx(parse_nginx_text(text, "bench.conf", diags), diags)
    (route,) = listeners(cfg, diags)
    assert not diags.has_errors, [d.format() for d in diags.sorted()]
    assert route.config.routes is not None
    return Engine(route.config, route.balancer)


def through_proxy(engine: Engine, n: int) -> float:
    (child,) = engine.children.values()
    return keepalive(engine, TEN, n, pool_of=child)


def pure(engine: Engine, n: int, phases: bool) -> float:
    """The routing decision alone for TEN's target, as routed.py makes it."""
    table = engine.routes
    assert table is not None
    target = b"/api/items?id=42"
    if phases:
        from hakeeper.proxy.rewrite import run_phases  # noqa: PLC0415 (absent before)
    start = time.perf_counter()
    for _ in range(n):
        path, _, args = target.partition(b"?")
        uri, quoted = normalize_path(path)
        server, host = table.server_for_raw(b"example.test")
        if not phases:
            server.find(uri)
            continue
        view = RequestView(b"GET", target, uri, args, host, (), b"127.0.0.1", b"5555", b"", b"8080")
        run_phases(server, view, quoted)
    return time.perf_counter() - start


async def main(n: int, repeat: int, only_routed: bool) -> None:
    cases: dict[str, Callable[[], float]] = {
        "routed": lambda: through_proxy(engine_for(CONFS["routed"]), n),
        "pure-route": lambda: pure(engine_for(CONFS["routed"]), n, False),
    }
    if not only_routed:
        cases["captures"] = lambda: through_proxy(engine_for(CONFS["captures"]), n)
        cases["rewrite"] = lambda: through_proxy(engine_for(CONFS["rewrite"]), n)
        cases["pure-phases"] = lambda: pure(engine_for(CONFS["rewrite"]), n, True)
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):  # interleaved rounds: drift on a shared box hits every case
        for name, case in cases.items():
            results[name].append(case() / n * 1e6)
    for name, values in results.items():
        best, med = min(values), statistics.median(values)
        print(f"{name:12s} best {best:6.2f} us  median {med:6.2f} us per request")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument(
        "--only-routed", action="store_true", help="the cases a tree without rewrite.py has"
    )
    args = ap.parse_args()
    asyncio.run(main(args.n, args.repeat, args.only_routed))
