"""From the nginx.conf model (`hakeeper.conf.nginx`) to what the proxy engine runs.

Maps one proxied `location` to a `ProxyConfig` plus its balancer, following nginx's
meaning of each directive: `proxy_pass http://NAME` uses `upstream NAME` (its method via
`hakeeper.balance.upstream.UpstreamGroup`, its `keepalive` pool) and sends
`Host: NAME` for `$proxy_host`; `proxy_pass http://host:port` is a one-peer upstream;
`proxy_set_header` lists become header rules; timeouts, `client_max_body_size`,
`proxy_next_upstream(_tries, _timeout)` carry over. `listeners` gives what
`hakeeper run --nginx` serves today: one engine per `listen`, which the engine supports
when a server proxies a single prefix location (`location /`); anything richer is
reported as unsupported instead of being served differently from nginx.
Pure apart from building balancer objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from hakeeper.balance.nginx import UpstreamServer as BalancedServer
from hakeeper.balance.upstream import UpstreamGroup
from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.nginx import HttpLocation, Listen, NginxConfig, Server
from hakeeper.proxy.balancer import Balancer, RoundRobin
from hakeeper.proxy.config import (
    HeaderRule,
    Limits,
    Peer,
    ProxyConfig,
    RetryPolicy,
    Timeouts,
    header_rule,
)


@dataclass(frozen=True, slots=True)
class Route:
    """One listener and the proxy settings + balancer behind it."""

    listen: Listen
    config: ProxyConfig
    balancer: Balancer


def proxy_for(
    nginx: NginxConfig, location: HttpLocation, diags: Diagnostics
) -> tuple[ProxyConfig, Balancer] | None:
    """The engine settings for one location with `proxy_pass`, or None (reported)."""
    url = location.proxy_pass
    if url is None:
        diags.error(location.loc, "location has no proxy_pass")
        return None
    rest = url[len("http://") :]
    hostport, slash, uri = rest.partition("/")
    if slash:
        diags.error(location.loc, f'proxy_pass with a URI part ("/{uri}") is not supported yet')
        return None
    s = location.settings
    rules: list[HeaderRule] = []
    for name, value in s.headers:
        try:
            rules.append(header_rule(name, value))
        except ValueError as exc:
            diags.error(location.loc, f"proxy_set_header {name}: {exc}")
            return None
    upstream = nginx.upstream(hostport)
    balancer: Balancer
    keepalive = 0
    up_timeout = 60.0
    up_requests = 1000
    if upstream is not None:
        peers = tuple(
            Peer(srv.host, srv.port, f"{srv.host}:{srv.port}") for srv in upstream.servers
        )
        entries = [
            (
                peer,
                BalancedServer(
                    name=f"{i}:{peer.name}",
                    weight=srv.weight,
                    max_fails=srv.max_fails,
                    fail_timeout=srv.fail_timeout,
                    backup=srv.backup,
                    down=srv.down,
                    max_conns=srv.max_conns,
                    server=peer.name,
                ),
            )
            for i, (peer, srv) in enumerate(zip(peers, upstream.servers, strict=True))
        ]
        if upstream.method in ("hash", "hash_consistent") and upstream.hash_key not in (
            "$remote_addr",
            "$binary_remote_addr",
        ):
            diags.warning(
                upstream.loc,
                f"hash key {upstream.hash_key!r}: the proxy hashes the client address for now",
            )
        balancer = UpstreamGroup(upstream.method, entries)
        keepalive = upstream.keepalive
        up_timeout = upstream.keepalive_timeout
        up_requests = upstream.keepalive_requests
    else:
        host, _, port_text = hostport.rpartition(":")
        if not host:
            host, port_text = hostport, "80"
        if not port_text.isdigit():
            diags.error(location.loc, f'invalid port in upstream "{hostport}"')
            return None
        peers = (Peer(host.strip("[]"), int(port_text)),)
        balancer = RoundRobin(peers)
    config = ProxyConfig(
        peers=peers,
        proxy_host=hostport,
        http_version=s.http_version,
        headers=tuple(rules),
        timeouts=Timeouts(
            client_header=s.client_header_timeout,
            client_body=s.client_body_timeout,
            keepalive=s.keepalive_timeout,
            proxy_connect=s.connect_timeout,
            proxy_read=s.read_timeout,
            proxy_send=s.send_timeout,
            upstream_keepalive=up_timeout,
        ),
        limits=Limits(
            max_body=s.client_max_body_size,
            keepalive_requests=s.keepalive_requests,
            upstream_keepalive_requests=up_requests,
        ),
        retry=RetryPolicy(
            on=frozenset(s.next_upstream),
            tries=s.next_upstream_tries,
            timeout=s.next_upstream_timeout,
        ),
        upstream_keepalive=keepalive,
    )
    return config, balancer


def _served_location(server: Server, diags: Diagnostics) -> HttpLocation | None:
    proxied = [loc for loc in server.locations if loc.proxy_pass is not None]
    only = len(server.locations) == 1 and len(proxied) == 1
    if only and proxied[0].modifier in ("", "^~") and proxied[0].pattern == "/":
        return proxied[0]
    diags.error(
        server.loc,
        "the proxy engine serves one `location / { proxy_pass ...; }` per server for now; "
        "this server has other locations or returns",
    )
    return None


def listeners(nginx: NginxConfig, diags: Diagnostics) -> list[Route]:
    """What `hakeeper run --nginx` serves: one route per `listen` (errors reported)."""
    routes: list[Route] = []
    seen: dict[tuple[str, int], Server] = {}
    for server in nginx.servers:
        location = _served_location(server, diags)
        if location is None:
            continue
        built = proxy_for(nginx, location, diags)
        if built is None:
            continue
        for listen in server.listens:
            key = (listen.host, listen.port)
            if key in seen:
                diags.error(
                    server.loc,
                    f"a second server on {listen.host}:{listen.port} "
                    "(server_name selection) is not supported yet",
                )
                continue
            seen[key] = server
            routes.append(Route(listen, built[0], built[1]))
    return routes
