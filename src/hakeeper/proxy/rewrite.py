"""nginx's rewrite and access phases for a routed request: `rewrite`, `set`, `return`,
regex captures, `allow`/`deny`.

Follows nginx 1.22 (ngx_http_rewrite_module, ngx_http_access_module and the phase
engine of ngx_http_core_module), checked against Debian's nginx by
tests/adapters/test_proxy_routes_vs_nginx.py:
- server rewrite phase: the server's `rewrite`/`set`/`return` in config order, before
  the location is found (`last` and `break` only stop the list there);
- find-config: the location for the current `$uri`; every successful regex match (a
  `~` server_name, a location, a `rewrite`) replaces `$1`..`$9`, a prefix match keeps
  them; named captures become variables;
- rewrite phase: the location's list; a `rewrite` without a flag changes `$uri` and
  goes on, `last` stops and searches the location again (at most 10 times, then 500),
  `break` stops and keeps the location (its `proxy_pass` URI part is then ignored),
  `redirect`/`permanent` or a replacement starting with `http://`, `https://`,
  `$scheme` answer 302/301; the previous args are appended unless the replacement
  ends with `?`; captures are %-escaped in redirects and args when the client's URI
  was (`quoted_uri`, `plus_in_uri`);
- access phase: `allow`/`deny` of the final location (first match wins, else allowed),
  403 when denied; a `return` answers before it;
- the upstream request-target after a rewrite: the changed URI %-escaped, `?args`.
Pure: no I/O, no clock; the reader's steps are compiled here (`compile_script`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import TYPE_CHECKING

from hakeeper.conf.nginx_rewrite import python_regex
from hakeeper.proxy.config import HeaderRule, header_rule
from hakeeper.proxy.routes import (
    Location,
    Proxied,
    Redirect,
    RequestView,
    Return,
    Template,
    VirtualServer,
    builtin_variable,
    compile_template,
    escape_uri,
    upstream_target,
    variable,
    variable_parts,
)

if TYPE_CHECKING:
    from hakeeper.conf.diagnostics import Diagnostics
    from hakeeper.conf.nginx import NginxConfig
    from hakeeper.conf.nginx_rewrite import RewriteStep

#: nginx NGX_HTTP_MAX_URI_CHANGES: `last` rewrites allowed before the 500
MAX_URI_CHANGES = 10

NOT_FOUND = Return(404, None)  # no location, or nothing to serve (nginx: no file)
FORBIDDEN = Return(403, None)
CYCLE = Return(500, None)  # "rewrite or internal redirection cycle"
BAD_GATEWAY = Return(502, None)  # a `proxy_pass http://$host` naming no upstream


def _escapes(extra: bytes) -> re.Pattern[bytes]:
    """The bytes to %-escape: controls, space, 0x7f-0xff and `extra`."""
    return re.compile(b"[\\x00-\\x20\\x7f-\\xff" + re.escape(extra) + b"]")


# what Debian's nginx escapes in a capture copied into a redirect Location, and into args
REDIRECT_ESCAPE = _escapes(b'"#%<>')
ARGS_ESCAPE = _escapes(b'"#%&+;<>?\\^`{|}')
REQUEST_LINE_ESCAPE = re.compile(b"[\\x00-\\x20\\x7f]")


def _hex(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match.group()[0]


def escape(data: bytes, which: re.Pattern[bytes]) -> bytes:
    """`data` with the bytes `which` matches %-escaped (upper-case hex)."""
    return which.sub(_hex, data) if which.search(data) else data


# -- compiled steps -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rewrite:
    """`rewrite REGEX REPLACEMENT [flag]`: the replacement cut at its first literal `?`
    into the new URI and args (`args` None = no `?`)."""

    regex: re.Pattern[bytes]
    uri: Template
    args: Template | None
    append_args: bool  # False when the replacement ends with `?`
    flag: str  # "", "last", "break", "redirect", "permanent"
    redirect: int  # 0 (internal), 301 or 302
    scheme: bytes | None = None  # the listener's $scheme for a relative redirect (TLS)


@dataclass(frozen=True, slots=True)
class SetVar:
    """`set $name value`."""

    name: str
    value: Template


@dataclass(frozen=True, slots=True)
class If:
    """`if (condition) { ... }`: `$var` (true unless "" or "0"), `$var = value` / `!=`
    (bytes equal), `$var ~ regex` / `~*` / `!~` / `!~*` (a match sets the captures)."""

    var: Template
    op: str  # "", "=", "!=", "~", "~*", "!~", "!~*"
    value: Template | None
    regex: re.Pattern[bytes] | None
    body: tuple[Step, ...]

    def holds(self, view: RequestView) -> bool:
        value = self.var.render(view)
        if not self.op:
            return value not in (b"", b"0")
        if self.regex is not None:
            match = self.regex.search(value)
            if match is not None:
                captured(view, match)
            return (match is not None) != self.op.startswith("!")
        assert self.value is not None
        return (value == self.value.render(view)) != (self.op == "!=")


@dataclass(frozen=True, slots=True)
class Break:
    """`break`: stop the rewrite-module directives of this level."""


Step = Rewrite | SetVar | Return | If | Break

Network = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class Access:
    """`allow`/`deny` rules in effect for one location: (allow?, network or None=all)."""

    rules: tuple[tuple[bool, Network | None], ...]
    # verdict per client address (bounded): the address is parsed once, not per request
    seen: dict[bytes, bool] = field(default_factory=dict, compare=False, repr=False)

    def allows(self, remote_addr: bytes) -> bool:
        """First matching rule wins; no match allows (ngx_http_access_handler)."""
        verdict = self.seen.get(remote_addr)
        if verdict is None:
            if len(self.seen) >= 4096:
                self.seen.clear()
            verdict = self.seen[remote_addr] = self._check(remote_addr)
        return verdict

    def _check(self, remote_addr: bytes) -> bool:
        addr: IPv4Address | IPv6Address | None
        try:
            addr = ip_address(remote_addr.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            addr = None
        if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # nginx checks v4-mapped addresses against v4 rules
        for allow, net in self.rules:
            if net is None or (addr is not None and addr.version == net.version and addr in net):
                return allow
        return True


def compile_access(rules: Sequence[tuple[str, str]]) -> Access | None:
    """The reader's ("allow"|"deny", "all"|address|CIDR) list (None when empty)."""
    if not rules:
        return None
    return Access(
        tuple(
            (kind == "allow", None if text == "all" else ip_network(text, strict=False))
            for kind, text in rules
        )
    )


def _regex(pattern: str) -> re.Pattern[bytes]:
    return re.compile(python_regex(pattern).encode("latin-1"))


def compile_step(step: RewriteStep, known: frozenset[str]) -> Step:
    """One reader step; raises ValueError with nginx's message."""
    args = step.args
    if step.name == "set":
        name = args[0][1:]
        if builtin_variable(name) and name != "args":
            raise ValueError(f'the duplicate "{name}" variable')
        return SetVar(name, compile_template(args[1], known))
    if step.name == "return":
        text = args[1] if len(args) > 1 else ""
        return Return(int(args[0]), compile_template(text, known) if text else None)
    if step.name == "break":
        return Break()
    if step.name == "if":
        op = args[1] if len(args) > 1 else ""
        regex = value = None
        if "~" in op:
            flags = re.IGNORECASE if op.endswith("*") else 0
            regex = re.compile(python_regex(args[2]).encode("latin-1"), flags)
        elif op:
            value = compile_template(args[2], known)
        body = tuple(compile_step(inner, known) for inner in step.body)
        return If(compile_template(args[0], known), op, value, regex, body)
    text = args[1]
    flag = args[2] if len(args) > 2 else ""
    redirect = {"redirect": 302, "permanent": 301}.get(flag, 0)
    if not redirect and text.startswith(("http://", "https://", "$scheme")):
        redirect = 302
    append = not text.endswith("?")
    if not append:
        text = text[:-1]
    uri_text, mark, args_text = text.partition("?")
    return Rewrite(
        _regex(args[0]),
        compile_template(uri_text, known),
        compile_template(args_text, known) if mark else None,
        append,
        flag,
        redirect,
    )


def compile_script(
    steps: Iterable[RewriteStep], known: frozenset[str], diags: Diagnostics
) -> tuple[Step, ...] | None:
    """Every step compiled, or None when one is in error (reported at its line)."""
    out: list[Step] = []
    for step in steps:
        try:
            out.append(compile_step(step, known))
        except ValueError as exc:
            diags.error(step.loc, str(exc))
            return None
    return tuple(out)


def bind_script(
    script: Sequence[Step], bind: Callable[[Template], Template], ret: Callable[[Return], Return]
) -> tuple[Step, ...]:
    """`script` with every template passed through `bind` (a listener's fixed `$scheme`)
    and every `Return` through `ret` (its types and scheme), as from_nginx builds them."""
    out: list[Step] = []
    for step in script:
        if isinstance(step, Rewrite):
            args = bind(step.args) if step.args is not None else None
            scheme = ret(Return(302, None)).scheme
            out.append(replace(step, uri=bind(step.uri), args=args, scheme=scheme))
        elif isinstance(step, SetVar):
            out.append(replace(step, value=bind(step.value)))
        elif isinstance(step, If):
            value = bind(step.value) if step.value is not None else None
            body = bind_script(step.body, bind, ret)
            out.append(replace(step, var=bind(step.var), value=value, body=body))
        elif isinstance(step, Return):
            text = bind(step.text) if step.text is not None else None
            out.append(ret(replace(step, text=text)))
        else:
            out.append(step)
    return tuple(out)


def known_variables(nginx: NginxConfig) -> frozenset[str]:
    """The variables an http{} block defines: named captures of `~` server names,
    location and `rewrite` regexes, and `set` names (nginx's variables are global)."""
    names: set[str] = set()

    def groups(pattern: str) -> None:
        with contextlib.suppress(re.error):  # reported by the reader
            names.update(re.compile(python_regex(pattern)).groupindex)

    for server in nginx.servers:
        for name in server.names:
            if name.startswith("~"):
                groups(name[1:])
        scripts = [server.script]
        for loc in server.locations:
            if loc.modifier in ("~", "~*"):
                groups(loc.pattern)
            scripts.append(loc.script)
        while scripts:
            for step in scripts.pop():
                if step.name == "rewrite":
                    groups(step.args[0])
                elif step.name == "set":
                    names.add(step.args[0][1:])
                elif step.name == "if":
                    if len(step.args) == 3 and "~" in step.args[1]:
                        groups(step.args[2])
                    scripts.append(step.body)
    return frozenset(names)


def _needs(step: Step | Return | Proxied | object) -> bool:
    if isinstance(step, (Rewrite, SetVar, If, Break)):
        return True
    if isinstance(step, Return):
        return step.text is not None and step.text.user_vars
    if isinstance(step, Proxied):
        return (
            step.uri_template is not None
            or step.host is not None
            or step.renders
            or (step.key is not None and step.key.user_vars)
        )
    return False


def phase_templates(server: VirtualServer) -> Iterator[Template]:
    """Every template the phases render for `server` (rewrite, set, return, proxy_pass
    URIs), for `RouteTable.reads_headers`."""
    steps = list(server.script)
    for loc in server.locations:
        steps += loc.script
        for proxied in (loc.action, loc.content):
            if isinstance(proxied, Proxied):
                if proxied.uri_template is not None:
                    yield proxied.uri_template
                if proxied.host is not None:
                    yield proxied.host
    while steps:
        step = steps.pop()
        if isinstance(step, Rewrite):
            yield step.uri
            if step.args is not None:
                yield step.args
        elif isinstance(step, SetVar):
            yield step.value
        elif isinstance(step, If):
            yield step.var
            if step.value is not None:
                yield step.value
            steps += step.body
        elif isinstance(step, Return) and step.text is not None:
            yield step.text


def needs_phases(server: VirtualServer) -> bool:
    """Whether `server` needs these phases (rewrite, set, access, captures) rather than
    the plain routed path."""
    if server.access is not None or any(_needs(step) for step in server.script):
        return True
    for loc in server.locations:
        if loc.access is not None or _needs(loc.action) or _needs(loc.content):
            return True
        if len(loc.script) > 1 or any(_needs(step) for step in loc.script):
            return True  # (two `return`s: the first answers, as in nginx)
    return False


# -- running the phases -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Outcome:
    """What the phases decided: the action (a `Return` answers, else the location's
    content: `Proxied` or a static handler), the request-target to send upstream (None
    = the client's, unchanged) and the final location."""

    action: object
    target: bytes | None = None
    location: Location | None = None


def captured(view: RequestView, match: re.Match[bytes]) -> None:
    """A successful regex match: `$1`..`$9` replaced, named captures set."""
    view.captures = (match.group(0), *match.groups(b""))
    names = match.re.groupindex
    if names:
        values = view.vars if view.vars is not None else {}
        for name, index in names.items():
            values[name] = match.group(index) or b""
        view.vars = values


def _render(template: Template, view: RequestView, table: re.Pattern[bytes] | None) -> bytes:
    if table is None:
        return template.render(view)
    out: list[bytes] = []
    for part in template.parts:
        if isinstance(part, bytes):
            out.append(part)
        elif "1" <= part <= "9":
            out.append(escape(variable(part, view), table))
        else:
            out.append(variable(part, view))
    return b"".join(out)


# how a rewrite-module list ended: nothing changed / the URI changed, search again /
# `rewrite ... break` (stay, the proxy_pass URI part ignored) / `break` after a change
_DONE, _REFIND, _BREAK, _KEEP = 0, 1, 2, 3
_GO_ON, _STOP = -1, -2  # inside one list: carry on / a `break` directive


def _script(steps: Sequence[Step], view: RequestView, quoted: bool) -> Return | int:
    """Run one rewrite-module list: a `Return` to answer with, or _DONE / _REFIND /
    _BREAK / _KEEP."""
    changed = [False]
    state = _run(steps, view, quoted, changed)
    if isinstance(state, Return) or state >= 0:
        return state
    if state == _STOP:
        return _KEEP if changed[0] else _DONE
    return _REFIND if changed[0] else _DONE


def _run(
    steps: Sequence[Step], view: RequestView, quoted: bool, changed: list[bool]
) -> Return | int:
    """The steps of one list (or `if` body) in order; `changed[0]` records a URI change
    by a flag-less `rewrite`."""
    for step in steps:
        if isinstance(step, If):
            if step.holds(view):
                state = _run(step.body, view, quoted, changed)
                if isinstance(state, Return) or state != _GO_ON:
                    return state
            continue
        if isinstance(step, Break):
            return _STOP
        if isinstance(step, SetVar):
            value = step.value.render(view)
            if step.name == "args":
                view.args = value
            else:
                if view.vars is None:
                    view.vars = {}
                view.vars[step.name] = value
            continue
        if isinstance(step, Return):
            return step
        match = step.regex.search(view.path)
        if match is None:
            continue
        captured(view, match)
        args_table = ARGS_ESCAPE if quoted else None
        new_args = _render(step.args, view, args_table) if step.args is not None else None
        if step.redirect:
            location = _render(step.uri, view, REDIRECT_ESCAPE if quoted else None)
            if new_args is not None:
                location += b"?" + new_args
            if step.append_args and view.args:
                location += (b"&" if new_args is not None else b"?") + view.args
            return Return(step.redirect, Template((location,)), None, step.scheme)
        view.path = _render(step.uri, view, None)
        if new_args is not None:
            view.args = new_args + b"&" + view.args if step.append_args and view.args else new_args
        elif not step.append_args:
            view.args = b""
        if step.flag == "break":
            return _BREAK
        changed[0] = True
        if step.flag == "last":
            return _REFIND
    return _GO_ON


def run_phases(
    server: VirtualServer,
    view: RequestView,
    quoted: bool,
    name_match: re.Match[bytes] | None = None,
) -> Outcome:
    """Server rewrite, find-config, rewrite, post-rewrite and access phases for one
    request; `view` is updated in place ($uri, $args, captures, variables). `quoted`:
    the client's URI had %-escapes; `name_match`: the `~` server_name that chose
    `server`."""
    quoted = quoted or b"+" in view.target.partition(b"?")[0]  # plus_in_uri
    if name_match is not None:
        captured(view, name_match)
    internal = False
    if server.script:
        state = _script(server.script, view, quoted)
        if isinstance(state, Return):
            return Outcome(state)
        internal = state != _DONE
    changes = 0
    hits: list[re.Match[bytes]] = []
    while True:
        hits.clear()
        found = server.find(view.path, hits)
        for match in hits:
            captured(view, match)
        if found is None:
            if server.access is not None and not server.access.allows(view.remote_addr):
                return Outcome(FORBIDDEN)
            return Outcome(NOT_FOUND)
        if isinstance(found, Redirect):
            target = found.pattern + b"?" + view.args if view.args else found.pattern
            return Outcome(Return(301, Template((target,))))
        state = _script(found.script, view, quoted) if found.script else _DONE
        if isinstance(state, Return):
            return Outcome(state, None, found)
        if state == _REFIND:
            internal = True
            changes += 1
            if changes > MAX_URI_CHANGES:
                return Outcome(CYCLE)
            continue
        internal = internal or state in (_BREAK, _KEEP)
        break
    if found.access is not None and not found.access.allows(view.remote_addr):
        return Outcome(FORBIDDEN, None, found)
    content: object = found.content
    if content is None:
        content = found.action if not isinstance(found.action, Return) else NOT_FOUND
    if not isinstance(content, Proxied):
        return Outcome(content, None, found)
    if content.by_host is not None:  # `proxy_pass http://$up...`
        assert content.host is not None
        chosen = content.by_host.get(content.host.render(view).lower())
        if chosen is None:  # nginx: "no resolver defined to resolve ..."
            return Outcome(BAD_GATEWAY, None, found)
        content = chosen
    return Outcome(
        content, _target(content, found, view, quoted=quoted, internal=internal, state=state), found
    )


def _target(
    proxied: Proxied,
    found: Location,
    view: RequestView,
    *,
    quoted: bool,
    internal: bool,
    state: int,
) -> bytes | None:
    """The request-target `ngx_http_proxy_create_request` sends (None = the client's)."""
    args = view.args
    if proxied.uri_template is not None:
        rendered = proxied.uri_template.render(view)
        if rendered:
            # as-is, args not added; unlike nginx, a decoded space, CR, LF or control
            # byte from a capture is %-escaped rather than breaking the request line
            return escape(rendered, REQUEST_LINE_ESCAPE)
    elif not internal:
        if proxied.uri is None:
            return None
        return upstream_target(proxied.uri, found.prefix, view.path, quoted, args)
    elif proxied.uri is not None and state != _BREAK:
        return upstream_target(proxied.uri, found.prefix, view.path, True, args)
    if not internal:
        return None
    path = escape_uri(view.path)
    return path + b"?" + args if args else path


def capture_rule(name: str, value: str, known: frozenset[str]) -> HeaderRule | None:
    """`proxy_set_header name value` when `value` reads captures or `set` variables
    (rendered on the routed path, `Proxied.renders`); None when something else in it
    is wrong (then `config.header_rule`'s error stands)."""
    parts = variable_parts(value)
    try:
        header_rule(name, "")
        for part in parts:
            if isinstance(part, str) and not ("1" <= part <= "9" or part in known):
                header_rule(name, "$" + part)
    except ValueError:
        return None
    return HeaderRule(name, tuple(parts))
