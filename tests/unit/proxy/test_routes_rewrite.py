"""Pure rewrite/access phases: captures, `rewrite` flags and args, `set`, `allow`/`deny`,
the upstream target after a rewrite, and the reader's / translator's errors."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import read_nginx
from hakeeper.conf.nginx_rewrite import python_regex
from hakeeper.proxy.from_nginx import listeners
from hakeeper.proxy.rewrite import (
    ARGS_ESCAPE,
    CYCLE,
    FORBIDDEN,
    NOT_FOUND,
    REDIRECT_ESCAPE,
    Access,
    Outcome,
    bind_script,
    compile_access,
    escape,
    run_phases,
)
from hakeeper.proxy.routes import (
    Proxied,
    RequestView,
    Return,
    RouteTable,
    VirtualServer,
    compile_template,
    variable_parts,
)
from hakeeper.proxy.tls import bind_scheme


def table_of(text: str) -> RouteTable:
    diags = Diagnostics()
    cfg = read_nginx(parse_nginx_text(text, "t.conf", diags), diags)
    routes = listeners(cfg, diags)
    assert not diags.has_errors, [d.format() for d in diags]
    table = routes[0].config.routes
    assert table is not None
    return table


def errors_of(text: str) -> list[str]:
    diags = Diagnostics()
    cfg = read_nginx(parse_nginx_text(text, "t.conf", diags), diags)
    if not diags.has_errors:
        listeners(cfg, diags)
    return [d.format() for d in diags.errors]


def view(target: bytes, remote: bytes = b"127.0.0.1") -> RequestView:
    path, _, args = target.partition(b"?")
    return RequestView(
        method=b"GET",
        target=target,
        path=path.replace(b"%20", b" "),
        args=args,
        host=b"main.test",
        headers=(),
        remote_addr=remote,
        remote_port=b"1234",
        server_name=b"main.test",
        server_port=b"8080",
    )


def phases(
    server: VirtualServer, target: bytes, remote: bytes = b"127.0.0.1"
) -> tuple[Outcome, RequestView]:
    v = view(target, remote)
    return run_phases(server, v, b"%" in target), v


def answer(outcome: Outcome, v: RequestView) -> bytes:
    assert isinstance(outcome.action, Return), outcome
    return outcome.action.response(v, True, False)[0]


CONF = r"""
http {
  upstream app { server 127.0.0.1:1; }
  server {
    listen 8080;
    server_name main.test;
    rewrite ^/srv/(.*)$ /c/$1;
    set $s "S$uri";
    location ~ ^/c/(?<first>[a-z]+)/(\d+) { return 200 "$1 $2 $first $s $1x"; }
    location /r/ { rewrite ^/r/(.*)$ /c/$1 last; }
    location /b/ { rewrite ^/b/(.*)$ /x/$1 break; proxy_pass http://app/u/; }
    location /l/ { rewrite ^/l/(.*)$ /p/$1?z=1 last; }
    location /p/ { proxy_pass http://app/pp/; }
    location /red/ { rewrite ^/red/(.*)$ /new/$1 redirect; }
    location /perm/ { rewrite ^/perm/(.*)$ /new/$1? permanent; }
    location /abs/ { rewrite ^/abs/(.*)$ https://other/$1; }
    location /loop/ { rewrite ^ /loop/x last; }
    location /cyc/ { rewrite ^/cyc/(\d)(.*)$ /cyc/$2 last; return 200 "end"; }
    location /v/ { proxy_pass http://app/vv$uri; }
    location /empty/ { proxy_pass http://app$arg_none; }
    location ~ ^/rx/(.*)$ { proxy_pass http://app/q/$1; }
    location /ord/ { rewrite ^/ord/(.*) /p/$1 break; return 200 "never"; proxy_pass http://app; }
    location /acc/ { allow 10.0.0.0/8; deny 127.0.0.2; proxy_pass http://app; }
    location /acc2/ { deny all; return 200 "rewrite phase first"; }
  }
}
"""


@pytest.fixture(scope="module")
def server() -> VirtualServer:
    table = table_of(CONF)
    assert table.scripted
    return table.servers[0]


def test_captures_numbered_named_and_server_level(server: VirtualServer) -> None:
    out, v = phases(server, b"/c/abc/12")
    assert answer(out, v).endswith(b"abc 12 abc S/c/abc/12 abcx")
    out, v = phases(server, b"/srv/xyz/7")  # server rewrite, then the location's regex
    assert answer(out, v).endswith(b"xyz 7 xyz S/c/xyz/7 xyzx")
    out, v = phases(server, b"/r/q/3?k=1")  # `last` searches the locations again
    assert answer(out, v).endswith(b"q 3 q S/r/q/3 qx") and v.args == b"k=1"


def test_rewrite_flags_and_upstream_targets(server: VirtualServer) -> None:
    out, _ = phases(server, b"/b/a%20b?q=2")  # break: URI part ignored, URI escaped
    assert isinstance(out.action, Proxied) and out.target == b"/x/a%20b?q=2"
    out, _ = phases(server, b"/l/k?m=2")  # new args first, old ones appended
    assert out.target == b"/pp/k?z=1&m=2"
    out, _ = phases(server, b"/v/z?q=6")  # variables: the rendered URI as-is, no args
    assert out.target == b"/vv/v/z"
    out, _ = phases(server, b"/empty/z?q=1")  # renders empty: the client's URI
    assert out.target is None
    out, _ = phases(server, b"/rx/abc")
    assert out.target == b"/q/abc"
    out, _ = phases(server, b"/p/plain?x=1")  # no rewrite: the usual URI part
    assert out.target == b"/pp/plain?x=1"
    out, _ = phases(server, b"/ord/k")  # `break` also skips the `return` after it
    assert isinstance(out.action, Proxied) and out.target == b"/p/k"


def test_redirects(server: VirtualServer) -> None:
    out, v = phases(server, b"/red/a%20b?q=3")
    assert isinstance(out.action, Return) and out.action.code == 302
    assert b"Location: http://main.test:8080/new/a%20b?q=3\r\n" in answer(out, v)
    out, v = phases(server, b"/perm/x?q=4")  # trailing `?`: no args
    assert out.action.code == 301 and b"Location: http://main.test:8080/new/x\r\n" in answer(out, v)  # type: ignore[attr-defined]
    out, v = phases(server, b"/abs/y?q=5")
    assert b"Location: https://other/y?q=5\r\n" in answer(out, v)


def test_cycle_limit_is_ten_changes(server: VirtualServer) -> None:
    out, v = phases(server, b"/cyc/1234567890")
    assert answer(out, v).endswith(b"end")
    assert phases(server, b"/cyc/12345678901")[0].action is CYCLE
    assert phases(server, b"/loop/")[0].action is CYCLE


def test_access_rules(server: VirtualServer) -> None:
    assert phases(server, b"/acc/", b"10.1.2.3")[0].action is not FORBIDDEN
    assert phases(server, b"/acc/", b"127.0.0.2")[0].action is FORBIDDEN
    assert phases(server, b"/acc/", b"127.0.0.3")[0].action is not FORBIDDEN  # no rule: allowed
    out, v = phases(server, b"/acc2/")  # `return` runs before the access phase
    assert answer(out, v).endswith(b"rewrite phase first")
    assert phases(server, b"/nothing")[0].action is NOT_FOUND


def test_access_matching() -> None:
    acc = compile_access([("allow", "::1"), ("deny", "192.168.1.1/24"), ("allow", "all")])
    assert isinstance(acc, Access)
    assert acc.allows(b"::1") and acc.allows(b"192.168.2.1")
    assert not acc.allows(b"192.168.1.77") and not acc.allows(b"::ffff:192.168.1.9")
    deny = compile_access([("deny", "all")])
    assert deny is not None and not deny.allows(b"unix:") and not deny.allows(b"10.0.0.1")
    assert compile_access([]) is None


def test_inherited_access_and_server_name_captures() -> None:
    table = table_of(
        r"""http { allow 127.0.0.1; deny all;
        server { listen 8080; server_name ~^(?<sub>[a-z]+)\.rx\.test$ ~^(\w+)\.(num)\.test$;
            location / { return 200 "$sub|$1|$2"; }
            location ~ ^/(x)$ { return 200 "$sub|$1|$2"; }
            location /in/ { deny 127.0.0.1; allow all; return 200; }
            location /p/ { proxy_pass http://127.0.0.1:1; } } }"""
    )
    server = table.servers[0]
    host_match = table.names.select_match(b"abc.rx.test")
    assert host_match[0] == 0 and host_match[1] is not None
    v = view(b"/")
    out = run_phases(server, v, False, host_match[1])
    assert answer(out, v).endswith(b"abc|abc|")
    v = view(b"/x")
    out = run_phases(server, v, False, table.names.select_match(b"q.num.test")[1])
    assert answer(out, v).endswith(b"|x|")  # the location regex replaced $1, $2
    assert phases(server, b"/p/", b"127.0.0.2")[0].action is FORBIDDEN  # from http{}
    assert phases(server, b"/p/")[0].action is not FORBIDDEN
    assert table.names.select_match(b"exact")[1] is None


def test_escape_tables() -> None:
    assert escape(b'a b"#%<>&+;?', REDIRECT_ESCAPE) == b"a%20b%22%23%25%3C%3E&+;?"
    assert escape(b"&+;?=/'", ARGS_ESCAPE) == b"%26%2B%3B%3F=/'"
    assert escape(b"plain", ARGS_ESCAPE) == b"plain"


def test_variable_parts_and_known_names() -> None:
    assert variable_parts("$1x-${2}$name") == ["1", b"x", b"-", "2", "name"]
    with pytest.raises(ValueError, match='unknown "0" variable'):
        compile_template("$0")
    with pytest.raises(ValueError, match='unknown "name" variable'):
        compile_template("$name")
    assert compile_template("$name", frozenset({"name"})).user_vars
    assert not compile_template("$uri $arg_x").user_vars


def test_python_regex() -> None:
    for pattern in (r"(?<a>x)", r"(?'a'x)", r"(?P<a>x)"):
        assert re.compile(python_regex(pattern)).groupindex == {"a": 1}
    assert python_regex(r"(?<=a)b(?<!c)") == r"(?<=a)b(?<!c)"


def test_plain_tables_stay_off_the_phases() -> None:
    table = table_of(
        "http { server { listen 8080; location / { proxy_pass http://127.0.0.1:1; }"
        ' location /a { return 200 "$uri"; } } }'
    )
    assert not table.scripted


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server { location / { if (-f $uri) { return 200; } } }", "file tests are not supported"),
        (
            "server { location / { if ($uri) { proxy_pass http://127.0.0.1:1; } } }",
            't.conf:1:42: error: "proxy_pass" directive inside "if" is not supported',
        ),
        ("server { location / { if $uri { return 200; } } }", "invalid condition"),
        ("server { location / { if ($a ~ ( ) { return 200; } } }", "pcre2_compile() failed"),
        ("server { rewrite ^ /x foo; }", 'invalid parameter "foo"'),
        ("server { rewrite ( /x; }", "pcre2_compile() failed"),
        ("server { set a 1; }", 'invalid variable name "a"'),
        ("server { set $uri 1; location / { return 200; } }", 'the duplicate "uri" variable'),
        ("server { location / { rewrite ^ /$nope; } }", 'unknown "nope" variable'),
        ("server { location / { set $a $b; return 200 $a; } }", 'unknown "b" variable'),
        (
            "server { location / { allow 10.0.0.1/33; return 200; } }",
            'invalid parameter "10.0.0.1/33"',
        ),
        ("server { location / { proxy_pass http://$h; } }", 'unknown "h" variable'),
        (
            "server { location / { set $h x; proxy_pass http://$h; } }",
            "a variable in the host needs an upstream",
        ),
        (
            "server { location / { proxy_set_header X $nope; proxy_pass http://127.0.0.1:1; } }",
            "unknown variable $nope",
        ),
    ],
)
def test_errors_like_nginx(text: str, message: str) -> None:
    errors = errors_of("http { " + text + " }")
    assert any(message in e for e in errors), errors


def test_set_variables_are_global_and_captures_in_headers_and_hash() -> None:
    table = table_of(
        r"""http { upstream h { hash $1; server 127.0.0.1:1; server 127.0.0.1:2; }
        server { listen 8080;
            location ~ ^/h/(\w+) { proxy_pass http://h; }
            location /x { return 200 "$later"; }
            location /y { set $later "L"; proxy_set_header X-C "$1-$later";
                proxy_pass http://127.0.0.1:3; } } }"""
    )
    server = table.servers[0]
    out, v = phases(server, b"/h/abc")
    assert isinstance(out.action, Proxied) and out.action.key is not None
    assert out.action.key.render(v) == b"abc"
    out, v = phases(server, b"/y")
    assert isinstance(out.action, Proxied) and out.action.renders
    assert v.vars == {"later": b"L"}
    out, v = phases(server, b"/x")
    assert answer(out, v).endswith(b"\r\n\r\n")  # set elsewhere: known, empty here


def test_scripted_tables_keep_request_headers_only_when_read() -> None:
    base = "http { server { listen 8080; location / { %s proxy_pass http://127.0.0.1:1; } } }"
    assert not table_of(base % "rewrite ^/a/(.*) /b/$1 break;").reads_headers()
    assert table_of(base % 'set $x "$http_x_thing";').reads_headers()
    assert table_of(base % "rewrite ^ /$http_x_to break;").reads_headers()


def test_bound_scheme_reaches_redirects_and_returns() -> None:
    """A TLS listener's copy: `$scheme` fixed, relative redirects absolute in https."""
    table = table_of(
        "http { server { listen 8080; location /a/ { rewrite ^/a/(.*) /b/$1 permanent; }"
        ' location /s/ { return 200 "$scheme"; } } }'
    )
    server = table.servers[0]
    by_prefix = {loc.prefix: loc for loc in server.locations}
    (ret,) = by_prefix[b"/s/"].script
    assert isinstance(ret, Return) and ret.text is not None and ret.text.parts == (b"http",)
    loc = by_prefix[b"/a/"]
    bound = bind_script(
        loc.script, lambda t: bind_scheme(t, "https"), lambda r: replace(r, scheme=b"https")
    )
    object.__setattr__(loc, "script", bound)
    out, v = phases(server, b"/a/x")
    assert b"Location: https://main.test:8080/b/x\r\n" in answer(out, v)


def test_if_and_break() -> None:
    table = table_of(
        r"""http { server { listen 8080;
        location / {
            set $zero 0;
            if ($zero) { return 500; }
            if ($arg_a = "x") { return 200 "eq"; }
            if ($arg_a != "y") { set $ne 1; }
            if ($http_x ~* ^(?<word>[a-z]+)$) { return 200 "rx $1 $word $ne"; }
            if ($arg_b) { rewrite ^/(.*)$ /b/$1; break; }
            if ($arg_c !~ ^\d+$) { return 200 "nd"; }
            proxy_pass http://127.0.0.1:1/u/;
        }
        location /b/ { return 200 "b"; } } }"""
    )
    assert table.scripted
    server = table.servers[0]
    out, v = phases(server, b"/k?a=x")
    assert answer(out, v).endswith(b"eq")
    v = view(b"/k?c=1")
    v.headers = [(b"x", b"HeLLo")]
    out = run_phases(server, v, False)
    assert answer(out, v).endswith(b"rx HeLLo HeLLo 1")
    out, v = phases(server, b"/k?c=z")
    assert answer(out, v).endswith(b"nd")
    out, v = phases(server, b"/k?b=1")  # `break` after a flag-less rewrite: no new search
    assert isinstance(out.action, Proxied) and v.path == b"/b/k"
    out, _ = phases(server, b"/k?c=5")
    assert isinstance(out.action, Proxied) and out.target == b"/u/k?c=5"


def test_rewrite_log_and_uninitialized_variable_warn_are_accepted() -> None:
    assert not errors_of(
        "http { rewrite_log on; uninitialized_variable_warn off; server { listen 8080;"
        " location / { rewrite_log off; if ($arg_a) { rewrite_log on; return 204; }"
        " return 200; } } }"
    )


def test_the_first_of_two_returns_answers() -> None:
    table = table_of('http { server { listen 8080; location / { return 200 "a"; return 201; } } }')
    assert table.scripted
    out, v = phases(table.servers[0], b"/")
    assert answer(out, v).endswith(b"\r\n\r\na")
