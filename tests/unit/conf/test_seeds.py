"""The seed fixtures are the tutorials' blocks verbatim, and all of them are accounted for.

`tests/fixtures/seeds/README.md` is the manifest: one table row per fixture with its
source file and line range. These tests re-extract every row from `../shared/seeds`
(when that directory is present next to the repository) and compare byte for byte,
check that the manifest and the directory agree, and that each config block reads
(keepalived: no error; nginx: a tree plus diagnostics, the truncated block's missing
`}` reported at the line where it opened).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.keepalived import load_keepalived
from hakeeper.conf.lexer import parse_nginx_file

ROOT = Path(__file__).resolve().parents[3]
SEED_FIXTURES = ROOT / "tests" / "fixtures" / "seeds"
MANIFEST = SEED_FIXTURES / "README.md"
SHARED_SEEDS = ROOT.parent / "shared" / "seeds"

_ROW = re.compile(
    r"^\| (?P<fixture>[\w.-]+) \| (?P<source>\d{3}_[0-9a-f]{16}\.txt) \| "
    r"(?P<first>\d+)-(?P<last>\d+) \|"
)


@dataclass(frozen=True)
class Row:
    fixture: str
    source: str
    first: int
    last: int


def manifest() -> list[Row]:
    rows = []
    for line in MANIFEST.read_text(encoding="utf-8").splitlines():
        m = _ROW.match(line)
        if m:
            rows.append(Row(m["fixture"], m["source"], int(m["first"]), int(m["last"])))
    return rows


ROWS = manifest()


def extract(row: Row) -> str:
    """The exact text of the listed lines: joined with '\\n', one final newline."""
    lines = (SHARED_SEEDS / row.source).read_text(encoding="utf-8").split("\n")
    return "\n".join(lines[row.first - 1 : row.last]) + "\n"


def test_manifest_lists_every_fixture_once() -> None:
    listed = [r.fixture for r in ROWS]
    assert len(listed) == len(set(listed))
    on_disk = sorted(p.name for p in SEED_FIXTURES.iterdir() if p.name != "README.md")
    assert sorted(listed) == on_disk


def test_fixture_names_follow_the_convention() -> None:
    for row in ROWS:
        assert row.fixture[:3] == row.source[:3], row
        assert re.match(r"^\d{3}_\d+_[A-Za-z0-9-]+(\.[A-Za-z]+)+$", row.fixture), row


def test_every_seed_with_a_keepalived_config_has_a_fixture() -> None:
    seeds_with_configs = {"000", "002", "003", "004"}  # 001 shows only a shell script
    have = {r.fixture[:3] for r in ROWS if r.fixture.endswith(".keepalived.conf")}
    assert have == seeds_with_configs


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.fixture)
def test_fixture_is_the_seed_text_verbatim(row: Row) -> None:
    if not SHARED_SEEDS.is_dir():
        pytest.skip(f"{SHARED_SEEDS} not present (fixtures are checked in)")
    want = extract(row)
    got = (SEED_FIXTURES / row.fixture).read_bytes().decode("utf-8")
    assert got == want


@pytest.mark.parametrize(
    "path", sorted(SEED_FIXTURES.glob("*.keepalived.conf")), ids=lambda p: p.name
)
def test_seed_keepalived_config_reads_without_error(path: Path) -> None:
    config, diags = load_keepalived(str(path), config_id="hk-no-such-id")
    assert config is not None
    assert [d.format() for d in diags.errors] == []
    assert config.vrrp_instances or config.virtual_servers


def test_seed_vips_and_services_are_what_the_tutorials_show() -> None:
    def read(name: str) -> tuple[list[str], list[tuple[str, int | None, int]]]:
        config, _ = load_keepalived(str(SEED_FIXTURES / name), config_id="hk-no-such-id")
        assert config is not None
        vips = [str(a.address.ip) for vi in config.vrrp_instances for a in vi.virtual_ipaddresses]
        rs = [
            (str(r.ip), r.port, len(r.checkers))
            for vs in config.virtual_servers
            for r in vs.real_servers
        ]
        return vips, rs

    for name in (
        "000_3_master.keepalived.conf",
        "000_4_backup.keepalived.conf",
        "000_5_master-annotated.keepalived.conf",
        "000_6_backup-annotated.keepalived.conf",
    ):
        assert read(name) == (["192.168.1.110"], []), name
    lvs = [("172.27.9.91", 81, 1), ("172.27.9.92", 81, 1)]
    assert read("002_1_lvs01.keepalived.conf") == (["172.27.9.100"], lvs)
    assert read("002_2_lvs02.keepalived.conf") == (["172.27.9.100"], lvs)
    nat = [(f"10.10.10.{n}", 80, 1) for n in (11, 12, 13)]
    assert read("003_1_director.keepalived.conf") == ([], nat)
    assert read("004_1_lb01.keepalived.conf") == (["192.168.15.55"], [])


def test_nginx_upstream_fragment_lexes() -> None:
    diags = Diagnostics()
    (upstream,) = parse_nginx_file(str(SEED_FIXTURES / "000_1_upstream.nginx.conf"), diags)
    assert upstream.name == "upstream"
    assert upstream.arg_texts() == ("esbwebserver",)
    assert upstream.children is not None
    assert [c.arg_texts() for c in upstream.children] == [
        ("192.168.1.160:8888",),
        ("192.168.1.161:8888",),
    ]


def test_truncated_nginx_server_block_reports_the_open_brace() -> None:
    diags = Diagnostics()
    nodes = parse_nginx_file(str(SEED_FIXTURES / "000_2_server.nginx.conf"), diags)
    assert [n.name for n in nodes] == ["server"]
    unclosed = [d for d in diags.errors if "never closed" in d.message]
    assert len(unclosed) == 1
    assert unclosed[0].loc is not None
    assert unclosed[0].loc.line == 2  # the `{` of `server`, on the line after the keyword


def test_scripts_the_configs_name_are_listed_in_the_manifest() -> None:
    text = MANIFEST.read_text(encoding="utf-8")
    for conf in SEED_FIXTURES.glob("*.keepalived.conf"):
        for script in re.findall(r'script\s+"([^"]+)"', conf.read_text(encoding="utf-8")):
            assert f"`{script}`" in text, f"{conf.name} runs {script}, not in README.md"
