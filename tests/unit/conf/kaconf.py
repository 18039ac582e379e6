"""Test helper: build a keepalived model from inline text with the real lexer."""

from __future__ import annotations

import textwrap

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.keepalived import build_model
from hakeeper.conf.lexer import LexOptions, parse_keepalived_text
from hakeeper.conf.model import KeepalivedConfig


def build(text: str) -> tuple[KeepalivedConfig, Diagnostics]:
    diags = Diagnostics()
    nodes = parse_keepalived_text(
        textwrap.dedent(text), "t.conf", diags, options=LexOptions(config_id="test")
    )
    return build_model(nodes, diags), diags


def messages(diags: Diagnostics, severity: str | None = None) -> list[str]:
    return [
        f"{d.loc.line if d.loc else 0}: {d.message}"
        for d in diags.sorted()
        if severity is None or d.severity == severity
    ]


def errors(diags: Diagnostics) -> list[str]:
    return messages(diags, "error")


def warnings(diags: Diagnostics) -> list[str]:
    return messages(diags, "warning")
