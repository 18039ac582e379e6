"""The nginx `stream { }` reader: model values, inheritance, nginx's errors at file:line:col."""

from __future__ import annotations

import pytest

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import NginxConfig, read_nginx
from hakeeper.conf.nginx_stream import StreamConfig, StreamListen, split_hostport

GOOD = """\
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
events {}
stream {
    proxy_connect_timeout 2s;
    proxy_next_upstream_tries 2;
    upstream back {
        server 10.0.0.1:9001 weight=5 max_fails=3 fail_timeout=5s;
        server 10.0.0.2:9002 max_conns=10;
        server 10.0.0.3:9003 backup;
        server 10.0.0.4:9004 down;
        least_conn;
    }
    upstream ring {
        hash $remote_addr consistent;
        server [::1]:53;
        server 10.0.0.5:53;
    }
    server {
        listen 127.0.0.1:9000 reuseport;
        proxy_pass back;
        proxy_timeout 30s;
        proxy_next_upstream_timeout 1500ms;
    }
    server {
        listen 5353 udp;
        proxy_pass ring;
        proxy_next_upstream off;
        proxy_connect_timeout 1s;
    }
    server {
        listen [::1]:7000;
        proxy_pass 192.0.2.1:7000;
    }
}
"""


def read(text: str) -> tuple[NginxConfig, Diagnostics]:
    d = Diagnostics()
    return read_nginx(parse_nginx_text(text, "t.conf", d), d), d


def errors(text: str) -> list[str]:
    _, d = read(text)
    return [x.format() for x in d.sorted() if x.severity == "error"]


def test_good_config_reads_into_the_model() -> None:
    config, d = read(GOOD)
    assert not d.has_errors, [x.format() for x in d]
    stream = config.stream
    back = stream.upstream("back")
    assert back is not None and back.method == "least_conn"
    assert [(s.host, s.port, s.weight) for s in back.servers] == [
        ("10.0.0.1", 9001, 5),
        ("10.0.0.2", 9002, 1),
        ("10.0.0.3", 9003, 1),
        ("10.0.0.4", 9004, 1),
    ]
    first = back.servers[0]
    assert (first.max_fails, first.fail_timeout) == (3, 5.0)
    assert back.servers[1].max_conns == 10
    assert back.servers[2].backup and back.servers[3].down
    ring = stream.upstream("ring")
    assert ring is not None and (ring.method, ring.hash_key) == ("hash_consistent", "$remote_addr")
    assert (ring.servers[0].host, ring.servers[0].port) == ("::1", 53)

    tcp, udp, v6 = stream.servers
    assert tcp.listens == (StreamListen("127.0.0.1", 9000, False, True, tcp.listens[0].loc),)
    assert (tcp.proxy_pass, tcp.timeout, tcp.connect_timeout) == ("back", 30.0, 2.0)
    assert (tcp.next_upstream, tcp.next_upstream_tries, tcp.next_upstream_timeout) == (
        True,
        2,
        1.5,
    )
    assert udp.listens[0].key == ("UDP", "0.0.0.0", 5353)
    assert (udp.next_upstream, udp.connect_timeout, udp.timeout) == (False, 1.0, 600.0)
    assert v6.listens[0].key == ("TCP", "::1", 7000)
    implicit = stream.target(v6)
    assert implicit is not None
    assert [(s.host, s.port, s.max_fails) for s in implicit.servers] == [("192.0.2.1", 7000, 1)]


def test_no_stream_block_gives_an_empty_stream() -> None:
    config, d = read("events {}\n")
    assert not d.has_errors
    assert config.stream == StreamConfig()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "upstream u { server 10.0.0.1:80; }\nserver { listen 81; proxy_pas u; }",
            "unknown directive \"proxy_pas\" (did you mean 'proxy_pass'?)",
        ),
        (
            "upstream u { server 10.0.0.1:80; lest_conn; }\nserver { listen 81; proxy_pass u; }",
            "unknown directive \"lest_conn\" (did you mean 'least_conn'?)",
        ),
        (
            "upstream u { server 10.0.0.1:80; ip_hash; }\nserver { listen 81; proxy_pass u; }",
            'unknown directive "ip_hash"',
        ),
        ("server { listen 81; proxy_pass 10.0.0.1; }", 'no port in upstream "10.0.0.1"'),
        (
            "upstream u { server 10.0.0.1; }\nserver { listen 81; proxy_pass u; }",
            'no port in upstream "10.0.0.1"',
        ),
        (
            "upstream u { server 10.0.0.1:80 wieght=2; }\nserver { listen 81; proxy_pass u; }",
            'invalid parameter "wieght=2"',
        ),
        (
            "upstream u { server 10.0.0.1:80 weight=0; }\nserver { listen 81; proxy_pass u; }",
            'invalid value "0" in "server" directive',
        ),
        (
            "upstream u { server 10.0.0.1:80 fail_timeout=x; }\n"
            "server { listen 81; proxy_pass u; }",
            'invalid time "x" in "server" directive',
        ),
        (
            "upstream u { }\nserver { listen 81; proxy_pass u; }",
            'no servers are inside upstream "u"',
        ),
        (
            "upstream u { hash $remote_addr; server 10.0.0.1:80 backup; server 10.0.0.2:80; }\n"
            "server { listen 81; proxy_pass u; }",
            'balancing method does not support parameter "backup"',
        ),
        (
            "upstream u { random three; server 10.0.0.1:80; }\nserver { listen 81; proxy_pass u; }",
            'invalid parameter "three"',
        ),
        (
            "server { listen 81; proxy_pass 10.0.0.1:80; proxy_next_upstream error; }",
            ('invalid value "error" in "proxy_next_upstream" directive, it must be "on" or "off"'),
        ),
        (
            "server { listen 81; proxy_pass 10.0.0.1:80; proxy_timeout 5x; }",
            'invalid time "5x" in "proxy_timeout" directive',
        ),
        (
            "server { listen 81; proxy_pass 10.0.0.1:80; proxy_next_upstream_tries -1; }",
            'invalid value "-1" in "proxy_next_upstream_tries" directive',
        ),
        ("server { listen 81 foo; proxy_pass 10.0.0.1:80; }", 'invalid parameter "foo"'),
        ("server { listen 70000; proxy_pass 10.0.0.1:80; }", 'invalid port in "70000"'),
        ("server { listen 81; }", "no handler for server"),
        ("server { proxy_pass 10.0.0.1:80; }", 'no "listen" is defined for server'),
        (
            "server { listen 81; proxy_pass 10.0.0.1:80; }\n"
            "server { listen 0.0.0.0:81; proxy_pass 10.0.0.1:80; }",
            'duplicate "0.0.0.0:81" address and port pair',
        ),
        ("server { listen 81; proxy_pass 10.0.0.1:80; location / { } }", "unknown directive"),
        ("proxy_pass 10.0.0.1:80;", '"proxy_pass" directive is not allowed here'),
        ("server { listen 81; proxy_pass 10.0.0.1:80 20; }", "invalid number of arguments"),
        ("upstream u;", 'directive "upstream" has no opening "{"'),
        (
            "server { listen 81 ssl; proxy_pass 10.0.0.1:80; }",
            'listen parameter "ssl" is not supported by hakeeper',
        ),
        (
            "server { listen 81; proxy_pass $upstream; }",
            'proxy_pass "$upstream" is not supported by hakeeper',
        ),
    ],
)
def test_bad_stream_configs_are_errors_with_file_line(body: str, expected: str) -> None:
    found = errors("stream {\n" + body + "\n}\n")
    assert found, "expected an error"
    assert any(expected in e for e in found), found
    for e in found:
        assert e.startswith("t.conf:"), e


def test_error_points_at_the_directive_line_and_column() -> None:
    text = (
        "stream {\n  server {\n    listen 81;\n    proxy_pass 10.0.0.1:80;\n    bogus 1;\n  }\n}\n"
    )
    assert errors(text) == ['t.conf:5:5: error: unknown directive "bogus"']


def test_same_port_tcp_and_udp_are_distinct_listeners() -> None:
    text = (
        "stream { server { listen 53; proxy_pass 10.0.0.1:53; }\n"
        "server { listen 53 udp; proxy_pass 10.0.0.1:53; } }\n"
    )
    assert errors(text) == []


def test_stream_directive_only_in_main_and_http_table_unchanged() -> None:
    assert errors("http { stream { } }\n") == [
        't.conf:1:8: error: "stream" directive is not allowed here'
    ]
    # the http reader suggests from its own table too
    found = errors("http { upstream u { server 10.0.0.1:80; leastconn; } }\n")
    assert found and "did you mean 'least_conn'?" in found[0]


def test_include_inside_stream_is_spliced() -> None:
    d = Diagnostics()
    included = parse_nginx_text("server { listen 81; proxy_pass 10.0.0.1:80; }\n", "inc.conf", d)

    def include(pattern: str, loc: object, diags: Diagnostics) -> tuple[object, ...]:
        assert pattern == "conf.d/*.conf"
        return included

    nodes = parse_nginx_text("stream { include conf.d/*.conf; }\n", "t.conf", d)
    config = read_nginx(nodes, d, include)  # type: ignore[arg-type]
    assert not d.has_errors
    assert [s.proxy_pass for s in config.stream.servers] == ["10.0.0.1:80"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1:80", ("10.0.0.1", 80)),
        ("[::1]:53", ("::1", 53)),
        ("backend:8080", ("backend", 8080)),
        ("10.0.0.1", ("10.0.0.1", None)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
        ("host:http", ("host:http", None)),
    ],
)
def test_split_hostport(text: str, expected: tuple[str, int | None]) -> None:
    assert split_hostport(text) == expected


def test_slow_start_reaches_the_balancer_and_is_refused_with_hash() -> None:
    from hakeeper.proxy.stream import make_group

    config, d = read(
        "stream { upstream u { server 10.0.0.1:80 slow_start=30s; server 10.0.0.2:80; }\n"
        "server { listen 81; proxy_pass u; } }\n"
    )
    assert not d.has_errors
    up = config.stream.upstream("u")
    assert up is not None
    assert [p.slow_start for p in make_group(up).balancer.peers] == [30.0, 0.0]
    found = errors(
        "stream { upstream u { hash $remote_addr; server 10.0.0.1:80 slow_start=30s; }\n"
        "server { listen 81; proxy_pass u; } }\n"
    )
    assert found == ['t.conf:1:42: error: balancing method does not support "slow_start"']
