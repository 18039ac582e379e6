"""Routed listeners on real loopback sockets: ordering with pipelining, bodies sent to a
`return`, per-location proxy settings and limits, hash keys from variables, one balancer
per upstream, and the plain fast path left untouched."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from test_proxy_support import (
    Backend,
    BackendConn,
    Seen,
    connect,
    one_route,
    read_response,
    read_until_closed,
    request,
    run,
    simple_response,
    wait_for,
)

from hakeeper.balance.nginx_hash import ChashBalancer
from hakeeper.balance.upstream import UpstreamGroup
from hakeeper.proxy.engine import Engine
from hakeeper.proxy.http1 import ClientProtocol
from hakeeper.proxy.routed import RoutedClientProtocol

CONF = """
http {{
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    upstream app {{ server 127.0.0.1:{a}; server 127.0.0.1:{b}; keepalive 4; }}
    upstream byuri {{ hash $request_uri consistent; server 127.0.0.1:{a}; server 127.0.0.1:{b}; }}
    server {{
        listen 127.0.0.1:8999;
        server_name main.test;
        location / {{ proxy_pass http://app; }}
        location /ret {{ return 200 "r $uri"; }}
        location /hdr/ {{
            proxy_pass http://app/;
            proxy_set_header Host $host;
            proxy_set_header X-Loc "hdr $remote_addr";
            proxy_set_header Connection "";
        }}
        location /small/ {{ proxy_pass http://app; client_max_body_size 10; }}
        location /h/ {{ proxy_pass http://byuri; }}
    }}
    server {{ listen 127.0.0.1:8999; server_name other.test; location /only {{ return 204; }} }}
}}
"""


def _named(name: bytes) -> object:
    def handler(conn: BackendConn, seen: Seen) -> None:
        conn.send(simple_response(body=name + b" " + seen.target))

    return handler


@contextlib.asynccontextmanager
async def routed(text: str) -> AsyncIterator[tuple[Engine, int, list[Backend]]]:
    backends = [await Backend(_named(n)).start() for n in (b"A", b"B")]  # type: ignore[arg-type]
    engine: Engine | None = None
    try:
        route = one_route(text.format(a=backends[0].port, b=backends[1].port), "t.conf")
        engine = Engine(route.config, route.balancer)
        await engine.start_listening("127.0.0.1", 0)
        yield engine, engine.ports()[0], backends
        assert engine.stats.internal_errors == 0
    finally:
        if engine is not None:
            engine.close()
        for b in backends:
            await b.stop()


def get(path: bytes, host: bytes = b"main.test", extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"\r\n"


def test_pipelined_returns_and_proxied_requests_stay_in_order() -> None:
    async def main() -> None:
        async with routed(CONF) as (engine, port, backends):
            assert isinstance(engine.protocol_factory(), RoutedClientProtocol)
            reader, writer = await connect(port)
            writer.write(
                get(b"/x1")
                + get(b"/ret/1")
                + b"POST /ret/2 HTTP/1.1\r\nHost: main.test\r\nContent-Length: 5\r\n\r\nhello"
                + b"POST /ret/3 HTTP/1.1\r\nHost: main.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"3\r\nabc\r\n0\r\n\r\n"
                + get(b"/x2")
                + get(b"/only", b"other.test")
                + get(b"/nothing", b"other.test")
            )
            bodies = []
            statuses = []
            for _ in range(7):
                resp = await read_response(reader)
                assert resp.keep_alive
                statuses.append(resp.status)
                bodies.append(resp.body)
            assert statuses == [200, 200, 200, 200, 200, 204, 404]
            assert bodies[:5] == [b"A /x1", b"r /ret/1", b"r /ret/2", b"r /ret/3", b"B /x2"]
            # the bodies sent to `return` never reached an upstream
            assert [s.target for b in backends for s in b.seen] == [b"/x1", b"/x2"]
            writer.close()

    run(main())


def test_expect_continue_on_a_return_location() -> None:
    async def main() -> None:
        async with routed(CONF) as (_, port, _b):
            reader, writer = await connect(port)
            writer.write(
                b"PUT /ret/e HTTP/1.1\r\nHost: main.test\r\nContent-Length: 3\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"abc")
            resp = await read_response(reader)
            assert resp.status == 200 and resp.body == b"r /ret/e" and resp.keep_alive
            writer.close()

    run(main())


def test_per_location_headers_uri_part_and_body_limit() -> None:
    async def main() -> None:
        async with routed(CONF) as (engine, port, backends):
            resp = await request(port, get(b"/hdr/p?k=7", extra=b"X-Loc: client\r\n"))
            assert resp.status == 200 and resp.body.endswith(b" /p?k=7")
            (seen,) = [s for b in backends for s in b.seen]
            assert seen.header(b"x-loc") == b"hdr 127.0.0.1"  # the client's value was replaced
            assert seen.header(b"host") == b"main.test"
            resp = await request(port, get(b"/", extra=b"X-Loc: client\r\n"))
            seen = [s for b in backends for s in b.seen][-1]
            assert seen.header(b"x-loc") == b"client" and seen.header(b"host") == b"app"
            big = b"POST /small/ HTTP/1.1\r\nHost: main.test\r\nContent-Length: 11\r\n\r\n"
            reader, writer = await connect(port)
            writer.write(big + b"x" * 11)
            assert (await read_response(reader)).status == 413
            await read_until_closed(reader)
            writer.close()
            resp = await request(port, big.replace(b"11", b"10") + b"x" * 10)
            assert resp.status == 200
            # the other location of the same upstream allows the default 1m
            resp = await request(port, big.replace(b"/small/", b"/") + b"x" * 11)
            assert resp.status == 200
            for bad in (b"/../x", b"/%zz"):
                assert (await request(port, get(bad))).status == 400
            assert engine.stats.upstream_reused > 0  # each location keeps its own pool

    run(main())


def test_hash_key_from_request_uri_and_shared_round_robin() -> None:
    async def main() -> None:
        async with routed(CONF) as (engine, port, backends):
            (child,) = [c for c in engine.children.values() if c.config.proxy_host == "byuri"]
            assert isinstance(child.balancer, UpstreamGroup)
            ring = child.balancer.balancer
            assert isinstance(ring, ChashBalancer)
            names = {f"127.0.0.1:{b.port}": n for b, n in zip(backends, b"AB", strict=True)}
            for i in range(12):
                path = b"/h/%d" % (i % 6)
                resp = await request(port, get(path))
                # the key is the request URI: the ketama owner of that text
                assert resp.body[0] == names[ring.owner(path)], path
            # `/` and `/hdr/` use upstream app: ONE round-robin across both locations
            seq = []
            for path in (b"/a", b"/hdr/b", b"/c", b"/hdr/d"):
                seq.append((await request(port, get(path))).body[:1])
            assert seq == [b"A", b"B", b"A", b"B"]

    run(main())


def test_lone_location_listener_keeps_the_fast_path() -> None:
    async def main() -> None:
        text = (
            "http {{ upstream app {{ server 127.0.0.1:{a}; server 127.0.0.1:{b}; }}"
            " server {{ listen 127.0.0.1:8999; server_name x;"
            " location / {{ proxy_pass http://app; }} }} }}"
        )
        async with routed(text) as (engine, port, _b):
            assert engine.routes is None and not engine.children
            assert type(engine.protocol_factory()) is ClientProtocol
            resp = await request(port, get(b"/z", b"anything"))
            assert resp.status == 200 and resp.body == b"A /z"

    run(main())


def test_client_keeps_alive_when_the_upstream_closes() -> None:
    """nginx 1.22 defaults (HTTP/1.0 + Connection: close upstream): the client connection
    stays open across requests even though every upstream connection closes."""

    async def main() -> None:
        text = (
            "http {{ server {{ listen 127.0.0.1:8999;"
            " location / {{ proxy_pass http://127.0.0.1:{a}; }}"
            " location /b/ {{ proxy_pass http://127.0.0.1:{b}/; }} }} }}"
        )
        async with routed(text) as (engine, port, backends):
            reader, writer = await connect(port)
            for path in (b"/1", b"/b/2", b"/3"):
                writer.write(get(path))
                resp = await read_response(reader)
                assert resp.status == 200 and resp.keep_alive, path
            writer.close()
            assert [s.target for s in backends[0].seen] == [b"/1", b"/3"]
            assert [s.target for s in backends[1].seen] == [b"/2"]
            assert backends[0].seen[0].header(b"connection") == b"close"
            assert engine.stats.upstream_reused == 0

    run(main())


def test_header_rules_with_routing_variables() -> None:
    """`$uri`, `$args`, `$arg_NAME`, `$is_args`, `$request_method`, `$server_name` and
    `$server_port` in proxy_set_header are rendered per request; such a lone location
    leaves the plain fast path (which does not know them)."""

    async def main() -> None:
        text = (
            "http {{ upstream app {{ server 127.0.0.1:{a}; server 127.0.0.1:{b}; }}"
            " server {{ listen 127.0.0.1:8999; server_name s.test;"
            " location / {{ proxy_pass http://app/base/;"
            ' proxy_set_header X-V "$request_method $uri$is_args$args a=$arg_a'
            ' $server_name:$server_port $host";'
            " }} }} }}"
        )
        async with routed(text) as (engine, port, backends):
            assert engine.routes is not None
            for target in (b"/p/q?a=1&b=2", b"/x"):
                assert (await request(port, get(target, b"h.test"))).status == 200
            seen = [s for b in backends for s in b.seen]
            assert [s.target for s in seen] == [b"/base/p/q?a=1&b=2", b"/base/x"]
            values = [s.header(b"x-v") for s in seen]
            assert values == [
                b"GET /p/q?a=1&b=2 a=1 s.test:%d h.test" % port,
                b"GET /x a= s.test:%d h.test" % port,
            ]
            assert all(s.header(b"host") == b"app" for s in seen)

    run(main())


def test_upgrade_request_to_a_return_location_is_answered_then_closed() -> None:
    async def main() -> None:
        async with routed(CONF) as (engine, port, backends):
            reader, writer = await connect(port)
            writer.write(
                b"GET /ret/ws HTTP/1.1\r\nHost: main.test\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\nnot-http-bytes"
            )
            resp = await read_response(reader)
            assert resp.status == 200 and resp.body == b"r /ret/ws" and not resp.keep_alive
            await read_until_closed(reader)
            writer.close()
            assert not [s for b in backends for s in b.seen]
            await wait_for(lambda: not engine.clients)

    run(main())
