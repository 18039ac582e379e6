"""Socket-free timing of the L7 client protocol's Python: µs per request, no kernel, no loop I/O.

Drives `ClientProtocol` (and the routed subclass) with fake transports and one pooled
`UpstreamProtocol`, so only the engine's own Python runs (httptools parse, on_header,
head build, raw relay, resp_done, pool). The figures isolate the interpreter-side cost
of the hot path that wrk runs cannot resolve on a shared 2-vCPU box:

- `ka-min`: keep-alive request as wrk sends it (Host only), raw relay of a 100-byte body;
- `ka-10h`: the same with 10 browser-like header fields (the per-header path);
- `close`: a new connection per request with `Connection: close` (connection_made,
  request, response, connection_lost);
- `routed-10h`: keep-alive, 10 fields, on a listener with two locations (routing table,
  `RoutedClientProtocol.on_header`).

Usage: .venv/bin/python bench/l7_socketfree.py [--n 20000] [--repeat 7]
Prints the best and median µs per request over `repeat` rounds of `n` requests
(best-of is the least noisy figure on a shared box). A/B two trees with
PYTHONPATH=<tree>/src.

Results (2026-11-23 18:50, loaded 2-vCPU box, load 2-3; 10 alternating processes per
tree, each the best of 60 rounds of 1000 requests; median of those bests, µs/request):
e71ee73 (http1.py in one module) vs the split + flow-control fixes + shared on_header:
ka-min 8.02 vs 7.95, ka-10h 15.69 vs 15.38, close 18.38 vs 17.73, routed-10h 26.52 vs
26.27 (parity: spread ±5 %). One pitfall found on the way: CPython 3.11 compiles a method
call on an imported name (`_SPECIAL.get(low)` after `from m import _SPECIAL`) as
attribute load + call instead of LOAD_METHOD, which had cost on_header ~75 ns per field;
such tables stay defined in the module that calls them.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import read_nginx
from hakeeper.proxy.config import Limits, Peer, ProxyConfig, keepalive_headers
from hakeeper.proxy.engine import Engine
from hakeeper.proxy.from_nginx import listeners
from hakeeper.proxy.upstream import UpstreamProtocol

PEER = Peer("127.0.0.1", 9)
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100
MIN_REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
TEN = (
    b"GET /api/items?id=42 HTTP/1.1\r\nHost: example.test\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0\r\n"
    b"Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\nReferer: http://example.test/\r\n"
    b"Cookie: session=abcdef0123456789\r\nX-Forwarded-For: 10.0.0.1\r\n"
    b"Cache-Control: no-cache\r\nPragma: no-cache\r\n\r\n"
)
CLOSE_REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n"
ROUTED_CONF = """
http {
  upstream backend { server 127.0.0.1:9; keepalive 64; }
  server {
    listen 127.0.0.1:8080;
    location / { proxy_pass http://backend; proxy_http_version 1.1;
                 proxy_set_header Connection ""; }
    location /static/ { return 200 "static"; }
  }
}
"""


class FakeTransport:
    """Just enough of asyncio.Transport for the protocols; drops what is written."""

    def __init__(self) -> None:
        self.closing = False
        self.written = 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 5555)

    def write(self, data: bytes) -> None:
        self.written += 1

    def writelines(self, parts: Any) -> None:
        self.written += 1

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def _pooled(engine: Engine) -> UpstreamProtocol:
    up = UpstreamProtocol(engine, engine.config.peers[0])
    up.connection_made(FakeTransport())  # type: ignore[arg-type]
    assert engine.pool.put(up, engine.now)
    return up


def keepalive(engine: Engine, request: bytes, n: int, pool_of: Engine | None = None) -> float:
    pool = (pool_of or engine).pool
    client = engine.protocol_factory()
    client.connection_made(FakeTransport())  # type: ignore[arg-type]
    start = time.perf_counter()
    for _ in range(n):
        if not pool.count:  # keepalive_requests (1000) closed the last one
            _pooled(pool_of or engine)
        client.data_received(request)
        up = client.up
        assert up is not None
        up.data_received(RESP)
    elapsed = time.perf_counter() - start
    assert engine.stats.responses >= n, engine.stats
    client.connection_lost(None)
    return elapsed


def close_mode(engine: Engine, n: int) -> float:
    pool = engine.pool
    factory = engine.protocol_factory
    start = time.perf_counter()
    for _ in range(n):
        if not pool.count:
            _pooled(engine)
        client = factory()
        client.connection_made(FakeTransport())  # type: ignore[arg-type]
        client.data_received(CLOSE_REQ)
        up = client.up
        assert up is not None
        up.data_received(RESP)
        client.connection_lost(None)
    elapsed = time.perf_counter() - start
    assert engine.stats.responses >= n, engine.stats
    return elapsed


def plain_engine() -> Engine:
    config = ProxyConfig(
        peers=(PEER,),
        http_version="1.1",
        headers=keepalive_headers(),
        upstream_keepalive=64,
        limits=Limits(keepalive_requests=1_000_000_000),
    )
    return Engine(config)


def routed_engine() -> Engine:
    diags = Diagnostics()
    cfg = read_nginx(parse_nginx_text(ROUTED_CONF, "bench.conf", diags), diags)
    (route,) = listeners(cfg, diags)
    assert not diags.has_errors, [d.format() for d in diags.sorted()]
    assert route.config.routes is not None
    return Engine(route.config, route.balancer)


def routed_keepalive(engine: Engine, request: bytes, n: int) -> float:
    (child,) = engine.children.values()
    return keepalive(engine, request, n, pool_of=child)


async def main(n: int, repeat: int) -> None:
    cases = {
        "ka-min": lambda e: keepalive(e, MIN_REQ, n),
        "ka-10h": lambda e: keepalive(e, TEN, n),
        "close": lambda e: close_mode(e, n),
    }
    results: dict[str, list[float]] = {name: [] for name in [*cases, "routed-10h"]}
    for _ in range(repeat):  # interleaved rounds: drift on a shared box hits every case
        for name, case in cases.items():
            engine = plain_engine()
            results[name].append(case(engine) / n * 1e6)
            engine.close()
        engine = routed_engine()
        results["routed-10h"].append(routed_keepalive(engine, TEN, n) / n * 1e6)
        engine.close()
    for name, values in results.items():
        best, med = min(values), statistics.median(values)
        print(f"{name:11s} best {best:6.2f} us  median {med:6.2f} us per request")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    asyncio.run(main(args.n, args.repeat))
