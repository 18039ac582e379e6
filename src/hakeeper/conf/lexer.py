"""The config lexer: keepalived.conf and nginx.conf text -> `Node` trees with locations.

keepalived dialect (keepalived.conf(5), lib/parser.c): a statement ends at the end of
its line; `{` opens a block, on the keyword's line or alone on the next line; several
braces and statements may share a line (`virtual_ipaddress { 10.0.0.1 }`, `} }`).
Comments, quotes and words are `hakeeper.conf.lexwords`; `@ID` lines, macros,
generators and includes `hakeeper.conf.preprocess`; blocks `hakeeper.conf.blocks`.
nginx dialect (nginx's ngx_conf_read_token): statements end at `;`, `#` comments start
at a token, `"`/`'` strings with `\\` escapes, `$var` and `include` are left to the nginx reader.

Every problem goes to the `Diagnostics` sink; any input (binary junk, 10^5 braces,
macro bombs) ends in a tree plus diagnostics in bounded time, never an exception.
Nesting deeper than `MAX_DEPTH` is reported and flattened so tree walkers can recurse.
"""

from __future__ import annotations

import re

from hakeeper.conf.blocks import (
    MAX_BRACE_ERRORS,
    MAX_DEPTH,
    TreeBuilder,
    build_tree,
    gc_paused,
)
from hakeeper.conf.diagnostics import Diagnostics, Location
from hakeeper.conf.preprocess import FileReader, LexOptions, Preprocessor
from hakeeper.conf.tree import Node, Word

__all__ = [
    "MAX_BRACE_ERRORS",
    "MAX_DEPTH",
    "FileReader",
    "LexOptions",
    "build_tree",
    "gc_paused",
    "parse_keepalived_file",
    "parse_keepalived_text",
    "parse_nginx_file",
    "parse_nginx_text",
]


def _default_reader() -> FileReader:
    # The only door to the real filesystem; imported lazily so this module stays pure.
    from hakeeper.conf.files import OsFiles  # noqa: PLC0415

    return OsFiles()


def parse_keepalived_text(
    text: str, filename: str, diags: Diagnostics, *, options: LexOptions | None = None
) -> tuple[Node, ...]:
    """Lex keepalived.conf `text` (named `filename` in locations and for relative includes)."""
    opts = options if options is not None else LexOptions()
    reader = opts.files if opts.files is not None else _default_reader()
    with gc_paused():
        return Preprocessor(diags, opts, reader).run(text, filename)


def parse_keepalived_file(
    path: str, diags: Diagnostics, *, options: LexOptions | None = None
) -> tuple[Node, ...]:
    """Read `path` through `options.files` (default: the real filesystem) and lex it."""
    opts = options if options is not None else LexOptions()
    reader = opts.files if opts.files is not None else _default_reader()
    text = _read(reader, path, diags)
    if text is None:
        return ()
    with gc_paused():
        return Preprocessor(diags, opts, reader).run(text, path)


def _read(reader: FileReader, path: str, diags: Diagnostics) -> str | None:
    try:
        return reader.read_text(path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        diags.error(None, f"cannot read configuration file '{path}': {reason}")
        return None


# -- nginx ---------------------------------------------------------------------------

_NGINX_TOKEN = re.compile(
    r"""
    (?P<nl>\n)
  | (?P<ws>[^\S\n]+)
  | (?P<comment>\#[^\n]*)
  | (?P<punct>[;{}])
  | (?P<quoted>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<badquote>["'])
  | (?P<word>(?:\$\{[^}\n]*\}|\\.|[^\s;{}"'\\\#])(?:\$\{[^}\n]*\}|\\.|[^\s;{}\\])*)
  | (?P<other>.)
    """,
    re.X | re.S,
)
_NGINX_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}
_NGINX_ESCAPE = re.compile(r"\\(.)", re.S)


def _nginx_unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return _NGINX_ESCAPE.sub(lambda m: _NGINX_ESCAPES.get(m.group(1), m.group(0)), text)


def parse_nginx_text(text: str, filename: str, diags: Diagnostics) -> tuple[Node, ...]:
    """Lex nginx.conf text: `;`-terminated statements and `{}` blocks, includes untouched."""
    with gc_paused():
        return _parse_nginx(text, filename, diags)


def _parse_nginx(text: str, filename: str, diags: Diagnostics) -> tuple[Node, ...]:
    builder = TreeBuilder(diags)
    words: list[Word] = []
    line = 1
    line_start = 0
    odd_first: Location | None = None  # first non-ASCII blank (U+00A0 from web pages)
    odd_lines: set[int] = set()
    for m in _NGINX_TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "nl":
            line += 1
            line_start = m.end()
            continue
        if kind == "ws":
            if m.group().strip(" \t\r\f\v"):
                odd_lines.add(line)
                if odd_first is None:
                    odd = m.start() + next(
                        i for i, c in enumerate(m.group()) if c not in " \t\r\f\v"
                    )
                    odd_first = Location(filename, line, odd - line_start + 1)
            continue
        if kind == "comment":
            continue
        start = m.start()
        loc = Location(filename, line, start - line_start + 1)
        token = m.group()
        if kind == "punct":
            if token == ";":
                if words:
                    builder.plain(words[0], tuple(words[1:]))
                    words = []
                else:
                    diags.error(loc, "unexpected ';'")
            elif token == "{":
                if words:
                    builder.open(words[0], tuple(words[1:]), loc)
                    words = []
                else:
                    builder.open(None, (), loc)
            else:
                if words:
                    diags.error(words[-1].loc, "missing ';' before '}'")
                    builder.plain(words[0], tuple(words[1:]))
                    words = []
                builder.close(loc)
            continue
        if kind == "badquote":
            diags.error(loc, f"unterminated quoted string (missing closing {token})")
            if words:  # keep what came before; one error is enough
                builder.plain(words[0], tuple(words[1:]))
                words = []
            break
        if kind == "other":
            diags.error(loc, f"unexpected {token!r}")
            continue
        if kind == "quoted":
            words.append(Word(_nginx_unescape(token[1:-1]), loc, True))
            end = m.end()
            if end < len(text) and text[end] not in " \t\r\n\f\v;{})":
                diags.error(
                    Location(filename, line, end - line_start + 1),
                    f"unexpected {text[end]!r} after a quoted string",
                )
        else:
            words.append(Word(_nginx_unescape(token), loc))
        newlines = token.count("\n")
        if newlines:
            line += newlines
            line_start = start + token.rfind("\n") + 1
    if words:
        diags.error(words[0].loc, "unexpected end of file, expecting ';' or '}'")
        builder.plain(words[0], tuple(words[1:]))
    if odd_first is not None:
        diags.warning(
            odd_first,
            f"non-ASCII blanks (e.g. U+00A0) read as spaces on {len(odd_lines)} line(s) of this "
            "file; nginx itself would keep them inside words",
        )
    return builder.finish()


def parse_nginx_file(path: str, diags: Diagnostics) -> tuple[Node, ...]:
    """Read and lex one nginx.conf file (its `include` statements are left in the tree)."""
    text = _read(_default_reader(), path, diags)
    if text is None:
        return ()
    return parse_nginx_text(text, path, diags)
