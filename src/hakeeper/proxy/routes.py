"""L7 routing for one listen address: nginx's virtual-server choice, locations, `return`.

Owns the per-listener routing table the proxy engine consults when a listener serves
more than one `location /` (the single-location case stays on the engine's fast path):
- virtual server by Host as `ngx_http_find_virtual_server`: the Host value lower-cased
  without port and trailing dot; exact name, then the longest leading wildcard
  (`*.example.com`, `.example.com`), the longest trailing one (`www.example.*`), then
  regex names (`~...`, caseless) in config order, else the `default_server` of the
  listen (or its first server);
- location by nginx's `ngx_http_core_find_location` order on the normalized URI
  (`ngx_http_parse_complex_uri`: %XX decoded, `//` merged, dot segments resolved): `=`
  exact, longest prefix, `^~` stops, regexes in config order, and the auto-redirect of
  a proxied `/prefix/` location to `Location: .../prefix/` for a request on `/prefix`;
- `return code [text|URL]` rendered with nginx's status lines, built-in pages and
  absolute Location (`absolute_redirect on`, `port_in_redirect on`);
- `proxy_pass` with a URI part: the matched prefix of the normalized URI replaced by the
  part, the rest %-escaped when the client's URI was (`NGX_ESCAPE_URI`), args appended;
- nginx variables (`$host`, `$request_uri`, `$uri`, `$args`, `$arg_NAME`, `$http_NAME`,
  `$remote_addr`, ...), regex captures (`$1`..`$9` of the last matched regex, named
  captures) and `set` variables in `return` texts, `hash` keys, header rules and
  `proxy_pass` URIs (`Template`); the rewrite/access phases are in `proxy/rewrite.py`.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import TYPE_CHECKING

from hakeeper.conf.nginx_rewrite import python_regex
from hakeeper.proxy.balancer import Balancer
from hakeeper.proxy.config import ProxyConfig, template_parts

if TYPE_CHECKING:
    from hakeeper.proxy.rewrite import Access, Step
    from hakeeper.proxy.static import Files, MimeTypes, Static

# nginx 1.22 ngx_http_status_lines (codes missing here get "HTTP/1.1 NNN \r\n")
STATUS_TEXT: dict[int, bytes] = {
    200: b"OK", 201: b"Created", 202: b"Accepted", 204: b"No Content",
    206: b"Partial Content", 301: b"Moved Permanently", 302: b"Moved Temporarily",
    303: b"See Other", 304: b"Not Modified", 307: b"Temporary Redirect",
    308: b"Permanent Redirect", 400: b"Bad Request", 401: b"Unauthorized",
    402: b"Payment Required", 403: b"Forbidden", 404: b"Not Found", 405: b"Not Allowed",
    406: b"Not Acceptable", 408: b"Request Time-out", 409: b"Conflict", 410: b"Gone",
    411: b"Length Required", 412: b"Precondition Failed",
    413: b"Request Entity Too Large", 414: b"Request-URI Too Large",
    415: b"Unsupported Media Type", 416: b"Requested Range Not Satisfiable",
    421: b"Misdirected Request", 429: b"Too Many Requests",
    500: b"Internal Server Error", 501: b"Not Implemented", 502: b"Bad Gateway",
    503: b"Service Temporarily Unavailable", 504: b"Gateway Time-out",
    505: b"HTTP Version Not Supported", 507: b"Insufficient Storage",
}  # fmt: skip

# titles of nginx's built-in pages (ngx_http_error_NNN_page) where they differ
_PAGE_TITLE: dict[int, bytes] = {
    302: b"302 Found", 401: b"401 Authorization Required",
    494: b"400 Request Header Or Cookie Too Large",
    495: b"400 The SSL certificate error", 496: b"400 No required SSL certificate was sent",
    497: b"400 The plain HTTP request was sent to HTTPS port",
}  # fmt: skip
_PAGE_CODES = frozenset({c for c in STATUS_TEXT if c >= 300 and c != 304} | set(_PAGE_TITLE))
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# nginx drops keep-alive after these special responses (ngx_http_special_response_handler)
_CLOSING = frozenset({400, 413, 414, 494, 495, 496, 497, 500, 501})

CRLF = b"\r\n"


def status_line(code: int) -> bytes:
    text = STATUS_TEXT.get(code)
    return b"HTTP/1.1 %d %s\r\n" % (code, text) if text else b"HTTP/1.1 %d \r\n" % code


def builtin_page(code: int, server: bytes = b"hakeeper") -> bytes:
    """nginx's built-in HTML page for `code`, or b"" when nginx has none."""
    if code not in _PAGE_CODES:
        return b""
    title = _PAGE_TITLE.get(code) or b"%d %s" % (code, STATUS_TEXT[code])
    return (
        b"<html>\r\n<head><title>" + title + b"</title></head>\r\n<body>\r\n<center><h1>"
        + title + b"</h1></center>\r\n<hr><center>" + server
        + b"</center>\r\n</body>\r\n</html>\r\n"
    )  # fmt: skip


# -- URIs -------------------------------------------------------------------------------
class BadUriError(ValueError):
    """The request URI cannot be normalized (nginx answers 400)."""


_HEX = frozenset(b"0123456789abcdefABCDEF")
_COMPLEX = re.compile(rb"%|//|/\.")


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """(path, args) of an origin-form request-target (`?` splits, fragment ignored)."""
    path, _, args = target.partition(b"?")
    return path.partition(b"#")[0], args


def normalize_path(path: bytes) -> tuple[bytes, bool]:
    """nginx's `r->uri`: %XX decoded, slashes merged, `.`/`..` resolved; and whether the
    client's URI was %-quoted (`r->quoted_uri`). Raises BadUriError above the root or on a bad
    escape."""
    if _COMPLEX.search(path) is None:
        return path, False  # the common case, one C call
    quoted = b"%" in path
    if quoted:
        out = bytearray()
        i, n = 0, len(path)
        while i < n:
            c = path[i]
            if c == 0x25:  # '%'
                if i + 2 >= n:
                    raise BadUriError("truncated escape")
                hi, lo = path[i + 1], path[i + 2]
                if hi not in _HEX or lo not in _HEX:
                    raise BadUriError("bad escape")
                out.append(int(path[i + 1 : i + 3], 16))
                i += 3
            else:
                out.append(c)
                i += 1
        path = bytes(out)
        if b"\x00" in path:
            raise BadUriError("NUL in URI")
    if b"//" not in path and b"/." not in path:
        return path, quoted
    segments: list[bytes] = []
    parts = path.split(b"/")
    for k, seg in enumerate(parts[1:], 1):
        last = k == len(parts) - 1
        if seg == b"" and not last:
            continue  # merge_slashes on
        if seg == b".":
            if last:
                segments.append(b"")
            continue
        if seg == b"..":
            if not segments:
                raise BadUriError("above the root")
            segments.pop()
            if last:
                segments.append(b"")
            continue
        segments.append(seg)
    return b"/" + b"/".join(segments), quoted


_URI_ESCAPES = re.compile(rb"[\x00-\x20\x7f-\xff#%?]")


def escape_uri(data: bytes) -> bytes:
    """`ngx_escape_uri(NGX_ESCAPE_URI)`: space, #, %, ?, controls and bytes >= 0x7f."""
    if _URI_ESCAPES.search(data) is None:
        return data
    return b"".join(
        b"%%%02X" % c if (c <= 0x20 or c >= 0x7F or c in b"#%?") else bytes((c,)) for c in data
    )


# -- variables --------------------------------------------------------------------------
@dataclass(slots=True)
class RequestView:
    """What variables may read from one request (built only on the routed path)."""

    method: bytes
    target: bytes  # $request_uri, as the client sent it
    path: bytes  # $uri, normalized
    args: bytes
    host: bytes  # Host lower-cased without port, b"" if none
    headers: Sequence[tuple[bytes, bytes]]  # (lower-case name, value)
    remote_addr: bytes
    remote_port: bytes
    server_name: bytes = b""
    server_port: bytes = b""
    server_addr: bytes = b""
    scheme: bytes = b"http"
    captures: tuple[bytes, ...] = ()  # $1..$9 of the last matched regex ([0] = the match)
    vars: dict[str, bytes] | None = None  # named captures and `set` variables


def builtin_variable(name: str) -> bool:
    """Whether `$name` is one of nginx's variables that routing renders."""
    return name in _SIMPLE or name.startswith(("arg_", "http_"))


def user_variable(name: str) -> bool:
    """Whether `$name` is a capture number or a named capture / `set` variable."""
    return not builtin_variable(name)


_SIMPLE = frozenset(
    {
        "remote_addr", "binary_remote_addr", "remote_port", "request_uri", "uri",
        "document_uri", "args", "query_string", "is_args", "host", "scheme", "https",
        "server_name", "server_port", "server_addr", "request_method", "http_host",
    }
)  # fmt: skip


#: Variables that are one field of the request view, as-is.
_FIELDS = {
    "remote_addr": "remote_addr",
    "uri": "path",
    "document_uri": "path",
    "request_uri": "target",
    "args": "args",
    "query_string": "args",
    "scheme": "scheme",
    "request_method": "method",
    "server_name": "server_name",
    "server_port": "server_port",
    "server_addr": "server_addr",
    "remote_port": "remote_port",
}


def arg_value(args: bytes, name: bytes) -> bytes:
    """`$arg_NAME`: the first `NAME=value` in the query string (name caseless, raw value)."""
    for pair in args.split(b"&"):
        key, eq, value = pair.partition(b"=")
        if eq and key.lower() == name:
            return value
    return b""


def variable(name: str, view: RequestView) -> bytes:
    """The value of nginx variable `$name` for `view` (b"" when unset)."""
    attr = _FIELDS.get(name)
    if attr is not None:
        value: bytes = getattr(view, attr)
        return value
    if name == "https":  # ngx_http_variable_https: "on" over TLS
        return b"on" if view.scheme == b"https" else b""
    if name == "is_args":
        return b"?" if view.args else b""
    if name == "host":
        return view.host or view.server_name
    if name == "binary_remote_addr":
        try:
            return ip_address(view.remote_addr.decode("ascii", "replace")).packed
        except ValueError:
            return b""
    if name.startswith("arg_"):
        return arg_value(view.args, name[4:].lower().encode("latin-1"))
    if name.startswith("http_"):
        want = name[5:].lower().replace("_", "-").encode("latin-1")
        for low, value in view.headers:
            if low == want:
                return value
        return b""
    if "1" <= name <= "9":  # a capture number (template names are one digit)
        n = ord(name) - 48
        captures = view.captures
        return captures[n] if n < len(captures) else b""
    values = view.vars
    return values.get(name, b"") if values is not None else b""


@dataclass(frozen=True, slots=True)
class Template:
    """Text with nginx `$variables`: bytes are literal, str are variable names."""

    parts: tuple[bytes | str, ...]

    @property
    def is_static(self) -> bool:
        return all(isinstance(p, bytes) for p in self.parts)

    @property
    def user_vars(self) -> bool:
        """Whether it reads a capture, a named capture or a `set` variable."""
        return any(isinstance(p, str) and user_variable(p) for p in self.parts)

    def render(self, view: RequestView) -> bytes:
        return b"".join(p if isinstance(p, bytes) else variable(p, view) for p in self.parts)


def variable_parts(text: str) -> list[bytes | str]:
    """`config.template_parts` with nginx's capture syntax: `$1x` is capture 1 then `x`
    (a capture is one digit 1-9)."""
    out: list[bytes | str] = []
    for part in template_parts(text):
        if isinstance(part, str) and "1" <= part[0] <= "9" and len(part) > 1:
            out += [part[0], part[1:].encode("latin-1")]
        else:
            out.append(part)
    return out


def compile_template(text: str, known: frozenset[str] = frozenset()) -> Template:
    """Compile `text`; `known` names the named captures and `set` variables of the
    configuration. Raises ValueError naming an unknown variable (nginx: `unknown "name"
    variable`)."""
    parts = variable_parts(text)
    for name in parts:
        if (
            isinstance(name, str)
            and not builtin_variable(name)
            and not ("1" <= name <= "9")
            and name not in known
        ):
            raise ValueError(f'unknown "{name}" variable')
    return Template(tuple(parts))


# -- what a location does ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Return:
    """`return code [text]` / `return URL` (302)."""

    code: int
    text: Template | None
    types: MimeTypes | None = None  # `types`/`default_type` in effect (proxy/static.py)
    scheme: bytes | None = None  # the listener's $scheme for an absolute Location (TLS)

    def response(self, view: RequestView, keep_alive: bool, head: bool) -> tuple[bytes, bool]:
        """(response bytes, keep-alive after it) as nginx sends them (no Date header)."""
        code = self.code
        text = self.text.render(view) if self.text is not None else None
        location = b""
        if code in REDIRECTS and text is not None:
            location, text = absolute_location(text, view, self.scheme), None
        if code == 444:
            return b"", False
        if code in REDIRECTS or (text is None and code >= 400):
            body = builtin_page(code)  # ngx_http_special_response_handler
            if code in _CLOSING:
                keep_alive = False
            ctype = b"Content-Type: text/html\r\n" if body else b""
        else:
            body = text or b""  # ngx_http_send_response: the type of the URI's extension
            ctype = self.types.of(view.path) if self.types is not None else content_type(view.path)
            ctype = b"Content-Type: " + ctype + CRLF
        lines = [status_line(code), b"Server: hakeeper\r\n"]
        if code == 204:
            body = b""
        else:
            lines += (ctype, b"Content-Length: %d\r\n" % len(body))
        if location:
            lines.append(b"Location: " + location + CRLF)
        lines.append(b"Connection: keep-alive\r\n" if keep_alive else b"Connection: close\r\n")
        lines.append(CRLF)
        if not head:
            lines.append(body)
        return b"".join(lines), keep_alive


# nginx's built-in `types` (ngx_http_core_default_types) and `default_type text/plain`
_TYPES = {b"html": b"text/html", b"gif": b"image/gif", b"jpg": b"image/jpeg"}


def content_type(path: bytes) -> bytes:
    """`ngx_http_set_content_type` with no `types` block: by the URI's extension."""
    dot = path.rfind(b".")
    if dot < 0 or b"/" in path[dot:]:
        return b"text/plain"
    return _TYPES.get(path[dot + 1 :].lower(), b"text/plain")


def absolute_location(value: bytes, view: RequestView, scheme: bytes | None = None) -> bytes:
    """nginx's header filter with `absolute_redirect on; port_in_redirect on`: a Location
    starting with `/` gets `scheme://host[:port]` (Host, else the local address); the
    port is left out when it is the scheme's own (80, or 443 for https)."""
    if not value.startswith(b"/"):
        return value
    scheme = scheme or view.scheme
    host = view.host or view.server_addr
    port = view.server_port
    own = b"443" if scheme == b"https" else b"80"
    suffix = b":" + port if port and port != own else b""
    return scheme + b"://" + host + suffix + value


@dataclass(frozen=True, slots=True, eq=False)
class Proxied:
    """A `proxy_pass` location: its engine settings, its (maybe shared) balancer, the URI
    part (None = pass the client's URI unchanged) and the `hash` key if it needs one."""

    config: ProxyConfig
    balancer: Balancer
    uri: bytes | None = None
    key: Template | None = None
    # `proxy_pass http://b/$1...`: the URI rendered per request and sent as-is
    uri_template: Template | None = None
    # a header rule reads a capture or `set` variable (rendered on the routed path)
    renders: bool = False
    # `proxy_pass http://$up...`: the host rendered per request names one of these
    host: Template | None = None
    by_host: dict[bytes, Proxied] | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Location:
    """One location ready to match: `modifier`/`pattern` as in nginx.conf, and the
    locations nested in it."""

    modifier: str
    pattern: str
    action: Return | Proxied | Static
    regex: re.Pattern[bytes] | None = None
    nested: LocationSet | None = None
    files: Files | None = None  # root/index/try_files/error_page (proxy/static.py)
    # rewrite phase (`rewrite`/`set`/`return` in order), the proxied content handler
    # behind it, and the access rules in effect (proxy/rewrite.py)
    script: tuple[Step, ...] = ()
    content: Proxied | None = None
    access: Access | None = None
    prefix: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", self.pattern.encode("latin-1"))


@dataclass(frozen=True, slots=True, eq=False)
class Redirect:
    """The auto-redirect nginx answers for `/prefix` when `location /prefix/` proxies."""

    pattern: bytes


class LocationSet:
    """The locations of one level (a server, or those nested in one location), compiled
    for `ngx_http_core_find_location`."""

    __slots__ = ("exact", "plain", "prefixes", "redirects", "regexes")

    def __init__(self, locations: Sequence[Location]) -> None:
        self.exact: dict[bytes, Location] = {}
        prefixes: list[Location] = []
        regexes: list[Location] = []
        for loc in locations:
            if loc.modifier == "=":
                self.exact.setdefault(loc.prefix, loc)
            elif loc.modifier in ("", "^~"):
                prefixes.append(loc)
            else:
                regexes.append(loc)
        prefixes.sort(key=lambda loc: -len(loc.pattern))  # stable: config order on ties
        self.prefixes = tuple(prefixes)
        self.regexes = tuple(regexes)
        self.plain = frozenset(loc.prefix for loc in prefixes)
        self.redirects = {
            loc.prefix[:-1]: loc
            for loc in locations
            if loc.modifier in ("", "=", "^~")
            and loc.pattern.endswith("/")
            and len(loc.pattern) > 1
            and isinstance(loc.action, Proxied)
        }

    def find(
        self, uri: bytes, hits: list[re.Match[bytes]] | None = None
    ) -> tuple[bool, Location | Redirect | None]:
        """(final, choice): `final` when an exact, redirect or regex match decided; else
        the choice is the deepest prefix match (regexes of outer levels still apply).
        Successful regex matches are appended to `hits` when given (captures)."""
        hit = self.exact.get(uri)
        if hit is not None:
            return True, hit
        if uri not in self.plain:
            auto = self.redirects.get(uri)
            if auto is not None:
                return True, Redirect(auto.prefix)
        best: Location | Redirect | None = None
        noregex = False
        for loc in self.prefixes:
            if uri.startswith(loc.prefix):
                best = loc
                noregex = loc.modifier == "^~"
                if loc.nested is not None:
                    final, inner = loc.nested.find(uri, hits)
                    if final:
                        return True, inner
                    if inner is not None:
                        best = inner  # the deepest prefix match is used
                break
        if not noregex:
            for loc in self.regexes:
                assert loc.regex is not None
                match = loc.regex.search(uri)
                if match:
                    if hits is not None:
                        hits.append(match)
                    if loc.nested is not None:
                        inner = loc.nested.find(uri, hits)[1]
                        if isinstance(inner, Location):
                            return True, inner
                    return True, loc
        return False, best


class VirtualServer:
    """One `server` block as routed: its names, locations and server-level `return`.

    `locations` lists every location, nested ones included; `top` (default: all of
    them) those at server level, which carry the nested ones."""

    __slots__ = ("access", "locations", "names", "script", "scripted", "server_return", "top")

    def __init__(
        self,
        names: Sequence[str],
        locations: Sequence[Location],
        server_return: Return | None = None,
        top: Sequence[Location] | None = None,
        *,
        script: Sequence[Step] = (),
        access: Access | None = None,
    ) -> None:
        self.names = tuple(names)
        self.locations = tuple(locations)
        self.server_return = server_return
        self.top = LocationSet(self.locations if top is None else top)
        self.script = tuple(script)  # server rewrite phase: before the location is found
        self.access = access  # when no location matches
        from hakeeper.proxy.rewrite import needs_phases  # noqa: PLC0415 (imports us)

        # requests go through proxy/rewrite.py's phases (else the plain routed path)
        self.scripted = needs_phases(self)

    @property
    def primary_name(self) -> str:
        return next((n for n in self.names if not n.startswith("~")), "")

    def find(
        self, uri: bytes, hits: list[re.Match[bytes]] | None = None
    ) -> Location | Redirect | None:
        """nginx's location for the normalized `uri` (`ngx_http_core_find_location`)."""
        return self.top.find(uri, hits)[1]


def normalize_host(host: bytes) -> bytes:
    """`r->headers_in.server`: lower-case, no port, no trailing dot."""
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1].lower()
    name = host.partition(b":")[0].lower()
    return name[:-1] if name.endswith(b".") else name


class ServerNames:
    """`server_name` lookup for one listen address (`ngx_http_find_virtual_server`)."""

    __slots__ = ("default", "exact", "head", "regexes", "tail")

    def __init__(self, servers: Sequence[VirtualServer], default: int) -> None:
        self.default = default
        self.exact: dict[bytes, int] = {}
        self.head: dict[bytes, int] = {}  # "example.com" for *.example.com / .example.com
        self.tail: dict[bytes, int] = {}  # "www.example" for www.example.*
        self.regexes: list[tuple[re.Pattern[bytes], int]] = []
        for i, server in enumerate(servers):
            for raw in server.names:
                name = raw.lower()
                if name.startswith("~"):
                    pattern = python_regex(raw[1:])
                    rx = re.compile(pattern.encode("latin-1"), re.IGNORECASE)
                    self.regexes.append((rx, i))
                elif name.startswith("*."):
                    self.head.setdefault(name[2:].encode("latin-1"), i)
                elif name.startswith("."):
                    self.head.setdefault(name[1:].encode("latin-1"), i)
                    self.exact.setdefault(name[1:].encode("latin-1"), i)
                elif name.endswith(".*"):
                    self.tail.setdefault(name[:-2].encode("latin-1"), i)
                else:
                    self.exact.setdefault(name.encode("latin-1"), i)

    def select_match(self, host: bytes) -> tuple[int, re.Match[bytes] | None]:
        """The index of the server for a normalized Host (b"" = no Host header), and the
        regex match when a regex name chose it (its captures)."""
        hit = self.exact.get(host)
        if hit is not None:
            return hit, None
        if host:
            if self.head:
                labels = host.split(b".")
                for k in range(1, len(labels)):  # longest suffix first
                    hit = self.head.get(b".".join(labels[k:]))
                    if hit is not None:
                        return hit, None
            if self.tail:
                labels = host.split(b".")
                for k in range(len(labels) - 1, 0, -1):
                    hit = self.tail.get(b".".join(labels[:k]))
                    if hit is not None:
                        return hit, None
            for rx, i in self.regexes:
                match = rx.search(host)
                if match:
                    return i, match
        return self.default, None

    def select(self, host: bytes) -> int:
        """The index of the server for a normalized Host (b"" = no Host header)."""
        return self.select_match(host)[0]


class RouteTable:
    """Everything one listener routes by: its servers and the Host lookup over them."""

    __slots__ = ("cache", "default", "names", "port", "scripted", "servers")

    def __init__(self, servers: Sequence[VirtualServer], default: int = 0, port: int = 80):
        self.servers = tuple(servers)
        self.default = default
        self.port = port
        self.names = ServerNames(self.servers, default)
        self.cache: dict[bytes, tuple[VirtualServer, bytes]] = {}
        # any server runs rewrite/access phases or reads captures: every request of the
        # listener goes through proxy/rewrite.py (server_name captures need the match)
        self.scripted = any(s.scripted for s in self.servers)

    def server_for(self, host: bytes) -> VirtualServer:
        """The server for a normalized Host value."""
        return self.servers[self.names.select(host)]

    def server_for_raw(self, raw: bytes) -> tuple[VirtualServer, bytes]:
        """(server, normalized host) for a Host value as sent; repeated values (the usual
        case) are answered from a bounded cache."""
        hit = self.cache.get(raw)
        if hit is None:
            host = normalize_host(raw) if raw else b""
            if len(self.cache) >= 4096:
                self.cache.clear()
            hit = self.cache[raw] = (self.server_for(host), host)
        return hit

    def reads_headers(self) -> bool:
        """Whether a `return` text or a hash key reads `$http_NAME`, or a location serves
        files (If-Modified-Since, Range, ...)."""
        if self.scripted:
            from hakeeper.proxy.rewrite import phase_templates  # noqa: PLC0415 (imports us)

            for server in self.servers:
                for template in phase_templates(server):
                    if any(isinstance(p, str) and p.startswith("http_") for p in template.parts):
                        return True
        if any(loc.files is not None for server in self.servers for loc in server.locations):
            return True
        templates: list[Template | None] = []
        for server in self.servers:
            actions: list[Return | Proxied | Static | None] = [server.server_return]
            actions += [loc.action for loc in server.locations]
            for action in actions:
                if isinstance(action, Return):
                    templates.append(action.text)
                elif isinstance(action, Proxied):
                    templates.append(action.key)
        return any(
            isinstance(part, str) and part.startswith("http_")
            for t in templates
            if t is not None
            for part in t.parts
        )

    def proxied(self) -> list[Proxied]:
        """Every distinct proxied location (the engine builds one child per entry)."""
        out: list[Proxied] = []
        seen: set[int] = set()
        for server in self.servers:
            for loc in server.locations:
                for action in (loc.action, loc.content):
                    if not isinstance(action, Proxied):
                        continue
                    for one in (action, *(action.by_host or {}).values()):
                        if id(one) not in seen:
                            seen.add(id(one))
                            out.append(one)
        return out


def upstream_target(uri: bytes, prefix: bytes, path: bytes, quoted: bool, args: bytes) -> bytes:
    """The request-target sent upstream by `proxy_pass http://b<uri>` from a location
    with `prefix` (`ngx_http_proxy_create_request`: the matched part of the normalized
    URI replaced, the rest escaped if the client's was, then `?args`)."""
    rest = path[len(prefix) :]
    if quoted:
        rest = escape_uri(rest)
    target = uri + rest
    return target + b"?" + args if args else target
