"""`hakeeper run` with --nginx: which daemon runs, and the L7 lines of `hakeeper status`."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from hakeeper.cli import build_parser
from hakeeper.runtime import commands


def test_nginx_alone_runs_the_proxy_and_with_f_the_daemon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[Any] = []

    def fake_run_nginx(path: str) -> int:
        calls.append(("run_nginx", path))
        return 7

    import hakeeper.proxy.run as proxy_run

    monkeypatch.setattr(proxy_run, "run_nginx", fake_run_nginx)
    args = build_parser().parse_args(["run", "--nginx", "/n.conf"])
    assert commands.cmd_run(args) == 7
    assert calls == [("run_nginx", "/n.conf")]

    import hakeeper.runtime.daemon as daemon_mod

    class FakeDaemon:
        def __init__(self, options: Any) -> None:
            calls.append(("daemon", options))

        async def run(self) -> int:
            return 0

    monkeypatch.setattr(daemon_mod, "Daemon", FakeDaemon)
    args = build_parser().parse_args(
        ["run", "-n", "-f", "/k.conf", "--nginx", "/n.conf", "--control", "none"]
    )
    monkeypatch.setattr("hakeeper.runtime.process.setup_logging", lambda **_kw: None)
    assert commands.cmd_run(args) == 0
    options = calls[-1][1]
    assert (options.config_file, options.nginx_file) == ("/k.conf", "/n.conf")
    args = build_parser().parse_args(["run", "-n", "--control", "none"])
    assert isinstance(args, argparse.Namespace)
    assert commands.cmd_run(args) == 0
    options = calls[-1][1]
    assert (options.config_file, options.nginx_file) == (commands.DEFAULT_CONFIG, None)


def test_status_shows_the_l7_side() -> None:
    data = {
        "pid": 1,
        "config_file": "/k.conf",
        "uptime": 1,
        "instances": [],
        "l7": {
            "config_file": "/n.conf",
            "serving": True,
            "reloads": {"ok": 2, "failed": 1},
            "listeners": [
                {
                    "listen": "198.18.0.100:80",
                    "workers": [11, 12],
                    "upstreams": [{"peer": "198.18.0.11:80"}],
                },
                {"listen": "198.18.0.100:81", "workers": [], "error": "Address in use"},
            ],
            "stream_pid": 13,
        },
    }
    text = commands._format_status(data)
    assert "L7 proxy /n.conf: serving  reloads 2 ok / 1 failed" in text
    assert "listen 198.18.0.100:80: 2 worker(s) (pids 11, 12)" in text
    assert "upstream 198.18.0.11:80" in text
    assert "listen 198.18.0.100:81: 0 worker(s) error: Address in use" in text
    assert "stream pid 13" in text
