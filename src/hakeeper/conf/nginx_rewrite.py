"""nginx.conf reader for ngx_http_rewrite_module and ngx_http_access_module directives.

Checks `rewrite REGEX REPLACEMENT [last|break|redirect|permanent]`, `set $var value`,
`return`, `break` and `if (condition) { ... }` as nginx 1.22's configuration handlers
do (same messages: `invalid parameter`, `invalid variable name`, `pcre2_compile()
failed`), keeping them in config order as `RewriteStep`s; `allow`/`deny` arguments
(`all`, an address or a CIDR). An `if` holds rewrite-module directives only; file tests
(`-f`, `-d`, `-e`, `-x`) and other directives inside it are refused with file:line.
PCRE named groups are turned into Python's syntax by `python_regex`. The steps are
compiled and run by proxy/rewrite.py. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import ip_network

from hakeeper.conf.diagnostics import Diagnostics, Location
from hakeeper.conf.tree import Node

#: the rewrite-module directives kept in order as steps
SCRIPT = frozenset({"rewrite", "set", "return", "if", "break"})
_IF_OPERATORS = frozenset({"=", "!=", "~", "~*", "!~", "!~*"})
_IGNORED_IN_IF = frozenset({"rewrite_log", "uninitialized_variable_warn"})
_FLAGS = ("last", "break", "redirect", "permanent")


@dataclass(frozen=True, slots=True)
class RewriteStep:
    """One ngx_http_rewrite_module directive (`rewrite`, `set`, `return`, `break`, `if`)
    in config order; compiled by proxy/rewrite.py. An `if` has its condition's words in
    `args` (parentheses removed) and its directives in `body`."""

    name: str
    args: tuple[str, ...]
    loc: Location | None = None
    body: tuple[RewriteStep, ...] = ()


def python_regex(pattern: str) -> str:
    """A PCRE pattern in Python's syntax: `(?<name>..)` and `(?'name'..)` named groups
    become `(?P<name>..)` (lookbehinds `(?<=`/`(?<!` untouched)."""
    pattern = re.sub(r"\(\?<([A-Za-z_])", r"(?P<\1", pattern)
    return re.sub(r"\(\?'([A-Za-z_][A-Za-z0-9_]*)'", r"(?P<\1>", pattern)


def access_rule(text: str) -> bool:
    """Whether `allow`/`deny` can use `text`: `all`, an address or a CIDR (host bits
    allowed, nginx only warns about them)."""
    if text == "all":
        return True
    try:
        ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _compiles(pattern: str, node: Node, diags: Diagnostics) -> bool:
    try:
        re.compile(python_regex(pattern))
    except re.error as exc:
        diags.error(node.loc, f'pcre2_compile() failed: {exc} in "{pattern}"')
        return False
    return True


def read_step(
    node: Node, diags: Diagnostics, expand: Callable[[Sequence[Node]], list[Node]]
) -> RewriteStep | None:
    """A `rewrite`/`set`/`return`/`break`/`if` checked as ngx_http_rewrite_module does
    (None when in error, reported). `expand` checks the statements of an `if` body as
    location-level ones (the reader's table, includes spliced)."""
    args = node.arg_texts()
    if node.name == "if":
        return _if_step(node, diags, expand)
    if node.name == "rewrite":
        if not _compiles(args[0], node, diags):
            return None
        if len(args) == 3 and args[2] not in _FLAGS:
            diags.error(node.loc, f'invalid parameter "{args[2]}"')
            return None
    elif node.name == "set":
        if len(args[0]) < 2 or not args[0].startswith("$"):
            diags.error(node.loc, f'invalid variable name "{args[0]}"')
            return None
    elif node.name == "break":
        pass
    elif len(args) == 1 and args[0].startswith(("http://", "https://", "$scheme")):
        args = ("302", args[0])  # `return URL`
    elif not args[0].isdigit() or int(args[0]) > 999:
        return None  # reported by the reader's return_location
    return RewriteStep(node.name, tuple(args), node.loc)


def _if_step(
    node: Node, diags: Diagnostics, expand: Callable[[Sequence[Node]], list[Node]]
) -> RewriteStep | None:
    """`if (condition) { ... }` holding rewrite-module directives only: `$var`,
    `$var = value`, `!=`, `~`, `~*`, `!~`, `!~*` (file tests need the disk: refused)."""
    text = " ".join(node.arg_texts())
    words = [w.text for w in node.args]
    if not text.startswith("(") or not text.endswith(")"):
        diags.error(node.loc, f'invalid condition "{text}"')
        return None
    words[0] = words[0][1:]
    words[-1] = words[-1][:-1]  # the same word when it is the only one
    if len(words) > 1 and node.args[-1].text == ")":
        words.pop()  # `if ($a = "x y" )`: a lone closing parenthesis
    if len(words) > 1 and node.args[0].text == "(":
        words.pop(0)
    cond = tuple(words)
    if cond and cond[0].startswith(("-", "!-")):
        diags.error(node.loc, f'"if ({cond[0]} ...)" file tests are not supported')
        return None
    shape = len(cond) == 1 or (len(cond) == 3 and cond[1] in _IF_OPERATORS)
    if not shape or not cond[0].startswith("$"):
        diags.error(node.loc, f'invalid condition "{text}"')
        return None
    if len(cond) == 3 and "~" in cond[1] and not _compiles(cond[2], node, diags):
        return None
    body: list[RewriteStep] = []
    for child in expand(node.children or ()):
        if child.name in _IGNORED_IN_IF:
            continue
        if child.name not in SCRIPT:
            diags.error(child.loc, f'"{child.name}" directive inside "if" is not supported')
            return None
        step = read_step(child, diags, expand)
        if step is None:
            return None
        body.append(step)
    return RewriteStep("if", cond, node.loc, tuple(body))
