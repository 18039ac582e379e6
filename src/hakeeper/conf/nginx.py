"""nginx.conf reader for the L7 tier: directive table -> frozen model -> proxy settings.

Reads the syntax tree of `hakeeper.conf.lexer.parse_nginx_text` for the directives
operators use in front of web servers (see ../shared/anchors/dataplane.md 1.1, 1.6, 1.9):
`worker_processes`, `events`, `http`, `upstream` (`server` with weight/max_fails/
fail_timeout/backup/down/max_conns; `least_conn`, `ip_hash`, `hash KEY [consistent]`,
`random [two]`, `keepalive*`), `server` (`listen`, `server_name`), `location` (`=`, `^~`,
`~`, `~*`, prefix), `proxy_pass`, `proxy_set_header`, `proxy_http_version`,
`proxy_*_timeout`, `proxy_next_upstream*`, `return`, `client_*` limits, logs. Like
`ngx_conf_handler`, an unknown directive, a directive in the wrong block or with the
wrong number of arguments is an error naming file:line; values merge outside-in
(http -> server -> location; `proxy_set_header` only when the inner level has none).
`match_location` follows nginx's order (exact, longest prefix, `^~`, regexes in order).
Pure: no I/O (`include` is resolved by the caller-supplied `include` callback).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

from hakeeper.conf.diagnostics import Diagnostics, Location, did_you_mean
from hakeeper.conf.nginx_headers import HEADER_DIRECTIVES, HeadersOut, read_headers_out
from hakeeper.conf.nginx_health import HealthCheck, Match, read_health_check, read_matches
from hakeeper.conf.nginx_rewrite import SCRIPT, RewriteStep, access_rule, python_regex, read_step
from hakeeper.conf.nginx_static import StaticConf, read_static
from hakeeper.conf.nginx_status import ignored_warning
from hakeeper.conf.nginx_tls import (
    PROXY_SSL_DIRECTIVES,
    SSL_DIRECTIVES,
    ProxySsl,
    SslSettings,
    check_certificates,
    check_proxy_ssl,
    no_certificate,
    read_proxy_ssl,
    read_ssl,
)
from hakeeper.conf.nginx_values import parse_size, parse_time
from hakeeper.conf.tree import Node, Word

if TYPE_CHECKING:
    from hakeeper.conf.nginx_stream import StreamConfig

IncludeFn = Callable[[str, Location, Diagnostics], Sequence[Node]]


@dataclass(frozen=True, slots=True)
class UpstreamServer:
    host: str
    port: int
    weight: int = 1
    max_fails: int = 1
    fail_timeout: float = 10.0
    backup: bool = False
    down: bool = False
    max_conns: int = 0
    loc: Location | None = None
    slow_start: float = 0.0  # nginx Plus `slow_start=` (round_robin / least_conn only)


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    servers: tuple[UpstreamServer, ...]
    method: str = "round_robin"  # a key of hakeeper.balance.NGINX_BALANCERS
    hash_key: str = ""
    keepalive: int = 0
    keepalive_timeout: float = 60.0
    keepalive_requests: int = 1000
    loc: Location | None = None


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int
    default_server: bool = False
    reuseport: bool = False
    ssl: bool = False  # `listen ... ssl` (conf/nginx_tls.py, proxy/tls.py)


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """The proxy_* values in effect in one location (after merging)."""

    headers: tuple[tuple[str, str], ...] = (("Host", "$proxy_host"), ("Connection", "close"))
    http_version: str = "1.0"
    connect_timeout: float = 60.0
    read_timeout: float = 60.0
    send_timeout: float = 60.0
    next_upstream: tuple[str, ...] = ("error", "timeout")
    next_upstream_tries: int = 0
    next_upstream_timeout: float = 0.0
    client_max_body_size: int = 1 << 20
    client_header_timeout: float = 60.0
    ssl: ProxySsl = field(default_factory=ProxySsl)  # proxy_ssl_* (conf/nginx_tls.py)
    client_body_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    keepalive_requests: int = 1000
    # proxy_redirect, add_header, proxy_hide_header, proxy_pass_header (conf/nginx_headers)
    headers_out: HeadersOut = field(default_factory=HeadersOut)
    # `allow`/`deny` in effect, first match wins: ("allow"|"deny", "all"|address|CIDR);
    # a level with its own rules replaces the inherited ones (ngx_http_access_module)
    access: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class HttpLocation:
    """One `location` block (or a server-level `return`, with an empty pattern)."""

    modifier: str  # "", "=", "^~", "~", "~*"
    pattern: str
    proxy_pass: str | None = None  # "http://name[:port][/uri]"
    return_code: int | None = None
    return_text: str = ""
    settings: ProxySettings = field(default_factory=ProxySettings)
    loc: Location | None = None
    health_check: HealthCheck | None = None  # nginx Plus `health_check` (conf/nginx_health)
    nested: tuple[HttpLocation, ...] = ()  # direct nested locations (also in the flat list)
    script: tuple[RewriteStep, ...] = ()  # rewrite/set/return in config order
    static: StaticConf = field(default_factory=StaticConf)  # root/alias/index/... (nginx_static)


@dataclass(frozen=True, slots=True)
class Server:
    listens: tuple[Listen, ...]
    names: tuple[str, ...]
    locations: tuple[HttpLocation, ...]
    loc: Location | None = None
    static: StaticConf = field(default_factory=StaticConf)  # server-level root/index/...
    script: tuple[RewriteStep, ...] = ()  # server-level rewrite/set/return, in order
    access: tuple[tuple[str, str], ...] = ()  # allow/deny in effect at server level
    ssl: SslSettings = field(default_factory=SslSettings)  # ssl_* (conf/nginx_tls.py)


def _no_stream() -> StreamConfig:
    from hakeeper.conf.nginx_stream import StreamConfig  # noqa: PLC0415 (it imports us)

    return StreamConfig()


@dataclass(frozen=True, slots=True)
class NginxConfig:
    worker_processes: str = "1"
    worker_connections: int = 512
    upstreams: tuple[Upstream, ...] = ()
    servers: tuple[Server, ...] = ()
    stream: StreamConfig = field(default_factory=_no_stream)
    # named captures and `set` names of http{} (proxy/rewrite.known_variables fills it)
    variables: frozenset[str] = frozenset()

    def upstream(self, name: str) -> Upstream | None:
        return next((u for u in self.upstreams if u.name == name), None)


def match_location(locations: Sequence[HttpLocation], uri: str) -> HttpLocation | None:
    """nginx's location choice for `uri` (ngx_http_core_find_location order)."""
    best: HttpLocation | None = None
    for loc in locations:
        if loc.modifier == "=" and uri == loc.pattern:
            return loc
        longer = best is None or len(loc.pattern) > len(best.pattern)
        if loc.modifier in ("", "^~") and uri.startswith(loc.pattern) and longer:
            best = loc
    if best is not None and best.modifier == "^~":
        return best
    for loc in locations:
        if loc.modifier in ("~", "~*"):
            flags = re.IGNORECASE if loc.modifier == "~*" else 0
            if re.search(loc.pattern, uri, flags):
                return loc
    return best


# -- the directive table ---------------------------------------------------------------
MAIN, EVENTS, HTTP, UPSTREAM, SERVER, LOCATION = (
    "main",
    "events",
    "http",
    "upstream",
    "server",
    "location",
)
_ANY_HTTP = frozenset({HTTP, SERVER, LOCATION})


@dataclass(frozen=True, slots=True)
class _Spec:
    contexts: frozenset[str]
    min_args: int
    max_args: int  # -1 = unbounded
    block: bool = False


def _spec(contexts: set[str] | frozenset[str], lo: int, hi: int, block: bool = False) -> _Spec:
    return _Spec(frozenset(contexts), lo, hi, block)


DIRECTIVES: dict[str, _Spec] = {
    "user": _spec({MAIN}, 1, 2),
    "pid": _spec({MAIN}, 1, 1),
    "daemon": _spec({MAIN}, 1, 1),
    "worker_processes": _spec({MAIN}, 1, 1),
    "worker_rlimit_nofile": _spec({MAIN}, 1, 1),
    "error_log": _spec({MAIN, HTTP, SERVER, LOCATION}, 1, 2),
    "events": _spec({MAIN}, 0, 0, block=True),
    "worker_connections": _spec({EVENTS}, 1, 1),
    "use": _spec({EVENTS}, 1, 1),
    "multi_accept": _spec({EVENTS}, 1, 1),
    "http": _spec({MAIN}, 0, 0, block=True),
    "stream": _spec({MAIN}, 0, 0, block=True),  # read by conf/nginx_stream.py
    "load_module": _spec({MAIN}, 1, 1),
    "include": _spec({MAIN, EVENTS, HTTP, UPSTREAM, SERVER, LOCATION}, 1, 1),
    "access_log": _spec(_ANY_HTTP, 1, -1),
    "log_format": _spec({HTTP}, 2, -1),
    "default_type": _spec(_ANY_HTTP, 1, 1),
    "sendfile": _spec(_ANY_HTTP, 1, 1),
    "tcp_nopush": _spec(_ANY_HTTP, 1, 1),
    "tcp_nodelay": _spec(_ANY_HTTP, 1, 1),
    "types_hash_max_size": _spec(_ANY_HTTP, 1, 1),
    "server_tokens": _spec(_ANY_HTTP, 1, 1),
    "upstream": _spec({HTTP}, 1, 1, block=True),
    "match": _spec({HTTP}, 1, 1, block=True),  # nginx Plus; read by conf/nginx_health.py
    "health_check": _spec({LOCATION}, 0, -1),  # nginx Plus; read by conf/nginx_health.py
    "server": _spec({HTTP, UPSTREAM}, 0, -1),  # block in http, statement in upstream
    "least_conn": _spec({UPSTREAM}, 0, 0),
    "ip_hash": _spec({UPSTREAM}, 0, 0),
    "hash": _spec({UPSTREAM}, 1, 2),
    "random": _spec({UPSTREAM}, 0, 2),
    "keepalive": _spec({UPSTREAM}, 1, 1),
    "keepalive_requests": _spec({UPSTREAM, HTTP, SERVER, LOCATION}, 1, 1),
    "keepalive_timeout": _spec({UPSTREAM, HTTP, SERVER, LOCATION}, 1, 2),
    "listen": _spec({SERVER}, 1, -1),
    "server_name": _spec({SERVER}, 1, -1),
    "location": _spec({SERVER, LOCATION}, 1, 2, block=True),
    "root": _spec(_ANY_HTTP, 1, 1),
    "index": _spec(_ANY_HTTP, 1, -1),
    # static files, read by conf/nginx_static.py
    "alias": _spec({LOCATION}, 1, 1),
    "try_files": _spec({SERVER, LOCATION}, 2, -1),
    "types": _spec(_ANY_HTTP, 0, 0, block=True),
    "error_page": _spec(_ANY_HTTP, 2, -1),
    "etag": _spec(_ANY_HTTP, 1, 1),
    # accepted and ignored (Debian's stock nginx.conf has them, some commented out):
    # responses are not compressed
    "gzip": _spec(_ANY_HTTP, 1, 1),
    "gzip_vary": _spec(_ANY_HTTP, 1, 1),
    "gzip_proxied": _spec(_ANY_HTTP, 1, -1),
    "gzip_comp_level": _spec(_ANY_HTTP, 1, 1),
    "gzip_buffers": _spec(_ANY_HTTP, 2, 2),
    "gzip_http_version": _spec(_ANY_HTTP, 1, 1),
    "gzip_types": _spec(_ANY_HTTP, 1, -1),
    "gzip_min_length": _spec(_ANY_HTTP, 1, 1),
    "gzip_disable": _spec(_ANY_HTTP, 1, -1),
    "server_names_hash_bucket_size": _spec({HTTP}, 1, 1),
    "server_names_hash_max_size": _spec({HTTP}, 1, 1),
    "types_hash_bucket_size": _spec(_ANY_HTTP, 1, 1),
    "server_name_in_redirect": _spec(_ANY_HTTP, 1, 1),  # only "off" (conf/nginx_static)
    "return": _spec({SERVER, LOCATION}, 1, 2),
    # ngx_http_rewrite_module and ngx_http_access_module (proxy/rewrite.py)
    "rewrite": _spec({SERVER, LOCATION}, 2, 3),
    "set": _spec({SERVER, LOCATION}, 2, 2),
    "if": _spec({SERVER, LOCATION}, 1, -1, block=True),  # rewrite-module directives only
    "break": _spec({SERVER, LOCATION}, 0, 0),
    "rewrite_log": _spec(_ANY_HTTP, 1, 1),  # accepted: rewrites are not logged
    "uninitialized_variable_warn": _spec(_ANY_HTTP, 1, 1),  # accepted, no warning either
    "allow": _spec(_ANY_HTTP, 1, 1),
    "deny": _spec(_ANY_HTTP, 1, 1),
    "proxy_pass": _spec({LOCATION}, 1, 1),
    "proxy_set_header": _spec(_ANY_HTTP, 2, 2),
    "proxy_http_version": _spec(_ANY_HTTP, 1, 1),
    "proxy_connect_timeout": _spec(_ANY_HTTP, 1, 1),
    "proxy_read_timeout": _spec(_ANY_HTTP, 1, 1),
    "proxy_send_timeout": _spec(_ANY_HTTP, 1, 1),
    "proxy_next_upstream": _spec(_ANY_HTTP, 1, -1),
    "proxy_next_upstream_tries": _spec(_ANY_HTTP, 1, 1),
    "proxy_next_upstream_timeout": _spec(_ANY_HTTP, 1, 1),
    "proxy_buffering": _spec(_ANY_HTTP, 1, 1),
    "proxy_request_buffering": _spec(_ANY_HTTP, 1, 1),
    "proxy_redirect": _spec(_ANY_HTTP, 1, 2),  # read by conf/nginx_headers.py
    "add_header": _spec(_ANY_HTTP, 2, 3),
    "proxy_hide_header": _spec(_ANY_HTTP, 1, 1),
    "proxy_pass_header": _spec(_ANY_HTTP, 1, 1),
    "client_max_body_size": _spec(_ANY_HTTP, 1, 1),
    "client_header_timeout": _spec({HTTP, SERVER}, 1, 1),
    "client_body_timeout": _spec(_ANY_HTTP, 1, 1),
}


# TLS: ssl_* and proxy_ssl_* (read by conf/nginx_tls.py)
DIRECTIVES.update({name: _spec(set(ctx), lo, hi) for name, (ctx, lo, hi) in SSL_DIRECTIVES.items()})

_SETTING_DIRECTIVES = frozenset(
    {
        "proxy_http_version",
        "proxy_connect_timeout",
        "proxy_read_timeout",
        "proxy_send_timeout",
        "proxy_next_upstream",
        "proxy_next_upstream_tries",
        "proxy_next_upstream_timeout",
        "client_max_body_size",
        "client_header_timeout",
        "client_body_timeout",
        "keepalive_timeout",
        "keepalive_requests",
    }
)
_NEXT_UPSTREAM = frozenset(
    {"error", "timeout", "invalid_header", "http_500", "http_502", "http_503", "http_504"}
    | {"http_403", "http_404", "http_429", "non_idempotent", "off"}
)


class _Reader:
    def __init__(self, diags: Diagnostics, include: IncludeFn | None) -> None:
        self.diags = diags
        self.include = include
        self.matches: dict[str, Match] = {}
        self.ssl = SslSettings()  # http-level ssl_* (inherited by servers)
        self.server_ssl: dict[Location | None, SslSettings] = {}  # by server block

    # -- generic checks (shared with the stream reader, conf/nginx_stream.py) ------------
    #: The directive table, the context where `server` opens a block, and the context of
    #: an `upstream` block's statements; the stream reader swaps in its own.
    table: ClassVar[Mapping[str, _Spec]] = DIRECTIVES
    server_block_in: ClassVar[str] = HTTP
    upstream_context: ClassVar[str] = UPSTREAM

    def unknown(self, node: Node, context: str) -> None:
        """The error for a directive not in the table (did-you-mean from the table)."""
        hint = did_you_mean(node.name, self.table)
        self.diags.error(node.loc, f'unknown directive "{node.name}"{hint}')

    def expand(self, nodes: Sequence[Node], context: str) -> list[Node]:
        """Check every statement against the table; splice `include`s in place."""
        out: list[Node] = []
        for node in nodes:
            spec = self.table.get(node.name)
            if spec is None:
                self.unknown(node, context)
                continue
            if context not in spec.contexts:
                self.diags.error(node.loc, f'"{node.name}" directive is not allowed here')
                continue
            n = len(node.args)
            if n < spec.min_args or (spec.max_args >= 0 and n > spec.max_args):
                self.diags.error(
                    node.loc, f'invalid number of arguments in "{node.name}" directive'
                )
                continue
            wants_block = spec.block or (node.name == "server" and context == self.server_block_in)
            if wants_block != node.is_block:
                what = "has no opening" if wants_block else "is not terminated by"
                sep = '"{"' if wants_block else '";"'
                self.diags.error(node.loc, f'directive "{node.name}" {what} {sep}')
                continue
            ignored = ignored_warning(node, context)
            if ignored is not None:  # accepted, no effect (conf/nginx_status.py)
                self.diags.warning(node.loc, ignored)
            if node.name == "include":
                if self.include is None:
                    self.diags.error(node.loc, "include is not supported here")
                else:
                    out.extend(
                        self.expand(self.include(node.args[0].text, node.loc, self.diags), context)
                    )
                continue
            out.append(node)
        return out

    def number(self, node: Node, text: str, low: int = 0) -> int | None:
        if not text.isdigit() or int(text) < low:
            self.diags.error(node.loc, f'invalid value "{text}" in "{node.name}" directive')
            return None
        return int(text)

    def time(self, node: Node, text: str) -> float | None:
        value = parse_time(text)
        if value is None:
            self.diags.error(node.loc, f'invalid time "{text}" in "{node.name}" directive')
        return value

    # -- blocks -------------------------------------------------------------------------
    def main(self, nodes: Sequence[Node]) -> NginxConfig:
        config = NginxConfig()
        for node in self.expand(nodes, MAIN):
            if node.name == "worker_processes":
                text = node.args[0].text
                if text != "auto" and self.number(node, text, 1) is None:
                    continue
                config = replace(config, worker_processes=text)
            elif node.name == "events":
                for ev in self.expand(node.children or (), EVENTS):
                    if ev.name == "worker_connections":
                        value = self.number(ev, ev.args[0].text, 1)
                        if value is not None:
                            config = replace(config, worker_connections=value)
            elif node.name == "http":
                upstreams, servers = self.http(node)
                config = replace(config, upstreams=upstreams, servers=servers)
            elif node.name == "stream":
                from hakeeper.conf.nginx_stream import read_stream  # noqa: PLC0415

                config = replace(config, stream=read_stream(node, self.diags, self.include))
        return config

    def http(self, block: Node) -> tuple[tuple[Upstream, ...], tuple[Server, ...]]:
        children = self.expand(block.children or (), HTTP)
        settings = self.settings(children, ProxySettings())
        upstreams = self.upstreams(children)
        self.matches = read_matches(children, self.diags)
        self.ssl = read_ssl(children, SslSettings(), self.diags)
        files = read_static(children, StaticConf(), self.diags, self.include)
        servers = [self.server(node, settings, files) for node in children if node.name == "server"]
        servers = self.tls(servers)
        known = {u.name for u in upstreams}
        for server in servers:
            for loc in server.locations:
                if loc.proxy_pass is not None:
                    host = _pass_host(loc.proxy_pass)
                    if host and ":" not in host and host not in known and not _is_ip(host):
                        self.diags.error(loc.loc, f'host not found in upstream "{host}"')
                if loc.health_check is not None and _pass_host(loc.proxy_pass or "/") not in known:
                    self.diags.error(loc.health_check.loc, '"health_check" needs an upstream')
        return tuple(upstreams), tuple(servers)

    def tls(self, servers: Sequence[Server]) -> list[Server]:
        """Each server with its merged `ssl_*` settings (`ssl on` makes its listens
        `ssl`), and nginx's checks: a key for every certificate, a certificate for the
        default server of every `listen ... ssl` address (unless it rejects handshakes)."""
        out: list[Server] = []
        for server in servers:
            ssl = self.server_ssl.pop(server.loc, self.ssl)
            check_certificates(ssl, server.loc, self.diags)
            listens = server.listens
            if ssl.enabled:
                listens = tuple(replace(listen, ssl=True) for listen in listens)
            out.append(replace(server, ssl=ssl, listens=listens))
        addrs = {(ln.host, ln.port): False for s in out for ln in s.listens}
        for s in out:
            for ln in s.listens:
                addrs[(ln.host, ln.port)] |= ln.ssl  # `ssl` is a property of the address
        reported: set[int] = set()
        for addr in [a for a, tls in addrs.items() if tls]:
            members = [s for s in out if any((ln.host, ln.port) == addr for ln in s.listens)]
            default = next(
                (
                    s
                    for s in members
                    if any((ln.host, ln.port) == addr and ln.default_server for ln in s.listens)
                ),
                members[0],
            )
            bare = not default.ssl.certificates and not default.ssl.reject_handshake
            if bare and id(default) not in reported:
                reported.add(id(default))
                no_certificate(default.loc, self.diags)
        return out

    def upstreams(self, children: Sequence[Node]) -> list[Upstream]:
        """The `upstream` blocks among `children`; a repeated name is an error."""
        upstreams: list[Upstream] = []
        for node in children:
            if node.name == "upstream":
                up = self.upstream(node)
                if any(u.name == up.name for u in upstreams):
                    self.diags.error(node.loc, f'duplicate upstream "{up.name}"')
                else:
                    upstreams.append(up)
        return upstreams

    def upstream(self, block: Node) -> Upstream:
        up = Upstream(name=block.args[0].text, servers=(), loc=block.loc)
        servers: list[UpstreamServer] = []
        for node in self.expand(block.children or (), self.upstream_context):
            args = node.arg_texts()
            if node.name == "server":
                if not args:
                    self.diags.error(node.loc, 'invalid number of arguments in "server" directive')
                    continue
                server = self.upstream_peer(node)
                if server is not None:
                    servers.append(server)
            elif node.name in ("least_conn", "ip_hash"):
                up = replace(up, method=node.name)
            elif node.name == "hash":
                if len(args) == 2 and args[1] != "consistent":
                    self.diags.error(node.loc, f'invalid parameter "{args[1]}"')
                    continue
                method = "hash_consistent" if len(args) == 2 else "hash"
                up = replace(up, method=method, hash_key=args[0])
            elif node.name == "random":
                if args not in ((), ("two",), ("two", "least_conn")):
                    self.diags.error(node.loc, f'invalid parameter "{" ".join(args)}"')
                    continue
                up = replace(up, method="random_two" if args else "random")
            elif node.name == "keepalive":
                value = self.number(node, args[0], 1)
                if value is not None:
                    up = replace(up, keepalive=value)
            elif node.name == "keepalive_timeout":
                t = self.time(node, args[0])
                if t is not None:
                    up = replace(up, keepalive_timeout=t)
            elif node.name == "keepalive_requests":
                value = self.number(node, args[0])
                if value is not None:
                    up = replace(up, keepalive_requests=value)
        if not servers:
            self.diags.error(block.loc, f'no servers are inside upstream "{up.name}"')
        if up.method in ("ip_hash", "hash", "hash_consistent", "random", "random_two"):
            for s in servers:
                if s.backup:
                    self.diags.error(s.loc, 'balancing method does not support parameter "backup"')
                if s.slow_start:
                    self.diags.error(s.loc, 'balancing method does not support "slow_start"')
        return replace(up, servers=tuple(servers))

    def upstream_peer(self, node: Node) -> UpstreamServer | None:
        """One `server` statement of an upstream block (the stream reader wants a port)."""
        return self.upstream_server(node)

    def upstream_server(self, node: Node) -> UpstreamServer | None:
        hostport = node.args[0].text
        host, _, port_text = hostport.rpartition(":")
        if not host or not port_text.isdigit():
            host, port_text = hostport, "80"
        server = UpstreamServer(host=host.strip("[]"), port=int(port_text), loc=node.loc)
        for word in node.args[1:]:
            key, eq, value = word.text.partition("=")
            if key == "backup" and not eq:
                server = replace(server, backup=True)
            elif key == "down" and not eq:
                server = replace(server, down=True)
            elif key in ("weight", "max_fails", "max_conns") and eq:
                n = self.number(node, value, 1 if key == "weight" else 0)
                if n is None:
                    return None
                if key == "weight":
                    server = replace(server, weight=n)
                elif key == "max_fails":
                    server = replace(server, max_fails=n)
                else:
                    server = replace(server, max_conns=n)
            elif key == "fail_timeout" and eq:
                t = self.time(node, value)
                if t is None:
                    return None
                server = replace(server, fail_timeout=t)
            elif key == "slow_start" and eq:
                t = self.time(node, value)
                if t is None:
                    return None
                server = replace(server, slow_start=t)
            else:
                self.diags.error(node.loc, f'invalid parameter "{word.text}"')
                return None
        return server

    def server(
        self, block: Node, inherited: ProxySettings, files: StaticConf | None = None
    ) -> Server:
        children = self.expand(block.children or (), SERVER)
        settings = self.settings(children, inherited)
        files = read_static(children, files or StaticConf(), self.diags, self.include)
        self.server_ssl[block.loc] = read_ssl(children, self.ssl, self.diags)
        listens: list[Listen] = []
        names: list[str] = []
        locations: list[HttpLocation] = []
        script: list[RewriteStep] = []
        for node in children:
            if node.name in SCRIPT:
                step = self.script_step(node)
                if step is not None:
                    script.append(step)
            if node.name == "listen":
                listen = self.listen(node)
                if listen is not None:
                    listens.append(listen)
            elif node.name == "server_name":
                names.extend(node.arg_texts())
            elif node.name == "location":
                locations.extend(self.location(node, settings, files))
            elif node.name == "return":
                locations.append(self.return_location(node, settings))
        return Server(
            tuple(listens) or (Listen("0.0.0.0", 80),),
            tuple(names),
            tuple(locations),
            block.loc,
            files,
            script=tuple(script),
            access=settings.access,
        )

    def listen(self, node: Node) -> Listen | None:
        text = node.args[0].text
        host, _, port_text = text.rpartition(":")
        if not port_text.isdigit():
            if text.isdigit():
                host, port_text = "0.0.0.0", text
            else:
                host, port_text = text, "80"
        host = (host or "0.0.0.0").strip("[]")
        flags = set(node.arg_texts()[1:])
        unknown = flags - {"default_server", "default", "reuseport", "backlog", "deferred"}
        unknown -= {"ssl", "http2"}
        if "http2" in flags:
            self.diags.warning(node.loc, 'hakeeper serves "http2" listeners as HTTP/1.1')
        unknown = {f for f in unknown if not f.startswith("backlog=")}
        if unknown:
            self.diags.error(node.loc, f'invalid parameter "{sorted(unknown)[0]}"')
            return None
        port = int(port_text)
        if not 0 < port < 65536:
            self.diags.error(node.loc, f'invalid port in "{text}" of the "listen" directive')
            return None
        default = bool(flags & {"default_server", "default"})
        return Listen(host, port, default, "reuseport" in flags, "ssl" in flags)

    def location(
        self, block: Node, inherited: ProxySettings, files: StaticConf | None = None
    ) -> list[HttpLocation]:
        args = block.arg_texts()
        modifier, pattern = ("", args[0]) if len(args) == 1 else (args[0], args[1])
        if modifier not in ("", "=", "^~", "~", "~*"):
            self.diags.error(block.loc, f'invalid location modifier "{modifier}"')
            return []
        if modifier in ("~", "~*"):
            try:
                re.compile(python_regex(pattern))
            except re.error as exc:
                self.diags.error(block.loc, f'pcre2_compile() failed: {exc} in "{pattern}"')
                return []
        children = self.expand(block.children or (), LOCATION)
        settings = self.settings(children, inherited, (modifier, pattern))
        files = read_static(children, files or StaticConf(), self.diags, self.include)
        out: list[HttpLocation] = []
        direct: list[HttpLocation] = []
        here = HttpLocation(modifier, pattern, settings=settings, loc=block.loc, static=files)
        script: list[RewriteStep] = []
        for node in children:
            if node.name in SCRIPT:
                step = self.script_step(node)
                if step is not None:
                    script.append(step)
            if node.name == "proxy_pass":
                url = node.args[0].text
                if url.startswith("https://"):
                    check_proxy_ssl(settings.ssl, node.loc, self.diags)
                elif not url.startswith("http://"):
                    self.diags.error(node.loc, f'invalid URL prefix in "{url}"')
                    continue
                here = replace(here, proxy_pass=url)
            elif node.name == "return":
                ret = self.return_location(node, settings)
                here = replace(here, return_code=ret.return_code, return_text=ret.return_text)
            elif node.name == "location":
                if pattern.startswith("@"):
                    self.diags.error(
                        node.loc, f'location "{pattern}" cannot be inside the named location'
                    )
                    continue
                sub = self.location(node, settings, files)
                if sub:
                    direct.append(sub[0])
                out.extend(sub)
            elif node.name == "health_check":
                hc = read_health_check(node, self.matches, self.diags)
                here = replace(here, health_check=hc) if hc is not None else here
        if direct:
            here = replace(here, nested=tuple(direct))
        if script:
            here = replace(here, script=tuple(script))
        return [here, *out]

    def return_location(self, node: Node, settings: ProxySettings) -> HttpLocation:
        args = node.arg_texts()
        if len(args) == 1 and args[0].startswith(("http://", "https://", "$scheme")):
            args = ("302", args[0])  # `return URL` (ngx_http_rewrite_return)
        code = self.number(node, args[0]) if args[0].isdigit() else None
        if code is None or not 0 <= code <= 999:
            self.diags.error(node.loc, f'invalid return code "{args[0]}"')
            code = 500
        text = args[1] if len(args) > 1 else ""
        return HttpLocation(
            "", "", return_code=code, return_text=text, settings=settings, loc=node.loc
        )

    def script_step(self, node: Node) -> RewriteStep | None:
        """A rewrite-module directive (conf/nginx_rewrite.py), None when in error."""
        return read_step(node, self.diags, lambda nodes: self.expand(nodes, LOCATION))

    def settings(
        self, nodes: Sequence[Node], inherited: ProxySettings, where: tuple[str, str] | None = None
    ) -> ProxySettings:
        """Merge this level's proxy_* / client_* values over the enclosing level's
        (`where`: the location's modifier and name, None at http/server level)."""
        s = inherited
        if any(node.name in HEADER_DIRECTIVES for node in nodes):
            out = read_headers_out(nodes, s.headers_out, self.diags, where)
            s = replace(s, headers_out=out)
        headers: list[tuple[str, str]] = []
        access: list[tuple[str, str]] = []
        for node in nodes:
            args = node.arg_texts()
            name = node.name
            if name == "proxy_set_header":
                headers.append((args[0], args[1]))
            elif name in ("allow", "deny"):
                if access_rule(args[0]):
                    access.append((name, args[0]))
                else:
                    self.diags.error(node.loc, f'invalid parameter "{args[0]}"')
            elif name in PROXY_SSL_DIRECTIVES:
                s = replace(s, ssl=read_proxy_ssl(node, s.ssl, self.diags))
            elif name not in _SETTING_DIRECTIVES:
                continue
            elif name == "proxy_http_version":
                if args[0] not in ("1.0", "1.1"):
                    self.diags.error(node.loc, f'invalid value "{args[0]}" in "{name}" directive')
                else:
                    s = replace(s, http_version=args[0])
            elif name in ("proxy_connect_timeout", "proxy_read_timeout", "proxy_send_timeout"):
                t = self.time(node, args[0])
                if t is not None and name == "proxy_connect_timeout":
                    s = replace(s, connect_timeout=t)
                elif t is not None and name == "proxy_read_timeout":
                    s = replace(s, read_timeout=t)
                elif t is not None:
                    s = replace(s, send_timeout=t)
            elif name in ("client_header_timeout", "client_body_timeout"):
                t = self.time(node, args[0])
                if t is not None and name == "client_header_timeout":
                    s = replace(s, client_header_timeout=t)
                elif t is not None:
                    s = replace(s, client_body_timeout=t)
            elif name == "keepalive_timeout":
                t = self.time(node, args[0])
                if t is not None:
                    s = replace(s, keepalive_timeout=t)
            elif name == "keepalive_requests":
                n = self.number(node, args[0])
                if n is not None:
                    s = replace(s, keepalive_requests=n)
            elif name == "proxy_next_upstream":
                bad = [a for a in args if a not in _NEXT_UPSTREAM]
                if bad:
                    self.diags.error(node.loc, f'invalid value "{bad[0]}" in "{name}" directive')
                else:
                    s = replace(s, next_upstream=tuple(args))
            elif name == "proxy_next_upstream_tries":
                n = self.number(node, args[0])
                if n is not None:
                    s = replace(s, next_upstream_tries=n)
            elif name == "proxy_next_upstream_timeout":
                t = self.time(node, args[0])
                if t is not None:
                    s = replace(s, next_upstream_timeout=t)
            elif name == "client_max_body_size":
                size = parse_size(args[0])
                if size is None:
                    self.diags.error(node.loc, f'invalid value "{args[0]}" in "{name}" directive')
                else:
                    s = replace(s, client_max_body_size=size)
        if access:  # nginx: a level with allow/deny rules replaces the inherited ones
            s = replace(s, access=tuple(access))
        if headers:  # nginx: inner proxy_set_header replaces the inherited list
            s = replace(s, headers=tuple(headers))
        return s


def _pass_host(url: str) -> str:
    rest = url.partition("://")[2]  # http:// or https://
    return rest.split("/", 1)[0].split("$", 1)[0]  # `http://b$request_uri`: the host is b


def _is_ip(host: str) -> bool:
    return bool(re.fullmatch(r"[\d.]+|\[[0-9a-fA-F:]+\]", host))


def read_nginx(
    nodes: Sequence[Node],
    diags: Diagnostics,
    include: IncludeFn | None = None,
    context: str = MAIN,
) -> NginxConfig:
    """The typed model of an nginx.conf tree; problems go to `diags` (with file:line).

    `context="http"` reads a fragment meant for `include` inside `http { }` (conf.d files).
    """
    reader = _Reader(diags, include)
    if context == HTTP:
        upstreams, servers = reader.http(Node(Word("http", _NOWHERE), (), tuple(nodes)))
        return NginxConfig(upstreams=upstreams, servers=servers)
    return reader.main(nodes)


_NOWHERE = Location("<fragment>", 0, 0)
