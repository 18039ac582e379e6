"""keepalived.conf words: comment cutting, tokenizing one line, quotes and escapes.

The character-level half of keepalived's reader (lib/parser.c `decomment`,
`alloc_strvec`, `alloc_strvec_quoted_escaped`), re-implemented: `#`/`!` start a comment
outside quotes (`\\#`, `\\!` escape them), whitespace separates words, `{` and `}` are
words of their own, `"..."` (anywhere) and `'...'` (at the start of a word) quote.
Inside quotes only an escaped quote loses its backslash, as keepalived's generic reader
keeps backslashes; `c_unescape` applies the C escapes keepalived gives script strings.
Also the small parsers the preprocessor shares: strtol-like numbers and `{a,b}` globs.
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Iterable

from hakeeper.conf.diagnostics import Diagnostics, Location
from hakeeper.conf.tree import Word, make_word

WS = " \t\f\v\r\n"
"""keepalived's blanks. Python's other ones (U+00A0 pasted from web pages, ...) also
separate words here, as the user meant; `ODD_BLANK` finds them so the preprocessor can
say that keepalived itself would keep them inside words."""
ODD_BLANK = re.compile(r"[^\S \t\n\r\f\v]")
_COMMENT_SPECIAL = re.compile(r"[#!\"'\\]")
_TOKEN_SPECIAL = re.compile(r"[\"'\\]|\$\{")
_FAST_TOKEN = re.compile(r"[{}]|[^\s{}]+")
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "E": "\x1b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}
_UNQUOTED_ESCAPABLE = "#!\"'{}"
_HEX = "0123456789abcdefABCDEF"
_OCT = "01234567"


def _breaks(c: str) -> bool:
    return c.isspace() or c in "{}"


def decomment(line: str) -> tuple[int, int, bool]:
    """Return (start, end, continued) of the meaningful part of a physical line.

    Leading/trailing blanks and a `#`/`!` comment outside quotes are cut; a trailing
    `\\` (outside quotes) is cut too and reported as `continued`.
    """
    stripped = line.lstrip()
    start = len(line) - len(stripped)
    if not stripped or stripped[0] in "#!":
        return start, start, False
    end = len(line)
    cont = False
    match = _COMMENT_SPECIAL.search(line, start)
    if match is not None:
        i = match.start()
        n = len(line)
        quote = ""
        while i < n:
            c = line[i]
            if quote:
                if c == "\\":
                    i += 2
                    continue
                if c == quote:
                    quote = ""
            elif c == "\\":
                if i + 1 >= n or line[i + 1] in "\r\n":
                    end, cont = i, True
                    break
                i += 2
                continue
            elif c in "#!":
                end = i
                break
            elif c == '"' or (c == "'" and (i == 0 or _breaks(line[i - 1]))):
                quote = c
            i += 1
    while end > start and line[end - 1].isspace():
        end -= 1
    return start, end, cont


def col_at(cols: int | list[int], i: int) -> int:
    if isinstance(cols, int):
        return cols + i
    if i < len(cols):
        return cols[i]
    return cols[-1] if cols else 1


def cols_between(cols: int | list[int], start: int, end: int) -> Iterable[int]:
    if isinstance(cols, int):
        return range(cols + start, cols + end)
    return cols[start:end]


def tokenize_line(
    text: str, cols: int | list[int], file: str, line: int, diags: Diagnostics
) -> list[Word]:
    """Split one decommented, expanded line into words; `{` and `}` are words of their own."""
    words: list[Word] = []
    if _TOKEN_SPECIAL.search(text) is None:
        for m in _FAST_TOKEN.finditer(text):
            words.append(make_word(m.group(), file, line, col_at(cols, m.start())))
        return words
    n = len(text)
    i = 0
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        start = i
        if c in "{}":
            words.append(make_word(c, file, line, col_at(cols, i)))
            i += 1
            continue
        buf: list[str] = []
        quoted = False
        while i < n:
            c = text[i]
            if _breaks(c):
                break
            if c == '"' or (c == "'" and i == start):
                quoted = True
                i = _scan_quoted(text, i, buf)
                if i < 0:
                    diags.error(
                        Location(file, line, col_at(cols, start)),
                        f"unterminated quoted string (missing closing {c})",
                    )
                    i = n
                    break
                continue
            if c == "$" and i + 1 < n and text[i + 1] == "{":
                # An unexpanded ${NAME} stays one word (keepalived would split it at '{').
                close = text.find("}", i + 2)
                if close > 0:
                    buf.append(text[i : close + 1])
                    i = close + 1
                    continue
            if c == "\\" and i + 1 < n and text[i + 1] in _UNQUOTED_ESCAPABLE:
                buf.append(text[i + 1])
                i += 2
                continue
            buf.append(c)
            i += 1
        words.append(make_word("".join(buf), file, line, col_at(cols, start), quoted))
    return words


def _scan_quoted(text: str, i: int, buf: list[str]) -> int:
    """Append the contents of the quoted string at text[i]; return the index after the
    closing quote, or -1 when it is unterminated (contents still appended).

    Only an escaped quote character loses its backslash; every other backslash pair is
    kept verbatim, as keepalived's generic reader keeps it (a `regex "^\\d+"` must
    survive). Script-like keywords apply C escapes afterwards with `c_unescape`.
    """
    quote = text[i]
    n = len(text)
    i += 1
    while i < n:
        c = text[i]
        if c == quote:
            return i + 1
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == quote:
                buf.append(nxt)
            else:
                buf.append(c + nxt)
            i += 2
            continue
        buf.append(c)
        i += 1
    return -1


def _escape(text: str, i: int) -> tuple[str, int]:
    """The character a backslash before text[i] stands for, and the index after it
    (keepalived's `alloc_strvec_quoted_escaped`): `\\xH...` takes every hex digit and
    `\\NNN` up to 3 octal ones (kept to 8 bits), `\\cX` is control-X, `\\a \\b \\E \\f \\n
    \\r \\t \\v` are C's, any other `\\C` is C."""
    n = len(text)
    c = text[i]
    if c == "x" and i + 1 < n and text[i + 1] in _HEX:
        j = i + 1
        while j < n and text[j] in _HEX:
            j += 1
        return chr(int(text[i + 1 : j], 16) & 0xFF), j
    if c == "c" and i + 1 < n:
        return chr(ord(text[i + 1]) & 0x1F), i + 2
    if c in _OCT:
        j = i
        while j < n and j < i + 3 and text[j] in _OCT:
            j += 1
        return chr(int(text[i:j], 8) & 0xFF), j
    return _SIMPLE_ESCAPES.get(c, c), i + 1


def c_unescape(text: str) -> str:
    """keepalived's escapes in script strings (`alloc_strvec_quoted_escaped`, see `_escape`).
    A trailing lone backslash is kept. For `script`/`notify*`/`misc_path` values, after
    lexing (see `script_command`)."""
    if "\\" not in text:
        return text
    buf: list[str] = []
    n = len(text)
    i = 0
    while i < n:
        c = text[i]
        if c != "\\" or i + 1 >= n:
            buf.append(c)
            i += 1
            continue
        ch, i = _escape(text, i + 1)
        buf.append(ch)
    return "".join(buf)


def keepalived_split(text: str) -> list[str] | None:
    """Split a command line into argv as keepalived does (`alloc_strvec_quoted_escaped`):
    words end at blanks; `"..."` and `'...'` quote anywhere in a word; backslash escapes
    work everywhere, inside quotes too. None for an unterminated quote or a trailing
    backslash (keepalived then drops the script)."""
    words: list[str] = []
    n = len(text)
    i = 0
    while True:
        while i < n and text[i] in WS:
            i += 1
        if i >= n:
            return words
        buf: list[str] = []
        quote = ""
        while i < n:
            c = text[i]
            if c == "\\":
                if i + 1 >= n:
                    return None
                ch, i = _escape(text, i + 1)
                buf.append(ch)
            elif quote:
                if c == quote:
                    quote = ""
                else:
                    buf.append(c)
                i += 1
            elif c in "\"'":
                quote = c
                i += 1
            elif c in WS:
                break
            else:
                buf.append(c)
                i += 1
        if quote:
            return None
        words.append("".join(buf))


def script_command(text: str) -> str | None:
    """A lexed script command line as keepalived reads it, in a form `shlex.split` (the
    runtime's splitter) turns into keepalived's argv.

    keepalived reads script lines twice with `alloc_strvec_quoted_escaped`: the config line
    (so the command word gets its C escapes), then the command word itself (split into
    argv, quotes and escapes again). Commands `shlex` already splits the same way come
    back as they are (after the escapes); others are re-quoted with `shlex.join`. None when
    keepalived could not split it (unterminated quote, trailing backslash).
    """
    unescaped = c_unescape(text)
    if not _NEEDS_SPLIT.search(unescaped):
        return unescaped
    argv = keepalived_split(unescaped)
    if argv is None:
        return None
    try:
        if shlex.split(unescaped) == argv:
            return unescaped
    except ValueError:
        pass
    return shlex.join(argv)


_NEEDS_SPLIT = re.compile(r"[\\\"'\f\v\r\n]")


def parse_number(text: str) -> int | None:
    """A C `strtol(s, 0)`-style integer: decimal, 0x hex, leading-0 octal, optional sign."""
    s = text.strip()
    sign = 1
    if s[:1] in "+-" and s:
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if not s:
        return None
    try:
        if s[:2] in ("0x", "0X"):
            return sign * int(s[2:], 16)
        if len(s) > 1 and s[0] == "0":
            return sign * int(s[1:], 8)
        if not s.isdigit():
            return None
        return sign * int(s)
    except ValueError:
        return None


def expand_braces(pattern: str, limit: int = 1024) -> list[str]:
    """Shell/GLOB_BRACE `{a,b}` alternation (nested; `\\{` is literal); at most `limit`."""
    depth = 0
    open_at = -1
    commas: list[int] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            if depth == 0:
                open_at = i
                commas = []
            depth += 1
        elif c == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                if not commas:
                    open_at = -1
                    i += 1
                    continue
                head, tail = pattern[:open_at], pattern[i + 1 :]
                bounds = [open_at, *commas, i]
                out: list[str] = []
                for a, b in itertools.pairwise(bounds):
                    for rest in expand_braces(pattern[a + 1 : b] + tail, limit):
                        out.append(head + rest)
                        if len(out) >= limit:
                            return out
                return out
        elif c == "," and depth == 1:
            commas.append(i)
        i += 1
    return [pattern]
