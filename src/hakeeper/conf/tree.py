"""The syntax tree shared by the config readers: statements with arguments and blocks.

The lexer (`hakeeper.conf.lexer`) turns keepalived.conf (newline-terminated) or
nginx.conf (semicolon-terminated) text into this tree after includes, macros,
conditionals and generators are expanded; the dialect readers
(`hakeeper.conf.keepalived`, `hakeeper.conf.nginx`) turn the tree into the typed
model. Every word keeps its source position so diagnostics can point at it.

A big config is ~10^5 statements and ~2x10^5 words, so `Word` is built for speed: an
immutable tuple `(text, file, line, col, quoted)` made by one C call (`make_word`), whose
`loc` is a `Location` built only when asked for (mostly: when a diagnostic is reported).
"""

from __future__ import annotations

from operator import itemgetter
from typing import TYPE_CHECKING, Any

from hakeeper.conf.diagnostics import Location, make_location

__all__ = ["Node", "Word", "make_node", "make_word"]

_tuple_new = tuple.__new__


class Word(tuple[str, str, int, int, bool]):
    """One token after expansion: `quoted` is true when it came from a quoted string.

    Construct as `Word(text, loc, quoted=False)`; compares, hashes and pickles by value.
    """

    __slots__ = ()
    __match_args__ = ("text", "loc", "quoted")

    def __new__(cls, text: str, loc: Location, quoted: bool = False) -> Word:
        return _tuple_new(cls, (text, loc.file, loc.line, loc.col, quoted))

    if TYPE_CHECKING:

        @property
        def text(self) -> str: ...

        @property
        def quoted(self) -> bool: ...

    else:
        text = property(itemgetter(0), doc="The word after quotes and macros are resolved.")
        quoted = property(itemgetter(4), doc="True when the word came from a quoted string.")

    @property
    def loc(self) -> Location:
        """Where the word starts (built on each access; equal each time)."""
        return make_location(self[1], self[2], self[3])

    @property
    def file(self) -> str:
        return self[1]

    @property
    def line(self) -> int:
        return self[2]

    def __repr__(self) -> str:
        return f"Word(text={self[0]!r}, loc={self.loc!r}, quoted={self[4]!r})"

    def __getnewargs__(self) -> tuple[str, Location, bool]:
        return (self[0], self.loc, self[4])


def make_node(
    keyword: Word,
    args: tuple[Word, ...],
    children: tuple[Node, ...] | None = None,
    open_loc: Location | None = None,
    close_loc: Location | None = None,
) -> Node:
    """The same object `Node(...)` builds, without a Python-level call of its own."""
    node: Node = _tuple_new(Node, (keyword, args, children, open_loc, close_loc))
    return node


def make_word(text: str, file: str, line: int, col: int, quoted: bool = False) -> Word:
    """The same object `Word(text, Location(file, line, col), quoted)` builds, faster."""
    word: Word = _tuple_new(Word, (text, file, line, col, quoted))
    return word


class Node(tuple[Any, ...]):
    """One statement: `keyword arg...` optionally followed by a `{ ... }` block.

    `children` is None for a plain statement and a tuple (maybe empty) for a block;
    `open_loc`/`close_loc` are where the braces were (close_loc is None when the
    block was never closed; the lexer reports that error at open_loc). An immutable
    tuple `(keyword, args, children, open_loc, close_loc)` like `Word`, for speed.
    """

    __slots__ = ()
    __match_args__ = ("keyword", "args", "children", "open_loc", "close_loc")

    def __new__(
        cls,
        keyword: Word,
        args: tuple[Word, ...] = (),
        children: tuple[Node, ...] | None = None,
        open_loc: Location | None = None,
        close_loc: Location | None = None,
    ) -> Node:
        return _tuple_new(cls, (keyword, args, children, open_loc, close_loc))

    if TYPE_CHECKING:

        @property
        def keyword(self) -> Word: ...

        @property
        def args(self) -> tuple[Word, ...]: ...

        @property
        def children(self) -> tuple[Node, ...] | None: ...

        @property
        def open_loc(self) -> Location | None: ...

        @property
        def close_loc(self) -> Location | None: ...

    else:
        keyword = property(itemgetter(0))
        args = property(itemgetter(1))
        children = property(itemgetter(2))
        open_loc = property(itemgetter(3))
        close_loc = property(itemgetter(4))

    @property
    def name(self) -> str:
        text: str = self[0][0]
        return text

    @property
    def loc(self) -> Location:
        return self.keyword.loc

    @property
    def is_block(self) -> bool:
        return self[2] is not None

    def arg_texts(self) -> tuple[str, ...]:
        return tuple(w[0] for w in self[1])

    def __repr__(self) -> str:
        return (
            f"Node(keyword={self[0]!r}, args={self[1]!r}, children={self[2]!r}, "
            f"open_loc={self[3]!r}, close_loc={self[4]!r})"
        )

    def __getnewargs__(self) -> tuple[Any, ...]:
        return tuple(self)
