"""The block tree builder shared by both dialects: words and braces in, `Node`s out.

keepalived (lib/parser.c `read_line`/`process_stream`): a statement is the words of one
logical line up to a brace; a `{` opens a block for the statement before it on the same
line, or, alone at the start of a line, for the plain statement that ended the previous
line; `}` closes. nginx feeds statements ended by `;` through `open`/`close`/`plain`.

Errors are reported where they can be fixed: an unclosed block at its `{`, a stray `}`
where it stands. Open blocks are a stack, never recursion; blocks nested deeper than
`MAX_DEPTH` are reported once and flattened (a headless frame shares its parent's list
of children, so even 10^5 braces cost linear time), and brace errors beyond
`MAX_BRACE_ERRORS` are summarised in one.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from hakeeper.conf.diagnostics import Diagnostics, Location
from hakeeper.conf.tree import Node, Word, make_node

MAX_DEPTH = 100
"""Blocks nested deeper than this are reported and their contents flattened."""

MAX_BRACE_ERRORS = 50
"""After this many stray/unclosed brace errors the rest are summarised in one."""


_BRACES = frozenset("{}")


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building a tree or model, then age what was built.

    A big config is ~10^6 small acyclic objects: the collections their allocation
    triggers cost ~40% of the lexing time, and the one young collection due when the
    GC is re-enabled would traverse all of them once more (~0.3 s for 2,000 virtual
    servers). So the outermost pause ends by moving every tracked object to the oldest
    generation (`gc.freeze()` + `gc.unfreeze()`, no traversal; skipped when someone
    else froze objects, so theirs stay frozen). Nothing is lost: garbage, if any, is
    found by the next full collection, and the objects built are freed by reference
    counting as usual. Nested pauses are no-ops.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()


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


class TreeBuilder:
    """Open blocks as a stack; `finish()` reports what is still open and returns the tree."""

    __slots__ = ("brace_errors", "diags", "max_depth", "overflow_reported", "pending", "stack")

    def __init__(self, diags: Diagnostics, max_depth: int = MAX_DEPTH) -> None:
        self.diags = diags
        self.max_depth = max_depth
        self.stack: list[_Frame] = [_Frame(None, (), None)]
        self.overflow_reported = False
        self.brace_errors = 0
        # True when the last child of the current block is a plain statement that ended
        # at the end of its line: a `{` starting the next line opens its block.
        self.pending = False

    def _brace_error(self, loc: Location | None, message: str) -> None:
        self.brace_errors += 1
        if self.brace_errors <= MAX_BRACE_ERRORS:
            self.diags.error(loc, message)
        elif self.brace_errors == MAX_BRACE_ERRORS + 1:
            self.diags.error(loc, "too many brace errors; the rest are not reported")

    def plain(self, keyword: Word, args: tuple[Word, ...]) -> None:
        """A statement without a block."""
        self.stack[-1].children.append(make_node(keyword, args))

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
            siblings.append(make_node(head, args))
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
                make_node(frame.head, frame.args, tuple(frame.children), frame.open_loc, close)
            )

    def line(self, words: list[Word]) -> None:
        """One keepalived logical line (braces are unquoted `{`/`}` words)."""
        n = len(words)
        i = 0
        while i < n:
            word = words[i]
            text = word.text
            if text in _BRACES and not word.quoted:
                if text == "}":
                    self.close(word.loc)
                elif i == 0 and self.pending:
                    prev = self.stack[-1].children.pop()
                    self.open(prev.keyword, prev.args, word.loc)
                else:
                    self.open(None, (), word.loc)
                self.pending = False
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
                self.open(word, args, words[j].loc)
                self.pending = False
                i = j + 1
            else:
                self.plain(word, args)
                self.pending = j == n
                i = j

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


def build_tree(lines: list[list[Word]], diags: Diagnostics) -> tuple[Node, ...]:
    """Build keepalived's block tree from logical lines of words."""
    builder = TreeBuilder(diags)
    for words in lines:
        builder.line(words)
    return builder.finish()
