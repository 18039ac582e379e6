"""Stream health-check probes: HTTP_GET, SSL_GET and SMTP_CHECK over one TCP connection each.

Follows keepalived's check_http.c / check_smtp.c behaviour (observed with `keepalived -T`,
not copied): the request is `GET <path> HTTP/1.0` (or `1.1` / `1.0C`, both adding
`Connection: close`) with `User-Agent: KeepAliveClient` and `Host:` = the url's or checker's
`virtualhost`, else `ip:port`; every url must pass: its status in `status_code` (default
200-299), the MD5 of the raw response body (the bytes after the header block, transfer
coding left as is) equal to `digest`, and `regex` found (or not, with `regex_no_match`)
between `regex_min_offset` and `regex_max_offset`. SSL_GET uses TLS without certificate
verification, with SNI only when `enable_sni`. SMTP_CHECK wants a 220 banner, 250 to
`HELO <helo_name>` and 221 to `QUIT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from hakeeper.check.probes import ProbeResult, Target, open_socket
from hakeeper.conf.model import Checker, HttpCheck, HttpUrl, SmtpCheck

MAX_RESPONSE = 8 * 1024 * 1024
USER_AGENT = "KeepAliveClient"

_REGEX_FLAGS = {
    "caseless": re.IGNORECASE,
    "multiline": re.MULTILINE,
    "dotall": re.DOTALL,
    "extended": re.VERBOSE,
    "ungreedy": 0,  # no Python equivalent; accepted and ignored
}


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    head: bytes
    body: bytes


def host_header(target: Target, virtualhost: str | None, tls: bool) -> str:
    """keepalived's Host: the virtualhost as given, else ip:port (v6 in brackets)."""
    if virtualhost:
        return virtualhost
    host = f"[{target.ip}]" if target.ip.version == 6 else str(target.ip)
    default = 443 if tls else 80
    return host if target.port in (None, default) else f"{host}:{target.port}"


def build_request(path: str, host: str, protocol: str = "1.0") -> bytes:
    """The GET request keepalived sends for `http_protocol` 1.0, 1.0C or 1.1."""
    proto = protocol.upper()
    version = "1.1" if proto == "1.1" else "1.0"
    lines = [f"GET {path} HTTP/{version}", f"User-Agent: {USER_AGENT}"]
    if proto in ("1.1", "1.0C"):
        lines.append("Connection: close")
    lines.append(f"Host: {host}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_response(data: bytes) -> HttpResponse | None:
    """Split a raw response into status, head and body; None if it is not HTTP."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
        if not sep:
            return None
    first = head.split(b"\n", 1)[0].strip()
    parts = first.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None
    return HttpResponse(int(parts[1]), head, body)


def body_digest(body: bytes, algorithm: str = "md5") -> str:
    return hashlib.new(algorithm, body).hexdigest()


def evaluate_url(url: HttpUrl, resp: HttpResponse | None) -> ProbeResult:
    """One url's verdict: status, then digest, then regex (keepalived's order)."""
    if resp is None:
        return ProbeResult(False, f"{url.path}: malformed HTTP response")
    if not any(lo <= resp.status <= hi for lo, hi in url.status_codes):
        return ProbeResult(False, f"{url.path}: HTTP status {resp.status}")
    if url.digest is not None:
        got = body_digest(resp.body)
        if got != url.digest.lower():
            return ProbeResult(False, f"{url.path}: digest mismatch {got}")
    if url.regex is not None:
        flags = 0
        for opt in url.regex_options:
            flags |= _REGEX_FLAGS.get(opt.lower(), 0)
        text = resp.body.decode("latin-1")
        lo = url.regex_min_offset or 0
        hi = url.regex_max_offset
        try:
            found = re.compile(url.regex, flags).search(
                text, lo, hi if hi is not None else len(text)
            )
        except re.error as exc:
            return ProbeResult(False, f"{url.path}: bad regex: {exc}")
        if (found is None) != url.regex_no_match:
            return ProbeResult(False, f"{url.path}: regex {'matched' if found else 'not found'}")
    return ProbeResult(True, f"{url.path}: HTTP status {resp.status}")


def client_tls_context() -> ssl.SSLContext:
    """keepalived's default SSL_GET context: TLS, no certificate or hostname verification."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def connect(
    target: Target, tls: ssl.SSLContext | None = None, sni: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream connection honouring bindto / bind_port / bind_if."""
    import socket  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    sock = open_socket(target, socket.SOCK_STREAM)
    try:
        await loop.sock_connect(sock, target.sockaddr())
        if tls is None:
            return await asyncio.open_connection(sock=sock, limit=MAX_RESPONSE)
        return await asyncio.open_connection(
            sock=sock, ssl=tls, server_hostname=sni or "", limit=MAX_RESPONSE
        )
    except BaseException:
        sock.close()
        raise


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    """Read to EOF (or to Content-Length), at most MAX_RESPONSE bytes."""
    data = bytearray()
    want: int | None = None
    while len(data) < MAX_RESPONSE:
        try:
            chunk = await reader.read(65536)
        except (ssl.SSLError, ConnectionResetError):
            break  # a TLS peer that skips close_notify, or a reset after the answer
        if not chunk:
            break
        data += chunk
        if want is None:
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", bytes(data[:end]))
                want = end + 4 + int(m.group(1)) if m else -1
        if want is not None and want >= 0 and len(data) >= want:
            break
    return bytes(data)


async def fetch(
    target: Target,
    path: str,
    *,
    virtualhost: str | None = None,
    protocol: str = "1.0",
    tls: ssl.SSLContext | None = None,
    sni: str | None = None,
) -> bytes:
    """One GET as keepalived sends it; the raw response bytes."""
    reader, writer = await connect(target, tls, sni)
    try:
        writer.write(
            build_request(path, host_header(target, virtualhost, tls is not None), protocol)
        )
        await writer.drain()
        return await _read_response(reader)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def http_probe(check: HttpCheck, target: Target, timeout: float) -> ProbeResult:
    """Every url of an HTTP_GET / SSL_GET block must pass within `timeout`."""
    tls = client_tls_context() if check.ssl else None
    last = ProbeResult(False, "no url configured")
    async with asyncio.timeout(timeout):
        for url in check.urls:
            vhost = url.virtualhost or check.virtualhost
            try:
                raw = await fetch(
                    target,
                    url.path,
                    virtualhost=vhost,
                    protocol=check.http_protocol,
                    tls=tls,
                    sni=vhost if check.enable_sni else None,
                )
            except TimeoutError:
                raise
            except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
                return ProbeResult(False, f"{url.path}: {getattr(exc, 'strerror', None) or exc}")
            last = evaluate_url(url, parse_response(raw))
            if not last.ok:
                return last
    return last


# ---------------------------------------------------------------------------------- SMTP


async def _smtp_reply(reader: asyncio.StreamReader) -> int:
    """Read one (possibly multi-line `250-...`) reply; its code, or -1 if garbage."""
    while True:
        line = await reader.readline()
        if not line:
            return -1
        code = line[:3]
        if not code.isdigit():
            return -1
        if line[3:4] != b"-":
            return int(code)


async def smtp_probe(check: SmtpCheck, target: Target, timeout: float) -> ProbeResult:
    helo = check.helo_name or "localhost"
    async with asyncio.timeout(timeout):
        reader, writer = await connect(target)
        try:
            for send, want in ((None, 220), (f"HELO {helo}", 250), ("QUIT", 221)):
                if send is not None:
                    writer.write(send.encode() + b"\r\n")
                    await writer.drain()
                code = await _smtp_reply(reader)
                if code != want:
                    what = "banner" if send is None else send.split()[0]
                    return ProbeResult(False, f"SMTP {what}: got {code}, want {want}")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return ProbeResult(True, "SMTP 221")


def factory_for(
    check: Checker, target: Target, timeout: float
) -> Callable[[], Coroutine[Any, Any, ProbeResult]] | None:
    """A zero-argument maker of this checker's probe coroutine, or None if not ours."""
    if isinstance(check, HttpCheck):
        return lambda: http_probe(check, target, timeout)
    if isinstance(check, SmtpCheck):
        return lambda: smtp_probe(check, target, timeout)
    return None
