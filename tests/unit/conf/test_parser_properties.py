"""End to end, any input gives a model plus diagnostics: never an exception, never a hang.

The lexer and the model builder have their own robustness tests; these drive the whole
path an operator's file takes (`load_keepalived`: read, preprocess, lex, build,
cross-check, then `dump_json` as `hakeeper dump --json` prints it) with:

* arbitrary bytes written to a real file (invalid UTF-8, NULs, CRs included);
* mutations of the real samples and seeds (lines dropped, duplicated, swapped, cut
  short; keepalived keywords, braces, numbers and addresses inserted), so the model
  builder sees near-valid structure rather than noise it rejects at the first word.

Each example runs under a wall-clock alarm, so a hang shows up as a failure rather than
as a stuck test run.
"""

from __future__ import annotations

import json
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hakeeper.conf.diagnostics import Diagnostics, Severity
from hakeeper.conf.dump import dump_json
from hakeeper.conf.keepalived import build_model, load_keepalived
from hakeeper.conf.keywords import TOP
from hakeeper.conf.lexer import LexOptions, parse_keepalived_text
from hakeeper.conf.model import KeepalivedConfig
from hakeeper.conf.schema import BlockSpec

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CORPUS = sorted(
    [
        *(FIXTURES / "keepalived-samples").glob("keepalived.conf.*"),
        *(FIXTURES / "seeds").glob("*.keepalived.conf"),
    ]
)
CORPUS_TEXT = [p.read_text(encoding="utf-8") for p in CORPUS]

PER_EXAMPLE_S = 10  # generous: a normal example takes milliseconds


class HangError(Exception):
    pass


@contextmanager
def alarm(seconds: int) -> Iterator[None]:
    """Raise HangError in this (main) thread when the block runs longer than `seconds`."""

    def fire(signum: int, frame: FrameType | None) -> None:
        raise HangError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _keywords() -> list[str]:
    names: set[str] = set()
    todo: list[BlockSpec] = [TOP]
    seen: set[int] = set()
    while todo:
        spec = todo.pop()
        if id(spec) in seen:
            continue
        seen.add(id(spec))
        names.update(spec.keywords)
        todo.extend(kw.block for kw in spec.keywords.values() if kw.block is not None)
    return sorted(names)


KEYWORDS = _keywords()
VALUES = [
    "0",
    "1",
    "-1",
    "255",
    "256",
    "4294967296",
    "1.5",
    "0.001",
    "nan",
    "1e400",
    "MASTER",
    "BACKUP",
    "on",
    "off",
    "10.0.0.1",
    "10.0.0.1/24",
    "10.0.0.256",
    "192.168.100./24",
    "fe80::1",
    "::",
    "2001:db8::1/129",
    "eth0",
    "lo",
    '"quoted value"',
    "'single'",
    '"unterminated',
    "{",
    "}",
    "}}",
    "{{",
    "#",
    "!",
    "$X",
    "${X}",
    "$X=1",
    "@id",
    "@^id",
    "~SEQ(i,1,3)",
    "include /nonexistent/*.conf",
    "\u00a0",
    "\t",
    "\\",
    "\x00",
    "\udcff",
]
TOKENS = KEYWORDS + VALUES


def _check(config: KeepalivedConfig | None, diags: Diagnostics, text: str) -> None:
    assert config is not None
    n_lines = text.count("\n") + 1
    for d in diags:
        assert d.severity in (Severity.ERROR, Severity.WARNING)
        assert d.message
        assert d.format()
        if d.loc is not None:
            assert d.loc.line >= 1
            assert d.loc.col >= 1
            if d.loc.file.endswith("fuzz.conf"):
                assert d.loc.line <= n_lines, d.format()
    # what `hakeeper dump --json` would print must be valid JSON
    json.loads(dump_json(config))


def _build(text: str) -> tuple[KeepalivedConfig, Diagnostics]:
    diags = Diagnostics()
    nodes = parse_keepalived_text(
        text, "/etc/keepalived/fuzz.conf", diags, options=LexOptions(config_id="id")
    )
    return build_model(nodes, diags), diags


# -- arbitrary bytes through the real file path ------------------------------------


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="hk-fuzz-") as d:
        yield Path(d)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2000))
def test_any_bytes_from_a_file(scratch: Path, data: bytes) -> None:
    path = scratch / "fuzz.conf"
    path.write_bytes(data)
    with alarm(PER_EXAMPLE_S):
        config, diags = load_keepalived(str(path), config_id="id")
        _check(config, diags, data.decode("utf-8", errors="surrogateescape"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=1500))
def test_any_text(text: str) -> None:
    with alarm(PER_EXAMPLE_S):
        config, diags = _build(text)
        _check(config, diags, text)


# -- near-valid input: the real configs, mutated ---------------------------------------


@st.composite
def mutated_config(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(CORPUS_TEXT)).split("\n")
    for _ in range(draw(st.integers(1, 8))):
        if not lines:
            lines = [""]
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "dup", "swap", "cut", "insert", "replace", "append"]))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "cut":
            lines[i] = lines[i][: draw(st.integers(0, max(0, len(lines[i]))))]
        else:
            words = draw(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=5))
            fragment = " ".join(words)
            if op == "insert":
                lines.insert(i, fragment)
            elif op == "replace":
                lines[i] = fragment
            else:
                lines[i] = f"{lines[i]} {fragment}"
    return "\n".join(lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=mutated_config())
def test_mutated_real_configs(text: str) -> None:
    with alarm(PER_EXAMPLE_S):
        config, diags = _build(text)
        _check(config, diags, text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    words=st.lists(
        st.lists(st.sampled_from(TOKENS), min_size=1, max_size=6).map(" ".join), max_size=80
    )
)
def test_keyword_soup(words: list[str]) -> None:
    text = "\n".join(words)
    with alarm(PER_EXAMPLE_S):
        config, diags = _build(text)
        _check(config, diags, text)


# -- the corpus itself, and bombs end to end ------------------------------------------


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_dumps_as_json(path: Path) -> None:
    config, diags = load_keepalived(str(path), config_id="id")
    _check(config, diags, path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "text",
    [
        "vrrp_instance VI {\n" * 20_000,
        "}\n" * 20_000,
        "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n" * 5_000,
        "$A=x\n"
        + "".join(
            f"$A{i}=${{A{i - 1 if i else ''}}}${{A{i - 1 if i else ''}}}\n" for i in range(40)
        ),
        pytest.param("~SEQ(i,1,1,100000000) x $i\n", marks=pytest.mark.slow),
        "include " + "/x" * 5000 + "\n",
        "virtual_ipaddress {\n" + "10.0.0.1\n" * 50_000 + "}\n",
    ],
    ids=[
        "deep-instances",
        "closing-braces",
        "deep-servers",
        "macro-doubling",
        "seq-huge",
        "long-include",
        "many-vips-top",
    ],
)
def test_bombs_end_with_diagnostics(text: str) -> None:
    with alarm(60):
        config, diags = _build(text)
        _check(config, diags, text)
