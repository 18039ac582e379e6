"""The config lexer: keepalived.conf and nginx.conf text -> `Node` trees with locations.

keepalived dialect (keepalived.conf(5), lib/parser.c): a statement ends at the end of
its line; `{` opens a block, on the keyword's line or alone on the next line; several
braces and statements may share a line (`virtual_ipaddress { 10.0.0.1 }`, `} }`).
Comments, quotes, `@ID` lines, macros, generators and includes are handled first by
`hakeeper.conf.preprocess`. nginx dialect (nginx's ngx_conf_read_token): statements end
at `;`, `#` comments start at a token, `"`/`'` strings with `\\` escapes, `$var` and
`include` are left to the nginx reader.

Every problem goes to the `Diagnostics` sink; any input (binary junk, 10^5 braces,
macro bombs) ends in a tree plus diagnostics in bounded time, never an exception.
Nesting deeper than `MAX_DEPTH` is reported and flattened so tree walkers can recurse.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager

from hakeeper.conf.diagnostics import Diagnostics, Location
from hakeeper.conf.preprocess import FileReader, LexOptions, Preprocessor, slot_setter
from hakeeper.conf.tree import Node, Word

__all__ = [
    "MAX_BRACE_ERRORS",
    "MAX_DEPTH",
    "FileReader",
    "LexOptions",
    "build_tree",
    "parse_keepalived_file",
    "parse_keepalived_text",
    "parse_nginx_file",
    "parse_nginx_text",
]

MAX_DEPTH = 100
"""Blocks nested deeper than this are reported and their contents flattened."""


def _default_reader() -> FileReader:
    # The only door to the real filesystem; imported lazily so this module stays pure.
    from hakeeper.conf.files import OsFiles  # noqa: PLC0415

    return OsFiles()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building: the tree is ~10^5 acyclic objects, and the
    collections their allocation triggers cost ~40% of the lexing time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_keepalived_text(
    text: str, filename: str, diags: Diagnostics, *, options: LexOptions | None = None
) -> tuple[Node, ...]:
    """Lex keepalived.conf `text` (named `filename` in locations and for relative includes)."""
    opts = options if options is not None else LexOptions()
    reader = opts.files if opts.files is not None else _default_reader()
    with _gc_paused():
        lines = Preprocessor(diags, opts, reader).run(text, filename)
        return build_tree(lines, diags)


def parse_keepalived_file(
    path: str, diags: Diagnostics, *, options: LexOptions | None = None
) -> tuple[Node, ...]:
    """Read `path` through `options.files` (default: the real filesystem) and lex it."""
    opts = options if options is not None else LexOptions()
    reader = opts.files if opts.files is not None else _default_reader()
    text = _read(reader, path, diags)
    if text is None:
        return ()
    with _gc_paused():
        lines = Preprocessor(diags, opts, reader).run(text, path)
        return build_tree(lines, diags)


def _read(reader: FileReader, path: str, diags: Diagnostics) -> str | None:
    try:
        return reader.read_text(path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        diags.error(None, f"cannot read configuration file '{path}': {reason}")
        return None


# -- the block tree ------------------------------------------------------------------


class _Frame:
    """An open block while its closing brace is awaited.

    A frame without a head (a stray `{`, or a block nested too deeply) shares its
    parent's children list, so its contents are spliced into the parent for free.
    """

    __slots__ = ("args", "children", "head", "open_loc", "stray")

    def __init__(
        self,
        head: Word | None,
        args: tuple[Word, ...],
        open_loc: Location | None,
        children: list[Node] | None = None,
        stray: bool = False,
    ) -> None:
        self.head = head
        self.args = args
        self.open_loc = open_loc
        self.children: list[Node] = children if children is not None else []
        self.stray = stray


MAX_BRACE_ERRORS = 50
"""After this many stray/unclosed brace errors the rest are summarised in one."""


_NEW = object.__new__
_N_KW = slot_setter(Node, "keyword")
_N_ARGS = slot_setter(Node, "args")
_N_CHILDREN = slot_setter(Node, "children")
_N_OPEN = slot_setter(Node, "open_loc")
_N_CLOSE = slot_setter(Node, "close_loc")


def _node(
    keyword: Word,
    args: tuple[Word, ...],
    children: tuple[Node, ...] | None,
    open_loc: Location | None,
    close_loc: Location | None,
) -> Node:
    # Same object Node(...) would build, without the frozen __init__'s overhead.
    node: Node = _NEW(Node)
    _N_KW(node, keyword)
    _N_ARGS(node, args)
    _N_CHILDREN(node, children)
    _N_OPEN(node, open_loc)
    _N_CLOSE(node, close_loc)
    return node


class _TreeBuilder:
    """Open blocks as a stack (never recursion), so any nesting depth is safe."""

    __slots__ = ("brace_errors", "diags", "max_depth", "overflow_reported", "stack")

    def __init__(self, diags: Diagnostics, max_depth: int = MAX_DEPTH) -> None:
        self.diags = diags
        self.max_depth = max_depth
        self.stack: list[_Frame] = [_Frame(None, (), None)]
        self.overflow_reported = False
        self.brace_errors = 0

    def _brace_error(self, loc: Location | None, message: str) -> None:
        self.brace_errors += 1
        if self.brace_errors <= MAX_BRACE_ERRORS:
            self.diags.error(loc, message)
        elif self.brace_errors == MAX_BRACE_ERRORS + 1:
            self.diags.error(loc, "too many brace errors; the rest are not reported")

    def open(self, head: Word | None, args: tuple[Word, ...], brace: Location) -> None:
        siblings = self.stack[-1].children
        if head is None:
            self._brace_error(brace, "unexpected '{' with no keyword before it")
            self.stack.append(_Frame(None, (), brace, siblings, stray=True))
        elif len(self.stack) > self.max_depth:
            if not self.overflow_reported:
                self.overflow_reported = True
                self.diags.error(
                    brace, f"blocks nested deeper than {self.max_depth}; inner blocks flattened"
                )
            siblings.append(_node(head, args, None, None, None))
            self.stack.append(_Frame(None, (), brace, siblings))
        else:
            self.stack.append(_Frame(head, args, brace))

    def close(self, brace: Location) -> None:
        if len(self.stack) == 1:
            self._brace_error(brace, "unexpected '}' with no open block")
            return
        self._pop(brace)

    def _pop(self, close: Location | None) -> None:
        frame = self.stack.pop()
        if frame.head is not None:
            self.stack[-1].children.append(
                _node(frame.head, frame.args, tuple(frame.children), frame.open_loc, close)
            )

    def finish(self) -> tuple[Node, ...]:
        while len(self.stack) > 1:
            frame = self.stack[-1]
            if frame.head is not None:
                self.diags.error(
                    frame.open_loc,
                    f"block '{frame.head.text}' opened here is never closed (missing '}}')",
                )
            elif frame.stray:
                self._brace_error(frame.open_loc, "'{' opened here is never closed")
            self._pop(None)
        return tuple(self.stack[0].children)


_BRACES = frozenset("{}")


def build_tree(lines: list[list[Word]], diags: Diagnostics) -> tuple[Node, ...]:
    """Build keepalived's block tree from logical lines (braces are unquoted words)."""
    builder = _TreeBuilder(diags)
    stack = builder.stack
    # True when the last child of the current block is a plain statement that ended at
    # the end of its line: a `{` starting the next line opens that statement's block.
    pending = False
    for words in lines:
        n = len(words)
        i = 0
        while i < n:
            word = words[i]
            text = word.text
            if text in _BRACES and not word.quoted:
                if text == "}":
                    builder.close(word.loc)
                elif i == 0 and pending:
                    prev = stack[-1].children.pop()
                    builder.open(prev.keyword, prev.args, word.loc)
                else:
                    builder.open(None, (), word.loc)
                pending = False
                i += 1
                continue
            j = i + 1
            while j < n:
                w = words[j]
                if w.text in _BRACES and not w.quoted:
                    break
                j += 1
            args = tuple(words[i + 1 : j])
            if j < n and words[j].text == "{":
                builder.open(word, args, words[j].loc)
                pending = False
                i = j + 1
            else:
                stack[-1].children.append(_node(word, args, None, None, None))
                pending = j == n
                i = j
    return builder.finish()


# -- nginx ---------------------------------------------------------------------------

_NGINX_TOKEN = re.compile(
    r"""
    (?P<nl>\n)
  | (?P<ws>[ \t\r\f\v]+)
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
    with _gc_paused():
        return _parse_nginx(text, filename, diags)


def _parse_nginx(text: str, filename: str, diags: Diagnostics) -> tuple[Node, ...]:
    builder = _TreeBuilder(diags)
    stack = builder.stack
    words: list[Word] = []
    line = 1
    line_start = 0
    for m in _NGINX_TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "nl":
            line += 1
            line_start = m.end()
            continue
        if kind in ("ws", "comment"):
            continue
        start = m.start()
        loc = Location(filename, line, start - line_start + 1)
        token = m.group()
        if kind == "punct":
            if token == ";":
                if words:
                    stack[-1].children.append(_node(words[0], tuple(words[1:]), None, None, None))
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
                    stack[-1].children.append(_node(words[0], tuple(words[1:]), None, None, None))
                    words = []
                builder.close(loc)
            continue
        if kind == "badquote":
            diags.error(loc, f"unterminated quoted string (missing closing {token})")
            if words:  # keep what came before; one error is enough
                stack[-1].children.append(_node(words[0], tuple(words[1:]), None, None, None))
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
        stack[-1].children.append(_node(words[0], tuple(words[1:]), None, None, None))
    return builder.finish()


def parse_nginx_file(path: str, diags: Diagnostics) -> tuple[Node, ...]:
    """Read and lex one nginx.conf file (its `include` statements are left in the tree)."""
    text = _read(_default_reader(), path, diags)
    if text is None:
        return ()
    return parse_nginx_text(text, path, diags)
