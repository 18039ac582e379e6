"""L7 proxy settings as frozen data, with nginx 1.22's defaults and `proxy_set_header` rules.

Owns the immutable configuration the HTTP/1.1 engine runs from: upstream peers, header
rules (nginx `proxy_set_header`, data-driven so the nginx.conf reader can fill them),
timeouts (`client_header_timeout`, `proxy_read_timeout`, ...), size limits
(`large_client_header_buffers`, `client_max_body_size`) and the retry policy
(`proxy_next_upstream`, `_tries`, `_timeout`). Defaults follow nginx 1.22 as read in
`ngx_http_proxy_module.c` / `ngx_http_core_module.c` (see ../shared/anchors/dataplane.md
section 1.6): HTTP/1.0 to the upstream with `Host: $proxy_host` and `Connection: close`.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import ssl

    from hakeeper.proxy.response_headers import ResponseRules
    from hakeeper.proxy.routes import RouteTable
    from hakeeper.proxy.tls import UpstreamTls

# Variables a header rule value may use (nginx names).
VARIABLES = frozenset(
    {
        "host",
        "http_host",
        "proxy_host",
        "remote_addr",
        "remote_port",
        "proxy_add_x_forwarded_for",
        "scheme",
        "request_uri",
        "server_port",
        "connection_upgrade",
        "http_upgrade",
        "http_connection",
    }
)

# Variables only a routed listener renders in header rules (`proxy/routed.py`, with
# `routes.variable`); a location using one never takes the plain fast path.
ROUTED_VARIABLES = frozenset(
    {
        "uri",
        "document_uri",
        "args",
        "query_string",
        "is_args",
        "request_method",
        "server_name",
        "server_port",
        "server_addr",
    }
)


def routed_only(rule: HeaderRule) -> bool:
    """Whether `rule` reads a variable only the routed path renders."""
    return any(
        isinstance(p, str) and (p in ROUTED_VARIABLES or p.startswith("arg_")) for p in rule.parts
    )


_VAR_RE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


def template_parts(text: str) -> list[str | bytes]:
    """`text` cut into literal bytes and the names (str) of its `$name` / `${name}`
    variables, in order (nginx's complex-value syntax; names are checked by the caller)."""
    parts: list[str | bytes] = []
    pos = 0
    for m in _VAR_RE.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()].encode("latin-1"))
        parts.append(m.group(1) or m.group(2))
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:].encode("latin-1"))
    return parts


# nginx retries on these conditions (`proxy_next_upstream`); default "error timeout".
NEXT_UPSTREAM_WORDS = frozenset(
    {
        "error",
        "timeout",
        "invalid_header",
        "http_500",
        "http_502",
        "http_503",
        "http_504",
        "http_403",
        "http_404",
        "http_429",
        "non_idempotent",
        "off",
    }
)

IDEMPOTENT_METHODS = frozenset(
    {b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE", b"PROPFIND", b"MKCOL"}
)


class Peer(NamedTuple):
    """One upstream server address (`server host:port` in an `upstream` block).

    A NamedTuple rather than a dataclass: it is hashed on every request (pool lookup),
    and a tuple hashes and compares in C.
    """

    host: str
    port: int
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class HeaderRule:
    """`proxy_set_header NAME VALUE`; VALUE is literal bytes and `$variable` parts.

    An empty result removes the header (nginx: a header whose value is empty is not sent).
    """

    name: str
    parts: tuple[str | bytes, ...]  # str = variable name, bytes = literal

    @property
    def lower(self) -> bytes:
        return self.name.lower().encode("ascii")

    @property
    def is_static(self) -> bool:
        return all(isinstance(p, bytes) for p in self.parts)


def header_rule(name: str, value: str) -> HeaderRule:
    """Compile `proxy_set_header name value`; raises ValueError on unknown variables."""
    if not name or not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
        raise ValueError(f"invalid header name {name!r}")
    parts = template_parts(value)
    for var in parts:
        if isinstance(var, str):
            known = var in VARIABLES or var in ROUTED_VARIABLES
            if not known and not var.startswith(("http_", "arg_")):
                raise ValueError(f"unknown variable ${var}")
    return HeaderRule(name=name, parts=tuple(parts))


def nginx_default_headers() -> tuple[HeaderRule, ...]:
    """nginx 1.22 `ngx_http_proxy_headers[]`: Host and Connection; the rest cleared."""
    return (header_rule("Host", "$proxy_host"), header_rule("Connection", "close"))


def keepalive_headers() -> tuple[HeaderRule, ...]:
    """The usual keep-alive idiom: `proxy_http_version 1.1; proxy_set_header Connection "";`."""
    return (header_rule("Host", "$proxy_host"), header_rule("Connection", ""))


def forwarding_headers() -> tuple[HeaderRule, ...]:
    """The common reverse-proxy idiom (Host, X-Real-IP, X-Forwarded-For, -Proto, websocket)."""
    return (
        header_rule("Host", "$host"),
        header_rule("Connection", "$connection_upgrade"),
        header_rule("Upgrade", "$http_upgrade"),
        header_rule("X-Real-IP", "$remote_addr"),
        header_rule("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
        header_rule("X-Forwarded-Proto", "$scheme"),
    )


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; nginx defaults. `*_read`/`*_send`/body are between successive operations."""

    client_header: float = 60.0
    client_body: float = 60.0
    send: float = 60.0  # nginx `send_timeout` (to the client)
    keepalive: float = 75.0  # nginx `keepalive_timeout` (client side)
    proxy_connect: float = 60.0
    proxy_read: float = 60.0
    proxy_send: float = 60.0
    upstream_keepalive: float = 60.0  # upstream `keepalive_timeout`


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits: `large_client_header_buffers 4 8k`, `client_max_body_size 1m`."""

    header_line: int = 8192
    header_total: int = 4 * 8192
    max_body: int = 1024 * 1024  # 0 = unlimited
    keepalive_requests: int = 1000  # client side
    upstream_keepalive_requests: int = 1000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`proxy_next_upstream` words, `_tries` (0 = all peers), `_timeout` (0 = none)."""

    on: frozenset[str] = frozenset({"error", "timeout"})
    tries: int = 0
    timeout: float = 0.0

    def statuses(self) -> frozenset[int]:
        return frozenset(int(w[5:]) for w in self.on if w.startswith("http_"))


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Everything one proxied `location` (or one routed listener) needs; immutable."""

    peers: tuple[Peer, ...]
    proxy_host: str = "backend"
    http_version: str = "1.0"  # `proxy_http_version`
    headers: tuple[HeaderRule, ...] = field(default_factory=nginx_default_headers)
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    upstream_keepalive: int = 0  # `keepalive N` in the upstream block (0 = no pool)
    scheme: str = "http"
    server_name: str = ""
    timer_resolution: float = 0.5  # how often deadlines are swept
    # a listener with several servers/locations: the table the engine routes by (then
    # every location brings its own ProxyConfig; this one gives the client-side settings)
    routes: RouteTable | None = None
    # TLS (proxy/tls.py): the listener's context (`listen ... ssl`, used by the worker that
    # serves it), and how this location reaches `proxy_pass https://` (None = plain)
    listen_ssl: ssl.SSLContext | None = None
    upstream_tls: UpstreamTls | None = None
    # upstream response header rules (hide/pass, add_header, proxy_redirect); None, for an
    # engine built in code, relays heads as received (the nginx reader always sets them)
    response: ResponseRules | None = None

    def __post_init__(self) -> None:
        if self.http_version not in ("1.0", "1.1"):
            raise ValueError("proxy_http_version must be 1.0 or 1.1")
        bad = set(self.retry.on) - NEXT_UPSTREAM_WORDS
        if bad:
            raise ValueError(f"unknown proxy_next_upstream values: {sorted(bad)}")
        if self.timer_resolution <= 0:
            raise ValueError("timer_resolution must be positive")
