"""nginx Plus `health_check` / `match` / `slow_start` reading and the pure health counting."""

from __future__ import annotations

import pytest

from hakeeper.balance.upstream import UpstreamGroup
from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import NginxConfig, read_nginx
from hakeeper.conf.nginx_health import DEFAULT_MATCH, HealthCheck, Match
from hakeeper.proxy.from_nginx import listeners
from hakeeper.proxy.health import PeerHealth, build_request, evaluate

CONF = """
events {}
http {
    match ok {
        status 200-399;
        status ! 301 302;
        header Content-Type ~ "^text/";
        header ! X-Broken;
        body !~ "maintenance";
    }
    upstream app {
        server 127.0.0.1:9001 slow_start=30s;
        server 127.0.0.1:9002 weight=2 slow_start=1m;
    }
    server {
        listen 127.0.0.1:8080;
        location / {
            proxy_pass http://app;
            health_check interval=2s fails=3 passes=2 uri=/healthz port=9100 match=ok mandatory;
        }
    }
}
"""


def read(text: str) -> tuple[NginxConfig, Diagnostics]:
    diags = Diagnostics()
    cfg = read_nginx(parse_nginx_text(text, "nginx.conf", diags), diags)
    return cfg, diags


def errors(text: str) -> list[str]:
    _, diags = read(text)
    return [d.format() for d in diags.sorted()]


def test_reads_health_check_match_and_slow_start() -> None:
    cfg, diags = read(CONF)
    assert not diags.has_errors, [d.format() for d in diags.sorted()]
    up = cfg.upstream("app")
    assert up is not None
    assert [s.slow_start for s in up.servers] == [30.0, 60.0]
    loc = cfg.servers[0].locations[0]
    hc = loc.health_check
    assert hc is not None
    assert (hc.interval, hc.fails, hc.passes, hc.uri, hc.port, hc.mandatory) == (
        2.0,
        3,
        2,
        "/healthz",
        9100,
        True,
    )
    assert hc.match.name == "ok"
    assert len(hc.match.status) == 2 and len(hc.match.headers) == 2 and len(hc.match.body) == 1


def test_defaults_follow_nginx_plus() -> None:
    hc = HealthCheck()
    assert (hc.interval, hc.fails, hc.passes, hc.uri, hc.mandatory) == (5.0, 1, 1, "/", False)
    assert hc.match is DEFAULT_MATCH
    assert hc.probe_timeout == 5.0
    assert HealthCheck(interval=1.0).probe_timeout == 1.0


def test_health_check_reaches_the_balancer_and_slow_start_the_servers() -> None:
    cfg, diags = read(CONF)
    routes = listeners(cfg, diags)
    assert not diags.has_errors
    group = routes[0].balancer
    assert isinstance(group, UpstreamGroup)
    assert group.health_check is not None and group.name == "app"
    assert [p.slow_start for p in group.balancer.peers] == [30.0, 60.0]


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("health_check match=nope;", 'match "nope" not found'),
        ("health_check fails=0;", 'invalid parameter "fails=0"'),
        ("health_check interval=soon;", 'invalid time "soon"'),
        ("health_check uri=healthz;", 'invalid uri "healthz"'),
        ("health_check port=70000;", 'invalid port "70000"'),
        ("health_check bogus;", 'invalid parameter "bogus"'),
    ],
)
def test_bad_health_check_names_file_and_line(snippet: str, message: str) -> None:
    text = CONF.replace(
        "health_check interval=2s fails=3 passes=2 uri=/healthz port=9100 match=ok mandatory;",
        snippet,
    )
    got = errors(text)
    assert any(message in e and e.startswith("nginx.conf:") for e in got), got


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("status 300-200;", "invalid status range"),
        ("status abc;", 'invalid status "abc"'),
        ("header X ~ '(';", "invalid regex"),
        ("header X < 3;", 'invalid "header"'),
        ("body = x;", 'invalid "body"'),
        ("send x;", 'unknown directive "send" in "match"'),
    ],
)
def test_bad_match_lines(line: str, message: str) -> None:
    text = CONF.replace('body !~ "maintenance";', line)
    got = errors(text)
    assert any(message in e for e in got), got


def test_health_check_needs_an_upstream() -> None:
    text = """
    events {}
    http { server { listen 8080; location / { proxy_pass http://127.0.0.1:9000; health_check; } } }
    """
    assert any('"health_check" needs an upstream' in e for e in errors(text))


def test_health_check_outside_location_is_rejected() -> None:
    text = CONF.replace("listen 127.0.0.1:8080;", "listen 127.0.0.1:8080; health_check;")
    assert any('"health_check" directive is not allowed here' in e for e in errors(text))


@pytest.mark.parametrize("method", ["ip_hash;", "hash $request_uri consistent;", "random;"])
def test_slow_start_rejected_with_hash_methods(method: str) -> None:
    text = CONF.replace("upstream app {", "upstream app { " + method)
    assert any('does not support "slow_start"' in e for e in errors(text))


def test_bad_slow_start_time() -> None:
    text = CONF.replace("slow_start=30s", "slow_start=later")
    assert any('invalid time "later"' in e for e in errors(text))


# ------------------------------------------------------------------ match evaluation


def response(status: int, headers: str = "", body: str = "") -> bytes:
    return f"HTTP/1.1 {status} X\r\n{headers}\r\n{body}".encode()


def test_default_match_is_2xx_3xx() -> None:
    hc = HealthCheck()
    assert evaluate(hc, response(200))[0]
    assert evaluate(hc, response(302))[0]
    assert evaluate(hc, response(404)) == (False, "status 404 does not match")
    assert evaluate(hc, response(500))[0] is False
    assert evaluate(hc, b"garbage") == (False, "malformed HTTP response")


def test_match_conditions_all_must_hold() -> None:
    cfg, _ = read(CONF)
    hc = cfg.servers[0].locations[0].health_check
    assert hc is not None
    good = response(200, "Content-Type: text/html\r\n", "hello")
    assert evaluate(hc, good)[0]
    assert not evaluate(hc, response(301, "Content-Type: text/html\r\n"))[0]
    assert not evaluate(hc, response(200, "Content-Type: application/json\r\n"))[0]
    assert not evaluate(hc, response(200, "Content-Type: text/html\r\nX-Broken: 1\r\n"))[0]
    assert not evaluate(hc, response(200, "Content-Type: text/html\r\n", "in maintenance"))[0]


def test_header_operators() -> None:
    from hakeeper.conf.nginx_health import HeaderTest

    h = {"x": "abc"}
    assert HeaderTest("X", "=", "abc").test(h)
    assert HeaderTest("X", "!=", "abd").test(h)
    assert HeaderTest("X", "~", "^a").test(h)
    assert HeaderTest("X", "!~", "z").test(h)
    assert HeaderTest("X").test(h)
    assert not HeaderTest("Y").test(h)
    assert not HeaderTest("X", "!").test(h)
    assert not HeaderTest("Y", "=", "abc").test(h)


def test_match_reason() -> None:
    m = Match("m")
    assert m.test(500, {}, b"") is None  # an empty match accepts anything


def test_request_has_host_and_uri() -> None:
    raw = build_request("/healthz", "app")
    assert raw.startswith(b"GET /healthz HTTP/1.0\r\nHost: app\r\n")
    assert raw.endswith(b"\r\n\r\n")


# ------------------------------------------------------------------ counting


def test_fails_in_a_row_mark_down_and_passes_mark_up() -> None:
    ph = PeerHealth(fails=3, passes=2, mandatory=False)
    assert ph.up
    assert ph.on_result(False, "x", 1.0) is None
    assert ph.on_result(True, "ok", 2.0) is None  # resets the failure run
    assert ph.on_result(False, "x", 3.0) is None
    assert ph.on_result(False, "x", 4.0) is None
    assert ph.on_result(False, "x", 5.0) is False
    assert not ph.up and ph.changed_at == 5.0
    assert ph.on_result(True, "ok", 6.0) is None
    assert ph.on_result(False, "x", 7.0) is None  # resets the pass run
    assert ph.on_result(True, "ok", 8.0) is None
    assert ph.on_result(True, "ok", 9.0) is True
    assert (ph.checks, ph.failures) == (9, 5)


def test_mandatory_starts_down_and_first_pass_brings_it_up() -> None:
    ph = PeerHealth(fails=1, passes=3, mandatory=True)
    assert not ph.up
    assert ph.on_result(True, "ok", 1.0) is True
    ph2 = PeerHealth(fails=1, passes=2, mandatory=True)
    assert ph2.on_result(False, "x", 1.0) is None  # first result a failure: stays down
    assert ph2.on_result(True, "ok", 2.0) is None  # now `passes` applies
    assert ph2.on_result(True, "ok", 3.0) is True


# ------------------------------------------------------------------ reloads


def _route_for(servers: str, locations: str = "location / { proxy_pass http://app; }"):  # type: ignore[no-untyped-def]
    text = f"""
    events {{}}
    http {{
        upstream app {{ {servers} }}
        server {{ listen 127.0.0.1:8080; {locations} }}
    }}
    """
    cfg, diags = read(text)
    (route,) = listeners(cfg, diags)
    assert not diags.has_errors
    return route


@pytest.mark.parametrize(
    "locations",
    [
        "location / { proxy_pass http://app; }",  # the fast path: the route's own balancer
        "location /a/ { proxy_pass http://app; } location /b/ { return 200; }",  # routed
    ],
)
def test_reload_ramps_only_the_added_servers(locations: str) -> None:
    from types import SimpleNamespace

    from hakeeper.proxy.health import ramp_added, upstream_groups

    old = _route_for(
        "server 127.0.0.1:9001 slow_start=10s; server 127.0.0.1:9002 slow_start=10s;", locations
    )
    new = _route_for(
        "server 127.0.0.1:9001 slow_start=10s; server 127.0.0.1:9002 slow_start=10s;"
        " server 127.0.0.1:9003 slow_start=10s;",
        locations,
    )
    master = SimpleNamespace(config=old.config, balancer_factory=lambda _c: old.balancer)
    assert ramp_added(master, new, now=100.0) == 1
    (group,) = upstream_groups(new.config, new.balancer)
    weights = [group.balancer.weight_now(p.name, 105.0) for p in group.balancer.peers]
    assert weights == [1.0, 1.0, pytest.approx(0.5)]
    # no server added: no ramp
    again = _route_for("server 127.0.0.1:9001 slow_start=10s;", locations)
    master2 = SimpleNamespace(config=old.config, balancer_factory=lambda _c: old.balancer)
    assert ramp_added(master2, again, now=100.0) == 0
