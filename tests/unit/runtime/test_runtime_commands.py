"""`hakeeper run` / `hakeeper status` command lines."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from hakeeper.cli import build_parser, main
from hakeeper.runtime.control import ControlServer

STATUS: dict[str, Any] = {
    "pid": 42,
    "config_file": "/etc/keepalived/keepalived.conf",
    "uptime": 1.5,
    "instances": [
        {
            "name": "VI_1",
            "state": "MASTER",
            "priority": 150,
            "effective_priority": 90,
            "vrid": 51,
            "master": "198.18.0.1",
            "vips": ["198.18.0.100/24"],
            "faults": [],
        },
        {"name": "VI_X", "state": "NOT_RUNNING", "error": "no interface"},
    ],
    "sync_groups": [{"name": "G", "members": ["VI_1"], "state": "MASTER"}],
}


def test_run_options_keepalived_spellings() -> None:
    args = build_parser().parse_args(
        ["run", "-f", "/x.conf", "-n", "-l", "-p", "/run/x.pid", "--control", "/s", "-i", "lb1"]
    )
    assert (args.config, args.foreground, args.log_console) == ("/x.conf", True, True)
    assert (args.pid_file, args.control, args.config_id) == ("/run/x.pid", "/s", "lb1")
    assert build_parser().parse_args(["run", "--dont-fork"]).foreground
    assert build_parser().parse_args(["run", "--foreground"]).foreground


def test_run_refuses_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("vrrp_instance X {\n  priority 999\n}\n")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        assert main(["run", "-n", "-l", "-f", str(bad), "--control", "none"]) == 1
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def _serve(path: str, ready: threading.Event, stop: threading.Event) -> None:
    async def go() -> None:
        server = ControlServer(path, {"status": lambda: STATUS})
        await server.start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.01)
        await server.close()

    asyncio.run(go())


@pytest.mark.parametrize("as_json", [False, True])
def test_status_command(tmp_path: Path, capsys: pytest.CaptureFixture[str], as_json: bool) -> None:
    path = str(tmp_path / "hk.sock")
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=_serve, args=(path, ready, stop))
    thread.start()
    try:
        assert ready.wait(5)
        argv = ["status", "--control", path] + (["--json"] if as_json else [])
        assert main(argv) == 0
    finally:
        stop.set()
        thread.join(5)
    out = capsys.readouterr().out
    if as_json:
        assert json.loads(out) == STATUS
    else:
        assert "VI_1" in out and "MASTER" in out and "90/150" in out
        assert "198.18.0.100/24" in out and "no interface" in out
        assert "sync group G: MASTER" in out


def test_status_without_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--control", str(tmp_path / "none.sock")]) == 1
    assert "cannot talk" in capsys.readouterr().err
