"""nginx.conf TLS directives: `ssl_*` (ngx_http_ssl_module) and `proxy_ssl_*`, pure.

Follows nginx 1.22's directive syntax, defaults and merge rules as documented at
nginx.org/en/docs/http/ngx_http_ssl_module.html and ngx_http_proxy_module.html (see
docs/nginx-tls.md for what hakeeper applies and what it only accepts):

* server side, in `http` or `server`: `ssl_certificate FILE` and `ssl_certificate_key
  FILE` (repeatable, paired in order; an inner level that sets any replaces the inherited
  list), `ssl_protocols` (nginx 1.22 default `TLSv1 TLSv1.1 TLSv1.2`: TLSv1.3 only when
  listed), `ssl_ciphers` (default `HIGH:!aNULL:!MD5`), `ssl_prefer_server_ciphers`
  (off), `ssl_session_cache` (none), `ssl_session_timeout` (5m), `ssl_session_tickets`
  (on), `ssl_dhparam`, `ssl_ecdh_curve` (auto), `ssl_reject_handshake` (off),
  `ssl_verify_client` (off) with `ssl_client_certificate` / `ssl_trusted_certificate` and
  `ssl_verify_depth` (1), and the deprecated `ssl on` (every listen of the server becomes
  `ssl`, with nginx's warning);
* upstream side, in `http`, `server` or `location`: `proxy_ssl_server_name` (off),
  `proxy_ssl_name` (the proxy_pass host), `proxy_ssl_verify` (off),
  `proxy_ssl_verify_depth` (1), `proxy_ssl_trusted_certificate`, `proxy_ssl_protocols`,
  `proxy_ssl_ciphers` (DEFAULT), `proxy_ssl_session_reuse` (on),
  `proxy_ssl_certificate` / `proxy_ssl_certificate_key` (a client certificate).

The readers take syntax-tree nodes and report problems to `Diagnostics` with the file:line
of the statement, using nginx's own wording; certificate files are only named here (the
proxy's `hakeeper.proxy.tls` loads them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from hakeeper.conf.diagnostics import Diagnostics, Location
from hakeeper.conf.nginx_values import parse_time
from hakeeper.conf.tree import Node

# nginx 1.22 ngx_http_ssl_protocols / ngx_http_proxy_ssl_protocols bitmask words
PROTOCOL_WORDS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
NGINX_122_PROTOCOLS = ("TLSv1", "TLSv1.1", "TLSv1.2")  # TLSv1.3 joined the default in 1.23.4
DEFAULT_CIPHERS = "HIGH:!aNULL:!MD5"

_CACHE = re.compile(r"off|none|builtin(?::\d+)?|shared:[A-Za-z0-9_]+:\d+[kKmM]?")


@dataclass(frozen=True, slots=True)
class SslSettings:
    """The `ssl_*` values of one `server` after merging with `http` (nginx defaults)."""

    certificates: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    protocols: tuple[str, ...] = NGINX_122_PROTOCOLS
    ciphers: str = DEFAULT_CIPHERS
    prefer_server_ciphers: bool = False
    session_cache: tuple[str, ...] = ("none",)
    session_timeout: float = 300.0
    session_tickets: bool = True
    dhparam: str = ""
    ecdh_curve: str = "auto"
    reject_handshake: bool = False
    verify_client: str = "off"  # on | off | optional | optional_no_ca
    client_certificate: str = ""  # CAs whose names are sent, and trusted
    trusted_certificate: str = ""  # CAs only trusted
    verify_depth: int = 1
    enabled: bool = False  # the deprecated `ssl on;`
    # where each directive was set (name -> location), for errors about its value/files
    where: tuple[tuple[str, Location], ...] = ()
    cert_locs: tuple[Location | None, ...] = ()
    key_locs: tuple[Location | None, ...] = ()

    def loc(self, name: str) -> Location | None:
        return next((loc for n, loc in reversed(self.where) if n == name), None)

    def pairs(self) -> list[tuple[str, str, Location | None, Location | None]]:
        """(certificate, key, certificate's location, key's location) in order."""
        return [
            (cert, self.keys[i], self.cert_locs[i], self.key_locs[i])
            for i, cert in enumerate(self.certificates)
            if i < len(self.keys)
        ]


@dataclass(frozen=True, slots=True)
class ProxySsl:
    """The `proxy_ssl_*` values of one location after merging (nginx defaults)."""

    server_name: bool = False
    name: str = ""  # "" = the proxy_pass host ($proxy_host without the port)
    verify: bool = False
    verify_depth: int = 1
    trusted_certificate: str = ""
    protocols: tuple[str, ...] = NGINX_122_PROTOCOLS
    ciphers: str = "DEFAULT"
    session_reuse: bool = True
    certificate: str = ""
    certificate_key: str = ""
    where: tuple[tuple[str, Location], ...] = ()

    def loc(self, name: str) -> Location | None:
        return next((loc for n, loc in reversed(self.where) if n == name), None)


# -- the directive table entries (merged into conf.nginx.DIRECTIVES) --------------------
# (contexts as names; conf.nginx builds its _Spec from them), min args, max args
SSL_DIRECTIVES: dict[str, tuple[tuple[str, ...], int, int]] = {
    "ssl": (("http", "server"), 1, 1),
    "ssl_certificate": (("http", "server"), 1, 1),
    "ssl_certificate_key": (("http", "server"), 1, 1),
    "ssl_protocols": (("http", "server"), 1, -1),
    "ssl_ciphers": (("http", "server"), 1, 1),
    "ssl_prefer_server_ciphers": (("http", "server"), 1, 1),
    "ssl_session_cache": (("http", "server"), 1, 2),
    "ssl_session_timeout": (("http", "server"), 1, 1),
    "ssl_session_tickets": (("http", "server"), 1, 1),
    "ssl_dhparam": (("http", "server"), 1, 1),
    "ssl_ecdh_curve": (("http", "server"), 1, 1),
    "ssl_reject_handshake": (("http", "server"), 1, 1),
    "ssl_buffer_size": (("http", "server"), 1, 1),
    "ssl_stapling": (("http", "server"), 1, 1),
    "ssl_stapling_verify": (("http", "server"), 1, 1),
    "ssl_trusted_certificate": (("http", "server"), 1, 1),
    "ssl_client_certificate": (("http", "server"), 1, 1),
    "ssl_verify_client": (("http", "server"), 1, 1),
    "ssl_verify_depth": (("http", "server"), 1, 1),
    "proxy_ssl_server_name": (("http", "server", "location"), 1, 1),
    "proxy_ssl_name": (("http", "server", "location"), 1, 1),
    "proxy_ssl_verify": (("http", "server", "location"), 1, 1),
    "proxy_ssl_verify_depth": (("http", "server", "location"), 1, 1),
    "proxy_ssl_trusted_certificate": (("http", "server", "location"), 1, 1),
    "proxy_ssl_protocols": (("http", "server", "location"), 1, -1),
    "proxy_ssl_ciphers": (("http", "server", "location"), 1, 1),
    "proxy_ssl_session_reuse": (("http", "server", "location"), 1, 1),
    "proxy_ssl_certificate": (("http", "server", "location"), 1, 1),
    "proxy_ssl_certificate_key": (("http", "server", "location"), 1, 1),
}
PROXY_SSL_DIRECTIVES = frozenset(n for n in SSL_DIRECTIVES if n.startswith("proxy_ssl_"))
# accepted for compatibility, not applied (reported by the proxy when it builds contexts)
IGNORED = frozenset({"ssl_buffer_size", "ssl_stapling", "ssl_stapling_verify", "ssl_verify_depth"})


def _flag(node: Node, diags: Diagnostics) -> bool | None:
    text = node.args[0].text
    if text in ("on", "off"):
        return text == "on"
    diags.error(
        node.loc,
        f'invalid value "{text}" in "{node.name}" directive, it must be "on" or "off"',
    )
    return None


def _protocols(node: Node, diags: Diagnostics) -> tuple[str, ...] | None:
    words = node.arg_texts()
    bad = [w for w in words if w not in PROTOCOL_WORDS]
    if bad:
        diags.error(node.loc, f'invalid value "{bad[0]}"')
        return None
    return tuple(words)


def _file(node: Node, diags: Diagnostics) -> str | None:
    text = node.args[0].text
    if "$" in text or text.startswith("data:"):
        diags.error(node.loc, f'"{node.name}" with variables or "data:" is not supported')
        return None
    return text


def read_ssl(nodes: Sequence[Node], inherited: SslSettings, diags: Diagnostics) -> SslSettings:
    """Merge the `ssl_*` statements among `nodes` (one http or server level) over
    `inherited`; certificate and key lists set here replace the inherited ones."""
    s = inherited
    certs: list[tuple[str, Location]] = []
    keys: list[tuple[str, Location]] = []
    for node in nodes:
        name = node.name
        if not name.startswith("ssl") or name not in SSL_DIRECTIVES:
            continue
        s = replace(s, where=(*s.where, (name, node.loc)))
        args = node.arg_texts()
        if name == "ssl_certificate":
            path = _file(node, diags)
            if path is not None:
                certs.append((path, node.loc))
        elif name == "ssl_certificate_key":
            path = _file(node, diags)
            if path is not None:
                keys.append((path, node.loc))
        elif name == "ssl_protocols":
            protocols = _protocols(node, diags)
            if protocols is not None:
                s = replace(s, protocols=protocols)
        elif name == "ssl_ciphers":
            s = replace(s, ciphers=args[0])
        elif name == "ssl_dhparam":
            s = replace(s, dhparam=args[0])
        elif name in ("ssl_client_certificate", "ssl_trusted_certificate"):
            path = _file(node, diags)
            if path is not None and name == "ssl_client_certificate":
                s = replace(s, client_certificate=path)
            elif path is not None:
                s = replace(s, trusted_certificate=path)
        elif name == "ssl_verify_client":
            if args[0] not in ("on", "off", "optional", "optional_no_ca"):
                diags.error(node.loc, f'invalid value "{args[0]}"')
            else:
                s = replace(s, verify_client=args[0])
        elif name == "ssl_verify_depth":
            if not args[0].isdigit():
                diags.error(node.loc, '"ssl_verify_depth" directive invalid number')
            else:
                s = replace(s, verify_depth=int(args[0]))
        elif name == "ssl_ecdh_curve":
            s = replace(s, ecdh_curve=args[0])
        elif name == "ssl_session_cache":
            bad = [a for a in args if not _CACHE.fullmatch(a)]
            if bad:
                diags.error(node.loc, f'invalid session cache "{bad[0]}"')
            else:
                s = replace(s, session_cache=tuple(args))
        elif name == "ssl_session_timeout":
            t = parse_time(args[0])
            if t is None:
                diags.error(node.loc, f'invalid time "{args[0]}" in "{name}" directive')
            else:
                s = replace(s, session_timeout=t)
        elif name in _FLAGS:
            value = _flag(node, diags)
            if value is None:
                continue
            if name == "ssl":
                diags.warning(
                    node.loc,
                    'the "ssl" directive is deprecated, use the "listen ... ssl" directive instead',
                )
                s = replace(s, enabled=value)
            elif name == "ssl_prefer_server_ciphers":
                s = replace(s, prefer_server_ciphers=value)
            elif name == "ssl_session_tickets":
                s = replace(s, session_tickets=value)
            else:
                s = replace(s, reject_handshake=value)
    if certs:
        s = replace(
            s,
            certificates=tuple(p for p, _ in certs),
            cert_locs=tuple(loc for _, loc in certs),
        )
    if keys:
        s = replace(s, keys=tuple(p for p, _ in keys), key_locs=tuple(loc for _, loc in keys))
    return s


_FLAGS = frozenset(
    {"ssl", "ssl_prefer_server_ciphers", "ssl_session_tickets", "ssl_reject_handshake"}
)
_PROXY_FLAGS = frozenset({"proxy_ssl_server_name", "proxy_ssl_verify", "proxy_ssl_session_reuse"})


def read_proxy_ssl(node: Node, s: ProxySsl, diags: Diagnostics) -> ProxySsl:
    """`s` with one `proxy_ssl_*` statement applied (the caller merges levels)."""
    name = node.name
    args = node.arg_texts()
    s = replace(s, where=(*s.where, (name, node.loc)))
    if name in _PROXY_FLAGS:
        value = _flag(node, diags)
        if value is None:
            return s
        if name == "proxy_ssl_server_name":
            return replace(s, server_name=value)
        if name == "proxy_ssl_verify":
            return replace(s, verify=value)
        return replace(s, session_reuse=value)
    if name == "proxy_ssl_name":
        if "$" in args[0] and args[0] not in ("$proxy_host", "${proxy_host}"):
            diags.error(node.loc, '"proxy_ssl_name" with variables is not supported')
            return s
        return replace(s, name="" if "$" in args[0] else args[0])
    if name == "proxy_ssl_verify_depth":
        if not args[0].isdigit():
            diags.error(node.loc, f'invalid value "{args[0]}" in "{name}" directive')
            return s
        return replace(s, verify_depth=int(args[0]))
    if name == "proxy_ssl_protocols":
        protocols = _protocols(node, diags)
        return s if protocols is None else replace(s, protocols=protocols)
    if name == "proxy_ssl_ciphers":
        return replace(s, ciphers=args[0])
    path = _file(node, diags)
    if path is None:
        return s
    if name == "proxy_ssl_trusted_certificate":
        return replace(s, trusted_certificate=path)
    if name == "proxy_ssl_certificate":
        return replace(s, certificate=path)
    return replace(s, certificate_key=path)  # proxy_ssl_certificate_key


def check_certificates(settings: SslSettings, where: Location | None, diags: Diagnostics) -> None:
    """nginx's merge-time checks: every `ssl_certificate` needs a `ssl_certificate_key`,
    `ssl_verify_client on|optional` needs CAs to verify against."""
    if len(settings.keys) < len(settings.certificates):
        cert = settings.certificates[len(settings.keys)]
        diags.error(where, f'no "ssl_certificate_key" is defined for certificate "{cert}"')
    cas = settings.client_certificate or settings.trusted_certificate
    if settings.verify_client in ("on", "optional") and not cas:
        diags.error(where, "no ssl_client_certificate for ssl_verify_client")


def check_proxy_ssl(s: ProxySsl, where: Location | None, diags: Diagnostics) -> None:
    """nginx's checks for a location that proxies to `https://`."""
    if s.verify and not s.trusted_certificate:
        diags.error(where, "no proxy_ssl_trusted_certificate for proxy_ssl_verify")
    if s.certificate and not s.certificate_key:
        diags.error(
            where,
            f'no "proxy_ssl_certificate_key" is defined for certificate "{s.certificate}"',
        )


def no_certificate(server_loc: Location | None, diags: Diagnostics) -> None:
    """The error nginx gives for a `listen ... ssl` address whose default server has no
    certificate (and no `ssl_reject_handshake on`)."""
    where = f" in {server_loc.file}:{server_loc.line}" if server_loc is not None else ""
    diags.error(
        server_loc, f'no "ssl_certificate" is defined for the "listen ... ssl" directive{where}'
    )
