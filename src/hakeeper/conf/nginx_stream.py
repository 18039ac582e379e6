"""nginx `stream { }` reader: the L4 directive table -> frozen `StreamConfig`.

Follows nginx's stream modules (`ngx_stream_core_module`, `ngx_stream_upstream_*`,
`ngx_stream_proxy_module`; facts in ../shared/anchors/dataplane.md 1.7, read for
behaviour, not copied): `upstream NAME { server host:port [weight= max_fails=
fail_timeout= backup down max_conns=]; least_conn; hash KEY [consistent];
random [two [least_conn]]; }` and `server { listen [addr:]port [udp] [reuseport];
proxy_pass NAME|host:port; proxy_connect_timeout; proxy_timeout; proxy_next_upstream
on|off; proxy_next_upstream_tries; proxy_next_upstream_timeout; proxy_half_close; }`, proxy_* values
inherited stream -> server. nginx Plus's active checks (ngx_stream_upstream_hc_module) are
read too: `health_check [...]` in a server whose proxy_pass names an upstream,
`health_check_timeout` (inherited) and stream-level `match NAME { send; expect; }` blocks
(syntax and defaults in `hakeeper.conf.nginx_health`). Like `ngx_conf_handler`, an
unknown directive (with a did-you-mean from this table), a directive outside its block
or with the wrong number of arguments is an error at file:line:col; so are the stream
checks nginx makes at startup
(`no port in upstream`, `duplicate "addr:port" address and port pair`, `no handler for
server`, `no "listen" is defined for server`). There is no `ip_hash` in nginx's stream
module, so it is an unknown directive here too. Directives nginx knows but hakeeper does
not implement (ssl, proxy_protocol, ...) are errors that say so, so `check --nginx` never
accepts something `run --nginx` would serve differently. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from hakeeper.conf.diagnostics import Diagnostics, Location, did_you_mean
from hakeeper.conf.nginx import IncludeFn, Upstream, UpstreamServer, _Reader, _Spec, _spec
from hakeeper.conf.nginx_health import (
    StreamHealthCheck,
    StreamMatch,
    read_stream_health_check,
    read_stream_matches,
)
from hakeeper.conf.nginx_status import REFUSED_STREAM_NAMES
from hakeeper.conf.tree import Node

__all__ = [
    "STREAM_DIRECTIVES",
    "StreamConfig",
    "StreamListen",
    "StreamServer",
    "read_stream",
]

STREAM, S_UPSTREAM, S_SERVER = "stream", "stream upstream", "stream server"
_SS = frozenset({STREAM, S_SERVER})

#: Directives nginx's stream modules accept that hakeeper does not implement (yet).
UNSUPPORTED = frozenset(REFUSED_STREAM_NAMES)

STREAM_DIRECTIVES: dict[str, _Spec] = {
    "include": _spec({STREAM, S_UPSTREAM, S_SERVER}, 1, 1),
    "upstream": _spec({STREAM}, 1, 1, block=True),
    "server": _spec({STREAM, S_UPSTREAM}, 0, -1),  # block in stream, statement in upstream
    "least_conn": _spec({S_UPSTREAM}, 0, 0),
    "hash": _spec({S_UPSTREAM}, 1, 2),
    "random": _spec({S_UPSTREAM}, 0, 2),
    "zone": _spec({S_UPSTREAM}, 1, 2),
    "listen": _spec({S_SERVER}, 1, -1),
    "proxy_pass": _spec({S_SERVER}, 1, 1),
    "proxy_connect_timeout": _spec(_SS, 1, 1),
    "proxy_timeout": _spec(_SS, 1, 1),
    "proxy_next_upstream": _spec(_SS, 1, 1),
    "proxy_next_upstream_tries": _spec(_SS, 1, 1),
    "proxy_next_upstream_timeout": _spec(_SS, 1, 1),
    # accepted and without effect on how bytes are relayed here
    "proxy_buffer_size": _spec(_SS, 1, 1),
    "proxy_responses": _spec(_SS, 1, 1),
    "proxy_requests": _spec(_SS, 1, 1),
    "proxy_socket_keepalive": _spec(_SS, 1, 1),
    "proxy_half_close": _spec(_SS, 1, 1),
    "tcp_nodelay": _spec(_SS, 1, 1),
    "error_log": _spec(_SS, 1, 2),
    "access_log": _spec(_SS, 1, -1),
    "log_format": _spec({STREAM}, 2, -1),
    "resolver": _spec(_SS, 1, -1),
    "resolver_timeout": _spec(_SS, 1, 1),
    "preread_buffer_size": _spec(_SS, 1, 1),
    "preread_timeout": _spec(_SS, 1, 1),
    "variables_hash_max_size": _spec({STREAM}, 1, 1),
    # nginx Plus active health checks (ngx_stream_upstream_hc_module; conf/nginx_health.py)
    "health_check": _spec({S_SERVER}, 0, -1),
    "health_check_timeout": _spec(_SS, 1, 1),
    "match": _spec({STREAM}, 1, 1, block=True),
}

_LISTEN_FLAGS = frozenset({"udp", "reuseport", "bind", "so_keepalive=on", "so_keepalive=off"})
_LISTEN_PREFIXES = ("backlog=", "so_keepalive=", "ipv6only=", "rcvbuf=", "sndbuf=")


@dataclass(frozen=True, slots=True)
class StreamListen:
    """One `listen` of a stream server; `udp` selects a datagram listener."""

    host: str
    port: int
    udp: bool = False
    reuseport: bool = False
    loc: Location | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return ("UDP" if self.udp else "TCP", self.host, self.port)


@dataclass(frozen=True, slots=True)
class StreamServer:
    """One `server { }` in `stream`: where it listens and what it proxies to (merged)."""

    listens: tuple[StreamListen, ...]
    proxy_pass: str | None = None  # an upstream name or "host:port"
    connect_timeout: float = 60.0
    timeout: float = 600.0  # proxy_timeout: idle time between two reads/writes
    next_upstream: bool = True
    next_upstream_tries: int = 0  # 0 = every peer once
    next_upstream_timeout: float = 0.0  # 0 = unlimited
    half_close: bool = False  # proxy_half_close
    loc: Location | None = None
    health_check: StreamHealthCheck | None = None  # nginx Plus `health_check`
    health_check_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class StreamConfig:
    upstreams: tuple[Upstream, ...] = ()
    servers: tuple[StreamServer, ...] = ()
    matches: tuple[StreamMatch, ...] = ()

    def upstream(self, name: str) -> Upstream | None:
        return next((u for u in self.upstreams if u.name == name), None)

    def target(self, server: StreamServer) -> Upstream | None:
        """The upstream a server proxies to; a `host:port` proxy_pass is a one-peer
        upstream with nginx's defaults (as nginx builds an implicit upstream)."""
        if server.proxy_pass is None:
            return None
        up = self.upstream(server.proxy_pass)
        if up is not None:
            return up
        host, port = split_hostport(server.proxy_pass)
        if port is None:
            return None
        return Upstream(server.proxy_pass, (UpstreamServer(host, port, loc=server.loc),))


def split_hostport(text: str) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port` -> (host, port); port None when missing or not a number."""
    if text.startswith("["):
        host, close, rest = text[1:].partition("]")
        if close and rest.startswith(":") and rest[1:].isdigit():
            return host, int(rest[1:])
        return host, None
    host, colon, port = text.rpartition(":")
    if not colon or ":" in host or not port.isdigit():
        return text, None
    return host, int(port)


_DEFAULTS = StreamServer(listens=())


class _StreamReader(_Reader):
    """The http reader's table checks and upstream reading, over the stream table."""

    table: ClassVar[Mapping[str, _Spec]] = STREAM_DIRECTIVES
    server_block_in: ClassVar[str] = STREAM
    upstream_context: ClassVar[str] = S_UPSTREAM

    def unknown(self, node: Node, context: str) -> None:
        name = node.name
        if name in UNSUPPORTED:
            self.diags.error(node.loc, f'"{name}" directive is not supported by hakeeper (stream)')
        else:
            here = [k for k, s in STREAM_DIRECTIVES.items() if context in s.contexts]
            self.diags.error(node.loc, f'unknown directive "{name}"{did_you_mean(name, here)}')

    def stream(self, block: Node) -> StreamConfig:
        children = self.expand(block.children or (), STREAM)
        inherited = self.proxy_settings(children, _DEFAULTS)
        upstreams = self.upstreams(children)
        matches = read_stream_matches(children, self.diags)
        config = StreamConfig(upstreams=tuple(upstreams), matches=tuple(matches.values()))
        servers: list[StreamServer] = []
        seen: dict[tuple[str, str, int], StreamListen] = {}
        for node in children:
            if node.name != "server":
                continue
            server = self.stream_server(node, inherited, config)
            for listen in server.listens:
                if listen.key in seen:
                    shown = f"{listen.host}:{listen.port}"
                    self.diags.error(listen.loc, f'duplicate "{shown}" address and port pair')
                seen[listen.key] = listen
            servers.append(server)
        return replace(config, servers=tuple(servers))

    def upstream_peer(self, node: Node) -> UpstreamServer | None:
        """A stream upstream's `server` needs an explicit port (nginx: no default 80)."""
        host, port = split_hostport(node.args[0].text)
        if port is None:
            self.diags.error(node.loc, f'no port in upstream "{node.args[0].text}"')
            return None
        server = self.upstream_server(node)
        return None if server is None else replace(server, host=host, port=port)

    def stream_server(
        self, block: Node, inherited: StreamServer, config: StreamConfig
    ) -> StreamServer:
        before = len(self.diags.errors)
        children = self.expand(block.children or (), S_SERVER)
        server = replace(self.proxy_settings(children, inherited), loc=block.loc)
        listens: list[StreamListen] = []
        for node in children:
            if node.name == "listen":
                listen = self.stream_listen(node)
                if listen is not None:
                    listens.append(listen)
            elif node.name == "proxy_pass":
                target = node.args[0].text
                if self.proxy_target(node, target, config):
                    server = replace(server, proxy_pass=target)
        for node in children:
            if node.name != "health_check":
                continue
            if server.health_check is not None:
                self.diags.error(node.loc, '"health_check" directive is duplicate')
                continue
            matches = {m.name: m for m in config.matches}
            hc = read_stream_health_check(node, matches, server.health_check_timeout, self.diags)
            if hc is not None and config.upstream(server.proxy_pass or "") is None:
                self.diags.error(node.loc, '"health_check" needs an upstream')
            elif hc is not None:
                server = replace(server, health_check=hc)
        if len(self.diags.errors) > before:
            pass  # nginx stops at the first error: no follow-up noise from a typo
        elif not any(n.name == "listen" for n in children):
            self.diags.error(block.loc, 'no "listen" is defined for server')
        elif not any(n.name == "proxy_pass" for n in children):
            self.diags.error(block.loc, "no handler for server")
        return replace(server, listens=tuple(listens))

    def proxy_target(self, node: Node, target: str, config: StreamConfig) -> bool:
        if "$" in target or target.startswith("unix:"):
            self.diags.error(
                node.loc, f'proxy_pass "{target}" is not supported by hakeeper (stream)'
            )
            return False
        if config.upstream(target) is not None:
            return True
        _, port = split_hostport(target)
        if port is None:
            self.diags.error(node.loc, f'no port in upstream "{target}"')
            return False
        if not 0 < port < 65536:
            self.diags.error(node.loc, f'invalid port in upstream "{target}"')
            return False
        return True

    def stream_listen(self, node: Node) -> StreamListen | None:
        text = node.args[0].text
        if text.isdigit():
            host, port = "0.0.0.0", int(text)
        else:
            host, port_or_none = split_hostport(text)
            if port_or_none is None:
                self.diags.error(node.loc, f'invalid port in "{text}" of the "listen" directive')
                return None
            port = port_or_none
        if not 0 < port < 65536:
            self.diags.error(node.loc, f'invalid port in "{text}" of the "listen" directive')
            return None
        if host == "*":
            host = "0.0.0.0"
        flags = node.arg_texts()[1:]
        for flag in flags:
            if flag not in _LISTEN_FLAGS and not flag.startswith(_LISTEN_PREFIXES):
                if flag in ("ssl", "proxy_protocol"):
                    self.diags.error(
                        node.loc, f'listen parameter "{flag}" is not supported by hakeeper'
                    )
                else:
                    self.diags.error(node.loc, f'invalid parameter "{flag}"')
                return None
        return StreamListen(host, port, "udp" in flags, "reuseport" in flags, node.loc)

    def proxy_settings(self, nodes: Sequence[Node], inherited: StreamServer) -> StreamServer:
        """This level's proxy_* values over the enclosing level's."""
        s = inherited
        for node in nodes:
            name = node.name
            arg = node.args[0].text if node.args else ""
            if name in (
                "proxy_connect_timeout",
                "proxy_timeout",
                "proxy_next_upstream_timeout",
                "health_check_timeout",
            ):
                t = self.time(node, arg)
                if t is None:
                    continue
                if name == "health_check_timeout":
                    s = replace(s, health_check_timeout=t)
                elif name == "proxy_connect_timeout":
                    s = replace(s, connect_timeout=t)
                elif name == "proxy_timeout":
                    s = replace(s, timeout=t)
                else:
                    s = replace(s, next_upstream_timeout=t)
            elif name == "proxy_next_upstream":
                if arg not in ("on", "off"):
                    self.diags.error(
                        node.loc,
                        f'invalid value "{arg}" in "{name}" directive, it must be "on" or "off"',
                    )
                else:
                    s = replace(s, next_upstream=arg == "on")
            elif name == "proxy_next_upstream_tries":
                n = self.number(node, arg)
                if n is not None:
                    s = replace(s, next_upstream_tries=n)
            elif name in ("proxy_responses", "proxy_requests"):
                self.number(node, arg)
            elif name == "proxy_half_close" and arg in ("on", "off"):
                s = replace(s, half_close=arg == "on")
            elif name in (
                "proxy_socket_keepalive",
                "proxy_half_close",
                "tcp_nodelay",
            ) and arg not in ("on", "off"):
                self.diags.error(
                    node.loc,
                    f'invalid value "{arg}" in "{name}" directive, it must be "on" or "off"',
                )
        return s


def read_stream(block: Node, diags: Diagnostics, include: IncludeFn | None = None) -> StreamConfig:
    """The typed model of one `stream { }` block; problems go to `diags` (file:line:col)."""
    return _StreamReader(diags, include).stream(block)
