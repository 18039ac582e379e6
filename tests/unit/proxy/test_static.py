"""Static files, pure part: nginx.conf -> routing table with files, then `static.resolve`
against a fake filesystem, and the response heads of `static.file_plan`."""

from __future__ import annotations

import pytest

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import read_nginx
from hakeeper.proxy.from_nginx import listeners
from hakeeper.proxy.routes import Location, RequestView, VirtualServer
from hakeeper.proxy.static import (
    Answer,
    FileInfo,
    MimeTypes,
    SendFile,
    ToProxy,
    file_plan,
    http_date,
    parse_http_date,
    parse_range,
    resolve,
)

MTIME = 1_795_457_667  # Mon, 23 Nov 2026 18:14:27 GMT
FS: dict[bytes, FileInfo] = {
    b"/srv/www": FileInfo(is_dir=True),
    b"/srv/www/": FileInfo(is_dir=True),
    b"/srv/www/index.html": FileInfo(size=12, mtime=MTIME),
    b"/srv/www/ten.txt": FileInfo(size=10, mtime=MTIME),
    b"/srv/www/404.html": FileInfo(size=8, mtime=MTIME),
    b"/srv/www/dir": FileInfo(is_dir=True),
    b"/srv/www/dir/": FileInfo(is_dir=True),
    b"/srv/www/dir/index.htm": FileInfo(size=3, mtime=MTIME),
    b"/srv/www/noidx": FileInfo(is_dir=True),
    b"/srv/www/noidx/": FileInfo(is_dir=True),
    b"/srv/www/fifo": FileInfo(regular=False),
    b"/srv/www/secret.txt": FileInfo(denied=True),
    b"/srv/assets/x.js": FileInfo(size=6, mtime=MTIME),
    b"/srv/www/t/d": FileInfo(is_dir=True),
    b"/srv/www/t/d/": FileInfo(is_dir=True),
}
SEEN: list[tuple[bytes, bytes]] = []


def stat(path: bytes, root: bytes) -> FileInfo | None:
    SEEN.append((path, root))
    return FS.get(path)


CONF = r"""
http {
    types { text/html html; application/javascript js; text/plain txt; }
    default_type application/octet-stream;
    server {
        listen 8080;
        root /srv/www;
        index index.html index.htm;
        location / { try_files $uri $uri/ =404; }
        location /plain/ { }
        location /static/ { alias /srv/assets/; }
        location ~ ^/rx/(.+)$ { alias /srv/assets/$1; }
        location /ep/ { error_page 404 /404.html; }
        location /ep2/ { error_page 404 =200 /404.html; }
        location /ep3/ { error_page 404 = @back; }
        location /ep4/ { error_page 404 http://example.com/nf; }
        location /ep5/ { error_page 404 =301 http://example.com/nf; }
        location /ep6/ { error_page 404 /missing.html; }
        location /tf/ { try_files $uri @back; }
        location /t/ { try_files $uri/ =404; }
        location /t4/ { try_files /nope =418; }
        location /t5/ { try_files /nope /ten.txt?x=1; }
        location /app/ { try_files $uri @app; }
        location /loop/ { try_files /nope /loop/again; }
        location = /idx/ { index /ten.txt; }
        location @app { proxy_pass http://127.0.0.1:9; }
        location @back { return 200 "back $uri $args"; }
        location /ret { error_page 404 /404.html; return 404; }
        location /api/ { proxy_pass http://127.0.0.1:9/v1/; }
        location /to-api/ { try_files /nope /api/x; }
    }
}
"""


def server_of(text: str) -> VirtualServer:
    diags = Diagnostics()
    cfg = read_nginx(parse_nginx_text(text, "nginx.conf", diags), diags)
    routes = listeners(cfg, diags)
    assert not diags.has_errors, [d.format() for d in diags.sorted()]
    table = routes[0].config.routes
    assert table is not None
    return table.servers[0]


SERVER = server_of(CONF)


def view(
    method: bytes = b"GET", target: bytes = b"/", headers: tuple[tuple[bytes, bytes], ...] = ()
) -> RequestView:
    path, _, args = target.partition(b"?")
    return RequestView(
        method=method, target=target, path=path, args=args, host=b"h.test", headers=headers,
        remote_addr=b"127.0.0.1", remote_port=b"5", server_port=b"8080",
    )  # fmt: skip


def go(target: bytes, method: bytes = b"GET") -> Answer | SendFile | ToProxy:
    v = view(method, target)
    found = SERVER.find(v.path)
    return resolve(SERVER, found if isinstance(found, Location) else None, v, stat)  # type: ignore[arg-type]


def code(target: bytes, method: bytes = b"GET") -> tuple[int, bytes]:
    out = go(target, method)
    assert isinstance(out, Answer), out
    text = out.ret.text.render(out.view) if out.ret.text is not None else b""
    return out.ret.code, text


def sent(target: bytes, method: bytes = b"GET") -> SendFile:
    out = go(target, method)
    assert isinstance(out, SendFile), out
    return out


def test_root_index_and_try_files() -> None:
    s = sent(b"/")
    assert (s.path, s.root, s.ctype, s.status) == (
        b"/srv/www/index.html",
        b"/srv/www",
        b"text/html",
        None,
    )
    assert s.view.path == b"/index.html"  # an internal redirect: $uri changed
    assert sent(b"/ten.txt").ctype == b"text/plain"
    assert sent(b"/dir/").path == b"/srv/www/dir/index.htm"  # the first index that exists
    # try_files $uri/ found the directory: the URI drops its slash, then 301 to uri/
    assert code(b"/dir") == (301, b"/dir/")
    assert code(b"/dir?a=1") == (301, b"/dir/?a=1")
    assert code(b"/noidx/") == (403, b"")  # try_files found the directory: no index in it
    assert code(b"/missing") == (404, b"")
    assert code(b"/fifo") == (404, b"")
    assert code(b"/secret.txt") == (404, b"")  # try_files skips what it cannot open


def test_static_module_rules() -> None:
    assert code(b"/plain/") == (404, b"")  # no such directory
    FS[b"/srv/www/plain/"] = FileInfo(is_dir=True)
    try:
        assert code(b"/plain/") == (403, b"")  # directory without index
        assert code(b"/plain/", b"PUT") == (405, b"")
        assert code(b"/plain/", b"DELETE") == (405, b"")
    finally:
        del FS[b"/srv/www/plain/"]
    assert code(b"/plain/x", b"DELETE") == (405, b"")  # before looking at the file
    assert code(b"/plain/x", b"POST") == (404, b"")
    assert code(b"/ten.txt", b"POST") == (405, b"")
    assert sent(b"/ten.txt", b"HEAD").view.method == b"HEAD"


def test_alias_prefix_and_regex_capture() -> None:
    s = sent(b"/static/x.js")
    assert (s.path, s.root, s.ctype) == (
        b"/srv/assets/x.js",
        b"/srv/assets",
        b"application/javascript",
    )
    s = sent(b"/rx/x.js")
    assert (s.path, s.root) == (b"/srv/assets/x.js", b"/srv/assets")
    assert code(b"/static/none") == (404, b"")


def test_error_pages() -> None:
    s = sent(b"/ep/x")
    assert (s.path, s.status, s.view.path) == (b"/srv/www/404.html", 404, b"/404.html")
    s = sent(b"/ep/x", b"POST")
    assert (s.status, s.view.method) == (404, b"GET")  # the error page is fetched with GET
    assert sent(b"/ep/x", b"HEAD").view.method == b"HEAD"
    assert sent(b"/ep2/x").status == 200
    assert code(b"/ep3/x?q=1") == (200, b"back /ep3/x q=1")  # `=`: the named location's status
    assert code(b"/ep4/x") == (302, b"http://example.com/nf")
    assert code(b"/ep5/x") == (301, b"http://example.com/nf")
    assert code(b"/ep6/x") == (404, b"")  # the error page is missing: no second error_page
    assert sent(b"/ret").status == 404  # `return 404` raises the error too


def test_try_files_fallbacks() -> None:
    assert code(b"/tf/x?z=2") == (200, b"back /tf/x z=2")  # named: URI and args kept
    assert code(b"/t4/x") == (418, b"")
    s = sent(b"/t5/")
    assert (s.path, s.view.args) == (b"/srv/www/ten.txt", b"x=1")
    assert sent(b"/idx/").path == b"/srv/www/ten.txt"  # an absolute index name
    assert code(b"/loop/a") == (500, b"")  # internal redirection cycle
    assert code(b"/t/d/") == (403, b"")  # "/t/d//" less a slash is the dir; no index
    assert code(b"/t/d") == (301, b"/t/d/")
    out = go(b"/app/remote?k=v")
    assert isinstance(out, ToProxy)
    assert out.target is None  # a named location: the client's request-target as is
    out = go(b"/to-api/a")
    assert isinstance(out, ToProxy)
    assert out.target == b"/v1/x"  # redirected to /api/x, then the URI part applies


def test_stat_is_given_the_root_to_stay_in() -> None:
    SEEN.clear()
    sent(b"/static/x.js")
    assert SEEN == [(b"/srv/assets/x.js", b"/srv/assets")]


def test_mime_types_by_extension() -> None:
    types = MimeTypes({b"html": b"text/html", b"gz": b"application/gzip"}, b"app/default")
    assert types.of(b"/a.HTML") == b"text/html"
    assert types.of(b"/a.tar.gz") == b"application/gzip"
    assert types.of(b"/a.d/file") == b"app/default"
    assert types.of(b"/noext") == b"app/default"


def test_http_dates() -> None:
    assert http_date(MTIME) == b"Mon, 23 Nov 2026 18:14:27 GMT"
    assert parse_http_date(b"Mon, 23 Nov 2026 18:14:27 GMT") == MTIME
    assert parse_http_date(b"Monday, 23-Nov-26 18:14:27 GMT") == MTIME
    assert parse_http_date(b"Mon Nov 23 18:14:27 2026") == MTIME
    for bad in (b"", b"yesterday", b"Mon, 32 Nov 2026 18:14:27 GMT", b"Mon, 23 Foo 2026 1:2:3 GMT"):
        assert parse_http_date(bad) is None


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (b"bytes=0-3", [(0, 4)]),
        (b"bytes=2-", [(2, 10)]),
        (b"bytes=-3", [(7, 10)]),
        (b"bytes=-20", [(0, 10)]),
        (b"bytes=9-20", [(9, 10)]),
        (b"bytes= 1 - 2", [(1, 3)]),
        (b"BYTES=1-2", [(1, 3)]),
        (b"bytes=0-1,4-5", [(0, 2), (4, 6)]),
        (b"bytes=-0", 416),
        (b"bytes=10-", 416),
        (b"bytes=3-1", 416),
        (b"bytes=abc", 416),
        (b"bytes=1-2,", 416),
        (b"items=1-2", None),
        (b"bytes=0-,0-", None),  # more bytes than the file: the whole file
    ],
)
def test_range_parse_like_nginx(value: bytes, want: object) -> None:
    assert parse_range(value, 10) == want


def _plan(
    headers: tuple[tuple[bytes, bytes], ...] = (),
    method: bytes = b"GET",
    status: int | None = None,
    etag: bool = True,
) -> tuple[bytes, int, int]:
    send = SendFile(b"/f", b"/", b"text/plain", etag, status, view(method, b"/f", headers))
    plan = file_plan(send, FileInfo(size=10, mtime=MTIME), True)
    return plan.head, plan.start, plan.length


LM = b"Mon, 23 Nov 2026 18:14:27 GMT"
TAG = b'"6b048283-a"'


def test_file_heads() -> None:
    head, start, length = _plan()
    assert head == (
        b"HTTP/1.1 200 OK\r\nServer: hakeeper\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 10\r\nLast-Modified: " + LM + b"\r\nConnection: keep-alive\r\n"
        b"ETag: " + TAG + b"\r\nAccept-Ranges: bytes\r\n\r\n"
    )
    assert (start, length) == (0, 10)
    assert _plan(method=b"HEAD")[2] == 0
    assert b"ETag" not in _plan(etag=False)[0]
    # an error page from a file: its status, ETag kept, no Last-Modified/Accept-Ranges
    head, _, length = _plan(status=404)
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n") and length == 10
    assert b"ETag: " + TAG in head and b"Last-Modified" not in head and b"Accept-Ranges" not in head


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (((b"if-modified-since", LM),), 304),
        (((b"if-modified-since", b"Mon, 23 Nov 2026 18:14:28 GMT"),), 200),  # exact match only
        (((b"if-none-match", TAG),), 304),
        (((b"if-none-match", b"W/" + TAG),), 304),
        (((b"if-none-match", b'"x", ' + TAG),), 304),
        (((b"if-none-match", b"*"),), 304),
        (((b"if-none-match", b'"x"'), (b"if-modified-since", LM)), 200),
        (((b"if-match", b'"x"'),), 412),
        (((b"if-match", TAG),), 200),
        (((b"if-unmodified-since", b"Sun, 22 Nov 2026 18:14:27 GMT"),), 412),
        (((b"range", b"bytes=1-2"),), 206),
        (((b"range", b"bytes=10-"),), 416),
        (((b"range", b"bytes=1-2"), (b"if-range", b'"x"')), 200),
        (((b"range", b"bytes=1-2"), (b"if-range", TAG)), 206),
        (((b"range", b"bytes=1-2"), (b"if-range", LM)), 206),
        (((b"range", b"bytes=1-2"), (b"if-none-match", TAG)), 304),
        (((b"range", b"bytes=0-1,4-5"),), 206),  # multipart/byteranges
    ],
)
def test_conditionals_and_ranges(headers: tuple[tuple[bytes, bytes], ...], status: int) -> None:
    head, start, length = _plan(headers)
    assert head.startswith(b"HTTP/1.1 %d " % status), head
    if status == 304:
        assert head == (
            b"HTTP/1.1 304 Not Modified\r\nServer: hakeeper\r\nLast-Modified: " + LM
            + b"\r\nConnection: keep-alive\r\nETag: " + TAG + b"\r\n\r\n"
        )  # fmt: skip
    if status == 206 and b"," not in dict(headers)[b"range"]:
        assert (start, length) == (1, 2)
        assert b"Content-Range: bytes 1-2/10\r\n" in head and b"Content-Length: 2\r\n" in head
    if status == 416:
        assert b"Content-Range: bytes */10\r\n" in head and length == 0


def test_a_lone_proxied_location_with_error_pages_is_routed() -> None:
    """The plain fast path knows no error_page: such a listener takes the routed path."""
    diags = Diagnostics()
    text = (
        "http { error_page 502 /50x.html;"
        " server { location / { proxy_pass http://127.0.0.1:9; } } }"
    )
    cfg = read_nginx(parse_nginx_text(text, "nginx.conf", diags), diags)
    (route,) = listeners(cfg, diags)
    assert route.config.routes is not None
    text = "http { server { location / { proxy_pass http://127.0.0.1:9; } } }"
    cfg = read_nginx(parse_nginx_text(text, "nginx.conf", diags), diags)
    (route,) = listeners(cfg, diags)
    assert route.config.routes is None


def test_multipart_byteranges_layout() -> None:
    """nginx 1.22's bytes for `Range: bytes=0-1,4-5` of a 10-byte text file."""
    send = SendFile(
        b"/f", b"/", b"text/plain", True, None, view(b"GET", b"/f", ((b"range", b"bytes=0-1,4-5"),))
    )
    plan = file_plan(send, FileInfo(size=10, mtime=MTIME), True, boundary=1)
    mark = b"00000000000000000001"
    assert plan.head.startswith(
        b"HTTP/1.1 206 Partial Content\r\nServer: hakeeper\r\n"
        b"Content-Type: multipart/byteranges; boundary=" + mark + b"\r\nContent-Length: 198\r\n"
    )
    part = b"\r\n--" + mark + b"\r\nContent-Type: text/plain\r\nContent-Range: bytes %s/10\r\n\r\n"
    assert plan.head.endswith(b"\r\n\r\n" + part % b"0-1")
    assert (plan.start, plan.length) == (0, 2)
    assert plan.more == ((part % b"4-5", 4, 2),)
    assert plan.tail == b"\r\n--" + mark + b"--\r\n"
    body = b"ab" + part % b"4-5" + b"ef" + plan.tail
    assert len(part % b"0-1") + len(body) == 198
