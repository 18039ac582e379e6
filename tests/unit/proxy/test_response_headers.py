"""proxy_redirect rules, response header rules and the raw-path head filter (pure)."""

from __future__ import annotations

import dataclasses
import random

import httptools
import pytest

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import read_nginx
from hakeeper.conf.nginx_headers import AddHeaderConf, HeadersOut, RedirectConf, default_redirect
from hakeeper.proxy.framing import closing_head
from hakeeper.proxy.from_nginx import listeners
from hakeeper.proxy.redirect import Redirects, absolute_location, compile_rule, default_rule
from hakeeper.proxy.response_headers import (
    ResponseContext,
    ResponseRules,
    RulesError,
    add_header,
    filter_head,
    keepalive_head,
    response_rules,
)
from hakeeper.proxy.routes import RequestView

DATE = b"Date: Mon, 23 Nov 2026 18:00:00 GMT\r\n"
VARS = {
    "host": b"example.com",
    "server_port": b"8080",
    "scheme": b"http",
    "proxy_host": b"up",
    "status": b"302",
}


def lookup(name: str) -> bytes:
    return VARS.get(name, b"")


def view(host: bytes = b"example.com", port: bytes = b"8080") -> RequestView:
    return RequestView(
        method=b"GET",
        target=b"/a?b",
        path=b"/a",
        args=b"b",
        host=host,
        headers=(),
        remote_addr=b"127.0.0.1",
        remote_port=b"5000",
        server_name=b"main",
        server_port=port,
        server_addr=b"127.0.0.1",
    )


def context(status: int) -> ResponseContext:
    return ResponseContext(view(), b"up", status)


def no_context(status: int) -> ResponseContext:
    raise AssertionError("no variable should be read")


# -- redirect rules ----------------------------------------------------------------------
def test_literal_rule_replaces_the_prefix_case_sensitively() -> None:
    rules = Redirects((compile_rule("http://up/a/", "/b/"),))
    assert rules.rewrite(b"http://up/a/x?y", lookup) == b"/b/x?y"
    assert rules.rewrite(b"http://UP/a/x", lookup) is None
    assert rules.rewrite(b"http://up/a", lookup) is None


def test_first_rule_that_applies_wins_and_variables_render() -> None:
    rules = Redirects(
        (
            compile_rule("http://$proxy_host/v/", "$scheme://$host:$server_port/w/"),
            compile_rule("/", "/rel/"),
            compile_rule("http://up/", "/"),
        )
    )
    assert rules.rewrite(b"http://up/v/1", lookup) == b"http://example.com:8080/w/1"
    assert rules.rewrite(b"/x", lookup) == b"/rel/x"
    assert rules.rewrite(b"http://up/z", lookup) == b"/z"
    assert rules.rewrite(b"ftp://x", lookup) is None


def test_regex_rule_replaces_the_whole_value_with_captures() -> None:
    rule = compile_rule(r"~^http://up/(\w+)/(.*)$", "http://$host/X/$1/$2$3?$12")
    assert rule.apply(b"http://up/foo/bar", lookup) == b"http://example.com/X/foo/bar?foo2"
    assert rule.apply(b"http://up/", lookup) is None
    caseless = compile_rule("~*^HTTP://OTHER/(?<rest>.*)", "/o/$rest")
    assert caseless.apply(b"http://other/p?q", lookup) == b"/o/p?q"
    assert compile_rule("~^HTTP://OTHER/", "/o/").apply(b"http://other/", lookup) is None


def test_refresh_rewrites_after_url_equals_only() -> None:
    rules = Redirects((compile_rule("http://up/", "/"),))
    assert rules.rewrite_refresh(b"5; URL=http://up/r", lookup) == b"5; URL=/r"
    assert rules.rewrite_refresh(b"0;url=http://up/", lookup) == b"0;url=/"
    assert rules.rewrite_refresh(b"7", lookup) is None
    assert rules.rewrite_refresh(b"1; url=http://other/", lookup) is None


def test_default_rule_like_nginx() -> None:
    assert default_rule("http://up/uri/", "/one/", False).text == "http://up/uri/ /one/"
    assert default_rule("http://up", "/one/", False).text == "http://up/ /"
    assert default_rule("http://up", "^/re/", True).text == "http://up/ /"
    # literal: a `$` in the location name is not a variable there
    assert default_rule("http://up/x", "/a$b", False).apply(b"http://up/x1", lookup) == b"/a$b1"
    assert default_redirect("http://up/u", "=", "/exact").replacement == "/exact"
    assert default_redirect("http://up/u", "~", "^/r").redirect == "http://up/u/"


def test_captures_outside_a_regex_rule_are_the_request_s() -> None:
    rule = compile_rule("http://up/", "/c/$1/$2x/")
    captured = dataclasses.replace(view(), captures=(b"/m/a", b"a"))
    assert rule.apply(b"http://up/z", ResponseContext(captured, b"up", 302)) == b"/c/a/x/z"
    assert rule.apply(b"http://up/z", context(302)) == b"/c//x/z"  # none kept: empty
    assert add_header("X", "$1-$status").value == ("1", b"-", "status")


def test_bad_rules_are_errors() -> None:
    with pytest.raises(ValueError, match="pcre2_compile"):
        compile_rule("~(", "/")
    with pytest.raises(ValueError, match='unknown "nope" variable'):
        compile_rule("http://up/", "/$nope/")
    with pytest.raises(ValueError, match='unknown "0" variable'):
        compile_rule("~^/(a)", "/$0/")


def test_absolute_location_like_the_header_filter() -> None:
    assert absolute_location(b"/x", b"http", b"h", b"8080") == b"http://h:8080/x"
    assert absolute_location(b"/x", b"http", b"h", b"80") == b"http://h/x"
    assert absolute_location(b"/x", b"https", b"h", b"443") == b"https://h/x"
    assert absolute_location(b"http://a/", b"http", b"h", b"8080") == b"http://a/"


# -- rules from the directives -----------------------------------------------------------
def test_rules_hide_nginx_defaults_minus_passed_plus_hidden() -> None:
    rules = response_rules(HeadersOut(hide=("X-Secret",), pass_=("Server", "X-Pad")))
    assert b"server" not in rules.hidden and b"x-pad" not in rules.hidden
    assert {b"date", b"x-secret", b"x-accel-redirect"} <= rules.hidden
    assert rules.passes_server and not rules.passes_date
    with pytest.raises(RulesError) as err:
        response_rules(HeadersOut(redirects=(RedirectConf("/", "/$bad"),)))
    assert 'unknown "bad" variable' in str(err.value)


def test_add_header_statuses_always_and_empty_values() -> None:
    rules = ResponseRules(add=(add_header("X-A", "a"), add_header("X-B", "b", True)))
    assert rules.add_lines(200, lookup) == b"X-A: a\r\nX-B: b\r\n"
    assert rules.add_lines(308, lookup) == b"X-A: a\r\nX-B: b\r\n"
    assert rules.add_lines(404, lookup) == b"X-B: b\r\n"
    dynamic = ResponseRules(add=(add_header("X-S", "$status $host"), add_header("X-E", "")))
    assert dynamic.add_lines(302, lookup) == b"X-S: 302 example.com\r\n"


# -- the raw path's head filter ----------------------------------------------------------
NGINX_LIKE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
    b"Content-Length: 2\r\nX-Pad: avoid\r\nX-Accel-Expires: 3\r\n\r\nok"
)


def test_filter_hides_and_adds_our_server_and_date() -> None:
    split = filter_head(NGINX_LIKE, ResponseRules(), False, DATE, no_context)
    assert split == (
        b"HTTP/1.1 200 OK\r\nServer: hakeeper\r\n" + DATE + b"Content-Length: 2\r\n\r\n",
        b"ok",
    )
    passing = response_rules(HeadersOut(pass_=("Server", "Date", "X-Pad")))
    split = filter_head(NGINX_LIKE, passing, False, DATE, no_context)
    assert split is not None
    assert split[0] == (
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
        b"Content-Length: 2\r\nX-Pad: avoid\r\n\r\n"
    )
    bare = b"HTTP/1.1 204 No Content\r\n\r\n"
    assert filter_head(bare, passing, False, DATE, no_context) == (
        b"HTTP/1.1 204 No Content\r\nServer: hakeeper\r\n" + DATE + b"\r\n",
        b"",
    )
    assert filter_head(b"HTTP/1.1 200 OK\r\nA: b\r\n", passing, False, DATE, no_context) is None


def test_filter_rewrites_location_and_makes_the_last_absolute() -> None:
    rules = response_rules(
        HeadersOut(
            redirects=(RedirectConf("http://up/", "/", literal=True),),
            add=(),
        )
    )
    head = (
        b"HTTP/1.1 302 Found\r\nlocation: http://up/x\r\nLOCATION:  http://up/y\r\n"
        b"Refresh: 1; url=http://up/r\r\nContent-Length: 0\r\n\r\n"
    )
    split = filter_head(head, rules, False, DATE, context)
    assert split is not None
    assert split[0] == (
        b"HTTP/1.1 302 Found\r\nServer: hakeeper\r\n" + DATE + b"location: /x\r\n"
        b"LOCATION: http://example.com:8080/y\r\nRefresh: 1; url=/r\r\nContent-Length: 0\r\n\r\n"
    )
    untouched = b"HTTP/1.1 302 Found\r\nLocation: /rel\r\nContent-Length: 0\r\n\r\n"
    split = filter_head(untouched, rules, False, DATE, context)
    assert split is not None and b"\r\nLocation: /rel\r\n" in split[0]


def test_filter_for_a_closing_client_matches_closing_head_plus_rules() -> None:
    buf = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.0 200 OK\r\nServer: x\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    )
    passing = response_rules(HeadersOut(pass_=("Server", "Date")))
    assert filter_head(buf, passing, True, DATE, no_context) == (
        b"HTTP/1.1 200 OK\r\n" + DATE + b"Server: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n",
        b"3\r\nabc\r\n",
    )
    old = closing_head(buf)
    assert old is not None and old[1] == b"3\r\nabc\r\n"
    # without closing, interim heads pass and connection fields stay
    split = filter_head(buf, passing, False, DATE, no_context)
    assert split is not None
    assert split[0].startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n")
    assert b"Keep-Alive: timeout=5\r\n" in split[0]


def test_filter_memo_gives_the_same_bytes_and_follows_the_date() -> None:
    rules = ResponseRules(add=(add_header("X-A", "a"),))
    first = filter_head(NGINX_LIKE, rules, False, DATE, no_context)
    again = filter_head(NGINX_LIKE, rules, False, DATE, no_context)
    assert first == again and len(rules.memo.table) == 1
    assert first is not None
    assert keepalive_head(NGINX_LIKE, rules, DATE) == first[0] + first[1]
    assert keepalive_head(NGINX_LIKE, rules, DATE[:-2] + b"\r\n") is None  # equal, not it
    later = b"Date: Mon, 23 Nov 2026 18:00:01 GMT\r\n"
    moved = filter_head(NGINX_LIKE, rules, False, later, no_context)
    assert moved is not None and later in moved[0] and DATE not in moved[0]
    # a head that read request variables is not remembered
    redirecting = response_rules(HeadersOut(redirects=(RedirectConf("http://up/", "/"),)))
    loc = b"HTTP/1.1 301 X\r\nLocation: http://up/a\r\n\r\n"
    assert filter_head(loc, redirecting, False, DATE, context) is not None
    assert not redirecting.memo.table


def _reference(buf: bytes, rules: ResponseRules) -> bytes:
    """What filter_head makes of `buf` with a fresh copy of `rules` (no memo shared)."""
    split = filter_head(buf, dataclasses.replace(rules), False, DATE, context)
    assert split is not None
    return split[0] + split[1]


def _current(rules: ResponseRules) -> ResponseRules:
    rules.memo.date = DATE  # as filter_head leaves it for the rest of the second
    return rules


def test_keepalive_head_cuts_hidden_lines_anywhere_and_adds_by_status() -> None:
    rules = _current(ResponseRules(add=(add_header("X-A", "a"), add_header("X-B", "b", True))))
    node_like = (
        b"HTTP/1.1 200 OK\r\nX-Powered-By: x\r\nContent-Length: 2\r\nDate: Thu, 01 Jan 1970"
        b" 00:00:00 GMT\r\nConnection: keep-alive\r\nx-accel-expires: 1\r\n\r\nok"
    )
    out = keepalive_head(node_like, rules, DATE)
    assert out == _reference(node_like, rules)
    assert out == (
        b"HTTP/1.1 200 OK\r\nServer: hakeeper\r\n" + DATE + b"X-Powered-By: x\r\n"
        b"Content-Length: 2\r\nConnection: keep-alive\r\nX-A: a\r\nX-B: b\r\n\r\nok"
    )
    missing = b"HTTP/1.1 404 Not Found\r\nServer: s\r\n\r\n"
    assert keepalive_head(missing, rules, DATE) == (
        b"HTTP/1.1 404 Not Found\r\nServer: hakeeper\r\n" + DATE + b"X-B: b\r\n\r\n"
    )
    bare = b"HTTP/1.1 204 No Content\r\n\r\n"
    assert keepalive_head(bare, rules, DATE) == _reference(bare, rules)


def test_keepalive_head_memo_follows_the_lead_and_the_whole_head() -> None:
    rules = _current(ResponseRules())
    first = NGINX_LIKE.replace(b"ok", b"no")
    assert keepalive_head(first, rules, DATE) == _reference(first, rules)
    assert rules.memo.lead.endswith(b"GMT\r\n")  # status line, Server, Date
    # the same head, another body: the whole-head memo; other heads: the lead's
    heads = [
        NGINX_LIKE,
        NGINX_LIKE.replace(b"Content-Length: 2", b"Content-Length: 02"),
        NGINX_LIKE.replace(b"GMT\r\n", b"GMT\r\nServer: again\r\nLocation: /x\r\n"),
        NGINX_LIKE.replace(b"Server: nginx/1.22.1", b"Server: nginx/1.22.2"),
        NGINX_LIKE.replace(b"200 OK", b"200 Fine"),
        NGINX_LIKE[:40],  # no complete head: filter_head's answer (None) too
    ]
    for buf in heads * 3:
        got = keepalive_head(buf, rules, DATE)
        if buf == NGINX_LIKE[:40]:
            assert got is None
        else:
            assert got == _reference(buf, rules), buf
    # with the lead of a head that had Server only, a head with Server and Date
    rules = _current(ResponseRules())
    short = b"HTTP/1.1 200 OK\r\nServer: a\r\nContent-Type: t\r\n\r\n"
    longer = b"HTTP/1.1 200 OK\r\nServer: a\r\nDATE: d\r\nContent-Type: t\r\n\r\n"
    for buf in (short, longer, short, longer):
        assert keepalive_head(buf, rules, DATE) == _reference(buf, rules)
    # a lead without hidden lines (Date further down) gives way to a longer one
    rules = _current(ResponseRules())
    late = b"HTTP/1.1 200 OK\r\nA: 1\r\nDate: x\r\n\r\n"
    assert keepalive_head(late, rules, DATE) == _reference(late, rules)
    assert rules.memo.lead == b"HTTP/1.1 200 OK\r\n"
    assert keepalive_head(NGINX_LIKE, rules, DATE) == _reference(NGINX_LIKE, rules)
    assert rules.memo.lead.endswith(b"GMT\r\n")
    assert keepalive_head(late, rules, DATE) == _reference(late, rules)


def test_keepalive_head_leaves_the_rest_to_filter_head() -> None:
    redirecting = _current(response_rules(HeadersOut(redirects=(RedirectConf("http://up/", "/"),))))
    assert (
        keepalive_head(b"HTTP/1.1 301 M\r\nlocation: http://up/a\r\n\r\n", redirecting, DATE)
        is None
    )
    assert keepalive_head(b"HTTP/1.1 200 OK\r\nRefresh: 1\r\n\r\n", redirecting, DATE) is None
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
    assert keepalive_head(interim, redirecting, DATE) is None
    passing = _current(response_rules(HeadersOut(pass_=("Date",))))
    assert keepalive_head(NGINX_LIKE, passing, DATE) is None  # the upstream's Date passes
    dynamic = _current(ResponseRules(add=(add_header("X-S", "$status"),)))
    assert keepalive_head(NGINX_LIKE, dynamic, DATE) is None
    assert keepalive_head(NGINX_LIKE, dynamic, DATE) is None


def test_keepalive_head_equals_filter_head_over_a_stream_of_heads() -> None:
    """The memo carries over from head to head (one second): random heads, many of
    them repeated or sharing their first lines, each compared with filter_head."""
    rng = random.Random(11)
    rules = _current(response_rules(HeadersOut(add=(AddHeaderConf("X-A", "a"),), hide=("ETag",))))
    pool: list[bytes] = []
    answered = 0
    for _ in range(600):
        if pool and rng.random() < 0.4:
            buf = rng.choice(pool)
        else:
            status = rng.choice([200, 200, 204, 302, 404])
            lead = [(b"Server", b"nginx"), (b"date", b"d")][: rng.randrange(3)]
            rest = [(rng.choice(_NAMES), rng.choice(_VALUES)) for _ in range(rng.randrange(0, 5))]
            fields = lead + rest
            head = b"HTTP/1.1 %d R\r\n" % status
            head += b"".join(n + b": " + v + b"\r\n" for n, v in fields)
            buf = head + b"\r\n" + rng.choice([b"", b"body", b"\r\nLocation: x\r\n\r\n"])
            pool.append(buf)
        got = keepalive_head(buf, rules, DATE)
        if got is not None:
            answered += 1
            assert got == _reference(buf, rules), buf
    assert answered > 300


# -- reading the directives --------------------------------------------------------------
def _read(text: str) -> tuple[HeadersOut, ...] | Diagnostics:
    diags = Diagnostics()
    cfg = read_nginx(parse_nginx_text(text, "nginx.conf", diags), diags)
    if diags.has_errors:
        return diags
    return tuple(loc.settings.headers_out for s in cfg.servers for loc in s.locations)


def test_reader_merges_like_nginx() -> None:
    out = _read(
        "http { upstream up { server 127.0.0.1:1; }"
        " proxy_redirect http://a/ /b/; add_header X-H h; proxy_hide_header X-1;"
        " server { proxy_pass_header Server;"
        "  location / { proxy_pass http://up; }"
        "  location /o/ { proxy_pass http://up/u/; proxy_redirect off; proxy_redirect / /x/; }"
        "  location /d/ { proxy_redirect http://c/ /; proxy_pass http://up/u/;"
        "   proxy_redirect default; add_header X-L l always; proxy_hide_header X-2; }"
        "  location /n/ { proxy_pass http://up/n/; } } }"
    )
    assert not isinstance(out, Diagnostics)
    top, off, explicit, plain = out
    assert top.redirects is not None
    assert [(r.redirect, r.replacement) for r in top.redirects] == [("http://a/", "/b/")]
    assert [a.name for a in top.add] == ["X-H"] and top.hide == ("X-1",)
    assert top.pass_ == ("Server",)
    assert off.redirects == ()
    assert explicit.redirects is not None
    assert [(r.redirect, r.replacement) for r in explicit.redirects] == [
        ("http://c/", "/"),
        ("http://up/u/", "/d/"),
    ]
    assert [(a.name, a.always) for a in explicit.add] == [("X-L", True)]
    assert explicit.hide == ("X-2",) and explicit.pass_ == ("Server",)
    # the http-level rule is inherited: no default for /n/
    assert plain.redirects == top.redirects


def test_reader_no_default_for_a_proxy_pass_with_variables() -> None:
    out = _read(
        "http { upstream up { server 127.0.0.1:1; } server {"
        " location ~ ^/v/(.*) { proxy_pass http://up/x/$1; } } }"
    )
    assert not isinstance(out, Diagnostics)
    assert [o.redirects for o in out] == [None]


def test_reader_default_without_any_rule() -> None:
    out = _read(
        "http { upstream up { server 127.0.0.1:1; } server {"
        " location / { proxy_pass http://up; } location /u/ { proxy_pass http://up/v/; }"
        " location ~ ^/r/ { proxy_pass http://up; } } }"
    )
    assert not isinstance(out, Diagnostics)
    got = [[(r.redirect, r.replacement) for r in o.redirects or ()] for o in out]
    assert got == [[("http://up/", "/")], [("http://up/v/", "/u/")], [("http://up/", "/")]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "location / { proxy_redirect default; proxy_pass http://up; }",
            '"proxy_redirect default" should be placed after the "proxy_pass" directive',
        ),
        ("proxy_redirect default;", "should be placed after"),
        ("location / { proxy_pass http://up; proxy_redirect nope; }", 'invalid parameter "nope"'),
        ("location / { proxy_pass http://up; proxy_redirect ~( /; }", "pcre2_compile() failed"),
        ("add_header X y sometimes;", 'invalid parameter "sometimes"'),
        ("proxy_hide_header;", 'invalid number of arguments in "proxy_hide_header"'),
        ("location / { proxy_pass http://up; proxy_redirect / /$nope; }", 'unknown "nope"'),
        ("location / { proxy_pass http://up; add_header X $nope; }", 'unknown "nope"'),
    ],
)
def test_reader_errors_name_the_line(text: str, message: str) -> None:
    conf = "http {\nupstream up { server 127.0.0.1:1; }\nserver {\n" + text + "\n} }"
    diags = Diagnostics()
    cfg = read_nginx(parse_nginx_text(conf, "nginx.conf", diags), diags)
    if not diags.has_errors:
        listeners(cfg, diags)
    found = [d.format() for d in diags.sorted()]
    assert any(message in f and "nginx.conf:4" in f for f in found), found


# -- property: any head llhttp accepts comes out well-formed ----------------------------
_NAMES = [
    b"Server", b"sErVeR", b"Date", b"DATE", b"Location", b"location", b"Refresh",
    b"X-Pad", b"x-accel-redirect", b"X-Accel-Buffering", b"Connection", b"Keep-Alive",
    b"Content-Type", b"Set-Cookie", b"X-Servers", b"Dates", b"X-Accel", b"ETag",
]  # fmt: skip
_VALUES = [
    b"", b"http://up/", b"http://up/a b", b"/rel", b"5; url=http://up/x", b"5;URL=",
    b"keep-alive", b"\xff\xfe obs-text", b"a\tb", b"http://UP/x", b"~", b"$1",
]  # fmt: skip


def _parse(head: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    class Sink:
        def __init__(self) -> None:
            self.fields: list[tuple[bytes, bytes]] = []

        def on_header(self, name: bytes, value: bytes) -> None:
            self.fields.append((name, value))

    sink = Sink()
    parser = httptools.HttpResponseParser(sink)
    parser.feed_data(head)
    return parser.get_status_code(), sink.fields


def test_filtered_heads_stay_well_formed() -> None:
    rng = random.Random(5)
    rules = response_rules(
        HeadersOut(
            redirects=(
                RedirectConf("http://up/", "/", literal=True),
                RedirectConf("~*^/(.*)", "/r/$1"),
            ),
            add=(),
            hide=("ETag",),
            pass_=("Date",),
        )
    )
    plain = response_rules(HeadersOut(add=(AddHeaderConf("X-A", "a"),), hide=("ETag",)))
    answered = 0
    for case in range(300):
        status = rng.choice([200, 204, 301, 302, 404, 500])
        fields = [(rng.choice(_NAMES), rng.choice(_VALUES)) for _ in range(rng.randrange(0, 8))]
        head = b"HTTP/1.%d %d R\r\n" % (rng.randrange(2), status)
        head += b"".join(n + b":" + b" " * rng.randrange(2) + v + b"\r\n" for n, v in fields)
        buf = head + b"\r\nbody"
        closing = bool(case % 2)
        if not closing:  # the one-pass route gives the same bytes when it answers
            plain.memo.table.clear()
            plain.memo.date, plain.memo.off = DATE, False
            quick = keepalive_head(buf, plain, DATE)
            full = filter_head(buf, plain, False, DATE, context)
            assert full is not None
            if quick is not None:
                answered += 1
                assert quick == full[0] + full[1]
                assert keepalive_head(buf, plain, DATE) == quick  # from the memo
        split = filter_head(buf, rules, closing, DATE, context)
        assert split is not None and split[1] == b"body"
        got_status, got = _parse(split[0])
        assert got_status == status
        names = [n.lower() for n, _ in got]
        assert b"etag" not in names and b"x-pad" not in names and b"server" in names
        assert names.count(b"server") == 1 and names.count(b"date") >= 1
        assert b"x-accel-redirect" not in names and b"x-accel-buffering" not in names
        kept = [(n.lower(), v) for n, v in fields if n.lower() in (b"content-type", b"set-cookie")]
        assert [(n, v) for n, v in got if n.lower() in (b"content-type", b"set-cookie")] == [
            (n, v) for n, v in fields if n.lower() in (b"content-type", b"set-cookie")
        ] or not kept
        if closing:
            assert names[-1] == b"connection" and b"keep-alive" not in names
    assert answered > 100
