"""Generates docs/keywords.md, the keepalived.conf keyword reference, from the keyword table.

One section per block (in the order a config nests them), one row per keyword: its
status (supported / accepted-and-ignored-with-warning / rejected), its argument syntax
and notes (aliases, deprecations, why it is ignored). A unit test fails when the
checked-in file differs from `render_keywords_markdown()`; regenerate with
`python -m hakeeper.conf.keyword_docs > docs/keywords.md`.
"""

from __future__ import annotations

from hakeeper.conf.keywords import TOP
from hakeeper.conf.schema import ARG_DOCS, BlockSpec, Kw, Status

__all__ = ["render_keywords_markdown"]

HEADER = """\
# keepalived.conf keywords

Generated from `hakeeper.conf.keywords` by `python -m hakeeper.conf.keyword_docs`;
do not edit by hand (a test fails when this file is stale).

Status: **supported** = read into hakeeper's model; **accepted-and-ignored-with-warning**
= keepalived knows it, hakeeper reads it, warns and does not act on it;
**rejected** = an error (the keyword is obsolete or cannot work as written).
Anything not listed in a block is an unknown keyword: an error with a did-you-mean among
the keywords of that block.
"""


def _arguments(kw: Kw) -> str:
    if kw.alias_of is not None:
        return ""
    if kw.items is not None:
        return ARG_DOCS.get(kw.items, "per line")
    if kw.block is not None:
        head = ARG_DOCS.get(kw.parse, "") if kw.parse is not None else ""
        return f"{head} {{ ... }}".strip()
    return ARG_DOCS.get(kw.parse, "") if kw.parse is not None else ""


def _notes(kw: Kw, spec: BlockSpec) -> str:
    notes = []
    if kw.alias_of is not None:
        notes.append(f"alias of `{kw.alias_of}`")
    if kw.warn is not None:
        notes.append(f"warns: {kw.warn}")
    if kw.doc:
        notes.append(kw.doc)
    if kw.block is not None and kw.block is not spec:
        notes.append(f"see `{kw.block.name}`")
    if kw.repeat and kw.alias_of is None:
        notes.append("may repeat")
    return "; ".join(notes)


def _status(kw: Kw, spec: BlockSpec) -> Status:
    if kw.alias_of is not None:
        return spec.keywords[kw.alias_of].status
    return kw.status


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _blocks() -> list[tuple[str, BlockSpec]]:
    """Every block spec once, depth first from the top level, with its path."""
    out: list[tuple[str, BlockSpec]] = []
    seen: set[int] = set()

    def visit(path: str, spec: BlockSpec) -> None:
        if id(spec) in seen:
            return
        seen.add(id(spec))
        out.append((path, spec))
        for kw in spec.keywords.values():
            if kw.block is not None and kw.alias_of is None:
                child = kw.block.name if not path else f"{path} > {kw.block.name}"
                visit(child, kw.block)

    visit("", TOP)
    return out


def render_keywords_markdown() -> str:
    lines = [HEADER]
    counts = dict.fromkeys(Status, 0)
    for path, spec in _blocks():
        lines.append(f"## {path or 'top level'}\n")
        lines.append("| keyword | status | arguments | notes |")
        lines.append("| --- | --- | --- | --- |")
        for kw in spec.keywords.values():
            status = _status(kw, spec)
            counts[status] += 1
            lines.append(
                f"| `{kw.name}` | {status.value} | {_escape(_arguments(kw))} "
                f"| {_escape(_notes(kw, spec))} |"
            )
        lines.append("")
    total = ", ".join(f"{n} {s.value}" for s, n in counts.items())
    lines.append(f"Totals (keyword entries per block): {total}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_keywords_markdown(), end="")
