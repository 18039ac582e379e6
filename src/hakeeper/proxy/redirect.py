"""`proxy_redirect` rules: rewriting upstream `Location` and `Refresh` values like nginx 1.22.

Follows `ngx_http_proxy_module.c` (`ngx_http_proxy_redirect`, `..._merge_loc_conf`,
`..._rewrite_complex_handler`, `..._rewrite_regex_handler`) and the upstream module's
`ngx_http_upstream_rewrite_location` / `_rewrite_refresh`, checked against Debian's
nginx 1.22 (tests/adapters/test_proxy_redirect_vs_nginx.py):
- `proxy_redirect REDIRECT REPLACEMENT`: when the value starts with REDIRECT (case
  sensitive; both may hold variables), that prefix is replaced by REPLACEMENT;
- `proxy_redirect ~REGEX REPLACEMENT` / `~*REGEX` (caseless): when the regex matches
  anywhere in the value, the WHOLE value becomes REPLACEMENT, where `$1`..`$9` (and named
  groups) are the captures (in a literal rule `$N` is the request's own last capture);
- the rules of a level are tried in order, the first that applies wins; `off` at a level
  turns rewriting off there; the innermost level with any rule wins (`merge_loc_conf`);
- `default` (also what applies when no level says anything) is, for `proxy_pass URL`
  in `location NAME`: `URL -> NAME` when URL has a URI part, else `URL/ -> /`
  (a regex location has no URI part); `proxy_pass` with variables has no default;
- `Refresh`: only the text after the first `url=` (caseless) is rewritten;
- a rewritten `Location` starting with `/` is then made absolute by the header filter
  (`absolute_redirect on`, `port_in_redirect on`): `scheme://host[:port]` with the
  request's Host (else the local address) and the listening port unless it is 80.
A value no rule applies to passes unchanged (and a relative one stays relative).
Pure: no I/O, no clock; variables come from a caller-supplied lookup.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hakeeper.proxy.config import template_parts

#: looks up nginx variable `$name` for the request a response answers
Lookup = Callable[[str], bytes]

# variables the replacement/pattern (and `add_header` values) may use; the request
# ones are rendered by `routes.variable`, `$proxy_host` / `$status` by the caller
VARIABLES = frozenset(
    {
        "remote_addr", "binary_remote_addr", "remote_port", "request_uri", "uri",
        "document_uri", "args", "query_string", "is_args", "host", "scheme",
        "server_name", "server_port", "server_addr", "request_method", "http_host",
        "proxy_host", "status",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Capture:
    """`$N` (or a named group) of the rule's regex in a replacement."""

    group: int | str


Part = bytes | str | Capture  # literal, variable name, regex capture


def compile_parts(
    text: str, groups: Sequence[str] = (), captures: bool = False
) -> tuple[Part, ...]:
    """`text` cut into literals, variables and (with `captures`) `$1`..`$9` / named groups.

    nginx reads one digit after `$` as a capture (`$12` is capture 1 then "2").
    Raises ValueError naming an unknown variable, like nginx's `unknown "x" variable`.
    """
    out: list[Part] = []
    for part in template_parts(text):
        if isinstance(part, bytes):
            out.append(part)
        elif part[0] == "0":
            raise ValueError(f'unknown "{part}" variable')  # as nginx: no `$0`
        elif part[0].isdigit():
            # outside a regex rule `$N` is the request's last regex capture (a `~`
            # location...), read through the lookup like any variable
            out.append(Capture(int(part[0])) if captures else part[0])
            if len(part) > 1:
                out.append(part[1:].encode("latin-1"))
        elif part in groups:
            out.append(Capture(part))
        elif part in VARIABLES or part.startswith(("http_", "arg_")):
            out.append(part)
        else:
            raise ValueError(f'unknown "{part}" variable')
    merged: list[Part] = []
    for p in out:  # adjacent literals fused: fewer joins per render
        if isinstance(p, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] = merged[-1] + p
        else:
            merged.append(p)
    return tuple(merged)


def render(parts: tuple[Part, ...], lookup: Lookup, match: re.Match[bytes] | None = None) -> bytes:
    """The bytes of `parts` for one response (missing captures render empty)."""
    out: list[bytes] = []
    for p in parts:
        if isinstance(p, bytes):
            out.append(p)
        elif isinstance(p, str):
            out.append(lookup(p))
        elif match is not None:
            # `$N` beyond the regex's groups renders empty, as in nginx
            with contextlib.suppress(IndexError):
                out.append(match.group(p.group) or b"")
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class RedirectRule:
    """One `proxy_redirect` rule, compiled."""

    pattern: tuple[Part, ...]  # the prefix (literal rules)
    replacement: tuple[Part, ...]
    regex: re.Pattern[bytes] | None = None
    text: str = ""  # as written, for messages and tests

    def apply(self, value: bytes, lookup: Lookup) -> bytes | None:
        """`value` rewritten, or None when this rule does not apply."""
        regex = self.regex
        if regex is not None:
            m = regex.search(value)
            if m is None:
                return None
            return render(self.replacement, lookup, m)
        pattern = self.pattern
        prefix = pattern[0] if len(pattern) == 1 and isinstance(pattern[0], bytes) else None
        if prefix is None:
            prefix = render(pattern, lookup)
        if not value.startswith(prefix):
            return None
        return render(self.replacement, lookup) + value[len(prefix) :]


def compile_rule(redirect: str, replacement: str, literal: bool = False) -> RedirectRule:
    """`proxy_redirect REDIRECT REPLACEMENT`; `literal`: both are plain text (the
    `default` rule, which nginx does not compile as variables). Raises ValueError
    (bad regex, unknown variable)."""
    text = f"{redirect} {replacement}"
    if literal:
        return RedirectRule(
            (redirect.encode("latin-1"),), (replacement.encode("latin-1"),), None, text
        )
    if redirect.startswith("~"):
        caseless = redirect.startswith("~*")
        source = redirect[2:] if caseless else redirect[1:]
        source = re.sub(r"\(\?<([A-Za-z_])", r"(?P<\1", source)  # PCRE named groups
        try:
            regex = re.compile(source.encode("latin-1"), re.IGNORECASE if caseless else 0)
        except re.error as exc:
            raise ValueError(f'pcre2_compile() failed: {exc} in "{source}"') from None
        names = tuple(regex.groupindex)
        return RedirectRule((), compile_parts(replacement, names, True), regex, text)
    return RedirectRule(compile_parts(redirect), compile_parts(replacement), None, text)


def default_rule(proxy_pass: str, location: str, regex_location: bool) -> RedirectRule:
    """`proxy_redirect default` for `proxy_pass proxy_pass` in `location location`."""
    rest = proxy_pass.partition("://")[2]
    has_uri = "/" in rest and not regex_location
    if has_uri:
        return compile_rule(proxy_pass, location, literal=True)
    return compile_rule(proxy_pass + "/", "/", literal=True)


@dataclass(frozen=True, slots=True)
class Redirects:
    """The `proxy_redirect` rules in effect for one location (empty = off)."""

    rules: tuple[RedirectRule, ...] = ()

    def rewrite(self, value: bytes, lookup: Lookup) -> bytes | None:
        """A `Location` value rewritten by the first rule that applies, else None."""
        for rule in self.rules:
            out = rule.apply(value, lookup)
            if out is not None:
                return out
        return None

    def rewrite_refresh(self, value: bytes, lookup: Lookup) -> bytes | None:
        """A `Refresh` value with the part after `url=` rewritten, else None."""
        at = value.lower().find(b"url=")
        if at < 0:
            return None
        at += 4
        out = self.rewrite(value[at:], lookup)
        return None if out is None else value[:at] + out


def absolute_location(value: bytes, scheme: bytes, host: bytes, port: bytes) -> bytes:
    """nginx's header filter for a rewritten Location (`absolute_redirect on`,
    `port_in_redirect on`): `/path` -> `scheme://host[:port]/path`, other values as-is."""
    if not value.startswith(b"/"):
        return value
    default_port = b"443" if scheme == b"https" else b"80"
    suffix = b":" + port if port and port != default_port else b""
    return scheme + b"://" + host + suffix + value
