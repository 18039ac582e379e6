"""Any syntax tree, however wrong, ends in a model plus diagnostics, never an exception."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hakeeper.conf.diagnostics import Diagnostics, Location
from hakeeper.conf.keepalived import build_model
from hakeeper.conf.keywords import TOP
from hakeeper.conf.schema import BlockSpec
from hakeeper.conf.tree import Node, Word

LOC = Location("f", 1, 1)


def _all_keywords() -> list[str]:
    names: set[str] = set()
    stack = [TOP]
    seen: set[int] = set()
    while stack:
        spec = stack.pop()
        if id(spec) in seen:
            continue
        seen.add(id(spec))
        names.update(spec.keywords)
        stack.extend(kw.block for kw in spec.keywords.values() if kw.block is not None)
    return sorted(names)


KEYWORDS = _all_keywords()
VALUES = [
    "1",
    "0",
    "-5",
    "255",
    "256",
    "1.5",
    "nan",
    "inf",
    "10.0.0.1",
    "10.0.0.1/24",
    "fe80::1",
    "10.0.0.1-5",
    "eth0",
    "MASTER",
    "weight",
    "reverse",
    "TUN",
    "type",
    "gue",
    "fwmark",
    "group",
    "",
    "\x00",
    "é",
]

words = st.builds(lambda t: Word(t, LOC), st.sampled_from(KEYWORDS + VALUES))


def _node(children: st.SearchStrategy[tuple[Node, ...] | None]) -> st.SearchStrategy[Node]:
    return st.builds(
        lambda kw, args, ch: Node(kw, tuple(args), ch, LOC if ch is not None else None),
        words,
        st.lists(words, max_size=4),
        children,
    )


trees = st.recursive(
    _node(st.none()),
    lambda inner: _node(st.none() | st.lists(inner, max_size=5).map(tuple)),
    max_leaves=40,
)


def _for_spec(spec: BlockSpec, depth: int) -> st.SearchStrategy[Node]:
    """Nodes whose keywords are valid in `spec` (so the walk goes deep), bad values inside."""

    def one(name: str) -> st.SearchStrategy[Node]:
        kw = spec.keywords[name]
        target = spec.keywords[kw.alias_of] if kw.alias_of else kw
        if target.block is not None and depth < 3:
            children: st.SearchStrategy[tuple[Node, ...] | None] = (
                st.lists(_for_spec(target.block, depth + 1), max_size=4).map(tuple) | st.none()
            )
        elif target.items is not None:
            children = st.lists(_node(st.none()), max_size=3).map(tuple) | st.none()
        else:
            children = st.none() | st.just(())
        return st.builds(
            lambda args, ch: Node(
                Word(name, LOC), tuple(args), ch, LOC if ch is not None else None
            ),
            st.lists(words, max_size=3),
            children,
        )

    return st.sampled_from(sorted(spec.keywords)).flatmap(one)


def _check(nodes: list[Node]) -> None:
    diags = Diagnostics()
    config = build_model(tuple(nodes), diags)
    assert config is not None
    for d in diags:
        assert d.message


@settings(max_examples=60, deadline=None)
@given(st.lists(trees, max_size=6))
def test_build_model_never_raises_on_random_trees(nodes: list[Node]) -> None:
    _check(nodes)


@settings(max_examples=150, deadline=None)
@given(st.lists(_for_spec(TOP, 0), max_size=5))
def test_build_model_never_raises_on_schema_shaped_trees(nodes: list[Node]) -> None:
    _check(nodes)
