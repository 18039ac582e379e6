"""The control socket: status JSON round trip, bad requests, stale socket replacement."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from hakeeper.runtime.control import ControlError, ControlServer, query


def _run_with_server(path: str, fn: Any, handlers: dict[str, Any] | None = None) -> Any:
    async def go() -> Any:
        server = ControlServer(path, handlers or {"status": lambda: {"instances": []}})
        await server.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn)
        finally:
            await server.close()

    return asyncio.run(go())


def test_status_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "run" / "hk.sock")
    status = {"instances": [{"name": "VI_1", "state": "MASTER", "vips": ["198.18.0.10/32"]}]}
    reply = _run_with_server(path, lambda: query(path), {"status": lambda: status})
    assert reply == status
    assert not os.path.exists(path), "socket file removed on close"


def test_socket_is_private(tmp_path: Path) -> None:
    path = str(tmp_path / "hk.sock")
    mode = _run_with_server(path, lambda: os.stat(path).st_mode & 0o777)
    assert mode & 0o077 == 0


def test_unknown_command_and_failing_handler(tmp_path: Path) -> None:
    path = str(tmp_path / "hk.sock")

    def boom() -> object:
        raise RuntimeError("broken")

    def both() -> tuple[Any, Any]:
        return query(path, "frobnicate"), query(path, "status")

    unknown, failed = _run_with_server(path, both, {"status": boom})
    assert "unknown command" in unknown["error"]
    assert "RuntimeError" in failed["error"]


def test_garbage_client_does_not_break_server(tmp_path: Path) -> None:
    path = str(tmp_path / "hk.sock")

    def garbage_then_status() -> Any:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(3)
        s.connect(path)
        s.sendall(b"\xff" * 5000 + b"\n")
        s.recv(4096)
        s.close()
        s2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s2.connect(path)
        s2.close()  # connect and hang up without a request
        return query(path)

    assert _run_with_server(path, garbage_then_status) == {"instances": []}


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "hk.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # file remains, nobody listens
    assert _run_with_server(path, lambda: query(path)) == {"instances": []}


def test_live_socket_is_not_stolen(tmp_path: Path) -> None:
    path = str(tmp_path / "hk.sock")

    async def go() -> None:
        first = ControlServer(path, {"status": dict})
        await first.start()
        try:
            second = ControlServer(path, {"status": dict})
            with pytest.raises(ControlError, match="in use"):
                await second.start()
        finally:
            await first.close()

    asyncio.run(go())


def test_query_without_daemon(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="cannot talk"):
        query(str(tmp_path / "absent.sock"), timeout=0.5)
