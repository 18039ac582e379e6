"""The declarative keyword-schema machinery: keyword specs, argument converters, the walker.

A `BlockSpec` maps keyword names to `Kw` specs (argument converter, target field,
status, alias, nested block or value-list block). `walk` applies a spec to the
children of a syntax-tree block and returns a `Raw` bag of converted values, reporting
every problem into `Diagnostics` and carrying on: unknown keywords get a did-you-mean
among the keywords valid in that block, out-of-range numbers the allowed range, wrong
argument counts what was expected. Keyword grammar follows keepalived.conf(5);
`<BOOL>` is on|off|true|false|yes|no, `<TIMER>` is seconds with fractions.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hakeeper.conf.diagnostics import Diagnostics, Location, did_you_mean
from hakeeper.conf.lexwords import script_command
from hakeeper.conf.model import IPAddress, Script
from hakeeper.conf.tree import Node, Word


class Status(StrEnum):
    SUPPORTED = "supported"
    IGNORED = "accepted-and-ignored-with-warning"
    REJECTED = "rejected"


class _Invalid:
    """Marker returned by a converter that already reported an error."""

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Any = _Invalid()

Parse = Callable[[Node, Diagnostics], Any]

ARG_DOCS: dict[Parse, str] = {}
"""Argument syntax of each converter, for the generated keyword reference."""


def described(text: str) -> Callable[[Parse], Parse]:
    def mark(fn: Parse) -> Parse:
        ARG_DOCS[fn] = text
        return fn

    return mark


@dataclass(frozen=True, slots=True)
class Kw:
    """One keyword of a block: how to read its arguments and where the value goes."""

    name: str
    parse: Parse | None = None
    field: str | None = None
    status: Status = Status.SUPPORTED
    repeat: bool = False
    block: BlockSpec | None = None
    items: Parse | None = None
    block_optional: bool = False
    alias_of: str | None = None
    warn: str | None = None
    doc: str = ""

    @property
    def key(self) -> str:
        return self.field or self.name


@dataclass(frozen=True, slots=True)
class BlockSpec:
    name: str
    keywords: dict[str, Kw]
    plain: dict[str, tuple[Parse, str]] = field(init=False)
    """The walker's fast path: keywords that are supported, single, neither aliases nor
    blocks nor warned about, as (converter, key)."""

    def __post_init__(self) -> None:
        plain = {
            name: (kw.parse, kw.field or kw.name)
            for name, kw in self.keywords.items()
            if kw.parse is not None
            and kw.status is Status.SUPPORTED
            and kw.block is None
            and kw.items is None
            and kw.alias_of is None
            and kw.warn is None
            and not kw.repeat
        }
        object.__setattr__(self, "plain", plain)


def block(name: str, *kws: Kw | Iterable[Kw]) -> BlockSpec:
    table: dict[str, Kw] = {}
    for item in kws:
        for kw in [item] if isinstance(item, Kw) else item:
            table[kw.name] = kw
    return BlockSpec(name, table)


def ignored(*names: str, doc: str = "") -> list[Kw]:
    """Keywords keepalived knows that hakeeper reads and ignores with a warning."""
    return [Kw(n, any_args, status=Status.IGNORED, doc=doc) for n in names]


@dataclass(slots=True)
class Raw:
    """Converted values of one block: `values[field]`, plus the block's header value."""

    node: Node | None
    head: Any = None
    kind: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    keywords: dict[str, Word] = field(default_factory=dict)
    """The keyword word of each value (its location is built only when asked for)."""

    @property
    def locs(self) -> dict[str, Location]:
        """Where each value's keyword is."""
        return {key: word.loc for key, word in self.keywords.items()}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def has(self, key: str) -> bool:
        return key in self.values

    def list(self, key: str) -> list[Any]:
        got = self.values.get(key)
        return got if isinstance(got, list) else []

    @property
    def loc(self) -> Location | None:
        return self.node.loc if self.node is not None else None


def walk(
    spec: BlockSpec, children: tuple[Node, ...], diags: Diagnostics, node: Node | None = None
) -> Raw:
    """Convert every child statement by `spec`; report problems and carry on."""
    return _walk(spec, children, diags, node)


def _walk(
    spec: BlockSpec, children: tuple[Node, ...], diags: Diagnostics, node: Node | None
) -> Raw:
    raw = Raw(node)
    values = raw.values
    kwords = raw.keywords
    keywords = spec.keywords
    plain = spec.plain
    supported = Status.SUPPORTED
    for statement in children:
        word = statement[0]  # Node and Word are tuples: index, the hot path runs ~10^5 times
        name = word[0]
        fast = plain.get(name)
        if fast is not None and statement[2] is None:
            value = fast[0](statement, diags)
            if value is INVALID:
                continue
            key = fast[1]
            if key in values:
                diags.warning(
                    word.loc, f"'{name}' given again in {spec.name}; the earlier value is replaced"
                )
            values[key] = value
            kwords[key] = word
            continue
        child = statement
        kw = keywords.get(name)
        if kw is None and name.strip() != name:
            # Blanks Python knows but keepalived does not (U+00A0 from web pages): read
            # the line as the user meant, and say so.
            fixed = _unblank(child)
            diags.warning(word.loc, "non-ASCII blanks (e.g. U+00A0) on this line read as spaces")
            if fixed is None:
                continue
            child, word = fixed, fixed.keyword
            name = word.text
            kw = keywords.get(name)
        if kw is None:
            hint = did_you_mean(name, keywords)
            diags.error(word.loc, f"unknown keyword '{name}' in {spec.name}{hint}")
            continue
        if kw.warn is not None:
            diags.warning(word.loc, kw.warn)
        if kw.alias_of is not None:
            kw = keywords[kw.alias_of]
        if kw.status is not supported:
            _unsupported(kw, child, spec, diags)
            continue
        if kw.block is None and kw.items is None and child.children is None:
            value = kw.parse(child, diags)  # type: ignore[misc]  # plain keywords always parse
        else:
            value = _value(kw, child, diags)
        if value is INVALID:
            continue
        key = kw.field or kw.name
        if kw.repeat:
            if key in values:
                values[key].append(value)
            else:
                values[key] = [value]
        else:
            if key in values and kw.block is None:
                diags.warning(
                    word.loc, f"'{name}' given again in {spec.name}; the earlier value is replaced"
                )
            values[key] = value
        kwords[key] = word
    return raw


def _unblank(node: Node) -> Node | None:
    words = [Word(w.text.strip(), w.loc, w.quoted) for w in (node.keyword, *node.args)]
    words = [w for w in words if w.text or w.quoted]
    if not words:
        return None
    return Node(words[0], tuple(words[1:]), node.children, node.open_loc, node.close_loc)


def _unsupported(kw: Kw, child: Node, spec: BlockSpec, diags: Diagnostics) -> None:
    why = f" ({kw.doc})" if kw.doc else ""
    if kw.status is Status.IGNORED:
        diags.warning(
            child.loc, f"'{kw.name}' in {spec.name} is accepted but ignored by hakeeper{why}"
        )
    else:
        diags.error(child.loc, f"'{kw.name}' in {spec.name} is not supported by hakeeper{why}")


def _value(kw: Kw, child: Node, diags: Diagnostics) -> Any:
    if kw.block is not None:
        if child.children is None and not kw.block_optional:
            diags.error(child.loc, f"'{kw.name}' needs a {{ ... }} block")
            return INVALID
        head = kw.parse(child, diags) if kw.parse is not None else None
        if head is INVALID:
            return INVALID
        inner = _walk(kw.block, child.children or (), diags, child)
        inner.head = head
        inner.kind = kw.block.name
        return inner
    if kw.items is not None:
        if child.children is None:
            diags.error(child.loc, f"'{kw.name}' needs a {{ ... }} block with one item per line")
            return INVALID
        head = None
        if kw.parse is not None:
            head = kw.parse(child, diags)
            if head is INVALID:
                return INVALID
        elif child.args:
            diags.error(child.args[0].loc, f"'{kw.name}' takes no arguments before its block")
        items = kw.items
        out = []
        for line in child.children:
            if line.children is not None:
                diags.error(line.loc, f"unexpected block inside '{kw.name}'")
                continue
            item = items(line, diags)
            if item is not INVALID:
                out.append(item)
        if kw.parse is not None:
            return Raw(child, head, kind=kw.name, values={"items": tuple(out)})
        return tuple(out)
    if child.children is not None:
        diags.error(child.open_loc or child.loc, f"'{kw.name}' does not take a {{ ... }} block")
        return INVALID
    assert kw.parse is not None, kw.name
    return kw.parse(child, diags)


# ---- argument converters -------------------------------------------------------------

BOOL_WORDS = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}


def words_of(node: Node) -> tuple[Word, ...]:
    """A value-block line as words: the keyword position is just the first word."""
    return (node.keyword, *node.args)


def arity(node: Node, diags: Diagnostics, lo: int, hi: int | None, what: str) -> bool:
    n = len(node.args)
    if n < lo or (hi is not None and n > hi):
        where = node.args[hi].loc if hi is not None and n > hi else node.loc
        diags.error(where, f"'{node.keyword.text}' expects {what}, got {n} argument(s)")
        return False
    return True


def to_int(w: Word, diags: Diagnostics, lo: int, hi: int, what: str) -> Any:
    try:
        value = int(w.text, 10)
    except ValueError:
        diags.error(w.loc, f"{what} must be an integer in {lo}..{hi}, got '{w.text}'")
        return INVALID
    if not lo <= value <= hi:
        diags.error(w.loc, f"{what} must be in {lo}..{hi}, got {value}")
        return INVALID
    return value


def to_float(w: Word, diags: Diagnostics, lo: float, hi: float, what: str) -> Any:
    try:
        value = float(w.text)
    except ValueError:
        diags.error(w.loc, f"{what} must be a number of seconds in {lo:g}..{hi:g}, got '{w.text}'")
        return INVALID
    if math.isnan(value) or not lo <= value <= hi:
        diags.error(w.loc, f"{what} must be in {lo:g}..{hi:g} seconds, got {w.text}")
        return INVALID
    return value


@functools.lru_cache(maxsize=65536)
def _parse_ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def to_ip(w: Word, diags: Diagnostics, what: str = "address") -> Any:
    try:
        return _parse_ip(w.text)
    except ValueError:
        diags.error(w.loc, f"{what} must be an IPv4 or IPv6 address, got '{w.text}'")
        return INVALID


def int_arg(lo: int, hi: int) -> Parse:
    expect = f"one integer in {lo}..{hi}"

    def parse(node: Node, diags: Diagnostics) -> Any:
        args = node.args
        if len(args) == 1:  # fast path: no message strings built for good input
            text = args[0].text
            if text.isascii() and text.isdigit():
                value = int(text)
                if lo <= value <= hi:
                    return value
        if not arity(node, diags, 1, 1, expect):
            return INVALID
        return to_int(args[0], diags, lo, hi, f"'{node.keyword.text}'")

    ARG_DOCS[parse] = f"INTEGER {lo}..{hi}"
    return parse


def timer(lo: float = 0.0, hi: float = 2147.0) -> Parse:
    """`<TIMER>`: seconds, fractions allowed (keepalived keeps microseconds)."""

    def parse(node: Node, diags: Diagnostics) -> Any:
        args = node.args
        if len(args) == 1:  # fast path: plain digits
            text = args[0].text
            if text.isascii() and text.isdigit():
                value = float(text)
                if lo <= value <= hi:
                    return value
        if not arity(node, diags, 1, 1, "one duration in seconds"):
            return INVALID
        return to_float(args[0], diags, lo, hi, f"'{node.keyword.text}'")

    ARG_DOCS[parse] = f"SECONDS {lo:g}..{hi:g}"
    return parse


@described("(no arguments)")
def flag(node: Node, diags: Diagnostics) -> Any:
    if not arity(node, diags, 0, 0, "no arguments"):
        return INVALID
    return True


@described("[BOOL]")
def bool_opt(node: Node, diags: Diagnostics) -> Any:
    """`keyword [<BOOL>]`: bare keyword means true."""
    if not arity(node, diags, 0, 1, "at most one of on|off|true|false|yes|no"):
        return INVALID
    if not node.args:
        return True
    w = node.args[0]
    value = BOOL_WORDS.get(w.text.lower())
    if value is None:
        diags.error(
            w.loc, f"'{node.keyword.text}' expects on|off|true|false|yes|no, got '{w.text}'"
        )
        return INVALID
    return value


@described("STRING")
def word(node: Node, diags: Diagnostics) -> Any:
    if not arity(node, diags, 1, 1, "one value"):
        return INVALID
    return node.args[0].text


def choice(*choices: str, upper: bool = False) -> Parse:
    allowed = "|".join(choices)

    def parse(node: Node, diags: Diagnostics) -> Any:
        if not arity(node, diags, 1, 1, f"one of {allowed}"):
            return INVALID
        w = node.args[0]
        text = w.text.upper() if upper else w.text
        if text not in choices:
            hint = did_you_mean(w.text, choices)
            diags.error(
                w.loc, f"'{node.keyword.text}' must be one of {allowed}, got '{w.text}'{hint}"
            )
            return INVALID
        return text

    ARG_DOCS[parse] = allowed
    return parse


@described("STRING...")
def text(node: Node, diags: Diagnostics) -> Any:
    """All arguments joined by single spaces (a command line or free text)."""
    if not arity(node, diags, 1, None, "a value"):
        return INVALID
    return " ".join(w.text for w in node.args)


@described("[ANY...]")
def any_args(node: Node, diags: Diagnostics) -> Any:
    del diags
    return tuple(w.text for w in node.args)


@described("IPADDR")
def ip_arg(node: Node, diags: Diagnostics) -> Any:
    if not arity(node, diags, 1, 1, "one IP address"):
        return INVALID
    return to_ip(node.args[0], diags, f"'{node.keyword.text}'")


@described("COMMAND [USER [GROUP]]")
def script(node: Node, diags: Diagnostics) -> Any:
    """`keyword <STRING>|<QUOTED-STRING> [username [groupname]]`."""
    if not arity(node, diags, 1, None, "a command [username [groupname]]"):
        return INVALID
    args = node.args
    if args[0].quoted or len(args) <= 3:
        if len(args) > 3:
            diags.error(
                args[3].loc, f"'{node.keyword.text}' expects a command [username [groupname]]"
            )
            return INVALID
        user = args[1].text if len(args) > 1 else None
        group = args[2].text if len(args) > 2 else None
        return Script(args[0].text, user, group)
    return Script(" ".join(w.text for w in args))


def _keepalived_command(node: Node, diags: Diagnostics, text: str) -> str:
    command = script_command(text)
    if command is None:
        diags.warning(
            node.loc,
            f"'{node.keyword.text}': unterminated quote or trailing backslash in the command; "
            "keepalived would ignore this script",
        )
        return text
    return command


@described("COMMAND [USER [GROUP]]")
def command(node: Node, diags: Diagnostics) -> Any:
    """A script keyword (`notify*`, `quorum_up`...): `script`'s words, and the command
    read as keepalived reads script lines (C escapes, then its own argv split)."""
    got = script(node, diags)
    if got is INVALID:
        return INVALID
    return Script(_keepalived_command(node, diags, got.command), got.user, got.group)


@described("COMMAND")
def command_text(node: Node, diags: Diagnostics) -> Any:
    """`vrrp_script`'s `script` and `misc_path`: the words as one command line, read as
    keepalived reads script lines (see `command`)."""
    got = text(node, diags)
    if got is INVALID:
        return INVALID
    return _keepalived_command(node, diags, got)


def ip_port(node: Node, diags: Diagnostics, words: tuple[Word, ...], what: str) -> Any:
    """`<IPADDR> [<PORT>]` -> (ip, port | None)."""
    if not 1 <= len(words) <= 2:
        diags.error(node.loc, f"'{node.keyword.text}' expects {what}, got {len(words)} argument(s)")
        return INVALID
    ip = to_ip(words[0], diags, f"'{node.keyword.text}' address")
    port = to_int(words[1], diags, 0, 65535, "port") if len(words) > 1 else None
    if ip is INVALID or port is INVALID:
        return INVALID
    result: tuple[IPAddress, int | None] = (ip, port)
    return result
