"""What hakeeper does with every nginx.conf directive it reads: the status table and its doc.

One entry per key of the directive tables (`conf.nginx.DIRECTIVES`, which includes
`conf.nginx_tls.SSL_DIRECTIVES`, and `conf.nginx_stream.STREAM_DIRECTIVES` plus the
stream names it refuses, `nginx_stream.UNSUPPORTED`): **supported** (behaves as nginx
1.22, or nginx Plus for its features; forms it cannot serve so are errors), **partial**
(some accepted arguments or forms are not applied or behave differently: the note says
which), **ignored** (accepted so that operators' files load, no effect; each occurrence
gets the warning `"NAME" is accepted but has no effect in hakeeper` at its file:line,
like nginx's own `[warn]` lines, unless its argument is what hakeeper does anyway, e.g.
`gzip off`) and **refused** (nginx knows it, hakeeper reports an error). The readers
call `ignored_warning` from their table check (`conf.nginx._Reader.expand`), so
`hakeeper check --nginx` and `run --nginx` print the same lines and keep nginx -t's exit
codes (warnings never fail).

`python -m hakeeper.conf.nginx_status > docs/nginx-directives.md` writes the reference;
a unit test fails when a table key has no entry, an entry names no directive, or the
checked-in doc is stale. Pure: no I/O (the tables are imported by `render_markdown` only,
since `conf.nginx` imports this module).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from hakeeper.conf.diagnostics import Diagnostic, Severity
from hakeeper.conf.tree import Node

__all__ = [
    "STATUS",
    "STREAM_STATUS",
    "Entry",
    "Status",
    "ignored_warning",
    "is_ignored_warning",
    "render_markdown",
    "statuses_for",
]


class Status(StrEnum):
    SUPPORTED = "supported"
    PARTIAL = "partial"
    IGNORED = "ignored"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Entry:
    """One directive's status. `doc`: a docs/ page (and #section) with the details.
    `quiet`: for an ignored directive, the argument lists hakeeper already behaves as
    (no warning for them). `warned_elsewhere`: another reader gives a more precise
    warning for it (proxy/tls.py for the ssl_* ones it does not apply), so the
    generic one is not added."""

    status: Status
    note: str
    doc: str = ""
    quiet: tuple[str, ...] = ()
    warned_elsewhere: bool = False


SUPPORTED, PARTIAL, IGNORED, REFUSED = Status
_SUFFIX = "is accepted but has no effect in hakeeper"

ROUTING = "nginx-routing.md#what-is-routed-like-nginx"
GAPS = "nginx-routing.md#not-yet-reported-or-documented-not-silently-different"
STATIC = "nginx-routing.md#static-files-root-alias-index-try_files-types-error_page"
TLS = "nginx-tls.md#listeners"
UP_TLS = "nginx-tls.md#upstreams-proxy_pass-https"
HEALTH = "nginx-health.md#configuration"
STREAM = "nginx-stream.md#what-is-read-srchakeeperconfnginx_streampy"
STREAM_HC = "nginx-stream.md#active-health-checks-nginx-plus-ngx_stream_upstream_hc_module-built-in"


def _s(note: str, doc: str = "") -> Entry:
    return Entry(SUPPORTED, note, doc)


def _p(note: str, doc: str = "") -> Entry:
    return Entry(PARTIAL, note, doc)


def _i(note: str, *quiet: str, doc: str = "", elsewhere: bool = False) -> Entry:
    return Entry(IGNORED, note, doc, quiet, elsewhere)


_GZIP = "responses are never compressed (no gzip module)"
_HASH = "no hash tables to size"
_NO_LOG = "no access log is written"

# -- http (and main/events): one entry per key of conf.nginx.DIRECTIVES ----------------
STATUS: dict[str, Entry] = {
    "user": _i("workers run as the user that started hakeeper (no setuid)"),
    "pid": _i("no pid file is written (`hakeeper status` shows the pid)"),
    "daemon": _i("hakeeper always stays in the foreground, as `daemon off`", "off"),
    "worker_processes": _p(
        "`N` or `auto` (the CPUs hakeeper may run on); hakeeper starts that many workers "
        "per `listen` address, nginx that many in all"
    ),
    "worker_rlimit_nofile": _i("the open-files limit is the one hakeeper was started with"),
    "error_log": _i("messages go to hakeeper's own log (stderr); file and level unused"),
    "events": _s("block for `worker_connections`, `use`, `multi_accept`"),
    "worker_connections": _i("no per-worker connection limit"),
    "use": _i("the event loop is always uvloop (epoll)", "epoll"),
    "multi_accept": _i("accepting is left to uvloop"),
    "http": _s("the L7 proxy's block", ROUTING),
    "stream": _s("the L4 proxy's block: see the stream table below", STREAM),
    "load_module": _i("nothing to load: `stream` is built in, other modules do not exist"),
    "include": _s("in every block; relative to nginx.conf's directory, globs in sorted order"),
    "access_log": _i(_NO_LOG, "off"),
    "log_format": _i(_NO_LOG),
    "default_type": _s("type of files whose extension `types` does not list", STATIC),
    "sendfile": _i(
        "files over 64 KiB go out with sendfile(2) (not over TLS), as `sendfile on`", "on"
    ),
    "tcp_nopush": _i("TCP_CORK is never set, as `tcp_nopush off`", "off"),
    "tcp_nodelay": _i("uvloop sets TCP_NODELAY on every connection, as `on`", "on"),
    "types_hash_max_size": _i(_HASH),
    "server_tokens": _i("`Server: hakeeper` is always sent (no version in it)"),
    "upstream": _s(
        "`server` with weight=, max_fails=, fail_timeout=, backup, down, max_conns= and "
        "nginx Plus's slow_start=",
        ROUTING,
    ),
    "match": _s("nginx Plus: status, header and body conditions of `health_check`", HEALTH),
    "health_check": _p(
        "nginx Plus syntax, checked by the master for every worker; `keepalive_time=` is "
        "ignored, no `type=grpc`; several checks of one upstream: the first one is used",
        HEALTH,
    ),
    "server": _s("a virtual server in `http`, a peer in `upstream`", ROUTING),
    "least_conn": _s("nginx's least_conn (weights, max_conns, backup)"),
    "ip_hash": _s("nginx's ip_hash; `backup` is an error, as in nginx"),
    "hash": _s(
        "`hash KEY [consistent]` (ketama); the key renders the variables listed in the routing doc",
        ROUTING,
    ),
    "random": _s("`random [two [least_conn]]`"),
    "keepalive": _p(
        "idle upstream connections are kept, but per location (nginx: per upstream and worker)",
        GAPS,
    ),
    "keepalive_requests": _p(
        "upstream side per upstream; client side from the default server's first location "
        "for the whole listener",
        GAPS,
    ),
    "keepalive_timeout": _p(
        "idle timeout applied; the second argument (a `Keep-Alive: timeout=` header) is not "
        "sent; client side from the default server's first location for the whole listener",
        GAPS,
    ),
    "listen": _p(
        "`[addr:]port`, `default_server`, `ssl`, `reuseport`; `http2` is served as HTTP/1.1 "
        "(warning); `backlog=` and `deferred` are not applied; a wildcard beside an address "
        "on the same port is refused",
        TLS,
    ),
    "server_name": _s("exact, `*.` / `.` and `.*` wildcards, `~regex` names", ROUTING),
    "location": _s("`=`, `^~`, `~`, `~*`, prefix, nested, `@name`", ROUTING),
    "root": _p("variables in the path are not rendered", STATIC),
    "index": _s("internal redirect to the first index file that exists", STATIC),
    "alias": _p("captures of a regex location are rendered, other variables are not", STATIC),
    "try_files": _s(
        "`=code`, `@name` or a URI last; beside `proxy_pass` or `return`: an error", STATIC
    ),
    "types": _s("`types { }` blocks and `include mime.types`", STATIC),
    "error_page": _p(
        "for errors raised in the location (files, `return`, try_files `=code`, "
        "502/504 of a proxied location); an error page that proxies sends the built-in page",
        STATIC,
    ),
    "etag": _s('`"mtime-size"` ETag of files, `off` drops it', STATIC),
    "gzip": _i(_GZIP, "off"),
    "gzip_vary": _i(_GZIP),
    "gzip_proxied": _i(_GZIP),
    "gzip_comp_level": _i(_GZIP),
    "gzip_buffers": _i(_GZIP),
    "gzip_http_version": _i(_GZIP),
    "gzip_types": _i(_GZIP),
    "gzip_min_length": _i(_GZIP),
    "gzip_disable": _i(_GZIP),
    "server_names_hash_bucket_size": _i(_HASH),
    "server_names_hash_max_size": _i(_HASH),
    "types_hash_bucket_size": _i(_HASH),
    "server_name_in_redirect": _s("`off` (nginx's default); `on` is an error", STATIC),
    "return": _s("`return code [text]`, `return URL`, variables, 444", ROUTING),
    "rewrite": _s("every flag, captures, the cycle limit, args handling", ROUTING),
    "set": _s("in order with `rewrite` and `return`; `$args` may be set", ROUTING),
    "if": _s(
        "`=`, `!=`, `~`, `~*`, `!~`, `!~*` and plain variables; only rewrite-module "
        "directives inside; file tests (`-f`, `-d`, `-e`, `-x`) are refused",
        GAPS,
    ),
    "break": _s("ends the rewrite list of its level", ROUTING),
    "rewrite_log": _i("rewrites are not logged", "off"),
    "uninitialized_variable_warn": _i("no warning is logged for empty variables", "off"),
    "allow": _s("address, CIDR or `all`; first match wins", ROUTING),
    "deny": _s("address, CIDR or `all`; first match wins (403)", ROUTING),
    "proxy_pass": _p(
        "`http://` and `https://`, URI part, variables; a variable host must render to an "
        "`upstream` name (an address gets 502, nginx would connect)",
        GAPS,
    ),
    "proxy_set_header": _p(
        "variables rendered per request, inner list replaces outer; an unknown variable is a "
        "warning (nginx: an error); request variables render empty for a chunked body to an "
        "HTTP/1.0 upstream",
        GAPS,
    ),
    "proxy_http_version": _s("`1.0` or `1.1`"),
    "proxy_connect_timeout": _s("covers the TLS handshake of `https://` upstreams"),
    "proxy_read_timeout": _s("between two reads from the upstream"),
    "proxy_send_timeout": _s("between two writes to the upstream"),
    "proxy_next_upstream": _s(
        "error, timeout, invalid_header, http_500/502/503/504/403/404/429, non_idempotent, off"
    ),
    "proxy_next_upstream_tries": _s("0 = every server once"),
    "proxy_next_upstream_timeout": _s("0 = no limit"),
    "proxy_buffering": _i("responses are relayed as they arrive, as `proxy_buffering off`", "off"),
    "proxy_request_buffering": _i(
        "request bodies are streamed to the upstream, as `proxy_request_buffering off`", "off"
    ),
    "proxy_redirect": _s("`default`, `off`, literal and `~` regex rules, variables", ROUTING),
    "add_header": _p("proxied responses only: not `return` answers, error pages or files", GAPS),
    "proxy_hide_header": _s("added to nginx's default hidden fields", ROUTING),
    "proxy_pass_header": _s("passes a field nginx hides by default", ROUTING),
    "client_max_body_size": _s("per location; 413 above it"),
    "client_header_timeout": _s("the listener's default server's value (as nginx)"),
    "client_body_timeout": _s("between two reads of the request body"),
    # TLS (conf/nginx_tls.py, proxy/tls.py)
    "ssl": _s("deprecated `ssl on`: every listen of the server becomes `ssl` (warning)", TLS),
    "ssl_certificate": _s("PEM files, repeatable (RSA + ECDSA); no variables or `data:`", TLS),
    "ssl_certificate_key": _s("paired in order with `ssl_certificate`; no encrypted keys", TLS),
    "ssl_protocols": _s("nginx 1.22's default (TLSv1.2 only offered, OpenSSL 3)", TLS),
    "ssl_ciphers": _s("`SSL_CTX_set_cipher_list`, default `HIGH:!aNULL:!MD5`", TLS),
    "ssl_prefer_server_ciphers": _s("default off, as nginx", TLS),
    "ssl_session_cache": _p(
        "OpenSSL's per-worker cache is always on; `shared:` and `off` give a warning", TLS
    ),
    "ssl_session_timeout": _p("only OpenSSL's default 5m; another value gives a warning", TLS),
    "ssl_session_tickets": _s("ticket keys shared by all workers", TLS),
    "ssl_dhparam": _s("`load_dh_params`", TLS),
    "ssl_ecdh_curve": _p("`auto` or one curve; a `:` list keeps OpenSSL's (warning)", TLS),
    "ssl_reject_handshake": _s("in the default server: unknown SNI is refused", TLS),
    "ssl_buffer_size": _i("not applied", doc=TLS, elsewhere=True),
    "ssl_stapling": _i("no OCSP stapling", doc=TLS, elsewhere=True),
    "ssl_stapling_verify": _i("no OCSP stapling", doc=TLS, elsewhere=True),
    "ssl_trusted_certificate": _s("CAs that verify client certificates", TLS),
    "ssl_client_certificate": _s("CAs that verify client certificates", TLS),
    "ssl_verify_client": _p(
        "`on` / `optional` verified in the handshake (a refused client sees a failed "
        "handshake, not nginx's 400); `optional_no_ca` requests nothing (warning)",
        TLS,
    ),
    "ssl_verify_depth": _i("Python's ssl has no depth limit", doc=TLS, elsewhere=True),
    "proxy_ssl_server_name": _s("SNI to the upstream when on (never an IP address)", UP_TLS),
    "proxy_ssl_name": _s("a literal name or `$proxy_host`; other variables refused", UP_TLS),
    "proxy_ssl_verify": _s("chain and name checked, 502 on failure", UP_TLS),
    "proxy_ssl_verify_depth": _i("Python's ssl has no depth limit", doc=UP_TLS),
    "proxy_ssl_trusted_certificate": _s("CAs for `proxy_ssl_verify`", UP_TLS),
    "proxy_ssl_protocols": _s("as `ssl_protocols`", UP_TLS),
    "proxy_ssl_ciphers": _s("default `DEFAULT`", UP_TLS),
    "proxy_ssl_session_reuse": _i(
        "no session is resumed on a new connection, as `off` (kept-alive ones are reused)",
        "off",
        doc=UP_TLS,
    ),
    "proxy_ssl_certificate": _s("client certificate for the upstream", UP_TLS),
    "proxy_ssl_certificate_key": _s("its key", UP_TLS),
}

_STREAM_REFUSED = "not supported by hakeeper (stream): an error"
_RELAY = "no effect on how bytes are relayed here"

#: Directives nginx's stream modules accept that hakeeper refuses (also
#: `nginx_stream.UNSUPPORTED`, which the stream reader reports as errors).
REFUSED_STREAM_NAMES: tuple[str, ...] = (
    "ssl_certificate",
    "ssl_certificate_key",
    "proxy_ssl",
    "proxy_protocol",
    "proxy_bind",
    "proxy_upload_rate",
    "proxy_download_rate",
    "return",
    "set",
    "map",
    "geo",
    "split_clients",
    "ssl_preread",
    "limit_conn",
    "limit_conn_zone",
    "allow",
    "deny",
    "pass",
)

# -- stream: one entry per key of STREAM_DIRECTIVES and of nginx_stream.UNSUPPORTED -----
STREAM_STATUS: dict[str, Entry] = {
    "include": _s("relative to nginx.conf's directory"),
    "upstream": _s(
        "`server host:port` (a port is required) with weight=, max_fails=, fail_timeout=, "
        "backup, down, max_conns=, slow_start=",
        STREAM,
    ),
    "server": _s("a virtual server in `stream`, a peer in `upstream`", STREAM),
    "least_conn": _s("nginx's least_conn"),
    "hash": _p(
        "`hash KEY [consistent]`: only `$remote_addr` and `$remote_port` are expanded, other "
        "variables hash as empty text (warning)",
        STREAM,
    ),
    "random": _s("`random [two [least_conn]]`"),
    "zone": _i("no shared zone to size: one stream process"),
    "listen": _p(
        "`[addr:]port`, `udp`; `reuseport` without fan-out (one process); `backlog=`, "
        "`so_keepalive=`, `ipv6only=`, `rcvbuf=`, `sndbuf=`, `bind` are not applied; "
        "`ssl`, `proxy_protocol` are refused",
        STREAM,
    ),
    "proxy_pass": _s("an upstream name or `host:port`; variables and `unix:` are refused", STREAM),
    "proxy_connect_timeout": _s("per connect attempt"),
    "proxy_timeout": _s("idle time between two reads or writes (a UDP flow's lifetime)"),
    "proxy_next_upstream": _s("`on` / `off`"),
    "proxy_next_upstream_tries": _s("0 = every server once"),
    "proxy_next_upstream_timeout": _s("0 = no limit"),
    "proxy_buffer_size": _i(_RELAY),
    "proxy_responses": _i("a UDP flow lives until `proxy_timeout` of silence"),
    "proxy_requests": _i("a UDP flow lives until `proxy_timeout` of silence"),
    "proxy_socket_keepalive": _i("SO_KEEPALIVE is not set, as `off`", "off"),
    "proxy_half_close": _s("`on` passes a FIN on and waits for both directions"),
    "tcp_nodelay": _i("the relay sets TCP_NODELAY on both sockets, as `on`", "on"),
    "error_log": _i("messages go to hakeeper's own log"),
    "access_log": _i(_NO_LOG, "off"),
    "log_format": _i(_NO_LOG),
    "resolver": _i("names in `server` are resolved by the system per connect"),
    "resolver_timeout": _i("names in `server` are resolved by the system per connect"),
    "preread_buffer_size": _i("nothing is read ahead (no ssl_preread)"),
    "preread_timeout": _i("nothing is read ahead (no ssl_preread)"),
    "variables_hash_max_size": _i(_HASH),
    "health_check": _s("nginx Plus syntax, `udp`, every check of a server must pass", STREAM_HC),
    "health_check_timeout": _s("nginx Plus; inherited from `stream`", STREAM_HC),
    "match": _s("nginx Plus: `send` and `expect` (literal, `~`, `~*`)", STREAM_HC),
    **{name: Entry(REFUSED, _STREAM_REFUSED, STREAM) for name in REFUSED_STREAM_NAMES},
}


def statuses_for(context: str) -> Mapping[str, Entry]:
    """The table of the block kind: the stream reader's contexts all start with
    "stream" (`stream`, `stream upstream`, `stream server`), the http reader's do not."""
    return STREAM_STATUS if context.startswith("stream") else STATUS


def ignored_warning(node: Node, context: str) -> str | None:
    """The warning for one accepted-but-ignored directive occurrence, or None (not
    ignored, warned about elsewhere, or set to what hakeeper does anyway)."""
    entry = statuses_for(context).get(node.name)
    if entry is None or entry.status is not IGNORED or entry.warned_elsewhere:
        return None
    if " ".join(node.arg_texts()) in entry.quiet:
        return None
    return f'"{node.name}" {_SUFFIX}'


def is_ignored_warning(diag: Diagnostic) -> bool:
    """True for a warning `ignored_warning` wrote (so a second reader of the same file,
    e.g. the stream process, can leave them to the first)."""
    return diag.severity is Severity.WARNING and diag.message.endswith(_SUFFIX)


# -- docs/nginx-directives.md ------------------------------------------------------------
HEADER = """\
# nginx.conf directives

Generated from `hakeeper.conf.nginx_status` (and the directive tables of `conf/nginx.py`,
`conf/nginx_tls.py`, `conf/nginx_stream.py`) by
`python -m hakeeper.conf.nginx_status > docs/nginx-directives.md`; do not edit by hand
(a test fails when this file is stale).

Status: **supported** = behaves as nginx 1.22 (nginx Plus for `health_check`, `match`,
`slow_start=`); a form hakeeper cannot serve that way is an error at its file:line,
never served differently (the note names such forms); **partial** = some accepted
arguments or forms are not applied or behave differently (the note says which);
**ignored** = accepted so that existing files load, no effect: `hakeeper check --nginx`
and `run --nginx` warn once per occurrence (`FILE:LINE:COL: warning: "gzip" is accepted
but has no effect in hakeeper`), except when the value is what hakeeper does anyway
(listed as "no warning for"); warnings never fail the check, as with `nginx -t`;
**refused** = nginx knows it, hakeeper reports an error.
A directive in no table is nginx's `unknown directive` error (with a did-you-mean).
"""

_ORDER = ("main", "events", "http", "server", "location", "upstream")
_STREAM_ORDER = ("stream", "stream server", "stream upstream")


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _row(name: str, contexts: Sequence[str], entry: Entry) -> str:
    note = entry.note
    if entry.quiet:
        note += "; no warning for " + ", ".join(f"`{name} {q}`" for q in entry.quiet)
    if entry.warned_elsewhere:
        note += "; warned when a TLS server uses it"
    if entry.doc:
        note += f" ([details]({entry.doc}))"
    where = ", ".join(contexts) if contexts else "-"
    return f"| `{name}` | {entry.status.value} | {where} | {_escape(note)} |"


def _contexts(found: frozenset[str] | None, order: Sequence[str]) -> list[str]:
    if found is None:
        return []
    return [c for c in order if c in found] + sorted(found - set(order))


def render_markdown() -> str:
    """docs/nginx-directives.md from the tables and STATUS / STREAM_STATUS."""
    from hakeeper.conf.nginx import DIRECTIVES  # noqa: PLC0415 (it imports this module)
    from hakeeper.conf.nginx_stream import STREAM_DIRECTIVES  # noqa: PLC0415

    lines = [HEADER]
    for title, table, status, order in (
        ("`http` (and the main and `events` blocks)", DIRECTIVES, STATUS, _ORDER),
        ("`stream`", STREAM_DIRECTIVES, STREAM_STATUS, _STREAM_ORDER),
    ):
        counts = dict.fromkeys(Status, 0)
        rows = []
        for name, entry in status.items():
            spec = table.get(name)
            counts[entry.status] += 1
            rows.append(_row(name, _contexts(spec.contexts if spec else None, order), entry))
        total = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
        lines.append(f"## {title}\n")
        lines.append(f"{len(rows)} directives: {total}.\n")
        lines.append("| directive | status | contexts | notes |")
        lines.append("| --- | --- | --- | --- |")
        lines.extend(rows)
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_markdown(), end="")
