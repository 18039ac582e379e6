"""The optional HTTP endpoint for Prometheus (`hakeeper run ... --metrics HOST:PORT`).

A minimal HTTP/1.x responder on asyncio streams, one request per connection: GET (or
HEAD) /metrics answers 200 with the text exposition format 0.0.4 (`runtime.metrics`),
`/` a short pointer to it, any other path 404 and any other method 405. A request head is
read with a size limit and a deadline; a slow, oversized or garbled request is counted and
the connection closed, and a failing renderer answers 500: nothing a client sends can
stop the daemon. The renderer runs on the serving loop, once per scrape (no work between
scrapes). Bind it to loopback or a management address: it has no authentication, as
node_exporter and keepalived's SNMP agent by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from hakeeper.runtime.metrics import CONTENT_TYPE

log = logging.getLogger("hakeeper.metrics")

MAX_HEAD = 8192
READ_TIMEOUT = 5.0
WRITE_TIMEOUT = 10.0
DEFAULT_PORT = 9109


def parse_addr(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT`, `:PORT` (127.0.0.1) or `PORT`; ValueError if malformed."""
    text = text.strip()
    host, port = "127.0.0.1", text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"bad address {text!r} (want [V6]:PORT)")
        host, port = text[1:end], text[end + 2 :]
    elif ":" in text:
        host, _, port = text.rpartition(":")
        host = host or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in {text!r}")
    return host, int(port)


class MetricsHttpServer:
    """Serves `render()` (the exposition text) at GET /metrics on host:port."""

    def __init__(self, host: str, port: int, render: Callable[[], str]) -> None:
        self.host = host
        self.port = port
        self.render = render
        self.scrapes = 0
        self.bad_requests = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)
        if self.port == 0:  # tests: the port the kernel chose
            self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(OSError):
            await self._server.wait_closed()
        self._server = None

    def respond(self, head: bytes) -> tuple[int, str, bytes, bool]:
        """(status, content type, body, send body) for one request head."""
        line = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self.bad_requests += 1
            return 400, "text/plain", b"bad request\n", True
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, "text/plain", b"method not allowed\n", True
        send_body = method == b"GET"
        if target == b"/metrics":
            self.scrapes += 1
            try:
                text = self.render()
            except Exception as exc:  # a renderer bug must not kill the daemon
                log.exception("rendering metrics failed")
                return 500, "text/plain", f"{type(exc).__name__}\n".encode(), send_body
            return 200, CONTENT_TYPE, text.encode(), send_body
        if target == b"/":
            body = b'<html><body><a href="/metrics">hakeeper metrics</a></body></html>\n'
            return 200, "text/html", body, send_body
        return 404, "text/plain", b"not found\n", send_body

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(_read_head(reader), READ_TIMEOUT)
            except (TimeoutError, ValueError, asyncio.LimitOverrunError):
                self.bad_requests += 1
                return
            if head is None:  # closed before a whole head
                return
            code, ctype, body, send_body = self.respond(head)
            reason = _REASONS.get(code, "")
            out = (
                f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            writer.write(out + body if send_body else out)
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        except (OSError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """Header lines up to the blank one (CRLF or bare LF); None on EOF before it."""
    lines: list[bytes] = []
    size = 0
    while True:
        line = await reader.readline()
        if not line.endswith(b"\n"):
            return None
        size += len(line)
        if size > MAX_HEAD:
            raise ValueError("request head too long")
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)
        lines.append(line)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}
