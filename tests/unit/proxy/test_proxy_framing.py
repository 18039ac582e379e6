"""Pure HTTP/1.1 rules of the proxy: header rules, request checks, response framing, errors."""

from __future__ import annotations

import ast
import pathlib

import pytest

from hakeeper.proxy.config import (
    Limits,
    Peer,
    ProxyConfig,
    RetryPolicy,
    forwarding_headers,
    header_rule,
    keepalive_headers,
    nginx_default_headers,
)
from hakeeper.proxy.framing import (
    CompiledRules,
    RequestFacts,
    chunk_header,
    error_response,
    host_without_port,
    origin_form,
    request_status,
    response_framing,
    valid_host,
)

PEERS = (Peer("127.0.0.1", 8080),)


def facts(**kw: bytes) -> RequestFacts:
    base = {
        "host": b"Example.org:81",
        "remote_addr": b"192.0.2.9",
        "remote_port": b"40000",
        "xff": b"",
        "upgrade": b"",
        "connection": b"",
        "target": b"/x?y",
    }
    base.update(kw)
    return RequestFacts(**base)  # type: ignore[arg-type]


def test_nginx_defaults_fold_into_one_static_block() -> None:
    rules = CompiledRules(ProxyConfig(peers=PEERS, proxy_host="backend"))
    assert rules.static == b"Host: backend\r\nConnection: close\r\n"
    assert rules.dynamic == ()
    assert {b"host", b"connection", b"keep-alive", b"te", b"upgrade", b"expect"} <= rules.drop


def test_empty_value_removes_the_header() -> None:
    rules = CompiledRules(ProxyConfig(peers=PEERS, headers=keepalive_headers()))
    assert rules.static == b"Host: backend\r\n"
    assert b"connection" in rules.drop


def test_forwarding_rules_render_like_nginx_variables() -> None:
    rules = CompiledRules(ProxyConfig(peers=PEERS, headers=forwarding_headers()))
    block = rules.dynamic_block(facts(xff=b"10.0.0.1"))
    assert block == (
        b"Host: example.org\r\nConnection: close\r\nX-Real-IP: 192.0.2.9\r\n"
        b"X-Forwarded-For: 10.0.0.1, 192.0.2.9\r\n"
    )
    assert rules.static == b"X-Forwarded-Proto: http\r\n"  # $scheme is per config
    upgraded = rules.dynamic_block(facts(upgrade=b"websocket"))
    assert b"Connection: upgrade\r\nUpgrade: websocket\r\n" in upgraded
    assert b"X-Forwarded-For: 192.0.2.9\r\n" in upgraded


def test_host_variable_falls_back_to_server_name() -> None:
    cfg = ProxyConfig(peers=PEERS, headers=(header_rule("Host", "$host"),), server_name="www")
    assert CompiledRules(cfg).dynamic_block(facts(host=b"")) == b"Host: www\r\n"


def test_http_variables_and_literals() -> None:
    rule = header_rule("X-Both", "id=$http_x_request_id;uri=${request_uri}")
    assert rule.parts == (b"id=", "http_x_request_id", b";uri=", "request_uri")
    cfg = ProxyConfig(peers=PEERS, headers=(rule,))
    rules = CompiledRules(cfg)
    assert rules.http_vars == frozenset({b"x-request-id"})
    got = rules.dynamic_block(facts(extra=((b"x-request-id", b"abc"),)))  # type: ignore[arg-type]
    assert got == b"X-Both: id=abc;uri=/x?y\r\n"


def test_first_rule_for_a_name_wins() -> None:
    cfg = ProxyConfig(peers=PEERS, headers=(header_rule("X-A", "1"), header_rule("x-a", "2")))
    assert CompiledRules(cfg).static == b"X-A: 1\r\n"


@pytest.mark.parametrize(
    ("name", "value"), [("Bad Name", "v"), ("", "v"), ("X", "$nope"), ("X(", "v")]
)
def test_header_rule_rejects_bad_names_and_unknown_variables(name: str, value: str) -> None:
    with pytest.raises(ValueError):
        header_rule(name, value)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        ProxyConfig(peers=PEERS, http_version="2.0")
    with pytest.raises(ValueError):
        ProxyConfig(peers=PEERS, retry=RetryPolicy(on=frozenset({"sometimes"})))
    policy = RetryPolicy(on=frozenset({"error", "http_502", "http_429"}))
    assert policy.statuses() == frozenset({502, 429})
    assert nginx_default_headers()[1].parts == (b"close",)


@pytest.mark.parametrize(
    ("version", "hosts", "host", "clen", "want"),
    [
        ("1.1", 1, b"a.example", -1, 0),
        ("1.0", 0, b"", -1, 0),
        ("1.1", 0, b"", -1, 400),
        ("1.1", 2, b"a", -1, 400),
        ("1.1", 1, b"a/b", -1, 400),
        ("1.1", 1, b"a..b", -1, 400),
        ("1.1", 1, b"[::1", -1, 400),
        ("2.0", 1, b"a", -1, 505),
        ("0.9", 1, b"a", -1, 400),
        ("1.1", 1, b"a", 1024 * 1024, 0),
        ("1.1", 1, b"a", 1024 * 1024 + 1, 413),
    ],
)
def test_request_status(version: str, hosts: int, host: bytes, clen: int, want: int) -> None:
    assert request_status(version, hosts, host, clen, Limits().max_body) == want


def test_unlimited_body_and_host_helpers() -> None:
    assert request_status("1.1", 1, b"a", 10**12, 0) == 0
    assert host_without_port(b"Example.COM:8080") == b"example.com"
    assert host_without_port(b"[2001:db8::1]:443") == b"[2001:db8::1]"
    assert host_without_port(b"") == b""
    assert valid_host(b"[2001:db8::1]:443")
    assert not valid_host(b"a\\b")


@pytest.mark.parametrize(
    ("status", "head", "length", "chunked", "want"),
    [
        (200, False, True, False, "length"),
        (200, False, False, True, "chunked"),
        (200, False, False, False, "close"),
        (200, True, True, False, "none"),
        (204, False, False, False, "none"),
        (304, False, True, False, "none"),
        (100, False, False, False, "none"),
    ],
)
def test_response_framing(status: int, head: bool, length: bool, chunked: bool, want: str) -> None:
    assert response_framing(status, head, length, chunked) == want


def test_error_response_is_complete_and_framed() -> None:
    raw = error_response(502, keep_alive=True)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"Connection: keep-alive" in head
    assert b"Content-Length: %d" % len(body) in head
    assert b"502 Bad Gateway" in body
    assert b"Connection: close" in error_response(400)
    assert chunk_header(255) == b"ff\r\n"


PURE = ("config.py", "framing.py", "balancer.py")
FORBIDDEN = {"asyncio", "socket", "time", "os", "subprocess", "random", "uvloop", "httptools"}


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_no_io(name: str) -> None:
    import hakeeper.proxy

    path = pathlib.Path(hakeeper.proxy.__file__).parent / name
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN


@pytest.mark.parametrize(
    ("target", "method", "want"),
    [
        (b"http://a.example/p?q=1", b"GET", b"/p?q=1"),
        (b"HTTPS://a.example:8443", b"GET", b"/"),
        (b"http://a.example?x=1", b"GET", b"/?x=1"),
        (b"*", b"OPTIONS", b"*"),
    ],
)
def test_origin_form(target: bytes, method: bytes, want: bytes) -> None:
    assert origin_form(target, method) == want


@pytest.mark.parametrize(("target", "method"), [(b"*", b"GET"), (b"a/b", b"GET"), (b"", b"GET")])
def test_origin_form_rejects(target: bytes, method: bytes) -> None:
    with pytest.raises(ValueError):
        origin_form(target, method)
