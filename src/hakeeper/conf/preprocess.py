"""keepalived.conf line preprocessing: comments, `@ID` lines, `$NAME` macros, generators, includes.

Follows keepalived's reader (lib/parser.c `read_line`, keepalived.conf(5) "Configuration
file format"), re-implemented: every physical line is decommented (`#`/`!` outside
quotes; `\\#`, `\\!` escape them), `@ID`/`@^ID` lines are kept or dropped against the
config id, `$NAME=value` (multi-line with a trailing `\\`) defines a macro, `~SEQ`/`~SEQx`/
`~LST` repeat the rest of the line with a variable bound, `$NAME`/`${NAME}` are
replaced recursively, and `include GLOB` (plus the `includer|m|w|b|a` variants) splices
other files in. Each logical line's words go to `hakeeper.conf.blocks.TreeBuilder` at once;
`hakeeper.conf.lexer` holds the public entry points.

Deliberate differences from keepalived: no undetected include loops (an error), bounded
expansion (line length, recursion depth, generated lines: errors instead of a hang),
a warning for undefined `${NAME}` / unquoted `$NAME`, a warning when a defined `$NAME`
is glued to text (keepalived silently leaves it unexpanded: write `${NAME}`), and
`${_ENV VAR}` for environment values. A `'` opens a quoted string only at the start of
a word, so `don't` stays one plain word (keepalived's comment cutter ignores `'`
altogether). An unexpanded `${NAME}` stays one word. `$NAME = v` (blank before `=`),
which keepalived reads as a keyword, is an error. Non-ASCII blanks separate words, with
a warning. Only keepalived's generic reading of quotes is applied (backslashes kept);
`lexwords.c_unescape` gives script strings keepalived's C escapes.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from hakeeper.conf.blocks import TreeBuilder
from hakeeper.conf.diagnostics import Diagnostics, Location, make_location
from hakeeper.conf.lexwords import (
    ODD_BLANK,
    c_unescape,
    col_at,
    cols_between,
    decomment,
    expand_braces,
    parse_number,
    tokenize_line,
)
from hakeeper.conf.tree import Node, Word

__all__ = [
    "FileReader",
    "LexOptions",
    "Preprocessor",
    "c_unescape",
    "decomment",
    "expand_braces",
    "parse_number",
]

if TYPE_CHECKING:
    import random


class FileReader(Protocol):
    """What the lexer needs from a filesystem (see `hakeeper.conf.files`)."""

    def read_text(self, path: str) -> str: ...

    def glob(self, pattern: str) -> list[str]: ...

    def absolute(self, path: str) -> str: ...


@dataclass(frozen=True)
class LexOptions:
    """Inputs of the keepalived preprocessor that come from outside the config text.

    `config_id` selects `@ID` lines (keepalived's `-i`, default short hostname: the
    caller passes `hakeeper.conf.files.default_config_id()`); `instance` is
    `${_INSTANCE}` (defaults to config_id); `env` feeds `${_ENV VAR}`; `rng` (or a
    deterministic generator seeded with `rng_seed`) feeds `${_RANDOM}`; `files` reads
    included files (default: the real filesystem). The `max_*` bounds turn runaway
    input into errors instead of hangs.
    """

    config_id: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    rng_seed: int = 0
    rng: random.Random | None = None
    instance: str | None = None
    files: FileReader | None = None
    max_include_depth: int = 32
    max_line_length: int = 65536
    max_expansion_depth: int = 32
    max_generated_lines: int = 100_000
    max_expansions: int = 250_000
    max_included_files: int = 10_000
    max_total_chars: int = 32 * 1024 * 1024


# A line needs the full pipeline when it may hold a comment, quote, escape, macro,
# conditional or generator, or a character that str.split() and keepalived disagree on
# as whitespace (anything but printable ASCII, tab and the CR of CRLF files). Includes
# and braces glued to words are checked on the split words (cheaper than a regex).
_SLOW_LINE = re.compile(r"[#!\"'\\$@~\x00-\x08\x0a-\x0c\x0e-\x1f\x7f-\U0010ffff]")
_DEFINITION = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)=[ \t]*(.*)\Z", re.S)
_SPACED_DEFINITION = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*[ \t]+=")
_REFERENCE = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:[ \t]+([^{}$]*?))?[ \t]*\}|([A-Za-z_][A-Za-z0-9_]*))"
)
_UNBRACED_END = " \t,)"
_INCLUDE = re.compile(r"include([rmwba]?)[ \t]+(.*)\Z", re.S)
_GLOB_MAGIC = re.compile(r"[*?\[]")


class _OverflowError(Exception):
    """Internal: an expansion exceeded a bound; caught per line, never escapes."""


@dataclass(slots=True)
class _Macro:
    lines: list[str]
    multiline: bool


@dataclass(slots=True)
class _Line:
    """One logical line on its way through the pipeline."""

    text: str
    cols: int | list[int]
    file: str
    line: int

    def loc(self, i: int = 0) -> Location:
        return Location(self.file, self.line, col_at(self.cols, i))

    def cut(self, i: int) -> _Line:
        cols = self.cols + i if isinstance(self.cols, int) else self.cols[i:]
        return _Line(self.text[i:], cols, self.file, self.line)


class _Builtins:
    """keepalived's standard definitions (`set_std_definitions`) plus `${_ENV VAR}`."""

    NAMES = frozenset({"_PWD", "_INSTANCE", "_RANDOM", "_HASH", "_BANG", "_ENV"})
    WITH_PARAMS = frozenset({"_RANDOM", "_ENV"})


class Preprocessor:
    """Turns keepalived.conf text (and what it includes) into logical lines of words."""

    def __init__(self, diags: Diagnostics, options: LexOptions, reader: FileReader) -> None:
        self.diags = diags
        self.opt = options
        self.reader = reader
        self.tree = TreeBuilder(diags)
        self._macros: dict[str, _Macro] = {}
        self._stack: list[str] = []
        self._pwd = "."
        self._display_dir = ""
        self._generated = 0
        self._expansions = 0
        self._total_chars = 0
        self._included = 0
        self._stopped = False
        self._rand = (options.rng_seed * 0x9E3779B97F4A7C15 + 1) & 0xFFFFFFFFFFFFFFFF

    # -- files -------------------------------------------------------------------

    def run(self, text: str, filename: str) -> tuple[Node, ...]:
        """Preprocess `text` (named `filename`) and what it includes; return the tree."""
        try:
            absolute = self.reader.absolute(filename)
        except (OSError, ValueError):
            absolute = filename
        self._file(text, filename, absolute)
        return self.tree.finish()

    def _file(self, text: str, name: str, absolute: str) -> None:
        saved = (self._pwd, self._display_dir)
        self._stack.append(absolute)
        self._pwd = posixpath.dirname(absolute) or "."
        self._display_dir = posixpath.dirname(name)
        try:
            self._physical_lines(text, name)
        except _OverflowError as exc:
            if not self._stopped:
                self._stopped = True
                self.diags.error(exc.args[1], str(exc.args[0]))
        finally:
            self._stack.pop()
            self._pwd, self._display_dir = saved

    def _physical_lines(self, text: str, name: str) -> None:
        pending: _Macro | None = None
        lineno = 0
        odd_lines = 0
        odd_first: Location | None = None
        slow_line = _SLOW_LINE.search
        tnew = tuple.__new__
        tree = self.tree
        for physical in text.split("\n"):
            lineno += 1
            raw = physical
            special = slow_line(raw)
            if special is not None and pending is None and raw[special.start()] in "#!":
                # Only a comment in the way? Cut it and take the hot path.
                _, end, cont = decomment(raw)
                if not cont and slow_line(raw, 0, end) is None:
                    raw = raw[:end]
                    special = None
            if pending is None and special is None:
                tokens = raw.split()
                if not tokens:
                    continue
                braces = raw.count("{") + raw.count("}") if "{" in raw or "}" in raw else 0
                if not tokens[0].startswith("include") and (
                    not braces or tokens.count("{") + tokens.count("}") == braces
                ):
                    # Hot path (most lines): nothing to decomment, expand or include.
                    # Inlined: this loop runs once per word of the whole config.
                    if braces == 1 and len(tokens) == 1 and tokens[0] == "}":
                        tree.close(make_location(name, lineno, raw.find("}") + 1))
                        tree.pending = False
                        continue
                    find = raw.find
                    if not braces and len(tokens) == 2:  # the commonest line: "keyword value"
                        key, value = tokens
                        col = find(key) + 1
                        col2 = find(value, col + len(key)) + 1
                        tree.stack[-1].children.append(
                            tnew(
                                Node,
                                (
                                    tnew(Word, (key, name, lineno, col, False)),
                                    (tnew(Word, (value, name, lineno, col2, False)),),
                                    None,
                                    None,
                                    None,
                                ),
                            )
                        )
                        tree.pending = True
                        continue
                    words: list[Word] = []
                    pos = 0
                    for token in tokens:
                        pos = find(token, pos)
                        words.append(tnew(Word, (token, name, lineno, pos + 1, False)))
                        pos += len(token)
                    if not braces:  # a plain statement
                        tree.stack[-1].children.append(
                            tnew(Node, (words[0], tuple(words[1:]), None, None, None))
                        )
                        tree.pending = True
                    elif braces == 1 and len(words) > 1 and tokens[-1] == "{":
                        # "keyword args {": open its block
                        tree.open(words[0], tuple(words[1:-1]), words[-1].loc)
                        tree.pending = False
                    else:
                        tree.line(words)
                    continue
            if self._stopped:
                return
            odd = ODD_BLANK.search(raw)
            if odd is not None:
                odd_lines += 1
                if odd_first is None:
                    odd_first = Location(name, lineno, odd.start() + 1)
            start, end, cont = decomment(raw)
            if pending is not None:
                if not raw.strip():
                    pending = self._finish_macro(pending)
                elif start != end or cont:
                    if start != end:
                        pending.lines.append(raw[start:end])
                    if not cont:
                        pending = self._finish_macro(pending)
                continue
            if start == end:
                if cont:
                    self.diags.warning(
                        Location(name, lineno, start + 1), "stray line continuation '\\'"
                    )
                continue
            ln = _Line(raw[start:end], start + 1, name, lineno)
            pending = self._process(ln, 0, cont)
        if odd_first is not None:
            self.diags.warning(
                odd_first,
                f"non-ASCII blanks (e.g. U+00A0) read as spaces on {odd_lines} line(s) of this "
                "file; keepalived itself would keep them inside words",
            )
        self._count_chars(len(text), Location(name, lineno, 1))

    def _count_chars(self, n: int, loc: Location) -> None:
        self._total_chars += n
        if self._total_chars > self.opt.max_total_chars:
            raise _OverflowError(
                f"configuration expands to more than {self.opt.max_total_chars} characters; "
                "stopped reading",
                loc,
                True,
            )

    @staticmethod
    def _finish_macro(macro: _Macro) -> None:
        macro.multiline = len(macro.lines) > 1
        if not macro.lines:
            macro.lines.append("")

    # -- one logical line ----------------------------------------------------------

    def _process(self, ln: _Line, depth: int, cont: bool = False) -> _Macro | None:
        extra: list[tuple[str, int]] = []  # further lines of multi-line macros
        for _round in range(8):
            text = ln.text
            first = text[0]
            if first == "@":
                cut = self._conditional(ln)
                if cut is None:
                    return None
                ln = cut
                text = ln.text
                first = text[0]
            if first == "$":
                m = _DEFINITION.match(text)
                if m is not None:
                    return self._define(m.group(1), m.group(2), cont)
                if _SPACED_DEFINITION.match(text):
                    self.diags.error(
                        ln.loc(),
                        "no blank allowed between a macro name and '=' "
                        "(keepalived would read this line as a keyword); line ignored",
                    )
                    return None
            if first == "~" and (text.startswith("~SEQ") or text.startswith("~LST")):
                self._generator(ln, depth)
                return None
            if "$" not in text:
                break
            try:
                expanded = self._expand_line(ln, extra)
            except _OverflowError as exc:
                if exc.args[2]:
                    raise
                self.diags.error(exc.args[1], str(exc.args[0]))
                return None
            if expanded is None:
                break
            ln = expanded
            if not ln.text:
                return None
            if ln.text[0] not in "@~":
                break
        if cont:
            self.diags.warning(
                ln.loc(len(ln.text)),
                "line continuation '\\' only works in $NAME= definitions; ignored",
            )
        text = ln.text
        if text.startswith("include"):
            m = _INCLUDE.match(text)
            if m is not None:
                self._include(ln, m.group(1), m.group(2))
                return None
        words = tokenize_line(text, ln.cols, ln.file, ln.line, self.diags)
        if words:
            self.tree.line(words)
        if depth or not isinstance(ln.cols, int):  # generated or expanded: count growth
            self._count_chars(len(text), ln.loc())
        for more, col in extra:
            if more:
                self._process(_Line(more, col, ln.file, ln.line), depth + 1)
        return None

    def _conditional(self, ln: _Line) -> _Line | None:
        text = ln.text
        negate = text.startswith("@^")
        ofs = 2 if negate else 1
        end = ofs
        n = len(text)
        while end < n and not text[end].isspace():
            end += 1
        if end >= n:
            return None
        config_id = self.opt.config_id
        matches = config_id is not None and text[ofs:end] == config_id
        if matches == negate:
            return None
        while end < n and text[end].isspace():
            end += 1
        return ln.cut(end)

    def _define(self, name: str, value: str, cont: bool) -> _Macro | None:
        value = value.rstrip(" \t")
        macro = _Macro([value] if value or not cont else [], False)
        self._macros[name] = macro
        return macro if cont else None

    # -- macro expansion -----------------------------------------------------------

    def _lookup(
        self, name: str, params: str | None, loc: Location, quoted: bool
    ) -> _Macro | str | None:
        macro = self._macros.get(name)
        if macro is not None:
            if params is not None:
                return None
            return macro
        if name in _Builtins.NAMES:
            if params is not None and name not in _Builtins.WITH_PARAMS:
                self.diags.warning(loc, f"${{{name}}} takes no parameters; left unexpanded")
                return None
            return self._builtin(name, params or "", loc)
        if not quoted:
            self.diags.warning(loc, f"undefined macro ${name}; left unexpanded")
        return None

    def _builtin(self, name: str, params: str, loc: Location) -> str | None:
        if name == "_PWD":
            return self._pwd
        if name == "_INSTANCE":
            instance = self.opt.instance if self.opt.instance is not None else self.opt.config_id
            return instance or ""
        if name == "_HASH":
            return "#"
        if name == "_BANG":
            return "!"
        if name == "_ENV":
            var = params.strip()
            if not var or len(var.split()) != 1:
                self.diags.warning(loc, "${_ENV VAR} needs exactly one variable name")
                return None
            value = self.opt.env.get(var)
            if value is None:
                self.diags.warning(loc, f"environment variable {var} is not set; using ''")
                return ""
            return value
        # _RANDOM [min [max]]
        parts = params.split()
        if len(parts) > 2 or not all(p.isdigit() for p in parts):
            self.diags.warning(loc, "${_RANDOM [min [max]]} takes up to two decimal numbers")
            return None
        low = int(parts[0]) if parts else 0
        high = int(parts[1]) if len(parts) > 1 else 32767
        if high < low:
            low, high = high, low
        return str(self._random(low, high))

    def _random(self, low: int, high: int) -> int:
        if self.opt.rng is not None:
            return self.opt.rng.randint(low, high)
        # xorshift64*: deterministic unless the caller injects a random.Random.
        x = self._rand
        x ^= (x >> 12) & 0xFFFFFFFFFFFFFFFF
        x ^= (x << 25) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 27
        self._rand = x & 0xFFFFFFFFFFFFFFFF
        return low + ((self._rand * 0x2545F4914F6CDD1D) & 0xFFFFFFFFFFFFFFFF) % (high - low + 1)

    def _count_expansion(self, loc: Location) -> None:
        self._expansions += 1
        if self._expansions > self.opt.max_expansions:
            raise _OverflowError(
                f"more than {self.opt.max_expansions} macro expansions; stopped reading", loc, True
            )

    def _expand_line(self, ln: _Line, extra: list[tuple[str, int]]) -> _Line | None:
        """Replace macro references in one line; None when nothing was replaced."""
        text = ln.text
        pieces: list[str] = []
        cols: list[int] = []
        pos = 0
        quote_scan = 0
        in_quotes = False
        changed = False
        length = 0
        limit = self.opt.max_line_length
        for m in _REFERENCE.finditer(text):
            start, end = m.span()
            if text.count('"', quote_scan, start) % 2:
                in_quotes = not in_quotes
            quote_scan = start
            name = m.group(1) or m.group(3)
            braced = m.group(1) is not None
            loc = ln.loc(start)
            if not braced and end < len(text) and text[end] not in _UNBRACED_END:
                if name in self._macros:
                    self.diags.warning(
                        loc,
                        f"${name} is followed by '{text[end]}' and is not expanded; "
                        f"write ${{{name}}}",
                    )
                continue
            found = self._lookup(name, m.group(2) if braced else None, loc, in_quotes)
            if found is None:
                continue
            self._count_expansion(loc)
            if isinstance(found, _Macro):
                if found.multiline:
                    if text[end:].strip():
                        self.diags.warning(
                            loc, f"multi-line macro ${name} must end its line; not expanded"
                        )
                        continue
                    extra.extend((more, loc.col) for more in found.lines[1:])
                value = found.lines[0]
            else:
                value = found
            stop = value.lstrip(" \t").startswith("~")
            if not stop:
                value = self._expand_value(value, loc, 1, length + start - pos)
            pieces.append(text[pos:start])
            cols.extend(cols_between(ln.cols, pos, start))
            pieces.append(value)
            cols.extend([loc.col] * len(value))
            length += start - pos + len(value)
            if length > limit:
                raise _OverflowError(
                    f"line longer than {limit} characters after expansion", loc, False
                )
            pos = end
            changed = True
            if stop:
                break
        if not changed:
            return None
        pieces.append(text[pos:])
        cols.extend(cols_between(ln.cols, pos, len(text)))
        new_text = "".join(pieces)
        # Like keepalived, decomment again: a '#' or '!' that a macro (say ${_HASH})
        # put outside quotes starts a comment. This also restores the invariant of no
        # leading/trailing blanks.
        start, end, _ = decomment(new_text)
        return _Line(new_text[start:end], cols[start:end], ln.file, ln.line)

    def _expand_value(self, value: str, loc: Location, depth: int, used: int) -> str:
        if "$" not in value:
            return value
        if depth > self.opt.max_expansion_depth:
            raise _OverflowError(
                f"macro expansion nested deeper than {self.opt.max_expansion_depth} "
                "(does a macro refer to itself?)",
                loc,
                False,
            )
        limit = self.opt.max_line_length
        pieces: list[str] = []
        pos = 0
        length = used
        quote_scan = 0
        in_quotes = False
        for m in _REFERENCE.finditer(value):
            start, end = m.span()
            if value.count('"', quote_scan, start) % 2:
                in_quotes = not in_quotes
            quote_scan = start
            name = m.group(1) or m.group(3)
            braced = m.group(1) is not None
            if not braced and end < len(value) and value[end] not in _UNBRACED_END:
                continue
            found = self._lookup(name, m.group(2) if braced else None, loc, in_quotes)
            if found is None:
                continue
            self._count_expansion(loc)
            if isinstance(found, _Macro):
                if found.multiline:
                    self.diags.warning(loc, f"multi-line macro ${name} used inside a macro")
                    continue
                sub = found.lines[0]
            else:
                sub = found
            sub = self._expand_value(sub, loc, depth + 1, length + start - pos)
            pieces.append(value[pos:start])
            pieces.append(sub)
            length += start - pos + len(sub)
            if length > limit:
                raise _OverflowError(
                    f"line longer than {limit} characters after expansion", loc, False
                )
            pos = end
        pieces.append(value[pos:])
        return "".join(pieces)

    # -- generators ------------------------------------------------------------------

    def _generator(self, ln: _Line, depth: int) -> None:
        text = ln.text
        kind = text[:4]
        if depth > self.opt.max_expansion_depth:
            self.diags.error(ln.loc(), f"{kind} generators nested too deeply")
            return
        parsed = self._parse_seq(ln) if kind == "~SEQ" else _parse_lst(text)
        if isinstance(parsed, str):
            shown = text if len(text) <= 80 else text[:77] + "..."
            self.diags.error(ln.loc(), f"invalid {kind} specification '{shown}': {parsed}")
            return
        bindings, body_at = parsed
        body = ln.cut(body_at)
        if not body.text:
            return
        limit = self.opt.max_generated_lines
        for binding in bindings:
            self._generated += 1
            if self._generated > limit:
                raise _OverflowError(
                    f"generators produced more than {limit} lines; stopped reading",
                    ln.loc(),
                    True,
                )
            for name, value in binding:
                self._bind(name, value)
            self._process(body, depth + 1)

    def _bind(self, name: str, value: str) -> None:
        macro = self._macros.get(name)
        if macro is None or macro.multiline:
            self._macros[name] = _Macro([value], False)
        else:
            macro.lines[0] = value

    def _parse_seq(self, ln: _Line) -> tuple[_Bindings, int] | str:
        """`~SEQ(var, end)`, `~SEQ(var, start, end)`, `~SEQ(var, start, step, end)`, `~SEQx`."""
        text = ln.text
        m = _SEQ_HEAD.match(text)
        if m is None:
            return "expected ~SEQ(var, [start,] [step,] end)"
        hexa = m.group(1) == "x"
        var = m.group(2)
        close = text.find(")", m.end())
        if close < 0:
            return "missing ')'"
        params = text[m.end() : close]
        if "$" in params:
            try:
                params = self._expand_value(params, ln.loc(m.end()), 1, 0)
            except _OverflowError as exc:
                return str(exc.args[0])
        numbers = [parse_number(p) for p in params.split(",")]
        if any(n is None for n in numbers) or not 1 <= len(numbers) <= 3:
            return "parameters must be 1 to 3 integers"
        values = [n for n in numbers if n is not None]
        if len(values) == 1:
            end = values[0]
            start = -1 if end < 0 else 1
            step = -1 if end < 1 else 1
        elif len(values) == 2:
            start, end = values
            step = 1 if start <= end else -1
        else:
            start, step, end = values
            if step == 0 or (start < end and step < 0) or (start > end and step > 0):
                return "the step does not lead from start to end"
        if hexa and (start < 0 or end < 0):
            return "~SEQx only takes non-negative numbers"
        fmt = "{:x}" if hexa else "{:d}"
        seq = range(start, end + (1 if step > 0 else -1), step)
        bindings = (((var, fmt.format(v)),) for v in seq)
        body_at = close + 1
        while body_at < len(text) and text[body_at] in " \t":
            body_at += 1
        return bindings, body_at

    # -- includes ----------------------------------------------------------------------

    def _include(self, ln: _Line, variant: str, target: str) -> None:
        pattern = target.strip()
        if len(pattern) >= 2 and pattern[0] == pattern[-1] and pattern[0] in "\"'":
            pattern = pattern[1:-1]
        keyword = "include" + variant
        strict = variant != ""
        if not pattern:
            self.diags.error(ln.loc(), f"{keyword} needs a file name or glob")
            return
        if len(self._stack) > self.opt.max_include_depth:
            self.diags.error(
                ln.loc(), f"includes nested deeper than {self.opt.max_include_depth}; skipped"
            )
            return
        for alternative in expand_braces(pattern):
            path = posixpath.normpath(posixpath.join(self._display_dir, alternative))
            if _GLOB_MAGIC.search(alternative):
                try:
                    matches = self.reader.glob(path)
                except (OSError, ValueError) as exc:
                    self.diags.error(ln.loc(), f"{keyword} '{alternative}': {exc}")
                    continue
                if not matches:
                    report = self.diags.error if variant in ("w", "a") else self.diags.warning
                    report(ln.loc(), f"{keyword}: no config files matched '{alternative}'")
                    continue
            else:
                matches = [path]
            for match in matches:
                self._include_one(ln, keyword, match, strict)
                if self._stopped:
                    return

    def _include_one(self, ln: _Line, keyword: str, path: str, strict: bool) -> None:
        try:
            absolute = self.reader.absolute(path)
        except (OSError, ValueError):
            absolute = path
        if absolute in self._stack:
            self.diags.error(ln.loc(), f"{keyword} loop: '{path}' is already being read")
            return
        self._included += 1
        if self._included > self.opt.max_included_files:
            raise _OverflowError(
                f"more than {self.opt.max_included_files} included files; stopped reading",
                ln.loc(),
                True,
            )
        try:
            text = self.reader.read_text(path)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            report = self.diags.error if strict else self.diags.warning
            report(ln.loc(), f"{keyword}: cannot read '{path}': {reason}")
            return
        self._file(text, path, absolute)


_Bindings = Iterable[tuple[tuple[str, str], ...]]
_SEQ_HEAD = re.compile(r"~SEQ(x?)[ \t]*\([ \t]*([^ \t,)]+)[ \t]*,")
_LST_VALUE_END = " \t,})"


def _parse_lst(text: str) -> tuple[list[tuple[tuple[str, str], ...]], int] | str:
    """`~LST(var, v1, v2, ...)` or `~LST({a,b}, {1,2}, {3,4}, ...)`."""
    n = len(text)
    i = 4

    def skip(i: int) -> int:
        while i < n and text[i] in " \t":
            i += 1
        return i

    i = skip(i)
    if i >= n or text[i] != "(":
        return "expected '(' after ~LST"
    i = skip(i + 1)
    names: list[str] = []
    grouped = i < n and text[i] == "{"
    if grouped:
        i = skip(i + 1)
    while True:
        start = i
        while i < n and text[i] not in " \t,})":
            i += 1
        if i == start:
            return "missing variable name"
        names.append(text[start:i])
        i = skip(i)
        if not grouped or (i < n and text[i] == "}"):
            break
        if i >= n or text[i] != ",":
            return "expected ',' or '}' in the variable list"
        i = skip(i + 1)
    if grouped:
        i = skip(i + 1)
    if i >= n or text[i] != ",":
        return "expected ',' after the variable list"
    i = skip(i + 1)
    sets: list[tuple[tuple[str, str], ...]] = []
    while True:
        values: list[str] = []
        braced = i < n and text[i] == "{"
        if braced:
            i = skip(i + 1)
        while True:
            start = i
            while i < n and text[i] not in _LST_VALUE_END:
                i += 1
            values.append(text[start:i])
            i = skip(i)
            if i < n and text[i] == "," and braced:
                if len(values) >= len(names):
                    return "too many values in a set"
                i = skip(i + 1)
                continue
            break
        if braced:
            if i >= n or text[i] != "}":
                return "missing '}' after a value set"
            i = skip(i + 1)
        values.extend([""] * (len(names) - len(values)))
        sets.append(tuple(zip(names, values, strict=True)))
        if i < n and text[i] == ")":
            break
        if i >= n or text[i] != ",":
            return "missing ')'"
        i = skip(i + 1)
    return sets, skip(i + 1)
