"""From the nginx.conf model (`hakeeper.conf.nginx`) to what the proxy engine runs.

Maps each proxied `location` to a `ProxyConfig` plus its balancer, following nginx's
meaning of each directive: `proxy_pass http://NAME[/uri]` uses `upstream NAME` (its
method via `hakeeper.balance.upstream.UpstreamGroup`, its `keepalive` pool, its `hash`
key compiled as a variable template) and sends `Host: NAME` for `$proxy_host`;
`proxy_pass http://host:port` is a one-peer upstream. Like nginx, every location using
one upstream shares ONE balancer (the same smooth-WRR / passive-health state).
`proxy_set_header` lists become header rules; timeouts, `client_max_body_size`,
`proxy_next_upstream(_tries, _timeout)` carry over. `listeners` gives one `Route` per
listen address: when that address has a single server whose only location is a plain
`location / { proxy_pass ...; }` (client-address keyed balancing), the engine's fast
path; otherwise a `routes.RouteTable` (server_name selection, all locations, `return`,
URI parts) carried in `ProxyConfig.routes`.
Pure apart from building balancer objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from hakeeper.balance.nginx import UpstreamServer as BalancedServer
from hakeeper.balance.upstream import UpstreamGroup
from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.nginx import (
    HttpLocation,
    Listen,
    NginxConfig,
    ProxySettings,
    Server,
)
from hakeeper.conf.nginx import UpstreamServer as ConfServer
from hakeeper.conf.nginx_rewrite import python_regex
from hakeeper.conf.nginx_static import BUILTIN_TYPES, StaticConf
from hakeeper.proxy.balancer import Balancer, RoundRobin
from hakeeper.proxy.config import (
    HeaderRule,
    Limits,
    Peer,
    ProxyConfig,
    RetryPolicy,
    Timeouts,
    header_rule,
    nginx_default_headers,
    routed_only,
)
from hakeeper.proxy.response_headers import RulesError, response_rules
from hakeeper.proxy.rewrite import (
    bind_script,
    capture_rule,
    compile_access,
    compile_script,
    known_variables,
)
from hakeeper.proxy.routes import (
    Location,
    LocationSet,
    Proxied,
    Return,
    RouteTable,
    Template,
    VirtualServer,
    compile_template,
)
from hakeeper.proxy.static import Files, MimeTypes, Static, compile_files
from hakeeper.proxy.tls import TlsBuilder, bind_https, bind_scheme

#: Debian's nginx --prefix: where relative `root` / `alias` paths start
NGINX_PREFIX = "/usr/share/nginx/"


@dataclass(frozen=True, slots=True)
class Route:
    """One listener and the proxy settings + balancer behind it.

    `config.routes` is the routing table when the listener needs one (then `balancer`
    is unused: each location carries its own)."""

    listen: Listen
    config: ProxyConfig
    balancer: Balancer


_URI_PART_IN_REGEX = (
    '"proxy_pass" cannot have URI part in location given by regular expression, '
    'or inside named location, or inside "if" statement, or inside "limit_except" block'
)


def balanced_server(index: int, key: str, srv: ConfServer, server: str) -> BalancedServer:
    """The balancer's peer for upstream `server` line `srv` (weight, max_fails,
    fail_timeout, backup, down, max_conns, slow_start), named `index:key`; `server` is
    the configured text ketama hashes. Shared by the http and stream proxies."""
    return BalancedServer(
        name=f"{index}:{key}",
        weight=srv.weight,
        max_fails=srv.max_fails,
        fail_timeout=srv.fail_timeout,
        backup=srv.backup,
        down=srv.down,
        max_conns=srv.max_conns,
        server=server,
        slow_start=srv.slow_start,
    )


def _engine_settings(s: ProxySettings) -> dict[str, Any]:
    return {
        "http_version": s.http_version,
        "timeouts": Timeouts(
            client_header=s.client_header_timeout,
            client_body=s.client_body_timeout,
            keepalive=s.keepalive_timeout,
            proxy_connect=s.connect_timeout,
            proxy_read=s.read_timeout,
            proxy_send=s.send_timeout,
        ),
        "limits": Limits(max_body=s.client_max_body_size, keepalive_requests=s.keepalive_requests),
        "retry": RetryPolicy(
            on=frozenset(s.next_upstream),
            tries=s.next_upstream_tries,
            timeout=s.next_upstream_timeout,
        ),
    }


def proxy_for(
    nginx: NginxConfig,
    location: HttpLocation,
    diags: Diagnostics,
    balancers: dict[str, Balancer] | None = None,
    server_name: str = "",
) -> tuple[ProxyConfig, Balancer] | None:
    """The engine settings for one location with `proxy_pass`, or None (reported).

    `balancers` caches one balancer per upstream name (or host:port) across locations.
    """
    built = proxied_for(nginx, location, diags, balancers, server_name)
    return None if built is None else (built.config, built.balancer)


def proxied_for(
    nginx: NginxConfig,
    location: HttpLocation,
    diags: Diagnostics,
    balancers: dict[str, Balancer] | None = None,
    server_name: str = "",
    *,
    scheme: str = "http",
    tls: TlsBuilder | None = None,
) -> Proxied | None:
    """`proxy_for` with the URI part and the hash key template (`routes.Proxied`)."""
    url = location.proxy_pass
    if url is None:
        diags.error(
            location.loc,
            "location has no proxy_pass or return and no root or alias "
            "(serving files is not supported without an explicit root)",
        )
        return None
    upstream_https = url.startswith("https://")  # proxy/tls.py
    rest = url.partition("://")[2]
    if rest.startswith("$"):
        return _variable_host(
            nginx, location, diags, balancers, server_name, scheme=scheme, tls=tls
        )
    cut = min((i for i in (rest.find("/"), rest.find("$")) if i >= 0), default=len(rest))
    hostport, uri_text = rest[:cut], rest[cut:]
    uri: bytes | None = None
    uri_template: Template | None = None  # with variables: rendered, sent as-is
    if "$" in uri_text:
        try:
            uri_template = compile_template(uri_text, nginx.variables)
        except ValueError as exc:
            diags.error(location.loc, str(exc))
            return None
    elif uri_text:
        if location.modifier in ("~", "~*"):
            diags.error(location.loc, _URI_PART_IN_REGEX)
            return None
        uri = uri_text.encode("latin-1")
    s = location.settings
    rules: list[HeaderRule] = []
    renders = False  # a rule reads a capture or `set` variable (proxy/rewrite.py)
    for name, value in s.headers:
        try:
            rules.append(header_rule(name, bind_https(value, scheme)))
        except ValueError as exc:
            rule = capture_rule(name, value, nginx.variables)
            if rule is None:
                diags.error(location.loc, f"proxy_set_header {name}: {exc}")
                return None
            rules.append(rule)
            renders = True
    # nginx always adds its default Host/Connection lines for names the list leaves out
    # (ngx_http_proxy_init_headers merges ngx_http_proxy_headers after the user's)
    named = {r.name.lower() for r in rules}
    for default in nginx_default_headers():
        if default.name.lower() not in named:
            rules.append(default)
    cache = balancers if balancers is not None else {}
    upstream = nginx.upstream(hostport)
    balancer: Balancer
    keepalive = 0
    up_timeout = 60.0
    up_requests = 1000
    key: Template | None = None
    up_tls = None
    if upstream_https:
        builder = tls if tls is not None else TlsBuilder(diags)
        up_tls = builder.upstream_tls(s.ssl, hostport, location.loc)
        if up_tls is None:
            return None
    if upstream is not None:
        peers = tuple(
            Peer(srv.host, srv.port, f"{srv.host}:{srv.port}") for srv in upstream.servers
        )
        if upstream.method in ("hash", "hash_consistent") and upstream.hash_key not in (
            "$remote_addr",
            "",
        ):
            try:
                key = bind_scheme(compile_template(upstream.hash_key, nginx.variables), scheme)
            except ValueError as exc:
                diags.error(upstream.loc, str(exc))
                return None
        cached = cache.get(hostport)
        if cached is None:
            entries = [
                (peer, balanced_server(i, peer.name, srv, peer.name))
                for i, (peer, srv) in enumerate(zip(peers, upstream.servers, strict=True))
            ]
            cached = cache[hostport] = UpstreamGroup(upstream.method, entries)
        if location.health_check is not None and isinstance(cached, UpstreamGroup):
            cached.use_health_check(hostport, location.health_check, up_tls)  # proxy/health.py
        balancer = cached
        keepalive = upstream.keepalive
        up_timeout = upstream.keepalive_timeout
        up_requests = upstream.keepalive_requests
    else:
        host, _, port_text = hostport.rpartition(":")
        if not host:
            host, port_text = hostport, "443" if upstream_https else "80"
        if not port_text.isdigit():
            diags.error(location.loc, f'invalid port in upstream "{hostport}"')
            return None
        peers = (Peer(host.strip("[]"), int(port_text)),)
        balancer = cache.setdefault(hostport, RoundRobin(peers))
    try:
        response = response_rules(s.headers_out)  # proxy_redirect, add_header, hide/pass
    except RulesError as exc:
        diags.error(exc.loc or location.loc, str(exc))
        return None
    base = _engine_settings(s)
    config = ProxyConfig(
        peers=peers,
        proxy_host=hostport,
        headers=tuple(rules),
        upstream_keepalive=keepalive,
        server_name=server_name,
        scheme=scheme,
        upstream_tls=up_tls,
        http_version=base["http_version"],
        timeouts=replace(base["timeouts"], upstream_keepalive=up_timeout),
        limits=replace(base["limits"], upstream_keepalive_requests=up_requests),
        retry=base["retry"],
        response=response,
    )
    return Proxied(config, balancer, uri, key, uri_template, renders)


def _variable_host(
    nginx: NginxConfig,
    location: HttpLocation,
    diags: Diagnostics,
    balancers: dict[str, Balancer] | None,
    server_name: str,
    *,
    scheme: str,
    tls: TlsBuilder | None,
) -> Proxied | None:
    """`proxy_pass http://$up[/uri]`: one `Proxied` per `upstream` block the host may
    render to (its balancer shared as usual), the URI sent as rendered
    (proxy/rewrite.py picks one per request; any other host gets 502)."""
    url = location.proxy_pass or ""
    proto, _, rest = url.partition("://")
    host_text, slash, tail = rest.partition("/")
    try:
        host = compile_template(host_text, nginx.variables)
        uri = compile_template("/" + tail, nginx.variables) if slash else None
    except ValueError as exc:
        diags.error(location.loc, str(exc))
        return None
    by_host: dict[bytes, Proxied] = {}
    for up in nginx.upstreams:
        named = replace(location, proxy_pass=f"{proto}://{up.name}")
        one = proxied_for(nginx, named, diags, balancers, server_name, scheme=scheme, tls=tls)
        if one is None:
            return None
        by_host[up.name.lower().encode("latin-1")] = replace(one, uri_template=uri)
    if not by_host:
        diags.error(location.loc, "proxy_pass with a variable in the host needs an upstream")
        return None
    return replace(next(iter(by_host.values())), host=host, by_host=by_host)


def _regex(location: HttpLocation) -> re.Pattern[bytes]:
    flags = re.IGNORECASE if location.modifier == "~*" else 0
    return re.compile(python_regex(location.pattern).encode("latin-1"), flags)


def mime_types(conf: StaticConf) -> MimeTypes:
    """The `types` (nginx's built-in three when none) and `default_type` in effect."""
    table = BUILTIN_TYPES if conf.types is None else conf.types
    return MimeTypes(
        {k.encode("latin-1"): v.encode("latin-1") for k, v in table.items()},
        conf.default_type.encode("latin-1"),
    )


def _abs(path: str | None) -> str | None:
    if path is None or path.startswith("/") or path.startswith("$"):
        return path
    return NGINX_PREFIX + path


def files_for(conf: StaticConf, where: HttpLocation | None, diags: Diagnostics) -> Files | None:
    """A location's (or server's) compiled static-file settings; None when in error."""
    pages = (
        None
        if conf.error_pages is None
        else {code: (page.uri, page.response) for code, page in conf.error_pages.items()}
    )
    try:
        return compile_files(
            root=_abs(conf.root),
            alias=_abs(conf.alias),
            index=conf.index,
            try_files=conf.try_files,
            types=mime_types(conf),
            error_pages=pages,
            etag=conf.etag,
        )
    except ValueError as exc:
        diags.error(conf.loc or (where.loc if where is not None else None), str(exc))
        return None


def _return(
    location: HttpLocation,
    diags: Diagnostics,
    scheme: str = "http",
    known: frozenset[str] = frozenset(),
) -> Return | None:
    code = location.return_code
    assert code is not None
    text = location.return_text
    if code == 0 and not text:  # never produced by the reader; keeps mypy happy
        return None
    try:
        template = bind_scheme(compile_template(text, known), scheme) if text else None
    except ValueError as exc:
        diags.error(location.loc, str(exc))
        return None
    return Return(code, template, mime_types(location.static), scheme.encode("ascii"))


def virtual_server(
    nginx: NginxConfig,
    server: Server,
    diags: Diagnostics,
    balancers: dict[str, Balancer],
    *,
    scheme: str = "http",
    tls: TlsBuilder | None = None,
) -> VirtualServer | None:
    """One `server` block with every location translated (None if any is in error)."""
    name = next(
        (n for n in server.names if not n.startswith(("~", "*")) and not n.endswith("*")), ""
    )
    server_return: Return | None = None
    nested_ids = {id(n) for loc in server.locations for n in loc.nested}
    built: dict[int, Location] = {}
    ok = True

    def build(loc: HttpLocation) -> Location | None:
        nonlocal ok
        action: Return | Proxied | Static | None
        conf = loc.static
        files = files_for(conf, loc, diags)
        if files is None:
            ok = False
        elif conf.try_files and (loc.return_code is not None or loc.proxy_pass is not None):
            diags.error(conf.loc, "try_files beside proxy_pass or return is not supported")
            ok = False
        if loc.return_code is not None:
            action = _return(loc, diags, scheme, nginx.variables)
        elif loc.proxy_pass is None and conf.serves_files and files is not None:
            action = Static(files)
        elif loc.proxy_pass is None and loc.nested:
            # a container of nested locations: what matches none of them would be a
            # file in nginx; hakeeper answers 404
            diags.warning(loc.loc, "requests matching no nested location get 404 (no files)")
            action = Return(404, None)
        elif loc.proxy_pass is None and loc.script:
            action = Return(404, None)  # what no rewrite answers: nginx would look for a file
        else:
            action = proxied_for(nginx, loc, diags, balancers, name, scheme=scheme, tls=tls)
        # rewrite phase (proxy/rewrite.py): its steps, and the proxy behind a `return`
        script = compile_script(loc.script, nginx.variables, diags)
        if script:  # this listener's $scheme, the location's types (as `_return`)
            types = mime_types(loc.static)
            script = bind_script(
                script,
                lambda t: bind_scheme(t, scheme),
                lambda r: replace(r, types=types, scheme=scheme.encode("ascii")),
            )
        content = action if isinstance(action, Proxied) else None
        if loc.return_code is not None and loc.proxy_pass is not None and loc.script:
            content = proxied_for(nginx, loc, diags, balancers, name, scheme=scheme, tls=tls)
        if script is None:
            ok = False
        inner: list[Location] = []
        for sub in loc.nested:
            prefixes = loc.modifier in ("", "^~", "=") and sub.modifier in ("", "^~", "=")
            if prefixes and not sub.pattern.startswith(loc.pattern):
                diags.error(
                    sub.loc, f'location "{sub.pattern}" is outside location "{loc.pattern}"'
                )
                ok = False
            child = build(sub)
            if child is not None:
                inner.append(child)
        if action is None:
            ok = False
            return None
        regex = _regex(loc) if loc.modifier in ("~", "~*") else None
        nested = LocationSet(inner) if inner else None
        uses = isinstance(action, Static) or conf.error_pages or conf.try_files
        made = Location(
            loc.modifier,
            loc.pattern,
            action,
            regex,
            nested,
            files if uses else None,
            script=script or (),
            content=content,
            access=compile_access(loc.settings.access),
        )
        built[id(loc)] = made
        return made

    top: list[Location] = []
    for loc in server.locations:
        if id(loc) in nested_ids:
            continue  # built with its parent
        if loc.pattern == "" and loc.modifier == "":
            action = (
                _return(loc, diags, scheme, nginx.variables)
                if loc.return_code is not None
                else None
            )
            if action is None:
                ok = False
            elif server_return is None:
                # server-level `return`: before any location, typed by the server's types
                server_return = replace(action, types=mime_types(server.static))
            continue
        made = build(loc)
        if made is not None:
            top.append(made)
    if not ok:
        return None
    everything = [built[id(loc)] for loc in server.locations if id(loc) in built]
    catch_all = any(loc.modifier in ("", "^~") and loc.pattern == "/" for loc in top)
    if server.static.serves_files and not catch_all:
        # what matches no location is served with the server's own settings (nginx's
        # server-level location configuration): a prefix "" location, tried last
        files = files_for(server.static, None, diags)
        if files is None:
            return None
        fallback = Location("", "", Static(files), files=files)
        top.append(fallback)
        everything.append(fallback)
    server_script = compile_script(server.script, nginx.variables, diags)
    if server_script is None:
        return None
    server_types = mime_types(server.static)
    server_script = bind_script(
        server_script,
        lambda t: bind_scheme(t, scheme),
        lambda r: replace(r, types=server_types, scheme=scheme.encode("ascii")),
    )
    return VirtualServer(
        server.names,
        everything,
        server_return,
        top,
        script=server_script,
        access=compile_access(server.access),
    )


def _fast(vs: VirtualServer) -> Proxied | None:
    """The proxied location when `vs` is a plain `location / { proxy_pass ...; }` (a lone
    server is every request's server, whatever its names)."""
    if vs.server_return is not None or len(vs.locations) != 1 or vs.scripted:
        return None
    (loc,) = vs.locations
    action = loc.action
    plain = loc.modifier in ("", "^~") and loc.pattern == "/"
    if (
        plain
        and isinstance(action, Proxied)
        and loc.files is None  # error_page for a failed upstream: the routed path
        and action.uri is None
        and action.key is None
        and not any(routed_only(rule) for rule in action.config.headers)
    ):
        return action
    return None


def listeners(nginx: NginxConfig, diags: Diagnostics) -> list[Route]:
    """What `hakeeper run --nginx` serves: one route per listen address (errors reported)."""
    nginx = replace(nginx, variables=known_variables(nginx))  # captures, `set` names
    balancers: dict[str, Balancer] = {}
    by_addr: dict[tuple[str, int], list[tuple[Server, VirtualServer, Listen]]] = {}
    tls = TlsBuilder(diags)
    # `ssl` belongs to the address: one `listen ... ssl` makes it TLS for every server there
    secure = {(ln.host, ln.port) for s in nginx.servers for ln in s.listens if ln.ssl}
    for server in nginx.servers:
        # a server on plain and TLS addresses gets one copy per $scheme
        built: dict[str, VirtualServer | None] = {}
        for listen in server.listens:
            scheme = "https" if (listen.host, listen.port) in secure else "http"
            if scheme not in built:
                if None in built.values():
                    break  # already reported
                built[scheme] = virtual_server(
                    nginx, server, diags, balancers, scheme=scheme, tls=tls
                )
            vs = built[scheme]
            if vs is None:
                break
            by_addr.setdefault((listen.host, listen.port), []).append((server, vs, listen))
    wildcard_ports = {port for host, port in by_addr if host in ("0.0.0.0", "::")}
    routes: list[Route] = []
    for (host, port), members in by_addr.items():
        if port in wildcard_ports and host not in ("0.0.0.0", "::"):
            diags.error(
                members[0][0].loc,
                f"listening on {host}:{port} beside a wildcard address on the same port "
                "is not supported",
            )
            continue
        defaults = [i for i, (_, _, listen) in enumerate(members) if listen.default_server]
        if len(defaults) > 1:
            diags.error(
                members[defaults[1]][0].loc, f"a duplicate default server for {host}:{port}"
            )
            continue
        default = defaults[0] if defaults else 0
        servers = [vs for _, vs, _ in members]
        listen = members[default][2]
        ctx = None
        if (host, port) in secure:
            ctx = tls.listener([(s.ssl, vs, s.loc) for s, vs, _ in members], default)
            if ctx is None:
                continue  # reported (no certificate, or one that cannot be loaded)
        fast = _fast(servers[0]) if len(servers) == 1 else None
        if fast is not None:
            routes.append(Route(listen, replace(fast.config, listen_ssl=ctx), fast.balancer))
            continue
        table = RouteTable(servers, default, port)
        first = members[default][0].locations
        settings = first[0].settings if first else ProxySettings()
        base = _engine_settings(settings)
        scheme = "https" if ctx is not None else "http"
        config = ProxyConfig(peers=(), routes=table, scheme=scheme, listen_ssl=ctx, **base)
        routes.append(Route(listen, config, RoundRobin(())))
    return routes


def route_balancers(route: Route) -> list[Balancer]:
    """Every distinct balancer a listener uses (one per upstream, shared by locations),
    for whoever marks peers up or down (active health checks) or reports their state."""
    table = route.config.routes
    if table is None:
        return [route.balancer]
    out: list[Balancer] = []
    for proxied in table.proxied():
        if not any(b is proxied.balancer for b in out):
            out.append(proxied.balancer)
    return out
