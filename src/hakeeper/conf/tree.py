"""The syntax tree shared by the config readers: statements with arguments and blocks.

The lexer (`hakeeper.conf.lexer`) turns keepalived.conf (newline-terminated) or
nginx.conf (semicolon-terminated) text into this tree after includes, macros,
conditionals and generators are expanded; the dialect readers
(`hakeeper.conf.keepalived`, later `hakeeper.conf.nginx`) turn the tree into the typed
model. Every word keeps its source location so diagnostics can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hakeeper.conf.diagnostics import Location


@dataclass(frozen=True, slots=True)
class Word:
    """One token after expansion: `quoted` is true when it came from a quoted string."""

    text: str
    loc: Location
    quoted: bool = False


@dataclass(frozen=True, slots=True)
class Node:
    """One statement: `keyword arg...` optionally followed by a `{ ... }` block.

    `children` is None for a plain statement and a tuple (maybe empty) for a block;
    `open_loc`/`close_loc` are where the braces were (close_loc is None when the
    block was never closed; the lexer reports that error at open_loc).
    """

    keyword: Word
    args: tuple[Word, ...] = ()
    children: tuple[Node, ...] | None = None
    open_loc: Location | None = None
    close_loc: Location | None = None

    @property
    def name(self) -> str:
        return self.keyword.text

    @property
    def loc(self) -> Location:
        return self.keyword.loc

    @property
    def is_block(self) -> bool:
        return self.children is not None

    def arg_texts(self) -> tuple[str, ...]:
        return tuple(w.text for w in self.args)
