"""Arbitrary client bytes on a routed listener (server_name, locations, `return`, URI
parts) never crash the engine nor leak a connection (hypothesis), and routing itself
never raises on any Host or URI bytes other than the 400 it is meant to give."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_proxy_routes import routed
from test_proxy_support import one_route, request, run, send_split_and_drain, wait_for

from hakeeper.proxy.routes import BadUriError, RouteTable, normalize_host, normalize_path

CONF = """
http {{
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    upstream app {{ server 127.0.0.1:{a}; keepalive 4; }}
    upstream byuri {{ hash $request_uri$http_x_k consistent; server 127.0.0.1:{b}; }}
    server {{
        listen 127.0.0.1:8999;
        server_name main.test *.wild.test ~^r\\d+\\.test$;
        client_header_timeout 1s;
        client_body_timeout 1s;
        keepalive_timeout 1s;
        client_max_body_size 64;
        location / {{ proxy_pass http://app; }}
        location /api/ {{ proxy_pass http://app/v1/; }}
        location ~ \\.txt$ {{ return 200 "t $uri $arg_a"; }}
        location = /r {{ return 301 /new$is_args$args; }}
        location /h/ {{ proxy_pass http://byuri; }}
    }}
    server {{ listen 127.0.0.1:8999; server_name other.test; return 404; }}
}}
"""

PIECES = [
    b"GET / HTTP/1.1\r\n",
    b"GET /api HTTP/1.1\r\n",
    b"GET /api/%2e%2e/x HTTP/1.1\r\n",
    b"GET /api/../../x HTTP/1.1\r\n",
    b"GET /a%zz HTTP/1.1\r\n",
    b"GET /x.txt?a=%00 HTTP/1.1\r\n",
    b"POST /r?q HTTP/1.1\r\n",
    b"GET /h/k HTTP/1.1\r\n",
    b"GET http://other.test/x HTTP/1.1\r\n",
    b"HEAD /api/a%20b HTTP/1.0\r\n",
    b"Host: main.test\r\n",
    b"Host: a.wild.test.:1\r\n",
    b"Host: r7.test\r\n",
    b"Host: other.test\r\n",
    b"Host: [::1\r\n",
    b"X-K: \xff\r\n",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Expect: 100-continue\r\n",
    b"Connection: close\r\n",
    b"\r\n",
    b"abc",
    b"3\r\nabc\r\n",
    b"0\r\n\r\n",
    b"\x00\xff",
]

client_bytes = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=12).map(b"".join),
    st.tuples(
        st.lists(st.sampled_from(PIECES), max_size=8).map(b"".join), st.binary(max_size=40)
    ).map(lambda t: t[0] + t[1]),
)


async def _case(data: bytes, split: int) -> None:
    async with routed(CONF) as (engine, port, _backends):
        await send_split_and_drain(port, data, split)
        await wait_for(lambda: not engine.clients, limit=5.0)
        idle = sum(c.pool.idle() for c in engine.children.values())
        await wait_for(lambda: len(engine.upstreams) <= idle, limit=5.0)
        resp = await request(port, b"GET /x.txt HTTP/1.1\r\nHost: main.test\r\n\r\n")
        assert resp.status == 200 and resp.body == b"t /x.txt "
        await wait_for(lambda: not engine.clients, limit=5.0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=client_bytes, split=st.integers(min_value=0, max_value=200))
def test_arbitrary_client_bytes_on_a_routed_listener(data: bytes, split: int) -> None:
    run(_case(data, min(split, len(data))), limit=30)


def _table() -> RouteTable:
    route = one_route(CONF.format(a=1, b=2), "t.conf")
    assert route.config.routes is not None
    return route.config.routes


TABLE = _table()


@settings(max_examples=300, deadline=None)
@given(host=st.binary(max_size=40), path=st.binary(max_size=60))
def test_routing_any_host_and_uri(host: bytes, path: bytes) -> None:
    from hakeeper.proxy.routes import RouteTable

    assert isinstance(TABLE, RouteTable)
    server = TABLE.server_for(normalize_host(host))
    try:
        uri, _ = normalize_path(b"/" + path)
    except BadUriError:
        return
    assert uri.startswith(b"/") and b"//" not in uri and b"/../" not in uri
    server.find(uri)


# the same listener with the rewrite and access phases (proxy/rewrite.py)
SCRIPTED = CONF.replace(
    "location / {{ proxy_pass http://app; }}",
    r"""rewrite ^/old/(.*)$ /api/$1;
        set $who "$1-$arg_u";
        allow 127.0.0.1;
        deny all;
        location / {{ proxy_pass http://app; }}
        location ~ ^/c/(?<first>[^/]*)/(.*)$ {{ proxy_pass http://app/q/$first/$2; }}
        location /l/ {{ rewrite ^/l/(.*)$ /l/$1x last; }}
        location /b/ {{ rewrite ^/b/(.*)$ /v/$1?w=$who break; proxy_pass http://app/z/; }}
        location /red/ {{ rewrite ^/red/(.*)$ /n/$1 redirect; }}
        location /no/ {{ deny all; proxy_pass http://app; }}""",
)

SCRIPTED_PIECES = [
    b"GET /old/x HTTP/1.1\r\n",
    b"GET /c/a%20b/%3f?u=1 HTTP/1.1\r\n",
    b"GET /l/a HTTP/1.1\r\n",
    b"GET /b/a+b%26?u=%FF HTTP/1.1\r\n",
    b"GET /red/%22%3C?x HTTP/1.1\r\n",
    b"GET /no/ HTTP/1.1\r\n",
]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(st.sampled_from(PIECES + SCRIPTED_PIECES), max_size=12).map(b"".join),
    split=st.integers(min_value=0, max_value=200),
)
def test_arbitrary_client_bytes_on_a_scripted_listener(data: bytes, split: int) -> None:
    async def case() -> None:
        async with routed(SCRIPTED) as (engine, port, _backends):
            assert engine.routes is not None and engine.routes.scripted
            await send_split_and_drain(port, data, min(split, len(data)))
            await wait_for(lambda: not engine.clients, limit=5.0)
            resp = await request(port, b"GET /x.txt HTTP/1.1\r\nHost: main.test\r\n\r\n")
            assert resp.status == 200 and resp.body == b"t /x.txt "
            resp = await request(port, b"GET /l/a HTTP/1.1\r\nHost: main.test\r\n\r\n")
            assert resp.status == 500  # 10 `last` changes, then the cycle error
            await wait_for(lambda: not engine.clients, limit=5.0)

    run(case(), limit=30)


def _scripted() -> RouteTable:
    route = one_route(SCRIPTED.format(a=1, b=2), "t.conf")
    assert route.config.routes is not None and route.config.routes.scripted
    return route.config.routes


SCRIPTED_TABLE = _scripted()


@settings(max_examples=300, deadline=None)
@given(
    host=st.binary(max_size=30),
    path=st.binary(max_size=50),
    args=st.binary(max_size=20),
    remote=st.sampled_from([b"127.0.0.1", b"10.0.0.1", b"::1", b"", b"\xff"]),
)
def test_phases_any_host_uri_args_and_client(
    host: bytes, path: bytes, args: bytes, remote: bytes
) -> None:
    from hakeeper.proxy.rewrite import Outcome, run_phases
    from hakeeper.proxy.routes import Proxied, RequestView, Return

    name = normalize_host(host)
    index, match = SCRIPTED_TABLE.names.select_match(name)
    try:
        uri, quoted = normalize_path(b"/" + path)
    except BadUriError:
        return
    view = RequestView(b"GET", b"/" + path, uri, args, name, (), remote, b"1", b"", b"8999")
    out = run_phases(SCRIPTED_TABLE.servers[index], view, quoted, match)
    assert isinstance(out, Outcome)
    assert isinstance(out.action, (Return, Proxied))
    if isinstance(out.action, Return):
        out.action.response(view, True, False)
    elif out.target is not None and out.action.uri_template is not None:
        # a capture decoded from %0D%0A (or a space) cannot break the request line
        assert not any(c <= 0x20 for c in out.target)
