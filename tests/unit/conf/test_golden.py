"""Golden dumps: the normalised model of every keepalived sample and seed, checked in.

Each keepalived.conf fixture (and `conditional_conf` once per `@ID`) is read with
`load_keepalived`; its sorted diagnostics and `hakeeper.conf.dump.dump_config` model
are written as sorted-key JSON to `tests/fixtures/golden/<dir>/<name>.json`. The two
nginx seed fragments are dumped as the lexer's syntax tree. File names inside are
relative to tests/fixtures, so the files do not depend on where the repo lives.

A change in the reader that changes any of these shows here as a diff to review. When
the change is intended, rewrite the files with `scripts/regen-golden` (which runs this
module with HAKEEPER_REGEN_GOLDEN=1) and commit them with the change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hakeeper.conf.diagnostics import Diagnostic, Diagnostics
from hakeeper.conf.dump import dump_config
from hakeeper.conf.keepalived import load_keepalived
from hakeeper.conf.lexer import parse_nginx_file
from hakeeper.conf.tree import Node

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"
GOLDEN = FIXTURES / "golden"
REGEN = os.environ.get("HAKEEPER_REGEN_GOLDEN") == "1"

NO_ID = "hk-no-such-id"  # a config id that selects no `@ID` line: host-independent


@dataclass(frozen=True)
class Golden:
    source: Path  # the fixture
    config_id: str = NO_ID
    kind: str = "keepalived"  # or "nginx"

    @property
    def rel(self) -> str:
        return self.source.relative_to(FIXTURES).as_posix()

    @property
    def target(self) -> Path:
        suffix = "" if self.config_id == NO_ID else f"@{self.config_id}"
        return GOLDEN / f"{self.rel}{suffix}.json"

    @property
    def id(self) -> str:
        return self.target.relative_to(GOLDEN).as_posix()


def _cases() -> list[Golden]:
    samples = sorted((FIXTURES / "keepalived-samples").glob("keepalived.conf.*"))
    seeds = sorted((FIXTURES / "seeds").glob("*.keepalived.conf"))
    nginx = sorted((FIXTURES / "seeds").glob("*.nginx.conf"))
    cases = [Golden(p) for p in [*samples, *seeds]]
    conditional = FIXTURES / "keepalived-samples" / "keepalived.conf.conditional_conf"
    cases += [Golden(conditional, cid) for cid in ("high", "low")]
    cases += [Golden(p, kind="nginx") for p in nginx]
    return sorted(cases, key=lambda g: g.id)


CASES = _cases()


def _relative(text: str) -> str:
    return text.replace(f"{FIXTURES}{os.sep}", "")


def _diagnostic(d: Diagnostic) -> str:
    return _relative(d.format())


def _diagnostics(diags: Diagnostics) -> list[str]:
    return [_diagnostic(d) for d in diags.sorted()]


def _tree(nodes: Iterable[Node]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n in nodes:
        item: dict[str, Any] = {"keyword": n.name, "line": n.loc.line}
        if n.args:
            item["args"] = list(n.arg_texts())
        if n.children is not None:
            item["children"] = _tree(n.children)
        out.append(item)
    return out


def render(case: Golden) -> str:
    """The golden text for one case: sorted-key JSON, repo-location independent."""
    data: dict[str, Any] = {"source": case.rel}
    if case.kind == "nginx":
        diags = Diagnostics()
        nodes = parse_nginx_file(str(case.source), diags)
        data["diagnostics"] = _diagnostics(diags)
        data["tree"] = _tree(nodes)
    else:
        config, diags = load_keepalived(str(case.source), config_id=case.config_id)
        data["config_id"] = case.config_id
        data["diagnostics"] = _diagnostics(diags)
        data["model"] = None if config is None else dump_config(config)
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return _relative(text)


@pytest.mark.parametrize("case", CASES, ids=lambda g: g.id)
def test_golden(case: Golden) -> None:
    got = render(case)
    if REGEN:
        case.target.parent.mkdir(parents=True, exist_ok=True)
        case.target.write_text(got, encoding="utf-8")
        return
    assert case.target.exists(), f"no golden file {case.id}: run scripts/regen-golden"
    want = case.target.read_text(encoding="utf-8")
    assert got == want, f"{case.id} changed: review the diff, then run scripts/regen-golden"


def test_rendering_is_stable_and_location_free() -> None:
    for case in CASES:
        first = render(case)
        assert first == render(case)
        assert str(ROOT) not in first, case.id
        json.loads(first)


def test_no_orphan_golden_files() -> None:
    expected = {c.target for c in CASES}
    present = set(GOLDEN.rglob("*.json"))
    if REGEN:
        for orphan in present - expected:
            orphan.unlink()
        return
    assert present - expected == set(), "golden files without a fixture: run scripts/regen-golden"


def test_golden_covers_every_keepalived_fixture() -> None:
    covered = {c.source for c in CASES}
    for p in [
        *(FIXTURES / "keepalived-samples").glob("keepalived.conf.*"),
        *(FIXTURES / "seeds").glob("*.keepalived.conf"),
        *(FIXTURES / "seeds").glob("*.nginx.conf"),
    ]:
        assert p in covered, p.name
