"""TLS for the L7 proxy: `ssl.SSLContext`s from nginx's `ssl_*` / `proxy_ssl_*` settings.

Builds what nginx 1.22's ngx_http_ssl_module and the proxy module's SSL part set up, with
Python's `ssl` (OpenSSL 3 here, like Debian's nginx):

* a listener context per `listen ... ssl` address: the certificate/key pairs of its
  default server (several pairs, e.g. RSA + ECDSA, each loaded into the same context),
  `ssl_protocols` as minimum/maximum versions, `ssl_ciphers`, `ssl_prefer_server_ciphers`,
  `ssl_session_tickets`, `ssl_dhparam`, `ssl_ecdh_curve`, ALPN `http/1.1`; when other
  servers on the address bring their own certificates, an SNI callback switches the
  connection to the context of the server its name selects, in nginx's server_name order
  (`routes.ServerNames`: exact, leading wildcard, trailing wildcard, regex, else the
  default server), like `ngx_http_ssl_servername`; `ssl_reject_handshake on` in the
  selected server refuses the handshake (alert `unrecognized_name`); `ssl_verify_client
  on|optional` verifies client certificates against `ssl_client_certificate` /
  `ssl_trusted_certificate` in the handshake (one setting per address);
* an upstream context per distinct `proxy_ssl_*` set for `proxy_pass https://`:
  `proxy_ssl_verify` (off: no verification, like nginx) with
  `proxy_ssl_trusted_certificate`, `proxy_ssl_server_name` / `proxy_ssl_name` (the SNI),
  `proxy_ssl_protocols`, `proxy_ssl_ciphers`, `proxy_ssl_certificate(_key)`.

TLSv1 and TLSv1.1 are never enabled: OpenSSL 3's default security level refuses them,
so Debian's nginx fails those handshakes too (and Python deprecates them). What Python's
`ssl` cannot express (`ssl_session_cache shared:`, `ssl_session_timeout`, stapling,
`ssl_verify_depth`) is accepted with a warning. File problems are reported with the file:line
of the directive, in nginx's words. Contexts are built before workers fork, so every
worker shares the session-ticket keys.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
import weakref
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from hakeeper.conf.diagnostics import Diagnostics, Location
from hakeeper.conf.nginx_tls import IGNORED, ProxySsl, SslSettings
from hakeeper.proxy.routes import ServerNames, Template, normalize_host

if TYPE_CHECKING:
    import socket
    from collections.abc import Sequence

    from hakeeper.conf.nginx import HttpLocation, NginxConfig, Server
    from hakeeper.proxy.engine import Engine
    from hakeeper.proxy.http1 import ClientProtocol
    from hakeeper.proxy.routes import VirtualServer

log = logging.getLogger(__name__)

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_OPENSSL_DEFAULT_TIMEOUT = 300.0  # OpenSSL's session timeout = nginx's 5m default


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """How `proxy_pass https://` connects: the client context and the SNI name to send
    ("" = none; IP addresses are never sent, RFC 6066 section 3)."""

    context: ssl.SSLContext
    server_hostname: str


def _no_password() -> bytes:
    """An encrypted key is an error (nginx would need `ssl_password_file`), not a prompt."""
    return b""


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _readable(path: str, what: str, loc: Location | None, diags: Diagnostics) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError as exc:
        diags.error(loc, f'cannot load {what} "{path}": BIO_new_file() failed ({_strerror(exc)})')
        return False


def _versions(
    ctx: ssl.SSLContext, protocols: Sequence[str], loc: Location | None, diags: Diagnostics
) -> None:
    usable = sorted(_VERSIONS[p] for p in protocols if p in _VERSIONS)
    if not usable:
        diags.warning(
            loc,
            "none of the listed protocols can be negotiated: OpenSSL 3 refuses "
            f"{' '.join(protocols)} at its default security level (so does Debian's nginx); "
            "TLSv1.2 is used",
        )
        usable = [ssl.TLSVersion.TLSv1_2]
    ctx.minimum_version = usable[0]
    ctx.maximum_version = usable[-1]


def _ciphers(ctx: ssl.SSLContext, ciphers: str, loc: Location | None, diags: Diagnostics) -> bool:
    try:
        ctx.set_ciphers(ciphers)
    except ssl.SSLError:
        diags.error(loc, f'SSL_CTX_set_cipher_list("{ciphers}") failed (SSL: no cipher match)')
        return False
    return True


def load_pair(
    ctx: ssl.SSLContext,
    cert: str,
    key: str,
    *,
    cert_loc: Location | None,
    key_loc: Location | None,
    diags: Diagnostics,
) -> bool:
    """Load one certificate chain + key; problems reported at the directive."""
    if not _readable(cert, "certificate", cert_loc, diags):
        return False
    if not _readable(key, "certificate key", key_loc, diags):
        return False
    try:
        ctx.load_cert_chain(cert, key, password=_no_password)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        diags.error(key_loc, f'cannot load certificate "{cert}" with key "{key}": {reason}')
        return False
    return True


def server_context(s: SslSettings, diags: Diagnostics, where: Location | None) -> ssl.SSLContext:
    """The server-side context of one `server`'s settings (errors/warnings to `diags`)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _versions(ctx, s.protocols, s.loc("ssl_protocols") or where, diags)
    _ciphers(ctx, s.ciphers, s.loc("ssl_ciphers") or where, diags)
    if not s.prefer_server_ciphers:  # Python turns it on, nginx's default is off
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if not s.session_tickets:
        ctx.options |= ssl.OP_NO_TICKET
    ctx.set_alpn_protocols(["http/1.1"])
    for cert, key, cert_loc, key_loc in s.pairs():
        load_pair(ctx, cert, key, cert_loc=cert_loc, key_loc=key_loc, diags=diags)
    if s.dhparam:
        try:
            ctx.load_dh_params(s.dhparam)
        except (OSError, ssl.SSLError) as exc:
            diags.error(
                s.loc("ssl_dhparam"), f'PEM_read_bio_DHparams("{s.dhparam}") failed ({exc})'
            )
    if s.ecdh_curve != "auto":
        if ":" in s.ecdh_curve:
            diags.warning(
                s.loc("ssl_ecdh_curve"),
                f"ssl_ecdh_curve {s.ecdh_curve}: one curve only with Python's ssl; OpenSSL's "
                "default list is kept",
            )
        else:
            try:
                ctx.set_ecdh_curve(s.ecdh_curve)
            except ValueError:
                diags.error(
                    s.loc("ssl_ecdh_curve"),
                    f'SSL_CTX_set1_curves_list("{s.ecdh_curve}") failed',
                )
    _client_verification(ctx, s, diags, where)
    _session_warnings(s, diags)
    return ctx


def _client_verification(
    ctx: ssl.SSLContext, s: SslSettings, diags: Diagnostics, where: Location | None
) -> None:
    """`ssl_verify_client`: client certificates checked against `ssl_client_certificate` /
    `ssl_trusted_certificate`. nginx completes the handshake and answers 400 to a client
    without a valid certificate; OpenSSL's verification here refuses the handshake."""
    if s.verify_client == "optional_no_ca":
        diags.warning(
            s.loc("ssl_verify_client") or where,
            "ssl_verify_client optional_no_ca: client certificates are not requested "
            "(no $ssl_client_* variable reads them here)",
        )
        return
    if s.verify_client == "off":
        return
    for path, name in (
        (s.client_certificate, "ssl_client_certificate"),
        (s.trusted_certificate, "ssl_trusted_certificate"),
    ):
        loc = s.loc(name) or where
        if path and _readable(path, "certificate", loc, diags):
            try:
                ctx.load_verify_locations(cafile=path)
            except ssl.SSLError as exc:
                diags.error(loc, f'cannot load "{path}": {exc.reason or exc}')
    ctx.verify_mode = ssl.CERT_REQUIRED if s.verify_client == "on" else ssl.CERT_OPTIONAL


def _session_warnings(s: SslSettings, diags: Diagnostics) -> None:
    cache = s.session_cache
    if any(c.startswith("shared:") for c in cache):
        diags.warning(
            s.loc("ssl_session_cache"),
            f"ssl_session_cache {' '.join(cache)}: each worker keeps its own cache (OpenSSL's "
            "built-in one); session tickets resume across workers",
        )
    elif cache == ("off",):
        diags.warning(
            s.loc("ssl_session_cache"),
            "ssl_session_cache off: not applied, OpenSSL's per-worker cache stays on",
        )
    if s.session_timeout != _OPENSSL_DEFAULT_TIMEOUT:
        diags.warning(
            s.loc("ssl_session_timeout"),
            "ssl_session_timeout is not applied (Python's ssl has no setting for it); "
            "sessions last OpenSSL's default 5m",
        )
    for name in sorted(IGNORED):
        loc = s.loc(name)
        if loc is not None:
            diags.warning(loc, f'"{name}" is accepted and not applied')


class _SniSwitch:
    """The SNI callback of one listener: the server the name selects lends its context."""

    __slots__ = ("contexts", "names", "reject")

    def __init__(
        self,
        names: ServerNames,
        contexts: Sequence[ssl.SSLContext | None],
        reject: Sequence[bool],
    ) -> None:
        self.names = names
        self.contexts = tuple(contexts)
        self.reject = tuple(reject)

    def __call__(
        self, conn: ssl.SSLObject | ssl.SSLSocket, name: str | None, current: ssl.SSLContext
    ) -> int | None:
        try:
            index = self.names.select(normalize_host(name.encode("ascii")) if name else b"")
            if self.reject[index]:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            chosen = self.contexts[index]
            if chosen is not None and chosen is not current:
                conn.context = chosen
        except Exception:  # a bad name from a peer must not break the loop
            log.debug("SNI selection failed for %r", name, exc_info=True)
        return None


class TlsBuilder:
    """Builds the contexts of one reading of an nginx.conf: each server's settings are
    checked (and warned about) once, servers sharing settings share a context for SNI,
    and upstream contexts are shared by locations with the same `proxy_ssl_*`."""

    def __init__(self, diags: Diagnostics) -> None:
        self.diags = diags
        self.checked: set[SslSettings] = set()
        self.sni: dict[SslSettings, ssl.SSLContext | None] = {}
        self.upstream: dict[tuple[ProxySsl, str], UpstreamTls | None] = {}

    def _server(self, s: SslSettings, where: Location | None) -> ssl.SSLContext | None:
        first = s not in self.checked
        self.checked.add(s)
        diags = self.diags if first else Diagnostics()
        before = len(diags.errors)
        ctx = server_context(s, diags, where)
        return ctx if len(diags.errors) == before else None

    def listener(
        self,
        servers: Sequence[tuple[SslSettings, VirtualServer, Location | None]],
        default: int,
    ) -> ssl.SSLContext | None:
        """The context for one `listen ... ssl` address served by `servers` (their
        settings, routed form and block location), `default` being the index of its
        default server; None if that one has no usable certificate (reported)."""
        verify = servers[default][0].verify_client
        for settings, _vs, where in servers:
            if settings.verify_client != verify:
                # the SNI switch lends certificates only: OpenSSL keeps the verify mode
                self.diags.error(
                    settings.loc("ssl_verify_client") or where,
                    "every server on a TLS address needs the ssl_verify_client of its "
                    f'default server ("{verify}") in hakeeper',
                )
                return None
        contexts: list[ssl.SSLContext | None] = []
        for i, (settings, _vs, where) in enumerate(servers):
            if i == default and settings.certificates:  # its own: it carries the callback
                ctx = self._server(settings, where)
            elif i == default and settings.reject_handshake:
                # no certificate: every handshake is lent another server's or refused
                ctx = server_context(settings, Diagnostics(), where)
            elif i == default:
                ctx = None
            elif not settings.certificates:
                ctx = None  # no certificate of its own: the default server's
            elif settings in self.sni:
                ctx = self.sni[settings]
            else:
                ctx = self.sni[settings] = self._server(settings, where)
            contexts.append(ctx)
        main = contexts[default]
        if main is None:
            return None
        reject = [s.reject_handshake and not s.certificates for s, _, _ in servers]
        others = [c for i, c in enumerate(contexts) if i != default and c is not None]
        if others or any(reject):
            names = ServerNames([vs for _, vs, _ in servers], default)
            main.sni_callback = _SniSwitch(names, contexts, reject)
        return main

    def upstream_tls(
        self, s: ProxySsl, proxy_host: str, where: Location | None
    ) -> UpstreamTls | None:
        """`upstream_tls`, once per distinct settings and host."""
        key = (s, proxy_host)
        if key not in self.upstream:
            self.upstream[key] = upstream_tls(s, proxy_host, where, self.diags)
        return self.upstream[key]


def upstream_tls(
    s: ProxySsl, proxy_host: str, where: Location | None, diags: Diagnostics
) -> UpstreamTls | None:
    """How to reach `proxy_pass https://proxy_host` (None if a file cannot be loaded)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _versions(ctx, s.protocols, s.loc("proxy_ssl_protocols") or where, diags)
    if not _ciphers(ctx, s.ciphers, s.loc("proxy_ssl_ciphers") or where, diags):
        return None
    name = s.name or _host_only(proxy_host)
    if s.verify:
        loc = s.loc("proxy_ssl_trusted_certificate") or where
        if not _readable(s.trusted_certificate, "certificate", loc, diags):
            return None
        try:
            ctx.load_verify_locations(cafile=s.trusted_certificate)
        except ssl.SSLError as exc:
            diags.error(loc, f'cannot load "{s.trusted_certificate}": {exc.reason or exc}')
            return None
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if s.certificate and s.certificate_key:
        cert_loc = s.loc("proxy_ssl_certificate") or where
        key_loc = s.loc("proxy_ssl_certificate_key") or where
        if not load_pair(
            ctx, s.certificate, s.certificate_key, cert_loc=cert_loc, key_loc=key_loc, diags=diags
        ):
            return None
    # Python sends the name it verifies: with verification on it is always sent
    sni = name if (s.server_name or s.verify) else ""
    return UpstreamTls(ctx, sni)


def _host_only(hostport: str) -> str:
    """`$proxy_host` without its port (nginx's default `proxy_ssl_name`)."""
    if hostport.startswith("["):
        return hostport[1 : hostport.find("]")]
    return hostport.rpartition(":")[0] if ":" in hostport else hostport


# -- $scheme / $https on a TLS listener ----------------------------------------------------
_HTTPS_VAR = re.compile(r"\$(?:\{https\}|https(?![A-Za-z0-9_]))")


def bind_scheme(template: Template, scheme: str) -> Template:
    """`template` with `$scheme` and `$https` fixed for a listener of `scheme` (each
    listener gets its own copy of a server's locations, so they are constants)."""
    fixed = {"scheme": scheme.encode("ascii"), "https": b"on" if scheme == "https" else b""}
    parts = tuple(fixed.get(p, p) if isinstance(p, str) else p for p in template.parts)
    return Template(parts)


def bind_https(value: str, scheme: str) -> str:
    """A `proxy_set_header` value with `$https` replaced (`$scheme` is per config)."""
    if "$" not in value or "https" not in value:
        return value
    return _HTTPS_VAR.sub("on" if scheme == "https" else "", value)


def check_files(servers: Sequence[Server], diags: Diagnostics) -> None:
    """What `nginx -t` finds by loading every server's certificates: a file that cannot be
    read or parsed, a key that does not match, a cipher list OpenSSL refuses (errors at
    the directive's file:line)."""
    seen: set[SslSettings] = set()
    for server in servers:
        s = server.ssl
        if not s.certificates or s in seen:
            continue
        seen.add(s)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _ciphers(ctx, s.ciphers, s.loc("ssl_ciphers") or server.loc, diags)
        for cert, key, cert_loc, key_loc in s.pairs():
            load_pair(ctx, cert, key, cert_loc=cert_loc, key_loc=key_loc, diags=diags)


class _Handshakes:
    """The connections of one engine's TLS listeners whose handshake is still running.

    The client protocol is created at accept time but only gets `connection_made` once
    the handshake is done. A worker that drains must wait for those before it tells its
    clients to drain: otherwise it exits under them (the client sees a reset) or they
    connect afterwards and are served as if nothing happened. Kept in accept order; the
    head is pruned when it has connected, closed, or outlived the handshake timeout."""

    __slots__ = ("engine", "pending", "timeout")

    def __init__(self, engine: Engine, timeout: float) -> None:
        self.engine = engine
        self.timeout = timeout
        self.pending: deque[tuple[float, ClientProtocol]] = deque()

    def factory(self) -> ClientProtocol:
        proto = self.engine.protocol_factory()
        self.pending.append((self.engine.loop.time(), proto))
        self.prune()
        return proto

    def prune(self) -> None:
        pending = self.pending
        limit = self.engine.loop.time() - self.timeout
        while pending:
            since, proto = pending[0]
            if proto.transport is None and not proto.closed and since > limit:
                break
            pending.popleft()

    def waiting(self) -> bool:
        """Whether a handshake accepted less than HANDSHAKE_GRACE ago is still running.
        A failed handshake is not reported to the protocol, so older ones are given up:
        a drain waits at most that long for them."""
        self.prune()
        recent = self.engine.loop.time() - HANDSHAKE_GRACE
        return any(p.transport is None and not p.closed and t > recent for t, p in self.pending)


HANDSHAKE_GRACE = 1.0  # seconds a drain waits for a handshake after its accept
_HANDSHAKES: weakref.WeakKeyDictionary[Engine, _Handshakes] = weakref.WeakKeyDictionary()


async def start_listener(engine: Engine, sock: socket.socket) -> None:
    """Serve the listening `sock` with `engine`: plain, or TLS when its config carries a
    listener context (`listen ... ssl`). nginx bounds the handshake by
    client_header_timeout; a failed handshake is the peer's problem (logged at debug by
    the loop) and never reaches the proxy."""
    ctx = engine.config.listen_ssl
    if ctx is None:
        await engine.start_listening(sock=sock)
        return
    timeout = engine.config.timeouts.client_header
    handshakes = _HANDSHAKES.get(engine)
    if handshakes is None:
        handshakes = _HANDSHAKES[engine] = _Handshakes(engine, timeout)
    server = await engine.loop.create_server(
        handshakes.factory, sock=sock, ssl=ctx, ssl_handshake_timeout=timeout
    )
    engine.servers.append(server)


async def drain(engine: Engine, timeout: float) -> bool:
    """`Engine.drain` that first lets running TLS handshakes finish (bounded by the
    handshake timeout and `timeout`), so the connections they open are drained like the
    others instead of being reset when the worker exits."""
    handshakes = _HANDSHAKES.get(engine)
    if handshakes is not None:
        for server in engine.servers:
            server.close()  # no new handshakes
        deadline = engine.loop.time() + min(timeout, handshakes.timeout)
        while handshakes.waiting() and engine.loop.time() < deadline:
            await asyncio.sleep(0.01)
    return await engine.drain(timeout)


def absolute_paths(config: NginxConfig, prefix: str) -> NginxConfig:
    """`config` with relative certificate, key, dhparam and trusted-certificate paths made
    absolute against `prefix`, the directory of nginx.conf (nginx's conf prefix: a file
    named in an included file is still relative to the main one's directory)."""

    def full(path: str) -> str:
        return path if not path or os.path.isabs(path) else os.path.join(prefix, path)

    def proxy(s: ProxySsl) -> ProxySsl:
        return replace(
            s,
            trusted_certificate=full(s.trusted_certificate),
            certificate=full(s.certificate),
            certificate_key=full(s.certificate_key),
        )

    memo: dict[int, HttpLocation] = {}

    def location(loc: HttpLocation) -> HttpLocation:
        # nested locations are also in the server's flat list: one copy for both
        done = memo.get(id(loc))
        if done is None:
            nested = tuple(location(n) for n in loc.nested)
            settings = replace(loc.settings, ssl=proxy(loc.settings.ssl))
            done = memo[id(loc)] = replace(loc, settings=settings, nested=nested)
        return done

    servers = []
    for server in config.servers:
        s = server.ssl
        ssl_settings = replace(
            s,
            certificates=tuple(full(p) for p in s.certificates),
            keys=tuple(full(p) for p in s.keys),
            dhparam=full(s.dhparam),
        )
        locations = tuple(location(loc) for loc in server.locations)
        servers.append(replace(server, ssl=ssl_settings, locations=locations))
    return replace(config, servers=tuple(servers))
