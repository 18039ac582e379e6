"""nginx Plus active health checks for http upstreams: `health_check` and `match`, pure.

Follows the syntax and defaults of nginx Plus's ngx_http_upstream_hc_module as documented at
nginx.org/en/docs/http/ngx_http_upstream_hc_module.html (open-source nginx has no such
module; see ../shared/anchors/dataplane.md 1.8):

* `health_check [interval=5s] [jitter=0] [fails=1] [passes=1] [uri=/] [port=N]
  [match=NAME] [mandatory [persistent]] [keepalive_time=T];` in a `location` whose
  `proxy_pass` names an `upstream`. Every server of that upstream gets `GET uri` every
  `interval`; `fails` consecutive failures mark it down, `passes` consecutive successes
  mark it up again; `mandatory` starts it down until its first pass. `timeout=T` is a
  hakeeper extension (default: the interval, capped at 5 s): a probe not answered by
  then fails. `persistent` (with `mandatory`): a server that was up before a reload
  which changed its check stays up instead of starting in "checking". `keepalive_time`
  is accepted and ignored.
* `match NAME { ... }` at http level; every condition must hold:
  `status 200;` `status ! 500;` `status 200 204;` `status 200-399;` `status ! 301 302;`
  `header Name = value;` `header Name != value;` `header Name ~ regex;`
  `header Name !~ regex;` `header Name;` `header ! Name;` `body ~ regex;` `body !~ regex;`.
  Without `match`, a 2xx or 3xx status is a pass.

Stream upstreams (ngx_stream_upstream_hc_module, nginx.org/en/docs/stream/...):
`health_check [interval= jitter= fails= passes= port= udp mandatory [persistent]]
[match=NAME];` in a stream `server`, `health_check_timeout T;` (default 5 s) and
`match NAME { send "..."; expect "..." | ~ "regex" | ~* "regex"; }` at stream level, both
strings with `\\xHH` hex escapes. Without `match` a TCP check is a connect; `udp` sends
"nginx health check" and passes when no ICMP error comes back.

The reader functions take syntax-tree nodes and report problems to `Diagnostics` with the
file:line of the offending statement; `Match.test` evaluates one response.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from hakeeper.conf.diagnostics import Diagnostics, Location
from hakeeper.conf.nginx_values import parse_time
from hakeeper.conf.tree import Node


@dataclass(frozen=True, slots=True)
class StatusTest:
    """`status [!] code|lo-hi ...`: the status is (not) in one of the ranges."""

    ranges: tuple[tuple[int, int], ...]
    negate: bool = False

    def test(self, status: int) -> bool:
        inside = any(lo <= status <= hi for lo, hi in self.ranges)
        return inside != self.negate


@dataclass(frozen=True, slots=True)
class HeaderTest:
    """`header Name [op value]` / `header ! Name`; op is =, !=, ~ or !~ ("" = present,
    "!" = absent). Header names compare case-insensitively."""

    name: str
    op: str = ""
    value: str = ""

    def test(self, headers: Mapping[str, str]) -> bool:
        got = headers.get(self.name.lower())
        if self.op == "!":
            return got is None
        if got is None:
            return False
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        if self.op in ("~", "!~"):
            found = re.search(self.value, got) is not None
            return found == (self.op == "~")
        return True


@dataclass(frozen=True, slots=True)
class BodyTest:
    """`body ~ regex` / `body !~ regex` over the response body (latin-1 text)."""

    regex: str
    negate: bool = False

    def test(self, body: bytes) -> bool:
        found = re.search(self.regex, body.decode("latin-1")) is not None
        return found != self.negate


#: Without `match`: 2xx and 3xx pass (nginx Plus).
DEFAULT_STATUS = StatusTest(((200, 399),))


@dataclass(frozen=True, slots=True)
class Match:
    """A `match` block: every test must pass."""

    name: str
    status: tuple[StatusTest, ...] = ()
    headers: tuple[HeaderTest, ...] = ()
    body: tuple[BodyTest, ...] = ()
    loc: Location | None = None

    def test(self, status: int, headers: Mapping[str, str], body: bytes) -> str | None:
        """None when the response passes; else a short reason. `headers` has lower-case
        names."""
        for s in self.status:
            if not s.test(status):
                return f"status {status} does not match"
        for h in self.headers:
            if not h.test(headers):
                return f'header "{h.name}" does not match'
        for b in self.body:
            if not b.test(body):
                return "body does not match"
        return None

    @property
    def needs_body(self) -> bool:
        return bool(self.body)


DEFAULT_MATCH = Match("", status=(DEFAULT_STATUS,))


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """One `health_check` directive, its `match` resolved."""

    interval: float = 5.0
    jitter: float = 0.0
    fails: int = 1
    passes: int = 1
    uri: str = "/"
    port: int = 0  # 0 = the server's own port
    mandatory: bool = False
    match: Match = DEFAULT_MATCH
    timeout: float = 0.0  # 0 = min(interval, 5 s)
    loc: Location | None = None
    persistent: bool = False

    @property
    def probe_timeout(self) -> float:
        return self.timeout if self.timeout > 0 else min(self.interval, 5.0)

    @property
    def spec(self) -> HealthCheck:
        """What the check does, without where it was written: two checks with equal specs
        are the same check (a reload that only moves lines keeps its state)."""
        return replace(self, loc=None, match=replace(self.match, loc=None))


# -- readers ------------------------------------------------------------------------------


def _status(node: Node, diags: Diagnostics) -> StatusTest | None:
    args = list(node.arg_texts())
    negate = bool(args) and args[0] == "!"
    if negate:
        args = args[1:]
    ranges: list[tuple[int, int]] = []
    for a in args:
        m = re.fullmatch(r"(\d{3})(?:-(\d{3}))?", a)
        if m is None:
            diags.error(node.loc, f'invalid status "{a}" in "status" of "match"')
            return None
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if not 100 <= lo <= hi <= 599:
            diags.error(node.loc, f'invalid status range "{a}" in "status" of "match"')
            return None
        ranges.append((lo, hi))
    if not ranges:
        diags.error(node.loc, 'invalid number of arguments in "status" of "match"')
        return None
    return StatusTest(tuple(ranges), negate)


def _regex_ok(node: Node, regex: str, diags: Diagnostics) -> bool:
    try:
        re.compile(regex)
    except re.error as exc:
        diags.error(node.loc, f'invalid regex "{regex}" in "{node.name}" of "match": {exc}')
        return False
    return True


def _header(node: Node, diags: Diagnostics) -> HeaderTest | None:
    args = node.arg_texts()
    if len(args) == 1 and args[0] != "!":
        return HeaderTest(args[0])
    if len(args) == 2 and args[0] == "!":
        return HeaderTest(args[1], "!")
    if len(args) == 3 and args[1] in ("=", "!=", "~", "!~"):
        if args[1] in ("~", "!~") and not _regex_ok(node, args[2], diags):
            return None
        return HeaderTest(args[0], args[1], args[2])
    diags.error(node.loc, f'invalid "header" in "match": {" ".join(args)}')
    return None


def _body(node: Node, diags: Diagnostics) -> BodyTest | None:
    args = node.arg_texts()
    if len(args) == 2 and args[0] in ("~", "!~"):
        if not _regex_ok(node, args[1], diags):
            return None
        return BodyTest(args[1], args[0] == "!~")
    diags.error(node.loc, f'invalid "body" in "match": {" ".join(args)}')
    return None


def read_match(block: Node, diags: Diagnostics) -> Match | None:
    """One `match NAME { ... }` block (None if it has errors, which are reported)."""
    m = Match(block.args[0].text, loc=block.loc)
    ok = True
    for node in block.children or ():
        if node.children is not None:
            diags.error(node.loc, f'"{node.name}" in "match" cannot be a block')
            ok = False
        elif node.name == "status":
            st = _status(node, diags)
            ok = ok and st is not None
            m = replace(m, status=(*m.status, st)) if st is not None else m
        elif node.name == "header":
            h = _header(node, diags)
            ok = ok and h is not None
            m = replace(m, headers=(*m.headers, h)) if h is not None else m
        elif node.name == "body":
            b = _body(node, diags)
            ok = ok and b is not None
            m = replace(m, body=(*m.body, b)) if b is not None else m
        else:
            diags.error(node.loc, f'unknown directive "{node.name}" in "match"')
            ok = False
    return m if ok else None


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_M = TypeVar("_M", bound=_Named)


def _read_all(
    nodes: Sequence[Node], diags: Diagnostics, read: Callable[[Node, Diagnostics], _M | None]
) -> dict[str, _M]:
    """Every `match` block among a block's statements, by name (a duplicate is an error)."""
    out: dict[str, _M] = {}
    for node in nodes:
        if node.name != "match":
            continue
        m = read(node, diags)
        if m is None:
            continue
        if m.name in out:
            diags.error(node.loc, f'duplicate match "{m.name}"')
            continue
        out[m.name] = m
    return out


def read_matches(nodes: Sequence[Node], diags: Diagnostics) -> dict[str, Match]:
    """Every `match` block among an http block's statements, by name."""
    return _read_all(nodes, diags, read_match)


def _positive(node: Node, key: str, value: str, diags: Diagnostics) -> int | None:
    if not value.isdigit() or int(value) < 1:
        diags.error(node.loc, f'invalid parameter "{key}={value}" in "health_check"')
        return None
    return int(value)


def _param(hc: HealthCheck, node: Node, word: str, diags: Diagnostics) -> HealthCheck | None:
    key, eq, value = word.partition("=")
    if not eq:
        if word == "mandatory":
            return replace(hc, mandatory=True)
        if word == "persistent":
            return replace(hc, persistent=True)
    elif key in ("interval", "jitter", "timeout", "keepalive_time"):
        t = parse_time(value)
        if t is None or (key == "interval" and t <= 0):
            diags.error(node.loc, f'invalid time "{value}" in "health_check"')
            return None
        if key == "interval":
            return replace(hc, interval=t)
        if key == "jitter":
            return replace(hc, jitter=t)
        return replace(hc, timeout=t) if key == "timeout" else hc
    elif key in ("fails", "passes", "port"):
        n = _positive(node, key, value, diags)
        if n is None:
            return None
        if key == "port" and n > 65535:
            diags.error(node.loc, f'invalid port "{value}" in "health_check"')
            return None
        if key == "fails":
            return replace(hc, fails=n)
        return replace(hc, passes=n) if key == "passes" else replace(hc, port=n)
    elif key == "uri":
        if not value.startswith("/"):
            diags.error(node.loc, f'invalid uri "{value}" in "health_check"')
            return None
        return replace(hc, uri=value)
    diags.error(node.loc, f'invalid parameter "{word}" in "health_check"')
    return None


def read_health_check(
    node: Node, matches: Mapping[str, Match], diags: Diagnostics
) -> HealthCheck | None:
    """A `health_check` statement, its `match=NAME` looked up in `matches`."""
    hc = HealthCheck(loc=node.loc)
    match_name = ""
    for word in node.arg_texts():
        if word.startswith("match="):
            match_name = word[len("match=") :]
            continue
        got = _param(hc, node, word, diags)
        if got is None:
            return None
        hc = got
    if match_name:
        found = matches.get(match_name)
        if found is None:
            diags.error(node.loc, f'match "{match_name}" not found')
            return None
        hc = replace(hc, match=found)
    return hc


def health_check_target(proxy_pass: str | None, upstreams: Sequence[str]) -> str | None:
    """The upstream a location's health_check probes: its proxy_pass group, else None."""
    if proxy_pass is None or not proxy_pass.startswith("http://"):
        return None
    host = proxy_pass[len("http://") :].split("/", 1)[0]
    return host if host in upstreams else None


# -- stream (ngx_stream_upstream_hc_module) -------------------------------------------------

#: What `health_check udp` sends without a `match` (nginx Plus).
UDP_PAYLOAD = b"nginx health check"
#: The first proxy_buffer_size (nginx's default 16k) bytes of an answer are examined.
STREAM_READ_LIMIT = 16 * 1024

_HEX = re.compile(r"\\x([0-9A-Fa-f]{2})")


def unescape(text: str) -> bytes:
    """A `send`/`expect` string: `\\xHH` is one byte, everything else latin-1."""
    return _HEX.sub(lambda m: chr(int(m.group(1), 16)), text).encode("latin-1")


@dataclass(frozen=True, slots=True)
class StreamMatch:
    """A stream `match` block: what to send, and what the answer must hold."""

    name: str
    send: bytes = b""
    expect: bytes = b""  # a literal the answer must contain ("" = no literal test)
    regex: str = ""  # `expect ~ regex` ("" = none), applied to the latin-1 text
    caseless: bool = False  # `expect ~* regex`
    loc: Location | None = None

    @property
    def expects(self) -> bool:
        return bool(self.expect or self.regex)

    def test(self, data: bytes) -> bool:
        """Does the data received so far pass `expect`?"""
        if self.regex:
            flags = re.IGNORECASE if self.caseless else 0
            return re.search(self.regex, data.decode("latin-1"), flags) is not None
        return self.expect in data


@dataclass(frozen=True, slots=True)
class StreamHealthCheck:
    """One stream `health_check`, its `match` resolved and `health_check_timeout` merged."""

    interval: float = 5.0
    jitter: float = 0.0
    fails: int = 1
    passes: int = 1
    port: int = 0  # 0 = the server's own port
    udp: bool = False
    mandatory: bool = False
    persistent: bool = False
    match: StreamMatch | None = None
    timeout: float = 5.0  # health_check_timeout
    loc: Location | None = None

    @property
    def probe_timeout(self) -> float:
        return self.timeout

    @property
    def spec(self) -> StreamHealthCheck:
        """The check without its file position (see `HealthCheck.spec`)."""
        m = None if self.match is None else replace(self.match, loc=None)
        return replace(self, loc=None, match=m)


def read_stream_match(block: Node, diags: Diagnostics) -> StreamMatch | None:
    """One stream `match NAME { send ...; expect ...; }` (None if it has errors)."""
    m = StreamMatch(block.args[0].text, loc=block.loc)
    ok = True
    for node in block.children or ():
        args = node.arg_texts()
        if node.children is not None:
            diags.error(node.loc, f'"{node.name}" in "match" cannot be a block')
            ok = False
        elif node.name == "send" and len(args) == 1:
            m = replace(m, send=unescape(args[0]))
        elif node.name == "expect" and len(args) == 1:
            m = replace(m, expect=unescape(args[0]), regex="")
        elif node.name == "expect" and len(args) == 2 and args[0] in ("~", "~*"):
            regex = unescape(args[1]).decode("latin-1")
            try:
                re.compile(regex)
            except re.error as exc:
                diags.error(node.loc, f'invalid regex "{args[1]}" in "expect" of "match": {exc}')
                ok = False
                continue
            m = replace(m, expect=b"", regex=regex, caseless=args[0] == "~*")
        elif node.name in ("send", "expect"):
            diags.error(node.loc, f'invalid number of arguments in "{node.name}" of "match"')
            ok = False
        else:
            diags.error(node.loc, f'unknown directive "{node.name}" in "match"')
            ok = False
    return m if ok else None


def read_stream_matches(nodes: Sequence[Node], diags: Diagnostics) -> dict[str, StreamMatch]:
    """Every `match` block among a stream block's statements, by name."""
    return _read_all(nodes, diags, read_stream_match)


def read_stream_health_check(
    node: Node, matches: Mapping[str, StreamMatch], timeout: float, diags: Diagnostics
) -> StreamHealthCheck | None:
    """A stream `health_check` statement; `timeout` is the server's health_check_timeout."""
    hc = StreamHealthCheck(timeout=timeout, loc=node.loc)
    for word in node.arg_texts():
        if word == "udp":
            hc = replace(hc, udp=True)
            continue
        if word.startswith("match="):
            found = matches.get(word[len("match=") :])
            if found is None:
                diags.error(node.loc, f'match "{word[len("match=") :]}" not found')
                return None
            hc = replace(hc, match=found)
            continue
        if word.startswith(("uri=", "timeout=")):  # http-only parameters
            diags.error(node.loc, f'invalid parameter "{word}" in "health_check"')
            return None
        got = _param(HealthCheck(), node, word, diags)  # the http reader's value checks
        if got is None:
            return None
        key = word.partition("=")[0]
        if key in ("interval", "jitter", "fails", "passes", "port", "mandatory", "persistent"):
            hc = replace(hc, **{key: getattr(got, key)})
    if hc.udp and hc.match is not None and not hc.match.send:
        diags.error(node.loc, f'match "{hc.match.name}" needs "send" for a udp health check')
        return None
    return hc
