"""Upstream response header rules of one location: hide/pass, `add_header`, `proxy_redirect`.

What nginx 1.22 does to an upstream response head before the client sees it, checked
against Debian's nginx (tests/adapters/test_proxy_redirect_vs_nginx.py):
- `proxy_hide_header` / `proxy_pass_header` (`ngx_http_upstream_hide_headers_hash`):
  `Date`, `Server`, `X-Pad` and `X-Accel-Expires`, `-Redirect`, `-Limit-Rate`,
  `-Buffering`, `-Charset` (`ngx_http_proxy_hide_headers`) plus the configured names are
  not passed, minus the `proxy_pass_header` ones. hakeeper only hides the X-Accel ones;
  it does not act on them;
- the header filter then adds its own `Server` and `Date` unless the upstream's passed
  (hakeeper says `Server: hakeeper`);
- `add_header NAME VALUE [always]` (`ngx_http_headers_filter_module`): appended after the
  upstream's fields for statuses 200, 201, 204, 206, 301, 302, 303, 304, 307, 308, or for
  any status with `always`; an empty value adds nothing; values may hold variables;
- `Location` and `Refresh` go through `redirect.Redirects`, and the last rewritten
  `Location` that starts with `/` is made absolute.
`ResponseRules` is compiled once per location. The parsed relay path asks it per header
field (`actions`, one dict lookup) and once per head (`own_lines`, `add_lines`); the raw
relay path hands it a whole head: `keepalive_head` does the common case in one pass (a
memo answers heads already seen this second; else one regex substitution cuts the hidden
lines and our Server/Date go in), `filter_head` the rest (a closing client, interim
heads, a Location/Refresh or a passed Server/Date, rebuilt field by field from slices).
Pure: no I/O, no clock (the Date line is given).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hakeeper.conf.diagnostics import Location
from hakeeper.conf.nginx_headers import HeadersOut
from hakeeper.proxy.framing import RESPONSE_HOP_BY_HOP, status_line
from hakeeper.proxy.redirect import (
    Part,
    Redirects,
    absolute_location,
    compile_parts,
    compile_rule,
    render,
)
from hakeeper.proxy.routes import RequestView, variable

# nginx 1.22 ngx_http_proxy_hide_headers, lower-cased
DEFAULT_HIDDEN = (
    b"date",
    b"server",
    b"x-pad",
    b"x-accel-expires",
    b"x-accel-redirect",
    b"x-accel-limit-rate",
    b"x-accel-buffering",
    b"x-accel-charset",
)
# ngx_http_headers_filter: statuses `add_header` without `always` applies to
ADD_STATUSES = frozenset({200, 201, 204, 206, 301, 302, 303, 304, 307, 308})
SERVER_LINE = b"Server: hakeeper"
SERVER_CRLF = SERVER_LINE + b"\r\n"

# actions per lower-cased upstream field name (the parsed path's one dict lookup)
A_HOP = 1  # hop-by-hop: handled by the relay
A_LENGTH = 2  # Content-Length: passes, noted
A_DROP = 3  # hidden
A_LOCATION = 4
A_REFRESH = 5
A_SERVER = 6  # passes (proxy_pass_header Server): ours is then not added
A_DATE = 7

# fields a client that asked to close must not get (as `framing.closing_head`)
_CLOSING_DROP = (b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade")


class ResponseContext:
    """Variables for one response: the request's (`routes.variable`), `$proxy_host`,
    `$status`; built only when a rule needs one (a rewrite, a variable)."""

    __slots__ = ("proxy_host", "status", "view")

    def __init__(self, view: RequestView, proxy_host: bytes, status: int) -> None:
        self.view = view
        self.proxy_host = proxy_host
        self.status = status

    def __call__(self, name: str) -> bytes:
        if name == "status":
            return b"%d" % self.status
        if name == "proxy_host":
            return self.proxy_host
        return variable(name, self.view)

    def absolute(self, value: bytes) -> bytes:
        view = self.view
        return absolute_location(
            value, view.scheme, view.host or view.server_addr, view.server_port
        )


#: builds the context of the response being filtered (called at most once per head)
ContextFactory = Callable[[int], ResponseContext]


@dataclass(frozen=True, slots=True)
class AddHeader:
    """`add_header NAME VALUE [always]`."""

    name: bytes
    value: tuple[Part, ...]
    always: bool = False


def add_header(name: str, value: str, always: bool = False) -> AddHeader:
    """Compile one `add_header`; raises ValueError on an unknown variable."""
    return AddHeader(name.encode("latin-1"), compile_parts(value), always)


def _alternation(names: Sequence[bytes]) -> bytes:
    """A regex alternation of `names` (distinct, non-empty) factored by common prefixes,
    so sre tries one branch per first letter instead of every name."""
    if len(names) == 1:
        return re.escape(names[0])
    groups: dict[bytes, list[bytes]] = {}
    for name in names:
        groups.setdefault(name[:1], []).append(name[1:])
    parts = [re.escape(k) + _alternation(v) for k, v in sorted(groups.items()) if k]
    if b"" in groups:
        parts.append(b"")
    return parts[0] if len(parts) == 1 else b"(?:" + b"|".join(parts) + b")"


def _lead(hidden: Sequence[bytes]) -> re.Pattern[bytes]:
    """A final (not 1xx) status line, then the hidden field lines right after it."""
    lines = rb"(?:(?:" + _alternation(sorted(set(hidden))) + rb"):[^\r]*\r\n)*" if hidden else b""
    return re.compile(rb"([^\r]{9}[02-9][^\r]*)\r\n" + lines, re.IGNORECASE)


def _scan(hidden: Sequence[bytes], special: Sequence[bytes]) -> re.Pattern[bytes]:
    """From a CRLF on: the empty line (no group), a hidden line (group 1: its name; the
    match ends with its value) or a field the field-by-field route handles (group 2)."""
    never = rb"(?!)"
    one = _alternation(sorted(set(hidden))) if hidden else never
    two = _alternation(sorted(set(special))) if special else never
    return re.compile(rb"\r\n(?:\r\n|(" + one + rb"):[^\r]*|(" + two + rb"):)", re.IGNORECASE)


def _lines(names: Sequence[bytes]) -> re.Pattern[bytes] | None:
    """The field lines named `names`, each with the CRLF before it (caseless)."""
    if not names:
        return None
    alts = b"|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True))
    return re.compile(rb"\r\n(?:" + alts + rb"):[^\r]*", re.IGNORECASE)


class _Memo:
    """Heads already filtered this second, for the two head routes.

    `filter_head`: the same upstream head (a backend's answers repeat byte for byte
    within its Date second) gets the same result while our Date line is the same, unless
    a request variable was read. Bounded; only an optimization (the result is what
    `filter_head` computes). When a second brings more distinct heads than it holds, the
    heads vary (request ids, cookies...): it stops being asked until the next second.

    `keepalive_head`: the last head's lead (its status line and the hidden lines right
    after it, as most servers send Server/Date first) with what replaces it, so a head
    that starts the same is only scanned for the rest; and the last head whose lead was
    new or that came after WHOLE_EVERY others, whole, with its result (a repeated head
    costs one prefix compare). All reset when our Date line changes."""

    __slots__ = (
        "closing",
        "date",
        "lead",
        "lead_add",
        "lead_out",
        "misses",
        "off",
        "table",
        "whole",
        "whole_out",
    )

    def __init__(self) -> None:
        self.date = b""
        self.off = False
        self.table: dict[bytes, bytes] = {}  # keep-alive client: by final head
        self.closing: dict[bytes, bytes] = {}  # closing client: by all the head bytes
        self.reset_lead()

    def reset_lead(self) -> None:
        # b"\0" starts no response: the first head of a second finds its lead itself
        self.lead = b"\0"  # status line + CRLF + hidden lines, each with its CRLF
        self.lead_out = b""  # status line + our Server/Date, without the last CRLF
        self.lead_add = b""  # CRLF + the add_header lines for the lead's status, or b""
        self.whole = b"\0"  # a whole head up to its empty line included
        self.whole_out = b""
        self.misses = 0  # heads since `whole` was last replaced


MEMO_SIZE = 64
WHOLE_EVERY = 8


@dataclass(frozen=True, slots=True)
class ResponseRules:
    """The response header rules of one proxied location, ready for both relay paths."""

    redirects: Redirects = field(default_factory=Redirects)
    hidden: frozenset[bytes] = frozenset(DEFAULT_HIDDEN)
    add: tuple[AddHeader, ...] = ()
    # derived (filled by __post_init__)
    actions: dict[bytes, int] = field(default_factory=dict, compare=False)
    # (b"\r\nname:", action) of the fields the field-by-field route looks for
    probes: tuple[tuple[bytes, int], ...] = field(default=(), compare=False)
    memo: _Memo = field(default_factory=_Memo, compare=False)
    add_static: bytes = field(default=b"", compare=False)  # all-static add lines (2xx/3xx)
    add_static_always: bytes = field(default=b"", compare=False)
    add_dynamic: bool = field(default=False, compare=False)
    # the raw path's fast route: hidden field lines cut by one regex substitution, and
    # the fields that need the field-by-field route (a rewrite, a passed Server/Date)
    drop: re.Pattern[bytes] | None = field(default=None, compare=False)
    drop_closing: re.Pattern[bytes] | None = field(default=None, compare=False)
    # keepalive_head: the lead of a head (`_lead`) and the scan of the rest (`_scan`)
    lead: re.Pattern[bytes] = field(default=re.compile(b""), compare=False)
    scan: re.Pattern[bytes] = field(default=re.compile(b""), compare=False)

    def __post_init__(self) -> None:
        actions = {name: A_HOP for name in RESPONSE_HOP_BY_HOP}
        actions[b"content-length"] = A_LENGTH
        actions[b"server"] = A_SERVER
        actions[b"date"] = A_DATE
        if self.redirects.rules:
            actions[b"location"] = A_LOCATION
            actions[b"refresh"] = A_REFRESH
        for name in self.hidden:
            if name not in RESPONSE_HOP_BY_HOP and name != b"content-length":
                actions[name] = A_DROP
        set_ = object.__setattr__
        set_(self, "actions", actions)
        special = [n for n, a in actions.items() if a in (A_LOCATION, A_REFRESH, A_SERVER, A_DATE)]
        set_(self, "probes", tuple((b"\r\n" + n + b":", actions[n]) for n in special))
        dropped = [n for n, a in actions.items() if a == A_DROP]
        set_(self, "drop", _lines(dropped))
        set_(self, "drop_closing", _lines([*dropped, *_CLOSING_DROP]))
        set_(self, "lead", _lead(dropped))
        set_(self, "scan", _scan(dropped, special))
        dynamic = any(not all(isinstance(p, bytes) for p in a.value) for a in self.add)
        set_(self, "add_dynamic", dynamic)
        if not dynamic:
            set_(self, "add_static", self._add_lines(200, _no_context))
            set_(self, "add_static_always", self._add_lines(0, _no_context))

    @property
    def passes_server(self) -> bool:
        return b"server" not in self.hidden

    @property
    def passes_date(self) -> bool:
        return b"date" not in self.hidden

    def _add_lines(self, status: int, lookup: Callable[[str], bytes]) -> bytes:
        ok = status in ADD_STATUSES
        out: list[bytes] = []
        for a in self.add:
            if a.always or ok:
                value = render(a.value, lookup)
                if value:
                    out.append(a.name + b": " + value + b"\r\n")
        return b"".join(out)

    def add_lines(self, status: int, lookup: Callable[[str], bytes]) -> bytes:
        """The `add_header` lines for a response with `status` (each ends in CRLF);
        `lookup` renders variables (only read when a value has some)."""
        if not self.add:
            return b""
        if not self.add_dynamic:
            return self.add_static if status in ADD_STATUSES else self.add_static_always
        return self._add_lines(status, lookup)

    def own_lines(self, seen_server: bool, seen_date: bool, date_line: bytes) -> bytes:
        """Our `Server` and `Date` lines unless the upstream's passed (CRLF-ended)."""
        out = b"" if seen_server else SERVER_LINE + b"\r\n"
        return out if seen_date else out + date_line

    def rewrite(self, action: int, value: bytes, context: ResponseContext) -> bytes | None:
        """A Location (`A_LOCATION`) or Refresh value rewritten, or None (unchanged)."""
        if action == A_LOCATION:
            return self.redirects.rewrite(value, context)
        return self.redirects.rewrite_refresh(value, context)


def _no_context(name: str) -> bytes:
    return b""


class RulesError(ValueError):
    """A response header directive that cannot be compiled (at `loc`)."""

    def __init__(self, message: str, loc: Location | None) -> None:
        super().__init__(message)
        self.loc = loc


def response_rules(conf: HeadersOut) -> ResponseRules:
    """The rules of one proxied location from its merged nginx.conf directives
    (`conf.nginx_headers`); raises RulesError (bad regex, unknown variable)."""
    rules = []
    for r in conf.redirects or ():
        try:
            rules.append(compile_rule(r.redirect, r.replacement, r.literal))
        except ValueError as exc:
            raise RulesError(str(exc), r.loc) from None
    adds = []
    for a in conf.add:
        try:
            adds.append(add_header(a.name, a.value, a.always))
        except ValueError as exc:
            raise RulesError(str(exc), a.loc) from None
    passed = {n.lower().encode("latin-1") for n in conf.pass_}
    hidden = {*DEFAULT_HIDDEN, *(n.lower().encode("latin-1") for n in conf.hide)} - passed
    return ResponseRules(Redirects(tuple(rules)), frozenset(hidden), tuple(adds))


#: an engine built without rules (in code, not from nginx.conf) filters nothing
NO_RULES_ACTIONS: dict[bytes, int] = {name: A_HOP for name in RESPONSE_HOP_BY_HOP} | {
    b"content-length": A_LENGTH
}


def _new_lead(buf: bytes, rules: ResponseRules, date_line: bytes) -> bytes | None:
    """Find the lead of `buf` (status line + the hidden lines right after it) and make it
    the memo's, with what replaces it; None for an interim head (or with variables in
    `add_header`: those heads go to filter_head)."""
    m = None if rules.add_dynamic else rules.lead.match(buf)
    if m is None:
        return None
    memo = rules.memo
    memo.lead = lead = buf[: m.end()]
    memo.lead_out = b"".join((buf[: m.end(1)], b"\r\n", SERVER_CRLF, date_line[:-2]))
    add = b""
    if rules.add:
        add = rules.add_static if int(buf[9:12]) in ADD_STATUSES else rules.add_static_always
    memo.lead_add = b"\r\n" + add if add else b""
    return lead


def keepalive_head(buf: bytes, rules: ResponseRules, date_line: bytes) -> bytes | None:
    """The raw keep-alive path's common case: `buf` (a response from its start) with its
    head filtered, or None when `filter_head` must do it (an interim head first, no
    complete head, a field to rewrite or a Server/Date that may pass, a variable in
    `add_header`, a new second). Same result as `filter_head`.

    C-implemented steps only, no per-field Python: a head equal to the memo's whole head
    is one prefix compare; else the lead (status line and the hidden lines right after
    it) is the memo's when the head starts with it (one compare) or found by one regex
    match, and one regex search per hidden line further down finds the head's end
    (usually the only search). The result is then a couple of slices joined."""
    memo = rules.memo
    if memo.date is not date_line:
        return None  # a new second: filter_head resets the memo
    whole = memo.whole
    if buf.startswith(whole):
        return memo.whole_out + buf[len(whole) :]
    lead = memo.lead
    fresh = not buf.startswith(lead)
    if fresh:
        found = _new_lead(buf, rules, date_line)
        if found is None:
            return None  # an interim head (or not a head llhttp would pass as final)
        lead = found
    # buf[at:] is the rest as "\r\nName: value" segments, then "\r\n\r\n" and the body
    at = len(lead) - 2
    scan = rules.scan
    hit = scan.search(buf, at)
    if hit is None:
        return None  # no complete head
    kind = hit.lastindex
    if kind == 1 and not fresh and hit.start() == at:
        # a hidden line right after the memo's lead: this head's lead is longer (a
        # backend that sends Server/Date after one that does not): learn it
        fresh = True
        found = _new_lead(buf, rules, date_line)
        if found is None:
            return None
        lead = found
        at = len(lead) - 2
        hit = scan.search(buf, at)
        if hit is None:
            return None
        kind = hit.lastindex
    if kind is None and not memo.lead_add:  # the common case: the empty line is next
        out = memo.lead_out + buf[at:]
    else:
        pieces = [memo.lead_out]
        while kind == 1:  # a hidden line further down: cut its "\r\nName: value"
            start, stop = hit.span()
            pieces.append(buf[at:start])
            at = stop
            hit = scan.search(buf, at)
            if hit is None:
                return None
            kind = hit.lastindex
        if kind is not None:
            return None  # a field for the field-by-field route
        add = memo.lead_add
        if add:
            end = hit.start()
            pieces += (buf[at:end], add, buf[end + 2 :])
        else:
            pieces.append(buf[at:])
        out = b"".join(pieces)
    misses = memo.misses + 1
    if fresh or misses >= WHOLE_EVERY:  # the next heads may be this same one
        misses = 0
        end = hit.end()
        memo.whole = buf[:end]
        memo.whole_out = out[: len(out) - (len(buf) - end)]
    memo.misses = misses
    return out


def filter_head(
    buf: bytes,
    rules: ResponseRules,
    closing: bool,
    date_line: bytes,
    context: ContextFactory,
) -> tuple[bytes, bytes] | None:
    """Split `buf` (upstream bytes from the start of a response) after its final head and
    apply `rules` to that head: (the new head up to its empty line, the bytes after), or
    None when no complete final head is in `buf`.

    `closing`: the client asked to close, so also what `framing.closing_head` does (the
    interim 1xx heads are dropped, the status line is HTTP/1.1, hop-by-hop connection
    fields go and `Connection: close` is added); otherwise interim heads pass. The head
    was accepted by llhttp (strict), so the first empty line ends it and no field line
    has white space before its colon. `date_line` is the `Date: ...\\r\\n` to add.
    """
    pos = 0
    while True:
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            return None
        if buf[pos + 9 : pos + 10] == b"1":  # "HTTP/1.1 1xx": interim
            pos = end + 4
            continue
        break
    head = buf[pos:end]  # status line + "\r\nName: value" segments
    memo = rules.memo
    if memo.date != date_line:
        memo.date = date_line
        memo.off = False
        memo.table.clear()
        memo.closing.clear()
        memo.reset_lead()
    if closing:
        key, table = buf[:end], memo.closing
    else:
        key, table = head, memo.table
    asked = (pos == 0 or closing) and not memo.off
    if asked:
        hit = table.get(key)
        if hit is not None:
            return hit, buf[end + 4 :]
    fast = True
    if rules.probes:  # Location/Refresh to rewrite, a Server/Date that may pass
        low = head.lower()
        for probe, _ in rules.probes:
            if probe in low:
                fast = False
                break
    if fast:
        out, shared = _fast(buf, pos, head, rules, closing, date_line=date_line, context=context)
    else:
        out, shared = _by_field(
            buf, pos, head, rules, closing, date_line=date_line, context=context
        )
    if shared and asked:  # (not when a request variable was read)
        if len(table) < MEMO_SIZE:
            table[key] = out
        else:
            memo.off = True
    return out, buf[end + 4 :]


def _fast(
    buf: bytes,
    pos: int,
    head: bytes,
    rules: ResponseRules,
    closing: bool,
    *,
    date_line: bytes,
    context: ContextFactory,
) -> tuple[bytes, bool]:
    """`filter_head` for a head with nothing to rewrite and no Server/Date that passes:
    hidden lines cut in C, our Server/Date after the status line, additions at the end.
    Returns (head, whether it may be remembered)."""
    drop = rules.drop_closing if closing else rules.drop
    cut = drop.sub(b"", head) if drop is not None else head
    first = cut.find(b"\r\n")
    if first < 0:
        line, fields = cut, b""
    else:
        line, fields = cut[:first], cut[first + 2 :] + b"\r\n"
    if closing:
        if line[:9] != b"HTTP/1.1 " or len(line) <= 13:
            line = status_line(b"", int(line[9:12]), line[13:])[:-2]
    elif pos:
        line = buf[:pos] + line  # interim heads pass
    parts = [line, b"\r\n", SERVER_LINE, b"\r\n", date_line, fields]
    dynamic = rules.add_dynamic
    if rules.add:
        status = int(head[9:12])
        parts.append(rules.add_lines(status, context(status) if dynamic else _no_context))
    if closing:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), not dynamic


def _by_field(
    buf: bytes,
    pos: int,
    head: bytes,
    rules: ResponseRules,
    closing: bool,
    *,
    date_line: bytes,
    context: ContextFactory,
) -> tuple[bytes, bool]:
    """`filter_head` field by field: rewrites Location/Refresh, notes a passed
    Server/Date. Returns (head, whether it may be remembered: no request variable read)."""
    status = int(head[9:12])
    drop = rules.drop_closing if closing else rules.drop
    if drop is not None:
        head = drop.sub(b"", head)  # hidden lines (and a closing client's hop-by-hop)
    first = head.find(b"\r\n")
    if first < 0:
        first = len(head)
    pieces: list[bytes] = []
    if closing:
        line = head[:first]
        pieces.append(
            line if line[:9] == b"HTTP/1.1 " and len(line) > 13 else
            status_line(b"", status, line[13:])[:-2]
        )  # fmt: skip
    else:
        pieces.append(buf[:pos] + head[:first])  # interim heads and the status line
    ours_at = len(pieces)
    pieces.append(b"")  # our Server/Date, once we know whether the upstream's pass
    # the fields that matter, in order: (start of their "\r\n", end of the name + ":")
    low = head.lower()
    found: list[tuple[int, int, int]] = []
    for probe, action in rules.probes:
        i = low.find(probe)
        while i >= 0:
            found.append((i, i + len(probe), action))
            i = low.find(probe, i + 2)
    found.sort()
    at = first
    seen_server = seen_date = False
    ctx: ResponseContext | None = None
    location_at = -1
    for start, name_end, action in found:
        if action == A_SERVER:
            seen_server = True
            continue
        if action == A_DATE:
            seen_date = True
            continue
        stop = head.find(b"\r\n", name_end)
        if stop < 0:
            stop = len(head)
        pieces.append(head[at:start])
        at = stop
        value = head[name_end:stop].strip(b" \t")
        if ctx is None:
            ctx = context(status)
        new = rules.rewrite(action, value, ctx)
        if new is None:
            pieces.append(head[start:stop])
            continue
        if action == A_LOCATION:
            location_at = len(pieces)
        pieces.append(head[start:name_end] + b" " + new)
    pieces.append(head[at:])
    if location_at >= 0 and ctx is not None:
        line = pieces[location_at]
        colon = line.index(b":")
        pieces[location_at] = line[: colon + 2] + ctx.absolute(line[colon + 2 :])
    own = rules.own_lines(seen_server, seen_date, date_line)
    if own:
        pieces[ours_at] = b"\r\n" + own[:-2]
    pieces.append(b"\r\n")
    if rules.add:
        if rules.add_dynamic and ctx is None:
            ctx = context(status)
        pieces.append(rules.add_lines(status, ctx or _no_context))
    if closing:
        pieces.append(b"Connection: close\r\n")
    pieces.append(b"\r\n")
    return b"".join(pieces), ctx is None
