"""`hakeeper check --nginx FILE` and `hakeeper -t --nginx FILE`: nginx -t verdicts, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from hakeeper.cli import main

GOOD = """\
events {}
stream {
    upstream back { server 127.0.0.1:9001 weight=5; server 127.0.0.1:9002; }
    server { listen 127.0.0.1:9000; proxy_pass back; }
}
"""

BAD = """\
events {}
stream {
    upstream back {
        server 127.0.0.1:9001 weight=5;
        lest_conn;
    }
    server {
        listen 127.0.0.1:9000;
        proxy_pass back;
    }
}
http {
    upstream web { server 127.0.0.1:8080; }
    server {
        listen 8000;
        location / { proxy_passs http://web; }
    }
}
"""


def _write(tmp_path: Path, text: str, name: str = "nginx.conf") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_good_config_prints_nginx_verdict_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, GOOD)
    assert main(["check", "--nginx", path]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"hakeeper: the configuration file {path} syntax is ok",
        f"hakeeper: configuration file {path} test is successful",
    ]


def test_bad_config_lists_every_error_with_did_you_mean_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, BAD)
    assert main(["check", "--nginx", path]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{path}:5:9: error: unknown directive \"lest_conn\" (did you mean 'least_conn'?)",
        f"{path}:16:22: error: unknown directive \"proxy_passs\" (did you mean 'proxy_pass'?)",
        f"hakeeper: configuration file {path} test failed",
    ]


def test_top_level_t_spelling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, GOOD, "good.conf")
    bad = _write(tmp_path, BAD, "bad.conf")
    assert main(["-t", "--nginx", good]) == 0
    assert "test is successful" in capsys.readouterr().out
    assert main(["-t", "--nginx", bad]) == 1
    assert capsys.readouterr().out.endswith("test failed\n")


def test_errors_in_included_files_name_that_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "conf.d").mkdir()
    inc = _write(tmp_path / "conf.d", "server { listen 9000; proxy_pass 10.0.0.1; }\n", "a.conf")
    path = _write(tmp_path, "events {}\nstream { include conf.d/*.conf; }\n")
    assert main(["check", "--nginx", path]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f'{inc}:1:23: error: no port in upstream "10.0.0.1"'


def test_missing_file_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "absent.conf")
    assert main(["check", "--nginx", path]) == 1
    out = capsys.readouterr().out
    assert "error" in out and out.endswith("test failed\n")


def test_valid_nginx_that_run_cannot_serve_is_a_warning_not_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = """\
events {}
stream {
    upstream u { hash $server_addr; server 127.0.0.1:9001; server 127.0.0.1:9002; }
    server { listen 9000; proxy_pass u; }
}
"""
    path = _write(tmp_path, text)
    assert main(["check", "--nginx", path]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{path}:3:5: warning: hakeeper run: ")
    assert out[-1] == f"hakeeper: configuration file {path} test is successful"


def test_keepalived_check_still_uses_f(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "global_defs {\n    router_id x\n}\n", "keepalived.conf")
    assert main(["check", "-f", path]) == 0
    assert "OK" in capsys.readouterr().out
