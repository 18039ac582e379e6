"""nginx.conf response header directives: `proxy_redirect`, `add_header`, `proxy_hide_header`,
`proxy_pass_header` (read here, compiled by `proxy/from_nginx.py` into
`proxy.response_headers.ResponseRules`).

Reading and merging follow nginx 1.22:
- `proxy_redirect` (`ngx_http_proxy_redirect`): `off` (or the old `false`, with an error
  message but accepted) turns rewriting off at its level, whatever the other
  `proxy_redirect` lines there say; `default` must come after `proxy_pass` in the same
  location (else "should be placed after the "proxy_pass" directive") and is resolved
  there, against that `proxy_pass` and that location's name; `~REGEX` / `~*REGEX` must
  compile. A level with any rule replaces the inherited rules (`merge_loc_conf`); with
  none, a location with `proxy_pass` gets its `default`, which its nested locations
  then inherit (nginx merges a parent location before its nested ones);
- `add_header NAME VALUE [always]` (`ngx_http_headers_filter_module`): the innermost level
  with any `add_header` wins;
- `proxy_hide_header` / `proxy_pass_header` (`ngx_http_upstream_hide_headers_hash`): each
  list is inherited on its own; the innermost level naming any wins.
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from hakeeper.conf.diagnostics import Diagnostics, Location
from hakeeper.conf.tree import Node

#: the directives this module reads (their table entries are in conf/nginx.py); a level
#: with `proxy_pass` is read too, for its `default` redirect
HEADER_DIRECTIVES = frozenset(
    {"proxy_redirect", "add_header", "proxy_hide_header", "proxy_pass_header", "proxy_pass"}
)


@dataclass(frozen=True, slots=True)
class RedirectConf:
    """One `proxy_redirect REDIRECT REPLACEMENT` (or a resolved `default`: `literal`)."""

    redirect: str
    replacement: str
    literal: bool = False
    loc: Location | None = None


@dataclass(frozen=True, slots=True)
class AddHeaderConf:
    """One `add_header NAME VALUE [always]`."""

    name: str
    value: str
    always: bool = False
    loc: Location | None = None


@dataclass(frozen=True, slots=True)
class HeadersOut:
    """The response header directives in effect at one level (after merging)."""

    # None: no rule (no level said anything, and no proxy_pass yet); (): off
    redirects: tuple[RedirectConf, ...] | None = None
    add: tuple[AddHeaderConf, ...] = ()
    hide: tuple[str, ...] = ()
    pass_: tuple[str, ...] = ()


def default_redirect(proxy_pass: str, modifier: str, name: str) -> RedirectConf:
    """nginx's `proxy_redirect default` for `proxy_pass` in `location [modifier] name`:
    `URL -> NAME` when URL has a URI part, else `URL/ -> /` (`ngx_http_proxy_redirect`,
    `ngx_http_proxy_merge_loc_conf`; a regex location cannot have a URI part)."""
    regex = modifier in ("~", "~*")
    if "/" in proxy_pass.partition("://")[2] and not regex:
        return RedirectConf(proxy_pass, name, literal=True)
    return RedirectConf(proxy_pass + "/", "/", literal=True)


def read_headers_out(
    nodes: Sequence[Node],
    inherited: HeadersOut,
    diags: Diagnostics,
    where: tuple[str, str] | None = None,
) -> HeadersOut:
    """Merge one level's header directives (`nodes`, in order) over `inherited`.

    `where` is (modifier, name) of the location these nodes are in (None at http or
    server level), for `proxy_redirect default`.
    """
    redirects: list[RedirectConf] = []
    off = False
    add: list[AddHeaderConf] = []
    hide: list[str] = []
    pass_: list[str] = []
    proxy_pass: str | None = None
    for node in nodes:
        args = node.arg_texts()
        name = node.name
        if name == "proxy_pass":
            proxy_pass = args[0]
        elif name == "proxy_redirect":
            if off:
                continue  # nginx ignores the lines after `off` at that level
            first = args[0]
            if len(args) == 1 and first in ("off", "false"):
                if first == "false":
                    diags.warning(node.loc, 'invalid parameter "false", use "off" instead')
                off = True
                continue
            if first == "default":
                if proxy_pass is None or where is None:
                    diags.error(
                        node.loc,
                        '"proxy_redirect default" should be placed after the "proxy_pass" '
                        "directive",
                    )
                    continue
                if "$" in proxy_pass:
                    diags.error(
                        node.loc,
                        '"proxy_redirect default" cannot be used with "proxy_pass" directive '
                        "with variables",
                    )
                    continue
                rule = default_redirect(proxy_pass, *where)
                redirects.append(replace(rule, loc=node.loc))
                continue
            if len(args) == 1:
                diags.error(node.loc, f'invalid parameter "{first}"')
                continue
            if first.startswith("~"):
                source = first[2:] if first.startswith("~*") else first[1:]
                try:
                    re.compile(re.sub(r"\(\?<([A-Za-z_])", r"(?P<\1", source))
                except re.error as exc:
                    diags.error(node.loc, f'pcre2_compile() failed: {exc} in "{source}"')
                    continue
            redirects.append(RedirectConf(first, args[1], loc=node.loc))
        elif name == "add_header":
            always = len(args) == 3
            if always and args[2] != "always":
                diags.error(node.loc, f'invalid parameter "{args[2]}"')
                continue
            add.append(AddHeaderConf(args[0], args[1], always, node.loc))
        elif name == "proxy_hide_header":
            hide.append(args[0])
        elif name == "proxy_pass_header":
            pass_.append(args[0])
    out = inherited
    if off:
        out = replace(out, redirects=())
    elif redirects:
        out = replace(out, redirects=tuple(redirects))
    elif out.redirects is None and where is not None and proxy_pass and "$" not in proxy_pass:
        # (nginx has no default for a URL with variables)
        out = replace(out, redirects=(default_redirect(proxy_pass, *where),))
    if add:
        out = replace(out, add=tuple(add))
    if hide:
        out = replace(out, hide=tuple(hide))
    if pass_:
        out = replace(out, pass_=tuple(pass_))
    return out
