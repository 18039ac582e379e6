"""`hakeeper check` / `hakeeper -t` / `hakeeper dump` on files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hakeeper.cli import main

SEEDS = Path(__file__).resolve().parents[2] / "fixtures" / "seeds"

BAD = """global_defs {
    router_idd x
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 256
    virtual_ipaddress {
        10.0.0.1
    }
}
"""


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "keepalived.conf"
    path.write_text(text)
    return str(path)


def test_check_reports_sorted_diagnostics_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, BAD)
    assert main(["check", "-f", path]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"{path}:2:5: error: unknown keyword 'router_idd' in global_defs "
        "(did you mean 'router_id'?)"
    )
    assert out[1].startswith(f"{path}:4:1: error: vrrp_instance VI_1 has no virtual_router_id")
    assert out[2] == f"{path}:6:23: error: 'virtual_router_id' must be in 1..255, got 256"
    assert out[-1] == f"{path}: 3 error(s), 0 warning(s): FAILED"


def test_check_seed_ok_and_strict_makes_warnings_fatal(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(SEEDS / "003_1_director.keepalived.conf")
    assert main(["check", "-f", path]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(": OK")
    assert main(["check", "--strict", "-f", path]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_keepalived_spellings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = str(SEEDS / "002_1_lvs01.keepalived.conf")
    assert main(["-t", "-f", good]) == 0
    assert main(["check", "-t", "-f", good]) == 0
    assert main(["--config-test", "-f", _write(tmp_path, BAD)]) == 1
    capsys.readouterr()


def test_check_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-f", str(tmp_path / "missing.conf")]) == 1
    assert "cannot read" in capsys.readouterr().out


def test_dump_json_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(SEEDS / "002_1_lvs01.keepalived.conf")
    assert main(["dump", "--json", "-f", path]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data) == [
        "global_defs",
        "vrrp_scripts",
        "track_files",
        "track_processes",
        "vrrp_instances",
        "sync_groups",
        "virtual_server_groups",
        "virtual_servers",
        "static_ipaddresses",
        "static_routes",
        "static_rules",
    ]
    rs = data["virtual_servers"][0]["real_servers"][0]
    assert rs["checkers"][0]["type"] == "TCP_CHECK"
    assert rs["checkers"][0]["connect_port"] == 81
    assert main(["dump", "-f", path]) == 0
    text = capsys.readouterr().out
    assert "lvs_sched: wrr" in text
    assert "- type TCP_CHECK" in text


def test_dump_is_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(SEEDS / "000_3_master.keepalived.conf")
    main(["dump", "--json", "-f", path])
    first = capsys.readouterr().out
    main(["dump", "--json", "-f", path])
    assert capsys.readouterr().out == first


def test_config_id_selects_conditional_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 7\n"
        "@high priority 200\n@low priority 50\n"
        " virtual_ipaddress {\n  10.0.0.1\n }\n}\n",
    )
    assert main(["dump", "--json", "-i", "high", "-f", path]) == 0
    assert json.loads(capsys.readouterr().out)["vrrp_instances"][0]["priority"] == 200
    assert main(["dump", "--json", "-i", "low", "-f", path]) == 0
    assert json.loads(capsys.readouterr().out)["vrrp_instances"][0]["priority"] == 50
