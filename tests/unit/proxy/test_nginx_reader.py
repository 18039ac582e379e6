"""nginx.conf reader (hakeeper.conf.nginx) and its bridge to the proxy engine."""

from __future__ import annotations

import pathlib

import pytest

from hakeeper.balance.upstream import UpstreamGroup
from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import (
    HttpLocation,
    NginxConfig,
    match_location,
    parse_size,
    parse_time,
    read_nginx,
)
from hakeeper.proxy.balancer import RoundRobin
from hakeeper.proxy.from_nginx import listeners, proxy_for

FULL = """
worker_processes auto;
events { worker_connections 1024; }
http {
    access_log off;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    client_max_body_size 8m;
    upstream app {
        least_conn;
        server 10.0.0.1:8080 weight=5 max_fails=3 fail_timeout=30s;
        server 10.0.0.2:8080 max_conns=100;
        server 10.0.0.3:8080 backup;
        keepalive 64;
        keepalive_timeout 30s;
    }
    server {
        listen 127.0.0.1:8000 default_server reuseport;
        server_name www.example.org;
        proxy_read_timeout 5s;
        location / {
            proxy_pass http://app;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_next_upstream error timeout http_503;
            proxy_next_upstream_tries 2;
        }
    }
}
"""


def read(text: str, context: str = "main") -> tuple[NginxConfig, Diagnostics]:
    diags = Diagnostics()
    nodes = parse_nginx_text(text, "nginx.conf", diags)
    return read_nginx(nodes, diags, context=context), diags


def test_full_config_model() -> None:
    cfg, diags = read(FULL)
    assert not diags.has_errors, [d.format() for d in diags]
    assert cfg.worker_processes == "auto"
    assert cfg.worker_connections == 1024
    up = cfg.upstream("app")
    assert up is not None
    assert up.method == "least_conn"
    assert up.keepalive == 64 and up.keepalive_timeout == 30.0
    assert (up.servers[0].host, up.servers[0].port, up.servers[0].weight) == ("10.0.0.1", 8080, 5)
    assert up.servers[0].max_fails == 3 and up.servers[0].fail_timeout == 30.0
    assert up.servers[1].max_conns == 100 and up.servers[2].backup
    (server,) = cfg.servers
    assert server.listens[0].port == 8000 and server.listens[0].default_server
    assert server.listens[0].reuseport
    (loc,) = server.locations
    s = loc.settings
    assert loc.proxy_pass == "http://app"
    assert s.http_version == "1.1"  # inherited from http
    assert s.read_timeout == 5.0  # inherited from server
    assert s.client_max_body_size == 8 << 20
    # proxy_set_header at the location replaces the inherited list (nginx merge rule)
    assert s.headers == (("Host", "$host"), ("X-Forwarded-For", "$proxy_add_x_forwarded_for"))
    assert s.next_upstream == ("error", "timeout", "http_503")
    assert s.next_upstream_tries == 2


def test_bridge_to_engine_settings() -> None:
    cfg, diags = read(FULL)
    routes = listeners(cfg, diags)
    assert not diags.has_errors, [d.format() for d in diags]
    (route,) = routes
    pc = route.config
    assert pc.proxy_host == "app"
    assert pc.http_version == "1.1"
    assert pc.upstream_keepalive == 64
    assert pc.timeouts.proxy_read == 5.0 and pc.timeouts.upstream_keepalive == 30.0
    assert pc.limits.max_body == 8 << 20
    assert pc.retry.on == frozenset({"error", "timeout", "http_503"}) and pc.retry.tries == 2
    # nginx's default Connection: close is added for the name the list leaves out
    assert [h.name for h in pc.headers] == ["Host", "X-Forwarded-For", "Connection"]
    assert isinstance(route.balancer, UpstreamGroup) and route.balancer.method == "least_conn"
    assert [p.port for p in pc.peers] == [8080, 8080, 8080]


def test_direct_proxy_pass_and_defaults() -> None:
    cfg, diags = read(
        "http { server { listen 9000; location / { proxy_pass http://127.0.0.1:8081; } } }"
    )
    loc = cfg.servers[0].locations[0]
    built = proxy_for(cfg, loc, diags)
    assert built is not None and not diags.has_errors
    pc, balancer = built
    assert isinstance(balancer, RoundRobin)
    assert pc.proxy_host == "127.0.0.1:8081"
    assert pc.http_version == "1.0"  # nginx 1.22 defaults
    assert [h.name for h in pc.headers] == ["Host", "Connection"]
    assert pc.limits.max_body == 1 << 20
    assert cfg.servers[0].listens[0].host == "0.0.0.0"


def test_seed_fragments_read_in_http_context() -> None:
    root = pathlib.Path(__file__).parents[2] / "fixtures" / "seeds"
    # the tutorial was copied from a web page: U+00A0 blanks, which the lexer reports
    text = (root / "000_1_upstream.nginx.conf").read_text().replace("\xa0", " ")
    cfg, diags = read(text, context="http")
    assert not diags.has_errors
    up = cfg.upstream("esbwebserver")
    assert up is not None and [s.host for s in up.servers] == ["192.168.1.160", "192.168.1.161"]
    # the tutorial's server block contains a literal "......" line: nginx -t rejects it too
    server_text = (root / "000_2_server.nginx.conf").read_text().replace("\xa0", " ")
    _, diags = read(text + server_text, context="http")
    assert any('unknown directive "......"' in d.message for d in diags.errors)


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("http { proxy_pas http://a; }", 'unknown directive "proxy_pas"', 1),
        ("events {}\nproxy_pass http://a;", '"proxy_pass" directive is not allowed here', 2),
        ("http {\n upstream u { server; } }", 'invalid number of arguments in "server"', 2),
        ("http { upstream u { server a:1 weight=0; } }", 'invalid value "0"', 1),
        ("http { upstream u { server a:1 drain=10s; } }", "invalid parameter", 1),
        ("http { upstream u { ip_hash; server a:1 backup; } }", 'parameter "backup"', 1),
        ("http { upstream u { } }", "no servers are inside upstream", 1),
        ("http {\n\n server { location / { proxy_pass http://nope; } } }", "host not found", 3),
        ("http { proxy_read_timeout 5x; }", 'invalid time "5x"', 1),
        ("http { server { listen 99999; } }", "invalid port", 1),
        ("http { server { location @x / { } } }", "invalid location modifier", 1),
        ("http { server { location ~ ( { } } }", "pcre2_compile() failed", 1),
        ("worker_processes 0;", 'invalid value "0"', 1),
        ("http { proxy_next_upstream sometimes; }", 'invalid value "sometimes"', 1),
        ("http { server { location / { proxy_pass ftp://a; } } }", "invalid URL prefix", 1),
    ],
)
def test_errors_name_the_line(text: str, message: str, line: int) -> None:
    _, diags = read(text)
    errors = diags.errors
    assert errors, "expected an error"
    assert any(message in e.message for e in errors), [e.format() for e in errors]
    assert any(e.loc is not None and e.loc.line == line for e in errors)


def _locs(*specs: tuple[str, str]) -> list[HttpLocation]:
    return [HttpLocation(mod, pat) for mod, pat in specs]


def test_location_matching_order() -> None:
    locs = _locs(
        ("", "/"),
        ("=", "/exact"),
        ("^~", "/static/"),
        ("~", r"\.php$"),
        ("~*", r"\.(gif|jpg)$"),
        ("", "/static/img/"),
        ("", "/api/"),
    )

    def pick(uri: str) -> str:
        found = match_location(locs, uri)
        assert found is not None
        return f"{found.modifier}{found.pattern}"

    assert pick("/exact") == "=/exact"
    assert pick("/exact/more") == "/"
    assert pick("/static/a.jpg") == "^~/static/"
    assert pick("/static/img/a.JPG") == r"~*\.(gif|jpg)$"  # longest prefix is plain: regex wins
    assert pick("/api/x.php") == r"~\.php$"
    assert pick("/api/x") == "/api/"
    assert pick("/X.PHP") == "/"  # ~ is case-sensitive
    assert match_location(_locs(("", "/a")), "/b") is None


def test_time_and_size_units() -> None:
    assert parse_time("500ms") == 0.5
    assert parse_time("1m30s") == 90.0
    assert parse_time("2h") == 7200.0
    assert parse_time("10") == 10.0
    assert parse_time("x") is None and parse_time("") is None
    assert parse_size("1m") == 1 << 20 and parse_size("8K") == 8192 and parse_size("0") == 0
    assert parse_size("1.5m") is None


def test_engine_limits_reported_not_guessed() -> None:
    cfg, diags = read(
        "http { upstream u { server 127.0.0.1:1; }"
        " server { location / { proxy_pass http://u; } location /x { return 404; } }"
        " server { location ~ ^/r { proxy_pass http://u/base/; } } }"
    )
    (route,) = listeners(cfg, diags)  # both servers on *:80, routed by Host
    assert route.config.routes is not None and len(route.config.routes.servers) == 1
    messages = " ".join(e.message for e in diags.errors)
    assert "cannot have URI part in location given by regular expression" in messages
