"""keepalived.conf preprocessing: @ID lines, $NAME macros, builtins, ~SEQ/~LST, includes."""

from __future__ import annotations

import random

import pytest

from hakeeper.conf.diagnostics import Diagnostics, Location
from hakeeper.conf.files import MemoryFiles
from hakeeper.conf.lexer import LexOptions, parse_keepalived_file, parse_keepalived_text
from hakeeper.conf.lexwords import decomment, expand_braces, parse_number
from hakeeper.conf.tree import Node


def lex(
    text: str, files: dict[str, str] | None = None, **options: object
) -> tuple[tuple[Node, ...], Diagnostics]:
    diags = Diagnostics()
    opts = LexOptions(files=MemoryFiles(files or {}), **options)  # type: ignore[arg-type]
    return parse_keepalived_text(text, "/etc/keepalived/k.conf", diags, options=opts), diags


def flat(nodes: tuple[Node, ...]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for n in nodes:
        out.append((n.name, *n.arg_texts()))
        if n.children:
            out.extend(("  " + name, *rest) for name, *rest in flat(n.children))
    return out


def messages(diags: Diagnostics) -> list[str]:
    return [d.format() for d in diags]


# -- @ID conditional lines -------------------------------------------------------------


@pytest.mark.parametrize(
    ("config_id", "expected"),
    [
        ("high", [("both",), ("prio", "170"), ("not_low",)]),
        ("low", [("both",), ("prio", "85"), ("not_high",)]),
        (None, [("both",), ("not_high",), ("not_low",)]),
    ],
)
def test_conditional_lines(config_id: str | None, expected: list[tuple[str, ...]]) -> None:
    text = "both\n@high prio 170\n@low\tprio 85\n@^high not_high\n@^low not_low\n@high\n"
    nodes, diags = lex(text, config_id=config_id)
    assert not diags.items
    assert flat(nodes) == expected


def test_conditional_line_keeps_word_columns() -> None:
    nodes, _ = lex("@high   priority 170\n", config_id="high")
    assert nodes[0].loc == Location("/etc/keepalived/k.conf", 1, 9)
    assert nodes[0].args[0].loc.col == 18


# -- macros ------------------------------------------------------------------------------


def test_definitions_and_expansion() -> None:
    text = (
        "$IP=10.0.0.1\n"
        "$PORT= 80\n"
        "$ADDR=$IP $PORT\n"
        "virtual_server $ADDR {\n"
        "  real_server ${IP} ${PORT}\n"
        "}\n"
        "$PORT=443\n"
        "later $PORT\n"
    )
    nodes, diags = lex(text)
    assert not diags.items
    assert flat(nodes) == [
        ("virtual_server", "10.0.0.1", "80"),
        ("  real_server", "10.0.0.1", "80"),
        ("later", "443"),
    ]
    # Expanded words point at the macro reference.
    assert nodes[0].args[0].loc == Location("/etc/keepalived/k.conf", 4, 16)
    assert nodes[0].args[1].loc == Location("/etc/keepalived/k.conf", 4, 16)


def test_blank_before_equals_is_not_a_definition_like_keepalived() -> None:
    nodes, diags = lex("$PORT = 80\nnext\n")
    assert flat(nodes) == [("next",)]
    assert messages(diags) == [
        "/etc/keepalived/k.conf:1:1: error: no blank allowed between a macro name and '=' "
        "(keepalived would read this line as a keyword); line ignored"
    ]


def test_macro_can_hold_braces_and_keywords() -> None:
    nodes, diags = lex(
        "$VIPS=virtual_ipaddress { 10.0.0.1 10.0.0.2 }\nvrrp_instance A {\n$VIPS\n}\n"
    )
    assert not diags.items
    assert flat(nodes) == [
        ("vrrp_instance", "A"),
        ("  virtual_ipaddress",),
        ("    10.0.0.1", "10.0.0.2"),  # one line inside braces is one statement
    ]


def test_multiline_definition() -> None:
    text = (
        "$CHECK= \\\n"
        "  TCP_CHECK { \\\n"
        "     connect_timeout 3 \\\n"
        "  }\n"
        "real_server 1.2.3.4 80 {\n"
        "  $CHECK\n"
        "}\n"
    )
    nodes, diags = lex(text)
    assert not diags.items
    assert flat(nodes) == [
        ("real_server", "1.2.3.4", "80"),
        ("  TCP_CHECK",),
        ("    connect_timeout", "3"),
    ]
    # Every line of the expansion points at the reference.
    assert nodes[0].children is not None
    check = nodes[0].children[0]
    assert check.loc == Location("/etc/keepalived/k.conf", 6, 3)
    assert check.children is not None
    assert check.children[0].loc == Location("/etc/keepalived/k.conf", 6, 3)


def test_comment_lines_and_trailing_comments_keep_columns() -> None:
    nodes, diags = lex("# c\n  a b   # c\n\tc ! d\n")
    assert not diags.items
    assert [(n.name, n.loc.line, n.loc.col) for n in nodes] == [("a", 2, 3), ("c", 3, 2)]
    assert nodes[0].args[0].loc.col == 5


def test_multiline_macro_must_end_its_line() -> None:
    nodes, diags = lex("$M=a \\\n b\nx $M y\n")
    assert flat(nodes) == [("x", "$M", "y")]
    assert "must end its line" in diags.warnings[0].message


def test_undefined_macros_warn_but_shell_variables_in_quotes_do_not() -> None:
    nodes, diags = lex('a $NOPE ${ALSO_NOPE}\nscript "echo $HOME"\nb $HOME/x\n')
    assert flat(nodes) == [
        ("a", "$NOPE", "${ALSO_NOPE}"),
        ("script", "echo $HOME"),
        ("b", "$HOME/x"),
    ]
    assert messages(diags) == [
        "/etc/keepalived/k.conf:1:3: warning: undefined macro $NOPE; left unexpanded",
        "/etc/keepalived/k.conf:1:9: warning: undefined macro $ALSO_NOPE; left unexpanded",
    ]


def test_defined_macro_glued_to_text_is_not_expanded_like_keepalived() -> None:
    nodes, diags = lex("$DIR=/opt\nscript $DIR/check.sh\nscript ${DIR}/check.sh\nlist $DIR,$DIR\n")
    assert flat(nodes) == [
        ("script", "$DIR/check.sh"),
        ("script", "/opt/check.sh"),
        ("list", "/opt,/opt"),
    ]
    assert len(diags.warnings) == 1
    assert "write ${DIR}" in diags.warnings[0].message


def test_recursive_macro_is_an_error_not_a_hang() -> None:
    nodes, diags = lex("$A=x ${B}\n$B=${A}\nline ${A}\nnext\n")
    assert flat(nodes) == [("next",)]
    assert len(diags.errors) == 1
    assert "nested deeper" in diags.errors[0].message
    assert diags.errors[0].loc == Location("/etc/keepalived/k.conf", 3, 6)


def test_macro_bomb_is_bounded() -> None:
    lines = ["$B0=xxxxxxxx"] + [f"$B{i}=${{B{i - 1}}} ${{B{i - 1}}}" for i in range(1, 30)]
    nodes, diags = lex("\n".join([*lines, "boom ${B29}", "after"]) + "\n")
    assert flat(nodes) == [("after",)]
    assert "longer than" in diags.errors[0].message


def test_builtins() -> None:
    text = (
        "pwd ${_PWD}\n"
        "inst ${_INSTANCE} $_INSTANCE\n"
        'chars "${_HASH}x ${_BANG}y" ${_BANG} cut\n'
        "env ${_ENV HOME} ${_ENV MISSING}\n"
        "rand ${_RANDOM} ${_RANDOM 5} ${_RANDOM 3 4}\n"
    )
    nodes, diags = lex(text, config_id="lb1", env={"HOME": "/root"}, rng=random.Random(7))
    got = flat(nodes)
    assert got[0] == ("pwd", "/etc/keepalived")
    assert got[1] == ("inst", "lb1", "lb1")
    # Unquoted, they start a comment again (keepalived decomments after expansion).
    assert got[2] == ("chars", "#x !y")
    assert got[3] == ("env", "/root")  # an unset variable expands to nothing
    assert "MISSING is not set" in diags.warnings[0].message
    rand = [int(v) for v in got[4][1:]]
    assert 0 <= rand[0] <= 32767
    assert 5 <= rand[1] <= 32767
    assert 3 <= rand[2] <= 4


def test_random_is_reproducible_from_the_seed() -> None:
    text = "r ${_RANDOM 1 1000000} ${_RANDOM 1 1000000}\n"
    first, _ = lex(text, rng_seed=42)
    again, _ = lex(text, rng_seed=42)
    other, _ = lex(text, rng_seed=43)
    assert flat(first) == flat(again)
    assert flat(first) != flat(other)


def test_instance_option_overrides_config_id() -> None:
    nodes, _ = lex("i ${_INSTANCE}\n", config_id="host", instance="blue")
    assert flat(nodes) == [("i", "blue")]


def test_user_definition_overrides_builtin() -> None:
    nodes, _ = lex("$_HASH=hash\nh ${_HASH}\n")
    assert flat(nodes) == [("h", "hash")]


# -- generators ----------------------------------------------------------------------------


def test_seq_forms() -> None:
    text = (
        "~SEQ(i, 3) a $i\n"
        "~SEQ(i, 5, 3) b $i\n"
        "~SEQ(i, 0, 5, 10) c $i\n"
        "~SEQx(i, 9, 12) d $i\n"
        "~SEQ(i, -2) e $i\n"
        "~SEQ(i, 0x10, 0x11) f $i\n"
    )
    nodes, diags = lex(text)
    assert not diags.items
    assert flat(nodes) == [
        ("a", "1"),
        ("a", "2"),
        ("a", "3"),
        ("b", "5"),
        ("b", "4"),
        ("b", "3"),
        ("c", "0"),
        ("c", "5"),
        ("c", "10"),
        ("d", "9"),
        ("d", "a"),
        ("d", "b"),
        ("d", "c"),
        ("e", "-1"),
        ("e", "-2"),
        ("f", "16"),
        ("f", "17"),
    ]


def test_seq_parameters_may_be_macros_and_nest() -> None:
    text = "$N=2\n~SEQ(i, 1, $N) ~SEQ(j, 1, ${N}) real_server 10.0.${i}.$j 80\n"
    nodes, diags = lex(text)
    assert not diags.items
    assert [n.arg_texts()[0] for n in nodes] == ["10.0.1.1", "10.0.1.2", "10.0.2.1", "10.0.2.2"]
    assert nodes[0].loc == Location("/etc/keepalived/k.conf", 2, 33)


def test_seq_generates_blocks() -> None:
    text = "virtual_server 10.0.0.1 80 {\n~SEQ(n,1,2) real_server 10.1.0.$n 80 { weight $n }\n}\n"
    nodes, diags = lex(text)
    assert not diags.items
    assert flat(nodes) == [
        ("virtual_server", "10.0.0.1", "80"),
        ("  real_server", "10.1.0.1", "80"),
        ("    weight", "1"),
        ("  real_server", "10.1.0.2", "80"),
        ("    weight", "2"),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "~SEQ(i) x",
        "~SEQ i, 1, 2 x",
        "~SEQ(i, a, 3) x",
        "~SEQ(i, 1, 0, 3) x",
        "~SEQ(i, 3, 1, 1) x",
        "~SEQ(i, 1, 2, 3, 4) x",
        "~SEQx(i, -1, 3) x",
        "~SEQ(i, 1, 3 x",
        "~LST(i) x",
        "~LST(i, {1,2) x",
        "~LST({a,b}, {1,2,3}) x",
    ],
)
def test_bad_generators_are_errors(line: str) -> None:
    nodes, diags = lex(line + "\nnext\n")
    assert flat(nodes) == [("next",)]
    assert len(diags.errors) == 1
    assert diags.errors[0].message.startswith(f"invalid {line[:4]} specification")
    assert diags.errors[0].loc == Location("/etc/keepalived/k.conf", 1, 1)


def test_lst_forms() -> None:
    text = (
        "~LST(ip, 10.0.0.1, 10.0.0.2) a $ip\n"
        "~LST({ip,port}, {10.0.0.3, 80}, {10.0.0.4}) b $ip $port\n"
    )
    nodes, diags = lex(text)
    assert not diags.items
    assert flat(nodes) == [
        ("a", "10.0.0.1"),
        ("a", "10.0.0.2"),
        ("b", "10.0.0.3", "80"),
        ("b", "10.0.0.4"),  # a missing value is empty
    ]


def test_generator_bomb_is_bounded() -> None:
    text = "~SEQ(a,1,1000) ~SEQ(b,1,1000) ~SEQ(c,1,1000) x $a $b $c\nafter\n"
    diags = Diagnostics()
    opts = LexOptions(files=MemoryFiles({}), max_generated_lines=5000)
    nodes = parse_keepalived_text(text, "k.conf", diags, options=opts)
    assert len(diags.errors) == 1
    assert "more than 5000" in diags.errors[0].message
    assert len(nodes) < 5000


def test_macro_expanding_to_a_generator() -> None:
    nodes, diags = lex("$GEN=~SEQ(i,1,2) item $i\n$GEN\n")
    assert not diags.items
    assert flat(nodes) == [("item", "1"), ("item", "2")]


# -- includes --------------------------------------------------------------------------------


def test_include_glob_relative_to_including_file() -> None:
    files = {
        "/etc/keepalived/conf.d/b.conf": "vrrp_instance B {\n}\n",
        "/etc/keepalived/conf.d/a.conf": "vrrp_instance A {\n include ../vips/*.inc\n}\n",
        "/etc/keepalived/vips/x.inc": "virtual_ipaddress { 10.0.0.9 }\n",
        "/etc/keepalived/conf.d/skip.txt": "nope\n",
    }
    nodes, diags = lex("include conf.d/*.conf\nafter\n", files)
    assert not diags.items
    assert flat(nodes) == [
        ("vrrp_instance", "A"),
        ("  virtual_ipaddress",),
        ("    10.0.0.9",),
        ("vrrp_instance", "B"),
        ("after",),
    ]
    assert nodes[0].loc == Location("/etc/keepalived/conf.d/a.conf", 1, 1)
    assert nodes[0].children is not None
    assert nodes[0].children[0].loc.file == "/etc/keepalived/vips/x.inc"


def test_include_brace_alternation_and_macros() -> None:
    files = {"/etc/keepalived/one.conf": "one\n", "/etc/keepalived/two.conf": "two\n"}
    nodes, diags = lex("$D=${_PWD}\ninclude ${D}/{two,one}.conf\n", files)
    assert not diags.items
    assert flat(nodes) == [("two",), ("one",)]


def test_missing_include_is_a_warning_and_strict_variants_are_errors() -> None:
    nodes, diags = lex(
        "include missing.conf\ninclude nothing/*.conf\nincluder gone.conf\nincludew none/*.x\nok\n"
    )
    assert flat(nodes) == [("ok",)]
    assert [(d.severity.value, d.loc.line if d.loc else 0) for d in diags] == [
        ("warning", 1),
        ("warning", 2),
        ("error", 3),
        ("error", 4),
    ]


def test_include_loop_is_an_error() -> None:
    files = {
        "/etc/keepalived/k.conf": "top\ninclude a.conf\n",
        "/etc/keepalived/a.conf": "a\ninclude k.conf\n",
    }
    diags = Diagnostics()
    opts = LexOptions(files=MemoryFiles(files))
    nodes = parse_keepalived_file("/etc/keepalived/k.conf", diags, options=opts)
    assert flat(nodes) == [("top",), ("a",)]
    assert messages(diags) == [
        "/etc/keepalived/a.conf:2:1: error: include loop: "
        "'/etc/keepalived/k.conf' is already being read"
    ]


def test_deep_include_chain_is_bounded() -> None:
    files = {f"/c/{i}.conf": f"level{i}\ninclude {i + 1}.conf\n" for i in range(100)}
    diags = Diagnostics()
    opts = LexOptions(files=MemoryFiles(files), max_include_depth=10)
    nodes = parse_keepalived_file("/c/0.conf", diags, options=opts)
    assert len(nodes) == 11
    assert "nested deeper than 10" in diags.errors[0].message


def test_block_may_span_included_files_like_keepalived() -> None:
    files = {"/etc/keepalived/open.inc": "vrrp_instance X {\n state MASTER\n"}
    nodes, diags = lex("include open.inc\n}\n", files)
    assert not diags.items
    assert flat(nodes) == [("vrrp_instance", "X"), ("  state", "MASTER")]
    assert nodes[0].open_loc == Location("/etc/keepalived/open.inc", 1, 17)
    assert nodes[0].close_loc == Location("/etc/keepalived/k.conf", 2, 1)


def test_include_check_keyword_is_not_an_include() -> None:
    nodes, diags = lex("global_defs {\n include_check\n}\n")
    assert not diags.items
    assert flat(nodes) == [("global_defs",), ("  include_check",)]


# -- helpers -----------------------------------------------------------------------------------


def test_expand_braces() -> None:
    assert expand_braces("a{b,c}d") == ["abd", "acd"]
    assert expand_braces("{x,y{1,2}}") == ["x", "y1", "y2"]
    assert expand_braces("no{brace}") == ["no{brace}"]
    assert expand_braces("\\{a,b}") == ["\\{a,b}"]
    assert len(expand_braces("{a,b}" * 20, limit=100)) == 100


def test_parse_number_is_strtol_like() -> None:
    assert [parse_number(s) for s in ("10", " -3 ", "0x1f", "010", "+7")] == [10, -3, 31, 8, 7]
    assert [parse_number(s) for s in ("", "abc", "0x", "1.5", "09")] == [None] * 5


def test_decomment() -> None:
    assert decomment("  a b  # c") == (2, 5, False)
    assert decomment('a "b # c" ! d') == (0, 9, False)
    assert decomment("$X=a \\") == (0, 4, True)
    assert decomment("! all") == (0, 0, False)
