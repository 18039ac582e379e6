"""Differential test of static files: one nginx.conf served by Debian's nginx and by hakeeper.

The config follows Debian's stock site (`root`, `index`, `try_files $uri $uri/ =404`,
the stock /etc/nginx/mime.types inlined, `default_type`) plus `alias` (prefix and regex with a
capture), `error_page` in its forms (URI, `=200`, `= @named`, absolute URL, `=301`, on a
`return 404`), `try_files` ending in `=code`, a URI, `@named` (returning, or proxied to
a backend), an absolute `index`, a `types {}` block and `etag off`. For each request both
servers must give the same status, Content-Type, Content-Length (built-in pages aside:
they name the server), Last-Modified, ETag, Accept-Ranges, Content-Range, Location,
keep-alive and body (server tokens aside); conditional and range requests use the
file's real ETag and date. Also: a 3 MiB file over one keep-alive connection read
slowly, then the next request on that connection; symlinks and `..` stay inside root.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest
from test_proxy_support import (
    Backend,
    BackendConn,
    Seen,
    nginx_and_hakeeper,
    one_route,
    read_response,
    request,
    run,
    simple_response,
    wait_for,
)
from uvloop_support import free_port

from hakeeper.proxy.engine import Engine
from hakeeper.proxy.routed import RoutedClientProtocol
from hakeeper.proxy.static import etag_of, http_date
from hakeeper.proxy.static_io import FileSender, stat_file

pytestmark = [pytest.mark.interop("nginx"), pytest.mark.slow]

CONF = r"""
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    @MIME@
    default_type application/octet-stream;
    upstream app {{ server 127.0.0.1:{a}; }}
    server {{
        listen 127.0.0.1:{port};
        root @SITE@/www;
        index index.html index.htm;
        location / {{ try_files $uri $uri/ =404; }}
        location /plain/ {{ }}
        location /static/ {{ alias @SITE@/assets/; }}
        location ~ ^/rx/(.*)$ {{ alias @SITE@/www/$1; }}
        location /ep/ {{ error_page 404 /404.html; }}
        location /ep2/ {{ error_page 404 =200 /404.html; }}
        location /ep3/ {{ error_page 404 = @back; }}
        location /ep4/ {{ error_page 404 http://example.com/nf; }}
        location /ep5/ {{ error_page 403 404 =301 http://example.com/nf; }}
        location /tf/ {{ try_files $uri @back; }}
        location /t2/ {{ try_files $uri/ =404; }}
        location /t3/ {{ try_files $uri/index.html =404; }}
        location /t4/ {{ try_files /nope =418; }}
        location /t5/ {{ try_files /nope /ten.txt?x=1; }}
        location /t6/ {{ try_files /nope /ret; }}
        location = /idx/ {{ index /ten.txt; }}
        location /app/ {{ try_files $uri @app; }}
        location @app {{ proxy_pass http://app; }}
        location @back {{ return 200 "back uri=$uri args=$args\n"; }}
        location /ret {{ error_page 404 /404.html; return 404; }}
        location /types/ {{ types {{ text/x-special txt; }} default_type text/x-default; }}
        location /noetag/ {{ etag off; }}
        location = /r200 {{ return 200 "plain"; }}
        location /down/ {{ proxy_pass http://127.0.0.1:{dead}; error_page 502 504 /50x.html; }}
        location /down2/ {{ proxy_pass http://127.0.0.1:{dead}; error_page 502 = @back; }}
        location /down3/ {{ proxy_pass http://127.0.0.1:{dead}; error_page 404 /404.html; }}
    }}
}}
"""

FILES = {
    "www/index.html": b"hello index\n",
    "www/ten.txt": b"abcdefghij",
    "www/empty.txt": b"",
    "www/a.css": b"body{}",
    "www/A.JPG": b"\xff\xd8jpeg",
    "www/noext": b"raw",
    "www/sp ace.txt": b"a b",
    "www/sp dir/a.txt": b"a",
    "www/q%dir/a.txt": b"q",
    "www/dir/index.html": b"dir index\n",
    "www/dir/sub/file.json": b"{}",
    "www/noidx/x.txt": b"x",
    "www/404.html": b"NF page\n",
    "www/50x.html": b"<p>upstream down</p>\n",
    "www/plain/p.txt": b"plain",
    "www/t2/d/index.html": b"t2d\n",
    "www/t2/file": b"f",
    "www/t3/d/index.html": b"t3\n",
    "www/app/here.txt": b"local file",
    "www/types/a.txt": b"special",
    "www/types/b.bin": b"default",
    "www/noetag/n.txt": b"no etag",
    "assets/x.js": b"var x;",
    "assets/d/index.html": b"aliased index",
}

_T = tuple[bytes, bytes, bytes]  # method, target, extra header lines


def table(site: str) -> list[_T]:
    """The requests; conditionals carry the real validators of www/ten.txt."""
    info = stat_file(f"{site}/www/ten.txt".encode(), site.encode())
    assert info is not None
    lm, etag = http_date(info.mtime), etag_of(info)
    old = http_date(info.mtime - 86400)
    get = [
        b"/", b"/index.html", b"/ten.txt", b"/empty.txt", b"/a.css", b"/A.JPG", b"/noext",
        b"/sp%20ace.txt", b"/dir", b"/dir?a=1", b"/dir/", b"/dir/sub/", b"/dir/sub/file.json",
        b"/noidx/", b"/noidx", b"/missing", b"/missing/", b"/plain/", b"/plain/p.txt",
        b"/plain/none", b"/static/x.js", b"/static/", b"/static/d", b"/static/d/",
        b"/static/none", b"/rx/ten.txt", b"/rx/dir", b"/rx/dir/", b"/rx/none",
        b"/ep/x", b"/ep2/x", b"/ep3/x?q=1", b"/ep4/x", b"/ep5/x", b"/tf/x?z=2", b"/tf/",
        b"/t2/d", b"/t2/d/", b"/t2/file", b"/t3/d", b"/t3/d/", b"/t4/x", b"/t5/", b"/t6/",
        b"/idx/", b"/app/here.txt", b"/app/remote?k=v", b"/app/a%20b", b"/ret",
        b"/types/a.txt", b"/types/b.bin", b"/noetag/n.txt", b"/r200", b"/dir/../ten.txt",
        b"/%2e%2e/etc/passwd", b"/index.html/", b"/down/x", b"/down2/x?y=1", b"/down3/x",
        b"/sp%20dir", b"/q%25dir", b"/sp%20dir?x=%20y", b"/sp%20dir/a.txt",
    ]  # fmt: skip
    out: list[_T] = [(b"GET", t, b"") for t in get]
    ten = b"/ten.txt"
    for value in (
        b"bytes=0-3", b"bytes=2-", b"bytes=-3", b"bytes=-0", b"bytes=0-0", b"bytes=9-20",
        b"bytes=10-", b"bytes=3-1", b"bytes= 1 - 2", b"BYTES=1-2", b"items=1-2",
        b"bytes=-20", b"bytes=abc", b"bytes=1-2,", b"bytes=0-,0-", b"bytes=0-1,4-5",
        b"bytes=-2,0-0", b"bytes=0-5,3-8", b"bytes=0-2,20-30", b"bytes=1-1,3-3,5-5",
    ):  # fmt: skip
        out.append((b"GET", ten, b"Range: " + value + b"\r\n"))
    for extra in (
        b"If-Modified-Since: " + lm,
        b"If-Modified-Since: " + old,
        b"If-None-Match: " + etag,
        b"If-None-Match: W/" + etag,
        b'If-None-Match: "x", ' + etag,
        b"If-None-Match: *",
        b'If-None-Match: "x"\r\nIf-Modified-Since: ' + lm,
        b'If-Match: "x"',
        b"If-Match: " + etag,
        b"If-Unmodified-Since: " + old,
        b'If-Range: "x"\r\nRange: bytes=1-2',
        b"If-Range: " + etag + b"\r\nRange: bytes=1-2",
        b"If-Range: " + lm + b"\r\nRange: bytes=1-2",
        b"Range: bytes=1-2\r\nIf-None-Match: " + etag,
    ):
        out.append((b"GET", ten, extra + b"\r\n"))
    out.append((b"GET", b"/ep2/x", b"If-None-Match: *\r\n"))
    for method in (b"HEAD", b"POST", b"PUT", b"DELETE"):
        for target in (ten, b"/missing", b"/dir/", b"/noidx/", b"/plain/none", b"/ep/x", b"/down/"):
            out.append((method, target, b""))
    return out


def _site() -> Iterator[str]:
    site = tempfile.mkdtemp(prefix="hk-static-site-")
    os.chmod(site, 0o755)  # nginx's workers run as nobody
    for name, data in FILES.items():
        path = os.path.join(site, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    for dirpath, dirs, files in os.walk(site):
        for d in dirs:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)
    try:
        yield site
    finally:
        shutil.rmtree(site, ignore_errors=True)


site_dir = pytest.fixture(_site)


def _backend(conn: BackendConn, seen: Seen) -> None:
    conn.send(simple_response(body=b"backend " + seen.target))


_NAMED = (b"content-type", b"last-modified", b"etag", b"accept-ranges", b"content-range")


async def _observe(port: int, requests: list[_T]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for method, target, extra in requests:
        head = method + b" " + target + b" HTTP/1.1\r\nHost: static.test\r\n" + extra
        if method in (b"POST", b"PUT"):
            head += b"Content-Length: 0\r\n"
        resp = await request(port, head + b"\r\n", head_request=method == b"HEAD")
        location = (resp.header(b"location") or b"").replace(str(port).encode(), b"PORT")
        body = re.sub(rb"nginx/[0-9.]+|hakeeper", b"SERVER", resp.body)
        body = re.sub(rb"--\d{20}", b"--BOUNDARY", body)  # per-process counters
        # built-in pages name the server, so their lengths differ (for HEAD: unseen)
        html = resp.header(b"content-type") == b"text/html"
        page = html and (b"SERVER" in body or (method == b"HEAD" and resp.status >= 300))
        out.append(
            (
                method + b" " + target + b" " + extra.replace(b"\r\n", b" | "),
                resp.status,
                *(re.sub(rb"=\d{20}", b"=B", resp.header(name) or b"") for name in _NAMED),
                None if page else resp.header(b"content-length"),
                location,
                resp.keep_alive,
                body,
            )
        )
    return out


def test_static_files_as_nginx(site_dir: str) -> None:
    async def main() -> None:
        backend = await Backend(_backend).start()  # type: ignore[arg-type]
        try:
            # the stock mime.types, inlined (the shared harness reads no includes)
            with open("/etc/nginx/mime.types") as f:
                mime = f.read().replace("{", "{{").replace("}", "}}")
            conf = CONF.replace("@SITE@", site_dir).replace("@MIME@", mime)
            dead = free_port()  # nothing listens there: proxying to it fails with 502
            async with nginx_and_hakeeper(conf, "hk-static", a=backend.port, dead=dead) as (
                nport,
                hport,
            ):
                requests = table(site_dir)
                want = await _observe(nport, requests)
                got = await _observe(hport, requests)
                diffs = [(w, g) for w, g in zip(want, got, strict=True) if w != g]
                assert not diffs, "\n".join(f"nginx {w}\nhk    {g}" for w, g in diffs)
                assert len(requests) > 100
        finally:
            await backend.stop()

    run(main(), limit=90)


_SOLO = """
events {{ }}
http {{
    server {{
        listen 127.0.0.1:8080;
        root {site}/www;
        location / {{ }}
        location /e/ {{ error_page 404 /404.html; }}
    }}
}}
"""


@contextlib.asynccontextmanager
async def _hakeeper(site: str) -> AsyncIterator[tuple[Engine, int]]:
    route = one_route(_SOLO.format(site=site))
    engine = Engine(route.config, route.balancer)
    await engine.start_listening("127.0.0.1", 0)
    try:
        yield engine, engine.ports()[0]
    finally:
        engine.close()


def _senders(engine: Engine) -> list[FileSender]:
    return [
        c.sender
        for c in engine.clients
        if isinstance(c, RoutedClientProtocol) and c.sender is not None
    ]


def test_large_file_to_a_slow_reader_then_keep_alive(site_dir: str) -> None:
    """A 12 MiB body is sent while the client is not reading (the sender pauses at the
    transport's high-water mark: what the proxy holds stays small), arrives intact, and
    the connection then serves the next requests (a range deep in the file too)."""
    big = bytes(range(256)) * (12 * 4096)
    with open(os.path.join(site_dir, "www", "big.bin"), "wb") as f:
        f.write(big)

    async def main() -> None:
        async with _hakeeper(site_dir) as (engine, port):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.connect(("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
            try:
                writer.transport.pause_reading()  # type: ignore[attr-defined]
                writer.write(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                await wait_for(lambda: any(s.paused for s in _senders(engine)), 10)
                (proto,) = [c for c in engine.clients if c.transport is not None]
                assert proto.transport is not None
                assert proto.transport.get_write_buffer_size() <= 512 * 1024
                (sender,) = _senders(engine)
                assert sender.left > 0
                writer.transport.resume_reading()  # type: ignore[attr-defined]
                resp = await read_response(reader)
                assert (resp.status, resp.keep_alive) == (200, True)
                assert resp.body == big
                writer.write(
                    b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=10000000-\r\n\r\n"
                    b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=-100,5-3000000\r\n\r\n"
                    b"GET /ten.txt HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                resp = await read_response(reader)
                assert resp.status == 206
                assert resp.body == big[10000000:]
                resp = await read_response(reader)
                assert resp.status == 206
                mark = (resp.header(b"content-type") or b"").rpartition(b"=")[2]
                parts = resp.body.split(b"\r\n--" + mark)
                assert parts[0] == b"" and parts[-1] == b"--\r\n"
                assert [p.partition(b"\r\n\r\n")[2] for p in parts[1:-1]] == [
                    big[-100:],
                    big[5:3000001],
                ]
                resp = await read_response(reader)
                assert (resp.status, resp.body) == (200, b"abcdefghij")
                assert not _senders(engine)
            finally:
                writer.close()

    run(main(), limit=60)


def test_symlinks_and_dot_dot_stay_inside_root(site_dir: str) -> None:
    www = os.path.join(site_dir, "www")
    outside = os.path.join(site_dir, "assets")  # beside the root, not under it
    os.symlink(os.path.join(outside, "x.js"), os.path.join(www, "out.js"))
    os.symlink(outside, os.path.join(www, "outdir"))
    os.symlink(os.path.join(www, "ten.txt"), os.path.join(www, "in.txt"))
    os.symlink(os.path.join(www, "dir"), os.path.join(www, "indir"))

    async def main() -> None:
        async with _hakeeper(site_dir) as (_, port):

            async def get(target: bytes) -> tuple[int, bytes]:
                resp = await request(port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                return resp.status, resp.body

            assert await get(b"/in.txt") == (200, b"abcdefghij")
            assert await get(b"/indir/index.html") == (200, b"dir index\n")
            assert (await get(b"/out.js"))[0] == 403
            assert (await get(b"/outdir/x.js"))[0] == 403
            assert (await get(b"/outdir/"))[0] == 403
            assert (await get(b"/e/../../assets/x.js"))[0] == 400  # above the root
            assert (await get(b"/%2e%2e/assets/x.js"))[0] == 400
            assert (await get(b"/dir/..%2f..%2fassets/x.js"))[0] == 400
            assert await get(b"/e/none") == (404, b"NF page\n")

    run(main(), limit=30)


# a listener that runs the rewrite/access phases (proxy/rewrite.py) serving files
CONF_PHASES = r"""
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        root @SITE@/www;
        set $flag 1;
        error_page 404 /404.html;
        location / {{ }}
        location /x/ {{ rewrite ^/x/(.*)$ /$1 last; }}
        location /y/ {{ return 404; }}
        location /y2/ {{ return 404 "text $flag"; }}
        location /d/ {{ deny all; error_page 403 /404.html; }}
        location ~ ^/z/(.*)$ {{ alias @SITE@/www/$1; }}
        location /t/ {{ try_files $uri /ten.txt?from=$flag; }}
    }}
}}
"""


def test_static_files_behind_rewrite_phases_as_nginx(site_dir: str) -> None:
    requests: list[_T] = [
        (b"GET", t, b"")
        for t in (
            b"/ten.txt", b"/x/ten.txt", b"/x/dir/", b"/x/dir", b"/nope", b"/y/", b"/y2/",
            b"/d/", b"/d/x", b"/z/ten.txt", b"/z/dir", b"/t/none", b"/x/missing",
        )
    ]  # fmt: skip
    requests.append((b"HEAD", b"/y/", b""))

    async def main() -> None:
        conf = CONF_PHASES.replace("@SITE@", site_dir)
        async with nginx_and_hakeeper(conf, "hk-static-phases") as (nport, hport):
            want = await _observe(nport, requests)
            got = await _observe(hport, requests)
            diffs = [(w, g) for w, g in zip(want, got, strict=True) if w != g]
            assert not diffs, "\n".join(f"nginx {w}\nhk    {g}" for w, g in diffs)

    run(main(), limit=60)
