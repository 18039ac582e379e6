"""The probes of nginx Plus active health checks: HTTP `GET uri` with `match`, TCP and UDP.

HTTP (ngx_http_upstream_hc_module): `GET uri HTTP/1.0` with `Host: <upstream name>`
(nginx's `$proxy_host`) and `Connection: close` on a new connection; the answer (first
256 KiB) must parse and pass the `match` (default: a 2xx or 3xx status). Stream
(ngx_stream_upstream_hc_module): TCP passes when the connection is established, the
`match`'s `send` string is written and, with `expect`, the data received (first
proxy_buffer_size = 16 KiB) contains the literal or matches the regex before the timeout;
UDP sends `send` (or "nginx health check") on a connected socket and passes on a reply
that passes `expect`, or, without `expect`, when no ICMP error (ECONNREFUSED & co.) comes
back within the wait. Each probe returns `(passed, detail)` and never raises for what the
peer does; `evaluate` is the pure part of the HTTP check.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from typing import TYPE_CHECKING

from hakeeper.check.probe_stream import parse_response
from hakeeper.conf.nginx_health import (
    STREAM_READ_LIMIT,
    UDP_PAYLOAD,
    HealthCheck,
    StreamHealthCheck,
    StreamMatch,
)

if TYPE_CHECKING:
    from hakeeper.proxy.tls import UpstreamTls

#: At most this much of an HTTP response is read (headers + the start of the body).
MAX_RESPONSE = 256 * 1024
USER_AGENT = "hakeeper-health-check"

_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$")

Result = tuple[bool, str]


# -- HTTP -----------------------------------------------------------------------------------


def _headers(head: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return out


def evaluate(check: HealthCheck, raw: bytes) -> Result:
    """A raw HTTP response against the check's `match`: (passed, reason)."""
    resp = parse_response(raw)
    if resp is None:
        return False, "malformed HTTP response"
    why = check.match.test(resp.status, _headers(resp.head), resp.body)
    if why is not None:
        return False, why
    return True, f"HTTP status {resp.status}"


def build_request(uri: str, host: str) -> bytes:
    return (
        f"GET {uri} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")


async def http_get(
    host: str, port: int, request: bytes, timeout: float, tls: UpstreamTls | None = None
) -> bytes:
    """One request on a fresh connection (TLS as `proxy_pass https://` connects when `tls`
    is given); the response bytes (to EOF, Content-Length or MAX_RESPONSE). Raises
    OSError (ssl.SSLError included) / TimeoutError."""
    async with asyncio.timeout(timeout):
        if tls is None:
            reader, writer = await asyncio.open_connection(host, port)
        else:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=tls.context, server_hostname=tls.server_hostname
            )
        try:
            writer.write(request)
            data = bytearray()
            want = -1
            while len(data) < MAX_RESPONSE:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
                if want < 0:
                    end = data.find(b"\r\n\r\n")
                    if end >= 0:
                        m = _CONTENT_LENGTH.search(bytes(data[:end]))
                        want = end + 4 + int(m.group(1)) if m else MAX_RESPONSE
                if 0 <= want <= len(data):
                    break
            return bytes(data)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def http_probe(
    check: HealthCheck, host: str, port: int, request: bytes, tls: UpstreamTls | None = None
) -> Result:
    try:
        raw = await http_get(host, port, request, check.probe_timeout, tls)
    except TimeoutError:
        return False, "timed out"
    except OSError as exc:
        return False, f"connect/read error: {exc.strerror or exc}"
    return evaluate(check, raw)


# -- stream: TCP ----------------------------------------------------------------------------


async def tcp_probe(check: StreamHealthCheck, host: str, port: int) -> Result:
    """Connect; then `send` and read until `expect` passes (or EOF, 16 KiB, timeout)."""
    match = check.match
    try:
        async with asyncio.timeout(check.probe_timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                return await _converse(match, reader, writer)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        return False, "timed out"
    except OSError as exc:
        return False, f"connect/read error: {exc.strerror or exc}"


async def _converse(
    match: StreamMatch | None, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> Result:
    if match is None:
        return True, "connected"
    if match.send:
        writer.write(match.send)
        await writer.drain()
    if not match.expects:
        return True, "connected, sent"
    data = bytearray()
    while len(data) < STREAM_READ_LIMIT:
        chunk = await reader.read(STREAM_READ_LIMIT - len(data))
        if not chunk:
            break
        data += chunk
        if match.test(bytes(data)):
            return True, "expected data received"
    return False, f"answer does not match ({len(data)} bytes)"


# -- stream: UDP ----------------------------------------------------------------------------


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, match: StreamMatch | None) -> None:
        self.match = match
        self.done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if self.done.done():
            return
        if self.match is not None and self.match.expects:
            if self.match.test(data[:STREAM_READ_LIMIT]):
                self.done.set_result((True, "expected datagram received"))
            # a reply that does not pass is ignored: a later one may
        else:
            self.done.set_result((True, "datagram received"))

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.done.set_result((False, f"ICMP error: {why}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result((False, "socket closed"))


async def udp_probe(check: StreamHealthCheck, host: str, port: int, wait: float) -> Result:
    """Send the payload; with `expect` a passing reply is needed before the timeout,
    without it silence until `wait` (an ICMP error fails the check at once)."""
    loop = asyncio.get_running_loop()
    match = check.match
    payload = match.send if match is not None and match.send else UDP_PAYLOAD
    expects = match is not None and match.expects
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Datagrams(match), remote_addr=(host, port), family=family
        )
    except OSError as exc:
        return False, f"socket error: {exc.strerror or exc}"
    try:
        transport.sendto(payload)
        limit = check.probe_timeout if expects else min(wait, check.probe_timeout)
        try:
            async with asyncio.timeout(limit):
                return await asyncio.shield(proto.done)
        except TimeoutError:
            if expects:
                return False, "timed out"
            return True, "no ICMP error"
    finally:
        transport.close()
