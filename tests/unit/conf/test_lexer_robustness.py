"""Any input ends in a tree plus diagnostics, in bounded time: property tests and bombs.

The 2,000 x 5 speed figure is measured in bench/; here only a generous bound guards
against an accidental quadratic path.
"""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.files import MemoryFiles
from hakeeper.conf.lexer import (
    MAX_BRACE_ERRORS,
    LexOptions,
    parse_keepalived_text,
    parse_nginx_text,
)
from hakeeper.conf.tree import Node

INCLUDED = {
    "/etc/keepalived/a.conf": "a {\n include b.conf\n",
    "/etc/keepalived/b.conf": "b $X ${_RANDOM 1 3}\n}\ninclude a.conf\n",
}
OPTIONS = LexOptions(config_id="high", files=MemoryFiles(INCLUDED), env={"E": "v"})

# Fragments that exercise every feature, glued together at random.
FRAGMENTS = [
    "\n",
    " ",
    "\t",
    "{",
    "}",
    '"',
    "'",
    "\\",
    "#",
    "!",
    "$",
    "${",
    "$X=",
    "$X",
    "${X}",
    "$Y=${X}${X} \\\n",
    "@high ",
    "@^low ",
    "~SEQ(i,1,3) ",
    "~SEQx(i,0,2,8) ",
    "~LST({a,b},{1,2},{3}) ",
    "~LST(i,1,2) ",
    "include a.conf\n",
    "include *.conf\n",
    "include {a,b}.conf\n",
    "vrrp_instance VI_1 ",
    "virtual_ipaddress { 10.0.0.1 }\n",
    "${_ENV E}",
    "${_PWD}",
    "${_RANDOM 1 2}",
    "\x00",
    "\udcff",
    "é",
    "\r\n",
    ";",
]


def _check_tree(nodes: tuple[Node, ...]) -> int:
    """Walk the tree without recursion; return the node count."""
    count = 0
    todo = list(nodes)
    while todo:
        node = todo.pop()
        count += 1
        assert isinstance(node.keyword.text, str)
        assert node.keyword.loc.line >= 1
        assert node.keyword.loc.col >= 1
        if node.children is not None:
            todo.extend(node.children)
    return count


def _lex_keepalived(text: str) -> tuple[tuple[Node, ...], Diagnostics]:
    diags = Diagnostics()
    nodes = parse_keepalived_text(text, "/etc/keepalived/k.conf", diags, options=OPTIONS)
    _check_tree(nodes)
    return nodes, diags


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_keepalived_any_bytes(data: bytes) -> None:
    _lex_keepalived(data.decode("utf-8", errors="surrogateescape"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join))
def test_keepalived_any_mix_of_features(text: str) -> None:
    _lex_keepalived(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_nginx_any_bytes(data: bytes) -> None:
    diags = Diagnostics()
    _check_tree(parse_nginx_text(data.decode("utf-8", errors="replace"), "n.conf", diags))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join))
def test_nginx_any_mix(text: str) -> None:
    diags = Diagnostics()
    _check_tree(parse_nginx_text(text, "n.conf", diags))


def test_many_braces_end_quickly() -> None:
    started = time.monotonic()
    for text in ("{" * 100_000, "a {\n" * 100_000, "}" * 20_000, "{}" * 20_000):
        _, diags = _lex_keepalived(text)
        assert diags.has_errors
        assert len(diags) <= 2 * MAX_BRACE_ERRORS + 2  # summarised, not 10^5 messages
        diags = Diagnostics()
        _check_tree(parse_nginx_text(text, "n.conf", diags))
        assert diags.has_errors
    assert time.monotonic() - started < 60


def test_macro_and_generator_bombs_end_quickly() -> None:
    doubling = [f"$B{i}=${{B{i - 1}}}${{B{i - 1}}}" for i in range(1, 31)]
    bombs = [
        "\n".join(["$B0=xxxxxxxxxxxxxxxx", *doubling]) + "\nboom ${B30}\n" * 50,
        "~SEQ(a,1,1000000) ~SEQ(b,1,1000000) x $a $b\n",
        "$A=${A}\nx ${A}\n" * 100,
        "$L=" + "${_HASH}" * 20_000 + "\n" + "x ${L} ${L} ${L}\n" * 100,
    ]
    small = LexOptions(files=MemoryFiles({}), max_generated_lines=10_000, max_expansions=20_000)
    started = time.monotonic()
    for text in bombs:
        diags = Diagnostics()
        _check_tree(parse_keepalived_text(text, "k.conf", diags, options=small))
        assert diags.has_errors
    # The default bounds stop a runaway generator too.
    _, diags = _lex_keepalived("~SEQ(a,1,999999999999) x\n")
    assert "more than 100000" in diags.errors[0].message
    assert time.monotonic() - started < 60


def _big_config(n_vs: int, n_rs: int) -> str:
    out = ["global_defs {", "  router_id LVS_BENCH", "}"]
    for v in range(n_vs):
        out += [
            f"virtual_server 10.{v // 250}.{v % 250}.1 80 {{",
            "    lb_algo rr",
            "    lb_kind NAT",
        ]
        for r in range(n_rs):
            out += [
                f"    real_server 192.168.{v % 250}.{r + 10} 8080 {{",
                "        weight 1",
                "        TCP_CHECK {",
                "            connect_timeout 3",
                "        }",
                "    }",
            ]
        out.append("}")
    return "\n".join(out) + "\n"


def test_large_config_lexes_in_linear_time() -> None:
    text = _big_config(400, 5)  # 1/5 of the bench/ size
    diags = Diagnostics()
    started = time.monotonic()
    nodes = parse_keepalived_text(
        text, "big.conf", diags, options=LexOptions(files=MemoryFiles({}))
    )
    elapsed = time.monotonic() - started
    assert not diags.items
    assert _check_tree(nodes) == 1 + 1 + 400 * (3 + 5 * 4)
    assert elapsed < 5  # generous: ~0.1 s on an idle laptop


# -- round trip: a random well-formed tree, printed in random layouts, lexes back ---------

_WORD = st.text(alphabet="abcxyz0189_./:-", min_size=1, max_size=8).filter(
    lambda w: not w.startswith("include")
)
_QUOTED = st.text(alphabet="ab c#!{}'$", min_size=0, max_size=8)
_ARG = st.one_of(_WORD.map(lambda w: (w, False)), _QUOTED.map(lambda q: (q, True)))


def _statements(depth: int) -> st.SearchStrategy[list[tuple[str, list[tuple[str, bool]], object]]]:
    children: st.SearchStrategy[object] = (
        st.one_of(st.none(), st.deferred(lambda: _statements(depth - 1)))
        if depth > 0
        else st.none()
    )
    return st.lists(st.tuples(_WORD, st.lists(_ARG, max_size=3), children), max_size=4)


def _render(stmts: list[tuple[str, list[tuple[str, bool]], object]], layout: st.DataObject) -> str:
    out: list[str] = []
    for keyword, args, children in stmts:
        words = [keyword] + [
            '"' + text.replace('"', '\\"') + '"' if quoted else text for text, quoted in args
        ]
        line = " ".join(words)
        if children is None:
            out.append(line + layout.draw(st.sampled_from(["", "  # note", "\t! note"])) + "\n")
            continue
        brace = layout.draw(st.sampled_from([" {", "{", "\n{", "\n\n  {"]))
        body = _render(children, layout)  # type: ignore[arg-type]
        out.append(line + brace + "\n" + body + layout.draw(st.sampled_from(["}", "  }"])) + "\n")
    return "".join(out)


def _expected(stmts: list[tuple[str, list[tuple[str, bool]], object]]) -> list[object]:
    got: list[object] = []
    for keyword, args, children in stmts:
        item = (keyword, tuple(args))
        got.append({item: _expected(children)} if children is not None else item)  # type: ignore[arg-type]
    return got


def _actual(nodes: tuple[Node, ...]) -> list[object]:
    got: list[object] = []
    for n in nodes:
        item = (n.name, tuple((w.text, w.quoted) for w in n.args))
        got.append({item: _actual(n.children)} if n.children is not None else item)
    return got


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_statements(3), st.data())
def test_keepalived_round_trip(
    stmts: list[tuple[str, list[tuple[str, bool]], object]], layout: st.DataObject
) -> None:
    text = _render(stmts, layout)
    diags = Diagnostics()
    nodes = parse_keepalived_text(text, "k.conf", diags, options=LexOptions(files=MemoryFiles({})))
    assert not diags.items, text
    assert _actual(nodes) == _expected(stmts), text
