"""Pure routing: URI normalization, server_name lookup, location order, `return` bytes,
variables, URI parts, and how `listeners` builds routed vs fast-path listeners."""

from __future__ import annotations

import re

import pytest

from hakeeper.balance.upstream import UpstreamGroup
from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import NginxConfig, read_nginx
from hakeeper.proxy.balancer import RoundRobin
from hakeeper.proxy.config import Peer, ProxyConfig
from hakeeper.proxy.from_nginx import Route, listeners, route_balancers
from hakeeper.proxy.routes import (
    BadUriError,
    Location,
    Proxied,
    Redirect,
    RequestView,
    Return,
    ServerNames,
    VirtualServer,
    builtin_page,
    compile_template,
    escape_uri,
    normalize_host,
    normalize_path,
    status_line,
    upstream_target,
)


def read(text: str) -> tuple[NginxConfig, Diagnostics]:
    diags = Diagnostics()
    cfg = read_nginx(parse_nginx_text(text, "t.conf", diags), diags)
    return cfg, diags


def routes_of(text: str) -> tuple[list[Route], Diagnostics]:
    cfg, diags = read(text)
    assert not diags.has_errors, [d.format() for d in diags]
    return listeners(cfg, diags), diags


def view(**kw: object) -> RequestView:
    base: dict[str, object] = {
        "method": b"GET",
        "target": b"/a/b?x=1&Y=2",
        "path": b"/a/b",
        "args": b"x=1&Y=2",
        "host": b"h.test",
        "headers": [(b"x-thing", b"v1"), (b"x-thing", b"v2"), (b"user-agent", b"ua")],
        "remote_addr": b"127.0.0.9",
        "remote_port": b"5555",
        "server_name": b"srv.test",
        "server_port": b"8080",
        "server_addr": b"127.0.0.1",
    }
    base.update(kw)
    return RequestView(**base)  # type: ignore[arg-type]


def test_normalize_path_like_nginx() -> None:
    assert normalize_path(b"/a/b") == (b"/a/b", False)
    assert normalize_path(b"/a//b///c") == (b"/a/b/c", False)
    assert normalize_path(b"/a/./b/../c") == (b"/a/c", False)
    assert normalize_path(b"/a/b/..") == (b"/a/", False)
    assert normalize_path(b"/a/.") == (b"/a/", False)
    assert normalize_path(b"/%61pi/%20x") == (b"/api/ x", True)
    assert normalize_path(b"/a%2F..%2Fb") == (b"/b", True)
    for bad in (b"/..", b"/a/../..", b"/%zz", b"/%4", b"/%00"):
        with pytest.raises(BadUriError):
            normalize_path(bad)


def test_escape_uri_table() -> None:
    assert escape_uri(b"plain/path-_.~") == b"plain/path-_.~"
    assert escape_uri(b"a b#c%d?e\x7f\xc3\xa9") == b"a%20b%23c%25d%3Fe%7F%C3%A9"


def test_normalize_host() -> None:
    assert normalize_host(b"Example.COM.:8080") == b"example.com"
    assert normalize_host(b"[::1]:80") == b"[::1]"
    assert normalize_host(b"x") == b"x"


def _vs(*names: str) -> VirtualServer:
    return VirtualServer(names, ())


def test_server_names_order() -> None:
    servers = [
        _vs("default.test"),
        _vs("*.example.com"),
        _vs("*.deep.example.com"),
        _vs("www.example.*"),
        _vs("~^api\\d+\\.example\\.com$"),
        _vs("exact.example.com", ".dot.test"),
        _vs("~^(?<name>[a-z]+)\\.named\\.test$"),
    ]
    names = ServerNames(servers, default=0)
    assert names.select(b"exact.example.com") == 5  # exact beats every wildcard
    assert names.select(b"a.example.com") == 1
    assert names.select(b"a.deep.example.com") == 2  # longest leading wildcard
    assert names.select(b"www.example.org") == 3
    assert names.select(b"www.example.com") == 1  # leading wildcards before trailing ones
    assert names.select(b"api7.example.com") == 1  # wildcards before regexes
    assert names.select(b"dot.test") == 5 and names.select(b"x.y.dot.test") == 5
    assert names.select(b"abc.named.test") == 6
    assert names.select(b"example.com") == 0  # `*.example.com` needs a label
    assert names.select(b"") == 0


def _loc(modifier: str, pattern: str, code: int) -> Location:
    flags = re.IGNORECASE if modifier == "~*" else 0
    regex = re.compile(pattern.encode(), flags) if modifier.startswith("~") else None
    return Location(modifier, pattern, Return(code, None), regex)


def test_location_order() -> None:
    proxied = Proxied(ProxyConfig(peers=()), RoundRobin(()))
    locs = [
        _loc("", "/", 1),
        _loc("", "/images/", 2),
        _loc("^~", "/static/", 3),
        _loc("~", "\\.png$", 4),
        _loc("~*", "^/CASE", 5),
        _loc("=", "/", 6),
        _loc("", "/images/deep/", 7),
        _loc("~", "^/images/", 8),
        Location("", "/api/", proxied),
    ]
    vs = VirtualServer(("x",), locs)

    def code(uri: bytes) -> int | str:
        found = vs.find(uri)
        if isinstance(found, Redirect):
            return "redirect " + found.pattern.decode()
        assert found is not None
        action = found.action
        return action.code if isinstance(action, Return) else "proxied"

    assert code(b"/") == 6  # `=` wins outright
    assert code(b"/x") == 1
    assert code(b"/images/a.png") == 4  # regexes in config order beat prefixes
    assert code(b"/images/a.gif") == 8
    assert code(b"/images/deep/x") == 8
    assert code(b"/static/a.png") == 3  # `^~` stops the regexes
    assert code(b"/case/x") == 5
    assert code(b"/api/x") == "proxied"
    assert code(b"/api") == "redirect /api/"  # proxied `/api/` redirects `/api`
    assert VirtualServer(("x",), [_loc("", "/a", 1)]).find(b"/b") is None


def test_templates_and_variables() -> None:
    t = compile_template("h=$host u=$uri r=$request_uri a=$args ${arg_y}-$arg_x $http_x_thing")
    assert t.render(view()) == b"h=h.test u=/a/b r=/a/b?x=1&Y=2 a=x=1&Y=2 2-1 v1"
    assert compile_template("$is_args$scheme").render(view()) == b"?http"
    assert compile_template("$host").render(view(host=b"")) == b"srv.test"
    assert compile_template("$binary_remote_addr").render(view()) == bytes([127, 0, 0, 9])
    assert compile_template("$remote_addr:$remote_port $server_port").render(view()) == (
        b"127.0.0.9:5555 8080"
    )
    assert compile_template("literal").is_static
    with pytest.raises(ValueError, match='unknown "nope" variable'):
        compile_template("$nope")


def test_return_bytes() -> None:
    v = view()
    data, keep = Return(301, compile_template("/new$is_args$args")).response(v, True, False)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 301 Moved Permanently",
        b"Server: hakeeper",
        b"Content-Type: text/html",
        b"Content-Length: %d" % len(body),
        b"Location: http://h.test:8080/new?x=1&Y=2",
        b"Connection: keep-alive",
    ]
    assert keep and body == builtin_page(301)
    data, keep = Return(200, compile_template("hi $arg_x")).response(v, True, False)
    assert data.endswith(b"Content-Type: text/plain\r\nContent-Length: 4\r\n"
                         b"Connection: keep-alive\r\n\r\nhi 1")  # fmt: skip
    data, _ = Return(200, compile_template("hi")).response(v, True, True)  # HEAD
    assert data.endswith(b"Content-Length: 2\r\nConnection: keep-alive\r\n\r\n")
    data, keep = Return(400, None).response(v, True, False)
    assert not keep and b"Connection: close" in data and b"400 Bad Request" in data
    data, _ = Return(204, None).response(v, True, False)
    assert b"Content-Length" not in data and b"Content-Type" not in data
    data, _ = Return(418, None).response(v, True, False)
    assert data.startswith(b"HTTP/1.1 418 \r\n") and b"Content-Length: 0\r\n" in data
    data, _ = Return(302, compile_template("https://x/")).response(v, False, False)
    assert b"Location: https://x/\r\n" in data and b"<title>302 Found</title>" in data
    assert Return(444, None).response(v, True, False) == (b"", False)
    assert status_line(404) == b"HTTP/1.1 404 Not Found\r\n"
    # no Host header: the local address names the server
    data, _ = Return(301, compile_template("/x")).response(view(host=b""), True, False)
    assert b"Location: http://127.0.0.1:8080/x\r\n" in data
    data, _ = Return(301, compile_template("/x")).response(view(server_port=b"80"), True, False)
    assert b"Location: http://h.test/x\r\n" in data


def test_upstream_target() -> None:
    assert upstream_target(b"/v1/", b"/api/", b"/api/x", False, b"q=1") == b"/v1/x?q=1"
    assert upstream_target(b"/", b"/api/", b"/api/a b", True, b"") == b"/a%20b"
    assert upstream_target(b"/e", b"/exact", b"/exactly", False, b"") == b"/ely"


CONF = """
http {
    upstream app { server 127.0.0.1:1; server 127.0.0.1:2; }
    upstream h { hash $request_uri consistent; server 127.0.0.1:3; server 127.0.0.1:4; }
    server { listen 127.0.0.1:8001; location / { proxy_pass http://app; } }
    server {
        listen 127.0.0.1:8002;
        location / { proxy_pass http://app; proxy_read_timeout 3s; }
        location /api/ { proxy_pass http://app/v1/; proxy_read_timeout 7s; }
        location /h/ { proxy_pass http://h; }
        location /d/ { proxy_pass http://127.0.0.1:9/; }
        location /e/ { proxy_pass http://127.0.0.1:9; }
    }
    server { listen 127.0.0.1:8003; location / { proxy_pass http://h; } }
    server { listen 127.0.0.1:8004; server_name a; location / { proxy_pass http://app; } }
    server { listen 127.0.0.1:8004 default_server; server_name b; return 404; }
}
"""


def test_listeners_fast_path_and_routed() -> None:
    routes, _ = routes_of(CONF)
    by_port = {r.listen.port: r for r in routes}
    fast = by_port[8001]
    assert fast.config.routes is None and isinstance(fast.balancer, UpstreamGroup)
    table = by_port[8002].config.routes
    assert table is not None
    proxied = {p.config.timeouts.proxy_read: p for p in table.proxied()}
    assert proxied[7.0].uri == b"/v1/" and proxied[3.0].uri is None
    # one balancer per upstream, shared by locations and listeners (like nginx)
    assert proxied[7.0].balancer is proxied[3.0].balancer is fast.balancer
    implicit = [p for p in table.proxied() if p.config.proxy_host == "127.0.0.1:9"]
    assert len(implicit) == 2 and implicit[0].balancer is implicit[1].balancer
    assert implicit[0].config.peers == (Peer("127.0.0.1", 9),)
    hashed = by_port[8003].config.routes  # a variable hash key needs the routed path
    assert hashed is not None
    (h,) = hashed.proxied()
    assert h.key is not None and h.key.parts == ("request_uri",)
    assert route_balancers(fast) == [fast.balancer]
    used = route_balancers(by_port[8002])  # app, h and the implicit 127.0.0.1:9, once each
    assert len(used) == 3 and fast.balancer in used
    two = by_port[8004].config.routes
    assert two is not None and two.default == 1 and two.servers[1].server_return is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "http { server { location ~ ^/x { proxy_pass http://127.0.0.1:1/y; } } }",
            "cannot have URI part in location given by regular expression",
        ),
        (
            "http { server { listen 1.2.3.4:80 default_server; location / { return 200; } }"
            " server { listen 1.2.3.4:80 default_server; location / { return 200; } } }",
            "a duplicate default server for 1.2.3.4:80",
        ),
        (
            "http { server { listen 80; location / { return 200; } }"
            " server { listen 127.0.0.1:80; location / { return 200; } } }",
            "beside a wildcard address",
        ),
        ("http { server { location / { return 200 $nope; } } }", 'unknown "nope" variable'),
        (
            "http { upstream u { hash $nope; server 127.0.0.1:1; }"
            " server { location / { proxy_pass http://u; } } }",
            'unknown "nope" variable',
        ),
        ("http { server { location / { } } }", "serving files is not supported"),
    ],
)
def test_listener_errors(text: str, message: str) -> None:
    cfg, diags = read(text)
    assert not diags.has_errors, [d.format() for d in diags]
    listeners(cfg, diags)
    assert any(message in e.message for e in diags.errors), [d.format() for d in diags]


def test_return_url_is_302() -> None:
    cfg, diags = read("http { server { location / { return https://x.test$request_uri; } } }")
    assert not diags.has_errors
    loc = cfg.servers[0].locations[0]
    assert (loc.return_code, loc.return_text) == (302, "https://x.test$request_uri")


def test_nested_locations_like_nginx() -> None:
    routes, diags = routes_of(
        "http { server { listen 8005;"
        " location /n/ { proxy_pass http://127.0.0.1:1;"
        "   location /n/deep/ { return 200 deep; }"
        "   location ~ \\.gif$ { return 200 nested-gif; } }"
        " location ~ \\.gif$ { return 200 top-gif; }"
        " location ^~ /m/ { return 200 m; location ~ \\.gif$ { return 200 m-gif; } }"
        " location /c/ { location /c/x/ { return 200 cx; } } } }"
    )
    table = routes[0].config.routes
    assert table is not None
    (vs,) = table.servers

    def text(uri: bytes) -> bytes | str:
        found = vs.find(uri)
        assert isinstance(found, Location)
        action = found.action
        if isinstance(action, Proxied):
            return "proxied"
        assert action.text is not None or action.code == 404
        return action.text.parts[0] if action.text is not None else b"404"  # type: ignore[return-value]

    assert text(b"/n/x") == "proxied"
    assert text(b"/n/deep/a") == b"deep"
    assert text(b"/n/a.gif") == b"nested-gif"  # nested regexes before outer ones
    assert text(b"/n/deep/a.gif") == b"nested-gif"
    assert text(b"/other.gif") == b"top-gif"
    assert text(b"/m/a.gif") == b"m-gif"  # ^~ skips outer regexes, not nested ones
    assert text(b"/c/y") == b"404"  # a pure container: no files here
    assert text(b"/c/x/1") == b"cx"
    assert any("no nested location" in w.message for w in diags.warnings)
    cfg, d2 = read("http { server { location /a/ { location /b/ { return 200; } } } }")
    listeners(cfg, d2)
    assert any('location "/b/" is outside location "/a/"' in e.message for e in d2.errors)


def test_content_type_of_return_text() -> None:
    from hakeeper.proxy.routes import content_type

    assert content_type(b"/a.GIF") == b"image/gif" and content_type(b"/a.jpg") == b"image/jpeg"
    assert content_type(b"/a.html") == b"text/html" and content_type(b"/a.png") == b"text/plain"
    assert content_type(b"/a.gif/x") == b"text/plain" and content_type(b"/") == b"text/plain"
