"""keepalived.conf lexing: statements, blocks, comments, quotes, locations and brace errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hakeeper.conf.diagnostics import Diagnostics, Location
from hakeeper.conf.files import MemoryFiles
from hakeeper.conf.lexer import LexOptions, parse_keepalived_file, parse_keepalived_text
from hakeeper.conf.lexwords import c_unescape
from hakeeper.conf.tree import Node

SAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "keepalived-samples"


def lex(text: str, **options: object) -> tuple[tuple[Node, ...], Diagnostics]:
    diags = Diagnostics()
    opts = LexOptions(files=MemoryFiles({}), **options)  # type: ignore[arg-type]
    return parse_keepalived_text(text, "k.conf", diags, options=opts), diags


def shape(nodes: tuple[Node, ...]) -> list[object]:
    """A compact, comparable rendering: plain statements as tuples, blocks as dicts."""
    out: list[object] = []
    for n in nodes:
        item = (n.name, *n.arg_texts())
        out.append({item: shape(n.children)} if n.children is not None else item)
    return out


def messages(diags: Diagnostics) -> list[str]:
    return [d.format() for d in diags]


def test_statements_blocks_and_locations() -> None:
    text = "global_defs {\n  router_id LVS_1\n}\nvrrp_instance VI_1 {\n\tstate MASTER\n}\n"
    nodes, diags = lex(text)
    assert not diags.items
    assert shape(nodes) == [
        {("global_defs",): [("router_id", "LVS_1")]},
        {("vrrp_instance", "VI_1"): [("state", "MASTER")]},
    ]
    gd, vi = nodes
    assert gd.loc == Location("k.conf", 1, 1)
    assert gd.open_loc == Location("k.conf", 1, 13)
    assert gd.close_loc == Location("k.conf", 3, 1)
    assert gd.children is not None
    router_id = gd.children[0]
    assert router_id.loc == Location("k.conf", 2, 3)
    assert router_id.args[0].loc == Location("k.conf", 2, 13)
    assert vi.children is not None
    assert vi.children[0].args[0].loc == Location("k.conf", 5, 8)  # tab counts as one column


def test_several_braces_and_statements_on_one_line() -> None:
    nodes, diags = lex("virtual_ipaddress { 10.0.0.1 }\na { b { c d } e }\nx{y}\n")
    assert not diags.items
    assert shape(nodes) == [
        {("virtual_ipaddress",): [("10.0.0.1",)]},
        {("a",): [{("b",): [("c", "d")]}, ("e",)]},
        {("x",): [("y",)]},
    ]


def test_closing_braces_together() -> None:
    nodes, diags = lex("a {\n b {\n  c\n} }\nd\n")
    assert not diags.items
    assert shape(nodes) == [{("a",): [{("b",): [("c",)]}]}, ("d",)]


def test_open_brace_alone_on_next_line_belongs_to_previous_statement() -> None:
    nodes, diags = lex("virtual_server 10.0.0.1 80\n# comment between\n\n{\n  lb_algo rr\n}\n")
    assert not diags.items
    assert shape(nodes) == [{("virtual_server", "10.0.0.1", "80"): [("lb_algo", "rr")]}]
    assert nodes[0].open_loc == Location("k.conf", 4, 1)


def test_brace_after_block_content_on_same_line_is_not_taken_from_previous_line() -> None:
    nodes, diags = lex("a\nb {\n}\n")
    assert not diags.items
    assert shape(nodes) == [("a",), {("b",): []}]


def test_empty_block() -> None:
    nodes, diags = lex("track_script {\n}\n")
    assert not diags.items
    assert nodes[0].children == ()
    assert nodes[0].is_block


def test_comments_hash_and_bang_anywhere_outside_quotes() -> None:
    text = (
        "! full line\n# full line\n  inhibit_on_failure ! trailing\n"
        'script "killall -0 sshd"        # cheaper than pidof\n'
        "interface eth0.1\t\t# Vlaned interface\n"
        "a#b\n"
    )
    nodes, diags = lex(text)
    assert not diags.items
    assert shape(nodes) == [
        ("inhibit_on_failure",),
        ("script", "killall -0 sshd"),
        ("interface", "eth0.1"),
        ("a",),
    ]


def test_escaped_comment_characters_are_literal() -> None:
    nodes, _ = lex("smtp_server a\\#b c\\!d\n")
    assert nodes[0].arg_texts() == ("a#b", "c!d")


def test_quoted_strings_and_escapes() -> None:
    text = (
        'notify "/bin/echo \\"a b\\" # not a comment"\n'
        "notify_backup '/usr/bin/x  y'\n"
        'x "tab\\there" "\\x41\\101\\cA" ""\n'
        "owner don't\n"
        'glued ab"c d"e\n'
    )
    nodes, diags = lex(text)
    assert not diags.items
    assert shape(nodes) == [
        ("notify", '/bin/echo "a b" # not a comment'),
        ("notify_backup", "/usr/bin/x  y"),
        ("x", "tab\\there", "\\x41\\101\\cA", ""),  # backslashes kept, like keepalived
        ("owner", "don't"),
        ("glued", "abc de"),
    ]
    assert nodes[0].args[0].quoted
    assert not nodes[3].args[0].quoted
    assert nodes[2].args[2].quoted  # an empty quoted string is still an argument
    assert nodes[0].args[0].loc == Location("k.conf", 1, 8)


def test_backslashes_in_quotes_survive_for_regexes_and_c_unescape_serves_scripts() -> None:
    nodes, diags = lex(
        'regex "^\\d+\\\\" \'a\\\'b\'\nnotify "printf \\"%s\\n\\" \\x41\\101\\cA\\q"\n'
    )
    assert not diags.items
    assert shape(nodes) == [
        ("regex", "^\\d+\\\\", "a'b"),
        ("notify", 'printf "%s\\n" \\x41\\101\\cA\\q'),
    ]
    assert c_unescape(nodes[1].args[0].text) == 'printf "%s\n" AA\x01q'
    assert c_unescape("no escapes") == "no escapes"
    assert c_unescape("tail\\") == "tail\\"


def test_braces_inside_quotes_are_text() -> None:
    nodes, diags = lex('a "{" \'}\'\nb "x { y }"\n')
    assert not diags.items
    assert shape(nodes) == [("a", "{", "}"), ("b", "x { y }")]


def test_unterminated_quote_is_an_error_at_the_quote() -> None:
    nodes, diags = lex('script "abc def\nnext line\n')
    assert messages(diags) == ['k.conf:1:8: error: unterminated quoted string (missing closing ")']
    assert shape(nodes) == [("script", "abc def"), ("next", "line")]


def test_unclosed_block_reported_at_its_open_brace() -> None:
    text = "vrrp_instance VI_1 {\n  state MASTER\n  virtual_ipaddress {\n    10.0.0.1\n}\n"
    nodes, diags = lex(text)
    assert messages(diags) == [
        "k.conf:1:20: error: block 'vrrp_instance' opened here is never closed (missing '}')"
    ]
    assert nodes[0].close_loc is None
    assert shape(nodes) == [
        {
            ("vrrp_instance", "VI_1"): [
                ("state", "MASTER"),
                {("virtual_ipaddress",): [("10.0.0.1",)]},
            ]
        }
    ]


def test_stray_close_brace() -> None:
    nodes, diags = lex("a\n}\nb\n")
    assert messages(diags) == ["k.conf:2:1: error: unexpected '}' with no open block"]
    assert shape(nodes) == [("a",), ("b",)]


def test_open_brace_without_keyword_is_an_error_and_its_content_is_kept() -> None:
    nodes, diags = lex("a {\n}\n{\n b\n}\nc\n")
    assert messages(diags) == ["k.conf:3:1: error: unexpected '{' with no keyword before it"]
    assert shape(nodes) == [{("a",): []}, ("b",), ("c",)]


def test_non_ascii_blanks_separate_words_with_one_warning_per_file() -> None:
    # keepalived splits on " \\t\\f\\n\\r\\v" only; U+00A0 pasted from a web page is read
    # as the blank the user meant, on every path, and said once per file.
    text = '\xa0 global_defs {\n\xa0\xa0 router_id\xa0a b # c\n\xa0 script "x\xa0y"\n}\n'
    nodes, diags = lex(text)
    assert shape(nodes) == [{("global_defs",): [("router_id", "a", "b"), ("script", "x\xa0y")]}]
    assert messages(diags) == [
        "k.conf:1:1: warning: non-ASCII blanks (e.g. U+00A0) read as spaces on 3 line(s) "
        "of this file; keepalived itself would keep them inside words"
    ]


def test_crlf_and_blank_lines() -> None:
    nodes, diags = lex("a {\r\n\r\n  b 1\r\n}\r\n")
    assert not diags.items
    assert shape(nodes) == [{("a",): [("b", "1")]}]


def test_deep_nesting_is_flattened_with_one_error() -> None:
    depth = 5000
    nodes, diags = lex("a {\n" * depth + "}\n" * depth)
    assert len(diags.errors) == 1
    assert "nested deeper" in diags.errors[0].message
    level = 0
    node = nodes[0]
    while node.children:
        node = node.children[0]
        level += 1
    assert level <= 101


def test_parse_file_missing_is_an_error_not_an_exception() -> None:
    diags = Diagnostics()
    nodes = parse_keepalived_file(
        "/nonexistent/keepalived.conf", diags, options=LexOptions(files=MemoryFiles({}))
    )
    assert nodes == ()
    assert diags.has_errors
    assert "cannot read" in diags.errors[0].message


def test_parse_file_from_disk(tmp_path: Path) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text("include sub/*.conf\nglobal_defs {\n}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.conf").write_text("vrrp_script s {\n script x\n}\n")
    diags = Diagnostics()
    nodes = parse_keepalived_file(str(conf), diags)
    assert not diags.items
    assert [n.name for n in nodes] == ["vrrp_script", "global_defs"]
    assert nodes[0].loc == Location(str(tmp_path / "sub" / "a.conf"), 1, 1)


@pytest.fixture
def samples() -> list[Path]:
    if not SAMPLES.is_dir():
        pytest.skip("tests/fixtures/keepalived-samples is missing")
    files = sorted(p for p in SAMPLES.iterdir() if p.name != "README.txt")
    assert len(files) >= 20
    return files


@pytest.mark.parametrize("config_id", [None, "high", "low"])
def test_every_keepalived_sample_lexes_without_diagnostics(
    samples: list[Path], config_id: str | None
) -> None:
    for path in samples:
        diags = Diagnostics()
        nodes = parse_keepalived_file(str(path), diags, options=LexOptions(config_id=config_id))
        assert messages(diags) == [], path.name
        assert nodes, path.name


def test_sample_conditional_conf_follows_config_id(samples: list[Path]) -> None:
    path = SAMPLES / "keepalived.conf.conditional_conf"
    for config_id, namespace, priority in (("high", "high", "170"), ("low", "low", "85")):
        diags = Diagnostics()
        nodes = parse_keepalived_file(str(path), diags, options=LexOptions(config_id=config_id))
        assert shape(nodes)[0] == ("net_namespace", namespace)
        instance = next(n for n in nodes if n.name == "vrrp_instance")
        assert instance.children is not None
        prio = [c.arg_texts() for c in instance.children if c.name == "priority"]
        assert prio == [(priority,)]
    diags = Diagnostics()
    nodes = parse_keepalived_file(str(path), diags, options=LexOptions(config_id=None))
    assert [n.name for n in nodes] == ["vrrp_script", "vrrp_instance"]
