"""The local control socket: a UNIX stream socket answering one-line commands with JSON.

Protocol (ours; keepalived has no equivalent, it dumps to /tmp files on SIGUSR1/SIGJSON):
the client connects, sends one command line (`status`, `ping`, `metrics`, `reload`), and
reads one JSON document terminated by a newline; the server then closes the connection
(`metrics` answers a JSON string: the Prometheus text of `runtime.metrics`). Unknown commands and
malformed requests get `{"error": "..."}`; nothing a client sends can stop the daemon.
The socket is created mode 0600 (the daemon runs as root; status reveals topology), a stale
socket file left by a crashed daemon is replaced, and the file is unlinked on close.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("hakeeper.control")

DEFAULT_CONTROL_PATH = "/run/hakeeper/hakeeper.sock"
MAX_REQUEST = 1024
REQUEST_TIMEOUT = 2.0

Handler = Callable[[], Any]


class ControlError(Exception):
    """The control socket could not be reached or answered garbage (client side)."""


def _is_live_socket(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


class ControlServer:
    """Serves `handlers` (command name -> zero-argument callable returning JSON-able data)."""

    def __init__(self, path: str, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self.handlers = dict(handlers)
        self.requests = 0
        self.bad_requests = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(mode):
                raise ControlError(f"{self.path} exists and is not a socket")
            if _is_live_socket(self.path):
                raise ControlError(f"{self.path} is in use by another running daemon")
            os.unlink(self.path)
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path)
        finally:
            os.umask(old_umask)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(OSError):
            await self._server.wait_closed()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def answer(self, line: str) -> Any:
        """The JSON-able reply to one request line (also used by SIGUSR1 dumps and tests)."""
        command = line.strip()
        handler = self.handlers.get(command)
        if handler is None:
            self.bad_requests += 1
            known = ", ".join(sorted(self.handlers))
            return {"error": f"unknown command {command[:40]!r}; known: {known}"}
        self.requests += 1
        try:
            return handler()
        except Exception as exc:  # a status bug must not kill the daemon
            log.exception("control command %r failed", command)
            return {"error": f"{type(exc).__name__}: {exc}"}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                raw = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            except (TimeoutError, ValueError, asyncio.LimitOverrunError):
                self.bad_requests += 1
                return
            if len(raw) > MAX_REQUEST:
                self.bad_requests += 1
                reply: Any = {"error": "request too long"}
            else:
                reply = self.answer(raw.decode("utf-8", "replace"))
            writer.write(json.dumps(reply, sort_keys=True).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def query(path: str, command: str = "status", timeout: float = 3.0) -> Any:
    """Blocking client used by `hakeeper status`: send `command`, return the decoded JSON."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
            sock.sendall(command.encode() + b"\n")
            chunks: list[bytes] = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError as exc:
            raise ControlError(f"cannot talk to the daemon at {path}: {exc}") from exc
    finally:
        sock.close()
    try:
        return json.loads(b"".join(chunks))
    except ValueError as exc:
        raise ControlError(f"bad reply from {path}: {exc}") from exc
