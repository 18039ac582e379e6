"""A strict parser of the Prometheus text exposition format 0.0.4, for tests.

Stricter than Prometheus itself on purpose: only `# HELP` / `# TYPE` comments, each at
most once per family and before the family's samples; TYPE for every family; families
never interleaved; sample names equal to their family's (no histograms or summaries
here); label names valid and not repeated; label values with only the escapes `\\\\`,
`\\"`, `\\n`; no duplicate series; counters non-negative; a final newline and no blank
line. Any breach raises `FormatError` naming the line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = ("counter", "gauge", "untyped", "summary", "histogram")

Series = tuple[tuple[str, str], ...]


class FormatError(ValueError):
    pass


@dataclass
class ParsedFamily:
    name: str
    type: str = ""
    help: str | None = None
    samples: dict[Series, float] = field(default_factory=dict)


def _unescape_help(text: str, n: int) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt == "\\":
                out.append("\\")
            elif nxt == "n":
                out.append("\n")
            else:
                raise FormatError(f"line {n}: bad escape in HELP")
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _value(text: str, n: int) -> float:
    if text in ("NaN", "+Inf", "-Inf"):
        return {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}[text]
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise FormatError(f"line {n}: bad value {text!r}")
    return float(text)


def _labels(line: str, i: int, n: int) -> tuple[Series, int]:
    """Parse `{a="x",b="y"}` starting at line[i] == '{'; returns labels and the index after."""
    assert line[i] == "{"
    i += 1
    labels: list[tuple[str, str]] = []
    while True:
        if line[i : i + 1] == "}":
            return tuple(labels), i + 1
        m = LABEL.match(line, i)
        if m is None:
            raise FormatError(f"line {n}: bad label name at column {i}")
        name = m.group()
        if name.startswith("__"):
            raise FormatError(f"line {n}: reserved label name {name}")
        i = m.end()
        if line[i : i + 2] != '="':
            raise FormatError(f'line {n}: expected =" after {name}')
        i += 2
        value: list[str] = []
        while True:
            if i >= len(line):
                raise FormatError(f"line {n}: unterminated label value")
            c = line[i]
            if c == "\\":
                nxt = line[i + 1 : i + 2]
                if nxt not in ('"', "\\", "n"):
                    raise FormatError(f"line {n}: bad escape \\{nxt} in label value")
                value.append("\n" if nxt == "n" else nxt)
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                value.append(c)
                i += 1
        if any(k == name for k, _ in labels):
            raise FormatError(f"line {n}: label {name} repeated")
        labels.append((name, "".join(value)))
        if line[i : i + 1] == ",":
            i += 1
        elif line[i : i + 1] != "}":
            raise FormatError(f"line {n}: expected , or }} after a label")


def parse(text: str) -> dict[str, ParsedFamily]:
    if text and not text.endswith("\n"):
        raise FormatError("no final newline")
    families: dict[str, ParsedFamily] = {}
    order: list[str] = []
    for n, line in enumerate(text.split("\n")[:-1], 1):
        if not line.strip():
            raise FormatError(f"line {n}: blank line")
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
                raise FormatError(f"line {n}: only # HELP and # TYPE comments expected")
            name = parts[2]
            if not NAME.fullmatch(name):
                raise FormatError(f"line {n}: bad metric name {name!r}")
            fam = families.get(name)
            if fam is None:
                fam = families[name] = ParsedFamily(name)
                order.append(name)
            elif order[-1] != name:
                raise FormatError(f"line {n}: family {name} interleaved")
            if fam.samples:
                raise FormatError(f"line {n}: {parts[1]} of {name} after its samples")
            rest = parts[3] if len(parts) > 3 else ""
            if parts[1] == "HELP":
                if fam.help is not None:
                    raise FormatError(f"line {n}: second HELP for {name}")
                fam.help = _unescape_help(rest, n)
            else:
                if fam.type:
                    raise FormatError(f"line {n}: second TYPE for {name}")
                if rest not in TYPES:
                    raise FormatError(f"line {n}: bad type {rest!r}")
                fam.type = rest
            continue
        m = NAME.match(line)
        if m is None:
            raise FormatError(f"line {n}: bad sample line")
        name, i = m.group(), m.end()
        labels: Series = ()
        if line[i : i + 1] == "{":
            labels, i = _labels(line, i, n)
        if line[i : i + 1] != " ":
            raise FormatError(f"line {n}: expected a space before the value")
        fields = line[i + 1 :].split(" ")
        if not 1 <= len(fields) <= 2:
            raise FormatError(f"line {n}: expected value [timestamp]")
        value = _value(fields[0], n)
        if len(fields) == 2 and not re.fullmatch(r"-?\d+", fields[1]):
            raise FormatError(f"line {n}: bad timestamp")
        fam = families.get(name)
        if fam is None or not fam.type:
            raise FormatError(f"line {n}: sample of {name} without a TYPE line before it")
        if order[-1] != name:
            raise FormatError(f"line {n}: family {name} interleaved")
        key = tuple(sorted(labels))
        if key in fam.samples:
            raise FormatError(f"line {n}: duplicate series {name}{dict(key)}")
        if fam.type == "counter" and not value >= 0:
            raise FormatError(f"line {n}: counter {name} is {value}")
        fam.samples[key] = value
    return families


def value(families: dict[str, ParsedFamily], metric: str, /, **labels: str) -> float | None:
    """The value of one series (labels matched exactly), None if absent."""
    fam = families.get(metric)
    if fam is None:
        return None
    return fam.samples.get(tuple(sorted(labels.items())))
