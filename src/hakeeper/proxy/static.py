"""Static files as nginx 1.22 serves them: URI -> file, `index`, `try_files`, `error_page`, heads.

Pure (the filesystem comes in as a `StatFn`, the clock is not needed). Follows:
- ngx_http_map_uri_to_path: `root` + URI, or `alias` replacing the matched location
  prefix (in a regex location the alias is the whole path, with `$1`..`$9` and named
  captures of the location's match);
- ngx_http_try_files_module: every argument but the last is rendered (`$uri`, `$args`,
  ...) and tested as a file, or as a directory when its config text ends with `/` (the
  URI then drops that slash); the first hit becomes the URI in the same location; the
  last argument is `=code`, a named `@location` or a URI internally redirected (`?args`
  split off, args replaced);
- ngx_http_index_module: a URI ending in `/` takes the first existing index file by an
  internal redirect (locations are matched again); none: 404 without the directory, else
  403 (ngx_http_core_content_phase's "directory index is forbidden");
- ngx_http_static_module: only GET/HEAD/POST (else 405), a directory -> 301 to `uri/`
  (+`?args`), absolute Location; POST to a file -> 405; type by the URI's extension
  (`types`, `default_type`);
- ngx_http_special_response_handler / ngx_http_send_error_page: `error_page` on an
  error of the location that raised it (once: recursive_error_pages off), an internal
  redirect with GET (HEAD stays HEAD) keeping the error's status (`=code` replaces it,
  a bare `=` takes the target's), or a 302 (`=301`..) to an absolute URL;
- the header, not_modified and range filters for the head: Last-Modified, ETag
  `"%xT-%xO"` (mtime-size in hex), Accept-Ranges, If-Unmodified-Since/If-Match -> 412,
  If-Modified-Since (exact) / If-None-Match (weak) -> 304, `Range: bytes=` -> 206 (several
  pieces: multipart/byteranges) or 416, If-Range; an error page served from a file keeps
  ETag, drops Last-Modified and Accept-Ranges.
Symlinks or `..` leading outside the root are the `StatFn`'s to detect (`denied`: 403).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from copy import copy
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from hakeeper.proxy.routes import (
    Location,
    Proxied,
    Redirect,
    RequestView,
    Return,
    Template,
    VirtualServer,
    builtin_page,
    compile_template,
    escape_uri,
    status_line,
    upstream_target,
)

MAX_REDIRECTS = 10  # NGX_HTTP_MAX_URI_CHANGES: then 500
_SERVE = frozenset({b"GET", b"HEAD", b"POST"})


# -- files and types ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FileInfo:
    """What `stat` found: `denied` is EACCES or a path resolving outside its root."""

    is_dir: bool = False
    size: int = 0
    mtime: int = 0
    regular: bool = True
    denied: bool = False


#: (path, root the path must stay in) -> FileInfo, or None when missing.
StatFn = Callable[[bytes, bytes], "FileInfo | None"]


@dataclass(frozen=True, slots=True)
class MimeTypes:
    """`types` + `default_type` in effect: extension (lower-case) -> type."""

    types: Mapping[bytes, bytes]
    default: bytes = b"text/plain"

    def of(self, uri: bytes) -> bytes:
        """The type of `uri` by its extension (`r->exten`: after the last `.` of the last
        segment), as ngx_http_set_content_type."""
        dot = uri.rfind(b".")
        if dot < 0 or b"/" in uri[dot:]:
            return self.default
        return self.types.get(uri[dot + 1 :].lower(), self.default)


@dataclass(frozen=True, slots=True)
class ErrorPage:
    uri: bytes  # a URI, `@name`, or an absolute URL (redirect)
    response: int | None  # None: keep the error's status; 0: the target's


@dataclass(frozen=True, slots=True, eq=False)
class Files:
    """One location's static-file settings, compiled."""

    root: bytes | None = None
    alias: bytes | None = None
    index: tuple[bytes, ...] = (b"index.html",)
    try_files: tuple[tuple[Template, bool], ...] = ()  # (argument, tests a directory)
    try_last: bytes = b""
    types: MimeTypes = MimeTypes({b"html": b"text/html", b"gif": b"image/gif"})
    error_pages: Mapping[int, ErrorPage] | None = None
    etag: bool = True


@dataclass(frozen=True, slots=True, eq=False)
class Static:
    """The action of a location that serves files (its `Location.files` say how)."""

    files: Files


# -- outcomes ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Answer:
    """Answer with `ret` rendered for `view` (a page, a redirect, a `return`)."""

    ret: Return
    view: RequestView


@dataclass(frozen=True, slots=True)
class SendFile:
    """Open `path` and send it: `status` None = 200 with conditionals and ranges, else an
    error page's status (ETag kept, no Last-Modified / ranges)."""

    path: bytes
    root: bytes
    ctype: bytes
    etag: bool
    status: int | None
    view: RequestView


@dataclass(frozen=True, slots=True)
class ToProxy:
    """Proxy through `proxied`; `target` is the upstream request-target (None: as the
    client's request with the location's URI part applied by the caller). `where` is the
    location, whose `error_page`s answer a failed upstream (`error_outcome`)."""

    proxied: Proxied
    prefix: bytes
    target: bytes | None
    view: RequestView
    where: Location


Outcome = Answer | SendFile | ToProxy


def map_path(loc: Location, files: Files, uri: bytes) -> tuple[bytes, bytes]:
    """(file path, the root it must stay in) for `uri` (ngx_http_map_uri_to_path)."""
    if files.alias is None:
        root = files.root or b"html"
        return root + uri, root
    alias = files.alias
    if loc.regex is not None:
        m = loc.regex.search(uri)
        if m is not None and b"$" in alias:
            alias = _captures(alias, m)
        cut = files.alias.find(b"$")
        base = files.alias if cut < 0 else files.alias[: files.alias.rfind(b"/", 0, cut) + 1]
        return alias, base.rstrip(b"/") or b"/"
    rest = uri[len(loc.prefix) :]
    return alias + rest, alias.rstrip(b"/") or b"/"


_CAPTURE = re.compile(rb"\$(\d|\{\d\}|[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})")


def _captures(text: bytes, m: re.Match[bytes]) -> bytes:
    def one(g: re.Match[bytes]) -> bytes:
        name = g.group(1).strip(b"{}").decode("ascii")
        try:
            value = m.group(int(name) if name.isdigit() else name)
        except IndexError:
            return b""
        return value or b""

    return _CAPTURE.sub(one, text)


# -- resolving a request -----------------------------------------------------------------
@dataclass(slots=True)
class _State:
    server: VirtualServer
    view: RequestView  # the client's request
    stat: StatFn
    method: bytes
    uri: bytes
    args: bytes
    changed: bool  # the URI differs from the client's (internal redirect)
    err_status: int | None = None  # set while serving an error page
    in_error_page: bool = False
    hops: int = 0


def resolve(
    server: VirtualServer,
    found: Location | Redirect | None,
    view: RequestView,
    stat: StatFn,
) -> Outcome:
    """What nginx does for a request whose location is `found`, following internal
    redirects (index, try_files, error_page) through `server`'s locations."""
    st = _State(server, view, _memo(stat), view.method, view.path, view.args, False)
    return _run(found, st)


def _memo(stat: StatFn) -> StatFn:
    """`stat` asked once per path within one request (try_files, then the file itself)."""
    seen: dict[bytes, FileInfo | None] = {}

    def cached(path: bytes, root: bytes) -> FileInfo | None:
        if path in seen:
            return seen[path]
        info = seen[path] = stat(path, root)
        return info

    return cached


def error_outcome(
    server: VirtualServer, loc: Location, code: int, view: RequestView, stat: StatFn
) -> Outcome:
    """What answers error `code` raised in `loc` for the request seen as `view` (a proxied
    location's 502/504): its `error_page` for that code, else the built-in page."""
    st = _State(server, view, stat, view.method, view.path, view.args, False)
    return _error(loc, code, st)


def has_page(loc: Location, code: int) -> bool:
    """Whether `loc` has an `error_page` for `code`."""
    pages = loc.files.error_pages if loc.files is not None else None
    return pages is not None and code in pages


def _view(st: _State) -> RequestView:
    view = st.view
    if view.path == st.uri and view.args == st.args and view.method == st.method:
        return view
    view = copy(view)  # (dataclasses.replace costs ~10x more)
    view.path, view.args, view.method = st.uri, st.args, st.method
    return view


def _run(found: Location | Redirect | None, st: _State) -> Outcome:
    server, stat = st.server, st.stat
    while True:
        if st.hops > MAX_REDIRECTS:
            return Answer(Return(500, None), _view(st))  # redirection cycle
        if found is None:
            return _error(None, 404, st)
        if isinstance(found, Redirect):
            target = found.pattern + b"?" + st.args if st.args else found.pattern
            return _done(Return(301, Template((target,))), st)
        loc = found
        action = loc.action
        if isinstance(action, Return):
            if action.code >= 400 and action.text is None:
                return _error(loc, action.code, st)
            return _done(action, st)
        if isinstance(action, Proxied):
            upstream: bytes | None = None
            if st.changed:
                if action.uri is not None:
                    upstream = upstream_target(action.uri, loc.prefix, st.uri, True, st.args)
                else:
                    path = escape_uri(st.uri)
                    upstream = path + b"?" + st.args if st.args else path
            return ToProxy(action, loc.prefix, upstream, _view(st), loc)
        files = loc.files
        assert files is not None
        # try_files phase
        if files.try_files:
            current = _view(st)
            hit = False
            for template, test_dir in files.try_files:
                value = template.render(current)
                path, root = map_path(loc, files, _strip(value) if test_dir else value)
                info = stat(path, root)
                if info is not None and not info.denied and info.is_dir == test_dir:
                    st.uri = _strip(value) if test_dir else value
                    hit = True
                    break
            if not hit:
                last = files.try_last
                if last.startswith(b"="):
                    return _error(loc, int(last[1:]), st)
                if last.startswith(b"@"):
                    found = _named(server, last)
                    st.hops += 1
                    continue
                rendered = _render_text(last, current)
                st.uri, _, st.args = rendered.partition(b"?")
                st.changed = True
                st.hops += 1
                found = server.find(st.uri)
                continue
        # content phase: index, then static
        if st.uri.endswith(b"/"):
            if st.method not in _SERVE:
                return _error(loc, 405, st)
            base, root = map_path(loc, files, st.uri)
            redirect = None
            for name in files.index:
                if name.startswith(b"/"):
                    redirect = name
                    break
                info = stat(base + name, root)
                if info is not None:
                    redirect = st.uri + name
                    break
            if redirect is not None:
                st.uri = redirect
                st.changed = True
                st.hops += 1
                found = server.find(st.uri)
                continue
            info = stat(base, root)
            if info is None or not (info.is_dir or info.denied):
                return _error(loc, 404, st)
            return _error(loc, 403, st)
        if st.method not in _SERVE:
            return _error(loc, 405, st)
        path, root = map_path(loc, files, st.uri)
        info = stat(path, root)
        if info is None:
            return _error(loc, 404, st)
        if info.denied:
            return _error(loc, 403, st)
        if info.is_dir:
            target = escape_uri(st.uri) + b"/"
            if st.args:
                target += b"?" + st.args
            return _done(Return(301, Template((target,))), st)
        if not info.regular:
            return _error(loc, 404, st)
        if st.method == b"POST":
            return _error(loc, 405, st)
        ctype = files.types.of(st.uri)
        return SendFile(path, root, ctype, files.etag, st.err_status, _view(st))


def _strip(value: bytes) -> bytes:
    return value[:-1] if value.endswith(b"/") and len(value) > 1 else value


def _render_text(text: bytes, view: RequestView) -> bytes:
    if b"$" not in text:
        return text
    try:
        return compile_template(text.decode("latin-1")).render(view)
    except ValueError:
        return text


def _named(server: VirtualServer, name: bytes) -> Location | None:
    for loc in server.locations:
        if loc.prefix == name:
            return loc
    return None


def _done(ret: Return, st: _State) -> Answer:
    """`ret` as the answer, with an error page's status when one is being served."""
    if st.err_status is not None and st.err_status != ret.code:
        ret = replace(ret, code=st.err_status)
    return Answer(ret, _view(st))


def _error(loc: Location | None, code: int, st: _State) -> Outcome:
    """An error raised in `loc`: its `error_page`, else nginx's built-in page."""
    pages = loc.files.error_pages if loc is not None and loc.files is not None else None
    page = pages.get(code) if pages is not None and not st.in_error_page else None
    if page is None:
        # (an error while serving an error page is answered with its own built-in page)
        return Answer(Return(code, None), _view(st))
    st.in_error_page = True
    status = code if page.response is None else (page.response or None)
    uri = _render_text(page.uri, _view(st))
    if not uri.startswith((b"/", b"@")):
        # an absolute URL: a redirect (302 unless `=301`/`=303`/`=307`/`=308`)
        redirect = page.response if page.response in (301, 302, 303, 307, 308) else 302
        return Answer(Return(redirect, Template((uri,))), _view(st))
    st.err_status = status
    if st.method != b"HEAD":
        st.method = b"GET"
    st.hops += 1
    if uri.startswith(b"@"):
        return _run(_named(st.server, uri), st)
    st.uri, _, st.args = uri.partition(b"?")
    st.changed = True
    return _run(st.server.find(st.uri), st)


# -- the response head -------------------------------------------------------------------
_DAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
_MONTHS = (
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun",
    b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
)  # fmt: skip
_MONTH_NO = {m.decode().lower(): i + 1 for i, m in enumerate(_MONTHS)}


_DATE_CACHE: dict[int, bytes] = {}


def http_date(seconds: int) -> bytes:
    """RFC 9110 IMF-fixdate of a Unix time (`Mon, 23 Nov 2026 18:14:27 GMT`)."""
    hit = _DATE_CACHE.get(seconds)
    if hit is not None:
        return hit
    t = datetime.fromtimestamp(seconds, UTC)
    text = b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[t.weekday()], t.day, _MONTHS[t.month - 1], t.year, t.hour, t.minute, t.second,
    )  # fmt: skip
    if len(_DATE_CACHE) >= 1024:
        _DATE_CACHE.clear()
    _DATE_CACHE[seconds] = text
    return text


_DATES = (
    re.compile(rb"\s*[A-Za-z]{3}, (\d\d) ([A-Za-z]{3}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT\s*"),
    re.compile(rb"\s*[A-Za-z]+, (\d\d)-([A-Za-z]{3})-(\d\d) (\d\d):(\d\d):(\d\d) GMT\s*"),
)
_ASCTIME = re.compile(rb"\s*[A-Za-z]{3} ([A-Za-z]{3}) +(\d\d?) (\d\d):(\d\d):(\d\d) (\d{4})\s*")


def parse_http_date(text: bytes) -> int | None:
    """Unix time of an RFC 1123, RFC 850 or asctime date (ngx_parse_http_time), or None."""
    for rx in _DATES:
        m = rx.fullmatch(text)
        if m:
            day, mon, year, hh, mm, ss = m.groups()
            y = int(year)
            if len(year) == 2:
                y += 1900 if y >= 70 else 2000
            return _epoch(y, mon, int(day), int(hh), int(mm), int(ss))
    m = _ASCTIME.fullmatch(text)
    if m:
        mon, day, hh, mm, ss, year = m.groups()
        return _epoch(int(year), mon, int(day), int(hh), int(mm), int(ss))
    return None


def _epoch(year: int, mon: bytes, day: int, *clock: int) -> int | None:
    hh, mm, ss = clock
    month = _MONTH_NO.get(mon.decode("latin-1").lower())
    if month is None or hh > 23 or mm > 59 or ss > 59:
        return None
    try:
        return int(datetime(year, month, day, hh, mm, ss, tzinfo=UTC).timestamp())
    except ValueError:
        return None


def etag_of(info: FileInfo) -> bytes:
    return b'"%x-%x"' % (info.mtime, info.size)


@dataclass(frozen=True, slots=True)
class FilePlan:
    """What to write: `head` (a whole answer when `length` is 0), then `length` bytes of
    the file from `start`, then each of `more` (bytes, then a file piece) and `tail`
    (multipart/byteranges); `keep` = keep-alive after it."""

    head: bytes
    start: int = 0
    length: int = 0
    keep: bool = True
    more: tuple[tuple[bytes, int, int], ...] = ()
    tail: bytes = b""


_CONDITIONAL = frozenset(
    {b"if-unmodified-since", b"if-match", b"if-modified-since", b"if-none-match", b"range",
     b"if-range"}
)  # fmt: skip


def _conditionals(view: RequestView) -> dict[bytes, bytes]:
    """The request's conditional and range headers (the first of each name)."""
    out: dict[bytes, bytes] = {}
    for low, value in view.headers:
        if low in _CONDITIONAL and low not in out:
            out[low] = value
    return out


def _etag_match(header: bytes, etag: bytes, weak: bool) -> bool:
    """ngx_http_test_if_match: `*`, or one of the listed tags (W/ ignored when weak)."""
    value = header.strip()
    if value == b"*":
        return True
    if weak and etag.startswith(b"W/"):
        etag = etag[2:]
    for item in value.split(b","):
        tag = item.strip()
        if weak and tag.startswith(b"W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def parse_range(value: bytes, size: int) -> list[tuple[int, int]] | int | None:
    """`Range: bytes=...` against `size` (ngx_http_range_parse): the [start, end) pieces,
    None to ignore the header (200), or 416."""
    if value[:6].lower() != b"bytes=":
        return None
    ranges: list[tuple[int, int]] = []
    total = 0
    for part in value[6:].split(b","):
        text = part.strip(b" ")
        first, dash, last = text.partition(b"-")
        first, last = first.strip(b" "), last.strip(b" ")
        if not dash or (first and not first.isdigit()) or (last and not last.isdigit()):
            return 416
        if not first and not last:
            return 416
        if not first:  # suffix
            n = int(last)
            start, end = (size - n if n < size else 0), size
        else:
            start = int(first)
            end = size if not last else min(int(last) + 1, size)
        if start < end:
            ranges.append((start, end))
            total += end - start
        elif start == 0:
            return None
    if not ranges:
        return 416
    if total > size:
        return None
    return ranges


def file_plan(
    send: SendFile, info: FileInfo, keep: bool, server: bytes = b"hakeeper", boundary: int = 1
) -> FilePlan:
    """The response for an opened file (`info` from fstat) as nginx's filters shape it;
    `boundary` numbers a multipart/byteranges answer (nginx: a per-process counter)."""
    view = send.view
    head_only = view.method == b"HEAD"
    etag = etag_of(info) if send.etag else b""
    conn = b"Connection: keep-alive\r\n" if keep else b"Connection: close\r\n"
    srv = b"Server: " + server + b"\r\n"
    ctype = b"Content-Type: " + send.ctype + b"\r\n"
    etag_line = b"ETag: " + etag + b"\r\n" if etag else b""
    if send.status is not None and send.status != 200:
        head = b"".join(
            (status_line(send.status), srv, ctype, b"Content-Length: %d\r\n" % info.size,
             conn, etag_line, b"\r\n")
        )  # fmt: skip
        return FilePlan(head, 0, 0 if head_only else info.size, keep)
    modified = b"Last-Modified: " + http_date(info.mtime) + b"\r\n"
    ask = _conditionals(view)
    # not_modified filter
    ius = ask.get(b"if-unmodified-since")
    if ius is not None:
        t = parse_http_date(ius)
        if t is None or t < info.mtime:
            return _page(412, keep, head_only, srv)
    im = ask.get(b"if-match")
    if im is not None and not (etag and _etag_match(im, etag, False)):
        return _page(412, keep, head_only, srv)
    ims = ask.get(b"if-modified-since")
    inm = ask.get(b"if-none-match")
    if ims is not None or inm is not None:
        modified_since = ims is not None and parse_http_date(ims) != info.mtime
        mismatch = inm is not None and not (etag and _etag_match(inm, etag, True))
        if not modified_since and not mismatch:
            head = b"".join((status_line(304), srv, modified, conn, etag_line, b"\r\n"))
            return FilePlan(head, 0, 0, keep)
    # range filter
    rng = ask.get(b"range")
    if rng is not None and info.size > 0:
        if_range = ask.get(b"if-range")
        if if_range is not None and not _if_range_ok(if_range, etag, info.mtime):
            rng = None
    pieces = parse_range(rng, info.size) if rng is not None and info.size > 0 else None
    if pieces == 416:
        body = builtin_page(416, server)
        head = b"".join(
            (status_line(416), srv, b"Content-Type: text/html\r\n",
             b"Content-Length: %d\r\n" % len(body), conn,
             b"Content-Range: bytes */%d\r\n" % info.size, b"\r\n")
        )  # fmt: skip
        return FilePlan(head if head_only else head + body, 0, 0, keep)
    if isinstance(pieces, list) and len(pieces) == 1:
        start, end = pieces[0]
        head = b"".join(
            (status_line(206), srv, ctype, b"Content-Length: %d\r\n" % (end - start), modified,
             conn, etag_line, b"Content-Range: bytes %d-%d/%d\r\n" % (start, end - 1, info.size),
             b"\r\n")
        )  # fmt: skip
        return FilePlan(head, start, 0 if head_only else end - start, keep)
    if isinstance(pieces, list):
        lines = (srv, modified, conn, etag_line, keep)
        return _multipart(pieces, size=info.size, ctype=send.ctype, boundary=boundary,
                          head_only=head_only, lines=lines)  # fmt: skip
    head = b"".join(
        (status_line(200), srv, ctype, b"Content-Length: %d\r\n" % info.size, modified, conn,
         etag_line, b"Accept-Ranges: bytes\r\n", b"\r\n")
    )  # fmt: skip
    return FilePlan(head, 0, 0 if head_only else info.size, keep)


def _multipart(
    pieces: list[tuple[int, int]],
    *,
    size: int,
    ctype: bytes,
    boundary: int,
    head_only: bool,
    lines: tuple[bytes, bytes, bytes, bytes, bool],
) -> FilePlan:
    """206 multipart/byteranges as ngx_http_range_multipart_header lays it out."""
    srv, modified, conn, etag_line, keep = lines
    mark = b"%020d" % boundary
    parts = [
        (
            b"\r\n--" + mark + b"\r\nContent-Type: " + ctype
            + b"\r\nContent-Range: bytes %d-%d/%d\r\n\r\n" % (start, end - 1, size),
            start,
            end - start,
        )
        for start, end in pieces
    ]  # fmt: skip
    tail = b"\r\n--" + mark + b"--\r\n"
    total = sum(len(p) + n for p, _, n in parts) + len(tail)
    head = b"".join(
        (status_line(206), srv,
         b"Content-Type: multipart/byteranges; boundary=" + mark + b"\r\n",
         b"Content-Length: %d\r\n" % total, modified, conn, etag_line, b"\r\n")
    )  # fmt: skip
    if head_only:
        return FilePlan(head, 0, 0, keep)
    (first, start, length), *rest = parts
    return FilePlan(head + first, start, length, keep, tuple(rest), tail)


def _if_range_ok(value: bytes, etag: bytes, mtime: int) -> bool:
    value = value.strip()
    if value.startswith(b'"'):
        return bool(etag) and value == etag
    return parse_http_date(value) == mtime


def _page(code: int, keep: bool, head_only: bool, srv: bytes) -> FilePlan:
    body = builtin_page(code)
    head = b"".join(
        (status_line(code), srv, b"Content-Type: text/html\r\n",
         b"Content-Length: %d\r\n" % len(body),
         b"Connection: keep-alive\r\n" if keep else b"Connection: close\r\n", b"\r\n")
    )  # fmt: skip
    return FilePlan(head if head_only else head + body, 0, 0, keep)


def error_plan(code: int, keep: bool, head_only: bool) -> FilePlan:
    """A built-in error answer when the file vanished or cannot be read after `resolve`."""
    return _page(code, keep, head_only, b"Server: hakeeper\r\n")


def compile_files(
    *,
    root: str | None,
    alias: str | None,
    index: Sequence[str],
    try_files: Sequence[str],
    types: MimeTypes,
    error_pages: Mapping[int, tuple[str, int | None]] | None,
    etag: bool,
) -> Files:
    """`Files` from the reader's strings; raises ValueError naming a bad variable."""
    tries = tuple((compile_template(a), a.endswith("/")) for a in try_files[:-1])
    return Files(
        root=root.encode("latin-1") if root is not None else None,
        alias=alias.encode("latin-1") if alias is not None else None,
        index=tuple(n.encode("latin-1") for n in index),
        try_files=tries,
        try_last=try_files[-1].encode("latin-1") if try_files else b"",
        types=types,
        error_pages=None
        if error_pages is None
        else {c: ErrorPage(u.encode("latin-1"), r) for c, (u, r) in error_pages.items()},
        etag=etag,
    )
