"""HTTP/1.1 framing rules for the proxy: which headers pass, how heads are rebuilt, errors.

Owns the pure decisions of the hot path, kept apart from the asyncio protocols so they
can be unit-tested byte for byte:
- `CompiledRules`: nginx `proxy_set_header` rules turned into one static header block
  plus the few dynamic lines ($host, $remote_addr, $proxy_add_x_forwarded_for, ...);
  the request headers the rules replace and the hop-by-hop ones (RFC 9110 7.6.1; nginx
  clears Connection, Keep-Alive, Expect, Upgrade, TE) are dropped.
- Request validation beyond llhttp's strict parser (which already rejects CL+TE,
  duplicate Content-Length, obs-fold and bad characters, RFC 9112 6.3 / 5.2): Host rules,
  HTTP version, body size (`client_max_body_size` -> 413), header sizes
  (`large_client_header_buffers` -> 414 for the request line, 400 for a header).
- Response head filtering (hop-by-hop removal, chunked re-framing decisions, RFC 9112 6.3)
  and nginx-style error pages.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hakeeper.proxy.config import ProxyConfig

# Client request headers never forwarded as-is (nginx clears them or recomputes them).
REQUEST_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"upgrade",
        b"expect",
        b"trailer",
        b"transfer-encoding",
    }
)

# Upstream response headers not relayed to the client (hop-by-hop, RFC 9110 7.6.1).
RESPONSE_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"transfer-encoding",
    }
)

REASONS = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    408: b"Request Time-out",
    411: b"Length Required",
    413: b"Request Entity Too Large",
    414: b"Request-URI Too Large",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Temporarily Unavailable",
    504: b"Gateway Time-out",
    505: b"HTTP Version Not Supported",
}

CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
CRLF = b"\r\n"


def error_response(status: int, keep_alive: bool = False, server: bytes = b"hakeeper") -> bytes:
    """A complete nginx-style error response (small HTML body, Content-Length framed)."""
    reason = REASONS.get(status, b"Error")
    line = b"%d %s" % (status, reason)
    body = (
        b"<html>\r\n<head><title>" + line + b"</title></head>\r\n<body>\r\n<center><h1>"
        + line + b"</h1></center>\r\n<hr><center>" + server + b"</center>\r\n</body>\r\n</html>\r\n"
    )  # fmt: skip
    conn = b"keep-alive" if keep_alive else b"close"
    return (
        b"HTTP/1.1 " + line + b"\r\nServer: " + server + b"\r\nContent-Type: text/html\r\n"
        b"Content-Length: %d\r\nConnection: %s\r\n\r\n" % (len(body), conn) + body
    )


def parse_error_status(message: str) -> int:
    """Map an llhttp error to the status nginx would answer (400 unless stated)."""
    if "Invalid method" in message:
        return 400
    return 400


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """Per-request values the dynamic header rules may use (`$host`, `$remote_addr`...)."""

    host: bytes  # Host header as sent (may include a port), b"" if none
    remote_addr: bytes
    remote_port: bytes
    xff: bytes  # incoming X-Forwarded-For, b"" if none
    upgrade: bytes  # incoming Upgrade header, b"" if none
    connection: bytes
    target: bytes
    extra: tuple[tuple[bytes, bytes], ...] = ()  # lowered name, value for $http_NAME


class CompiledRules:
    """`proxy_set_header` rules ready for the hot path; immutable after construction."""

    __slots__ = ("drop", "dynamic", "http_vars", "proxy_host", "scheme", "server_name", "static")

    def __init__(self, config: ProxyConfig) -> None:
        self.proxy_host = config.proxy_host.encode("latin-1")
        self.scheme = config.scheme.encode("ascii")
        self.server_name = config.server_name.encode("latin-1")
        static: list[bytes] = []
        dynamic: list[tuple[bytes, tuple[str | bytes, ...]]] = []
        drop = set(REQUEST_HOP_BY_HOP)
        http_vars: set[bytes] = set()
        seen: set[bytes] = set()
        for rule in config.headers:
            low = rule.lower
            drop.add(low)
            if low in seen:
                continue  # nginx: the first rule for a name wins within one level
            seen.add(low)
            # per-config constants ($proxy_host, $scheme) are folded in once
            parts = tuple(self._constant(p) for p in rule.parts)
            if all(isinstance(p, bytes) for p in parts):
                value = self._render(parts, None)
                if value:
                    static.append(rule.name.encode("latin-1") + b": " + value + CRLF)
            else:
                dynamic.append((rule.name.encode("latin-1"), parts))
                for part in parts:
                    if isinstance(part, str) and part.startswith("http_"):
                        http_vars.add(part[5:].replace("_", "-").encode("ascii"))
        self.static = b"".join(static)
        self.dynamic = tuple(dynamic)
        self.drop = frozenset(drop)
        self.http_vars = frozenset(http_vars)

    def _constant(self, part: str | bytes) -> str | bytes:
        if part == "proxy_host":
            return self.proxy_host
        if part == "scheme":
            return self.scheme
        return part

    def _render(self, parts: tuple[str | bytes, ...], facts: RequestFacts | None) -> bytes:
        out: list[bytes] = []
        for part in parts:
            if isinstance(part, bytes):
                out.append(part)
            elif facts is not None:
                out.append(self.variable(part, facts))
        return b"".join(out)

    def variable(self, name: str, facts: RequestFacts) -> bytes:
        """The value of nginx variable `$name` for one request."""
        if name == "proxy_host":
            return self.proxy_host
        if name == "host":
            return host_without_port(facts.host) or self.server_name
        if name == "http_host":
            return facts.host
        if name == "remote_addr":
            return facts.remote_addr
        if name == "remote_port":
            return facts.remote_port
        if name == "proxy_add_x_forwarded_for":
            return facts.xff + b", " + facts.remote_addr if facts.xff else facts.remote_addr
        if name == "scheme":
            return self.scheme
        if name == "request_uri":
            return facts.target
        if name == "http_upgrade":
            return facts.upgrade
        if name == "http_connection":
            return facts.connection
        if name == "connection_upgrade":
            # the nginx websocket idiom: map $http_upgrade { default upgrade; '' close; }
            return b"upgrade" if facts.upgrade else b"close"
        if name == "server_port":
            return b""
        if name.startswith("http_"):
            want = name[5:].replace("_", "-").encode("ascii")
            for low, value in facts.extra:
                if low == want:
                    return value
            return b""
        return b""

    def dynamic_block(self, facts: RequestFacts) -> bytes:
        """The header lines of the variable rules (empty values are omitted)."""
        out: list[bytes] = []
        for name, parts in self.dynamic:
            value = self._render(parts, facts)
            if value:
                out.append(name + b": " + value + CRLF)
        return b"".join(out)


def host_without_port(host: bytes) -> bytes:
    """`$host`: the Host header lower-cased without its port (IPv6 literals kept)."""
    if not host:
        return b""
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1].lower() if end > 0 else host.lower()
    return host.partition(b":")[0].lower()


# Host values nginx refuses (`ngx_http_validate_host`): '/', '\\', NUL, '..', and an
# unclosed IPv6 bracket; one regex search so the hot path makes a single C call.
BAD_HOST = re.compile(rb"[/\\\x00]|\.\.|^\[[^\]]*$")


def valid_host(host: bytes) -> bool:
    """nginx `ngx_http_validate_host`: no '/', no '\\0', no '..', sane brackets."""
    return bool(host) and BAD_HOST.search(host) is None


def request_status(
    version: str, host_count: int, host: bytes, content_length: int, max_body: int
) -> int:
    """0 if the parsed request head may be proxied, else the error status nginx answers."""
    if version not in ("1.1", "1.0"):
        return 505 if version[:1] >= "2" else 400
    if host_count > 1:
        return 400
    if version == "1.1" and host_count == 0:
        return 400
    if host_count and not valid_host(host):
        return 400
    if max_body and content_length > max_body:
        return 413
    return 0


def origin_form(target: bytes, method: bytes) -> bytes:
    """The path to send upstream for a request-target not starting with '/'
    (RFC 9112 3.2): absolute-form loses scheme and authority like nginx's parsed URI,
    `*` stays for OPTIONS; anything else is a 400 (raises ValueError)."""
    low = target[:8].lower()
    if low.startswith((b"http://", b"https://")):
        rest = target[target.index(b"//") + 2 :]
        slash = rest.find(b"/")
        query = rest.find(b"?")
        if slash < 0 or (0 <= query < slash):
            return b"/" + rest[query:] if query >= 0 else b"/"
        return rest[slash:]
    if target == b"*" and method == b"OPTIONS":
        return target
    raise ValueError("invalid request-target")


def chunk_header(size: int) -> bytes:
    """The chunk-size line for re-framing a body piece as chunked (RFC 9112 7.1)."""
    return b"%x\r\n" % size


def response_framing(status: int, head_request: bool, has_length: bool, chunked: bool) -> str:
    """How the upstream response body ends: 'none', 'length', 'chunked' or 'close'."""
    if head_request or status < 200 or status in (204, 304):
        return "none"
    if chunked:
        return "chunked"
    if has_length:
        return "length"
    return "close"


def status_line(version: bytes, status: int, reason: bytes) -> bytes:
    """The client-side status line; HTTP/1.1 like nginx, whatever the upstream spoke."""
    del version
    return b"HTTP/1.1 %d %s\r\n" % (status, reason or REASONS.get(status, b""))


# response headers a closing client must not get from the upstream when its bytes are
# relayed raw (the chunked framing and its Trailer stay valid and pass), as searched
# for in a lower-cased head: each field line starts after a CRLF
CLOSING_DROP = (
    b"\r\nconnection:",
    b"\r\nkeep-alive:",
    b"\r\nproxy-connection:",
    b"\r\nte:",
    b"\r\nupgrade:",
)
HEAD_END = b"\r\n\r\n"
CLOSE_END = b"Connection: close\r\n\r\n"


def closing_head(buf: bytes) -> tuple[bytes, bytes] | None:
    """Split `buf` (upstream bytes from the start of a response) after its final head.

    Returns (the final head rewritten for a client that asked to close: status line in
    HTTP/1.1 like `status_line`, hop-by-hop connection fields dropped, `Connection: close`
    added; the bytes after the head), or None when no complete final head is in `buf`.
    Interim 1xx heads before it are dropped, as the parsed path swallows them. The head
    was already accepted by llhttp (strict: CRLF line ends, no obs-fold, no space before
    the colon), so the first empty line ends it.
    """
    pos = 0
    while True:
        end = buf.find(HEAD_END, pos)
        if end < 0:
            return None
        if buf[pos + 9 : pos + 10] == b"1":  # "HTTP/1.1 1xx": interim
            pos = end + 4
            continue
        break
    head = buf[pos : end + 2]  # status line and field lines, each ending in CRLF
    low = head.lower()
    cuts: list[tuple[int, int]] = []
    for name in CLOSING_DROP:
        i = low.find(name)
        while i >= 0:
            j = low.find(b"\r\n", i + 2)
            cuts.append((i, j))
            i = low.find(name, j)
    line_end = head.find(b"\r\n")
    first = head[:line_end]
    if head[:9] == b"HTTP/1.1 " and len(first) > 13:
        parts = [head[: line_end + 2]]
    else:
        parts = [status_line(b"", int(first[9:12]), first[13:])]
    at = line_end + 2
    for i, j in sorted(cuts):
        parts.append(head[at : i + 2])
        at = j + 2
    parts.append(head[at:])
    parts.append(CLOSE_END)
    return b"".join(parts), buf[end + 4 :]
