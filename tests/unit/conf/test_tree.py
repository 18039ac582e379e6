"""Word and Node: tuples for speed, but constructed, compared and shown like dataclasses."""

from __future__ import annotations

import gc
import pickle

from hakeeper.conf.blocks import gc_paused
from hakeeper.conf.diagnostics import Diagnostics, Location
from hakeeper.conf.lexer import parse_keepalived_text
from hakeeper.conf.tree import Node, Word, make_node, make_word

LOC = Location("k.conf", 3, 5)


def test_word_keeps_its_fields_and_builds_its_location_on_demand() -> None:
    w = Word("eth0", LOC, True)
    assert (w.text, w.loc, w.quoted) == ("eth0", LOC, True)
    assert Word("eth0", LOC).quoted is False
    assert w == make_word("eth0", "k.conf", 3, 5, True)
    assert hash(w) == hash(make_word("eth0", "k.conf", 3, 5, True))
    assert w != Word("eth0", LOC)
    assert repr(w) == f"Word(text='eth0', loc={LOC!r}, quoted=True)"
    assert pickle.loads(pickle.dumps(w)) == w
    match w:
        case Word(text, loc, quoted):
            assert (text, loc, quoted) == ("eth0", LOC, True)


def test_node_keeps_its_fields() -> None:
    kw = Word("vrrp_instance", LOC)
    arg = Word("VI_1", Location("k.conf", 3, 19))
    plain = Node(kw, (arg,))
    assert (plain.keyword, plain.args, plain.children) == (kw, (arg,), None)
    assert (plain.name, plain.loc, plain.is_block, plain.arg_texts()) == (
        "vrrp_instance",
        LOC,
        False,
        ("VI_1",),
    )
    block = Node(kw, (), (plain,), LOC, Location("k.conf", 9, 1))
    assert block.is_block and block.children == (plain,)
    assert block.close_loc == Location("k.conf", 9, 1)
    assert make_node(kw, (arg,)) == plain
    assert pickle.loads(pickle.dumps(block)) == block
    assert repr(plain).startswith("Node(keyword=Word(text='vrrp_instance'")


def test_lexed_words_carry_exact_columns() -> None:
    nodes = parse_keepalived_text(
        "global_defs {\n  router_id  r1\n\taab a\n}\n", "k.conf", Diagnostics()
    )
    (block,) = nodes
    assert block.open_loc == Location("k.conf", 1, 13)
    assert block.close_loc == Location("k.conf", 4, 1)
    first, second = block.children or ()
    assert [str(w.loc) for w in (first.keyword, *first.args)] == ["k.conf:2:3", "k.conf:2:14"]
    # "aab a": the value's column is searched after the keyword, not inside it
    assert [str(w.loc) for w in (second.keyword, *second.args)] == ["k.conf:3:2", "k.conf:3:6"]


def test_gc_paused_restores_the_collector_and_keeps_foreign_freezes() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # only the outermost pause re-enables
        built = [[i] for i in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    assert len(built) == 1000
    gc.freeze()  # someone else's frozen objects stay frozen
    try:
        frozen = gc.get_freeze_count()
        with gc_paused():
            pass
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
