"""Differential test of L7 routing: one nginx.conf served by Debian's nginx and by hakeeper.

Several servers on one listen address (exact, `*.`/`.`/`.*` wildcards, regex names,
default_server), many locations (`=`, prefix, `^~`, `~`, `~*`), `return` in every form,
`proxy_pass` with and without a URI part, and an upstream hashed on `$arg_user`. For a
table of requests both must give the same status, Location (port aside), Content-Type,
keep-alive, body (server tokens aside) and so the same upstream path and backend: the
backends answer with their name and the request-target they saw.
"""

from __future__ import annotations

import contextlib
import re

import pytest
from test_proxy_support import (
    Backend,
    BackendConn,
    Seen,
    nginx_and_hakeeper,
    request,
    run,
    simple_response,
)

pytestmark = [pytest.mark.interop("nginx"), pytest.mark.slow]

CONF = r"""
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    upstream app {{ server 127.0.0.1:{a}; server 127.0.0.1:{b}; }}
    upstream hashed {{ hash $arg_user consistent; server 127.0.0.1:{a}; server 127.0.0.1:{b}; }}
    server {{
        listen 127.0.0.1:{port};
        server_name main.test alias.test;
        location / {{ proxy_pass http://app; }}
        location /api/ {{ proxy_pass http://app/v1/; }}
        location /exact {{ proxy_pass http://app/e; }}
        location = /only {{ proxy_pass http://app/o/; }}
        location ^~ /static/ {{ proxy_pass http://app/files/; }}
        location ~ \.(png|jpg)$ {{ return 403; }}
        location ~* ^/CASE/ {{ return 200 "case $uri"; }}
        location /old {{ return 301 /new$is_args$args; }}
        location /go {{ return https://example.org$request_uri; }}
        location /gone {{ return 410; }}
        location /teapot {{ return 418; }}
        location /empty {{ return 204; }}
        location /moved {{ return 307 http://other.test/x; }}
        location /text {{ return 200 "host=$host uri=$uri args=$args a=$arg_a h=$http_x_thing"; }}
        location /u/ {{ proxy_pass http://hashed; }}
        location /n/ {{
            proxy_pass http://app/nn/;
            location /n/deep/ {{ return 200 "deep $uri"; }}
            location ~ \.gif$ {{ return 200 "nested-gif $uri"; }}
        }}
        location ~ \.gif$ {{ return 200 "top-gif $uri"; }}
        location ^~ /m/ {{
            return 200 "m $uri";
            location ~ \.gif$ {{ return 200 "m-gif $uri"; }}
        }}
    }}
    server {{ listen 127.0.0.1:{port}; server_name *.wild.test; return 200 "wild $host"; }}
    server {{ listen 127.0.0.1:{port}; server_name *.x.wild.test; return 200 "wild-long $host"; }}
    server {{ listen 127.0.0.1:{port}; server_name .dot.test; return 200 "dot $host"; }}
    server {{ listen 127.0.0.1:{port}; server_name www.tail.*; return 200 "tail $host"; }}
    server {{
        listen 127.0.0.1:{port}; server_name ~^(?<sub>[a-z]+)\.rx\.test$; return 200 "rx $host";
    }}
    server {{
        listen 127.0.0.1:{port} default_server;
        server_name default.test;
        location / {{ return 404 "default $host $request_uri"; }}
    }}
}}
"""

MAIN = b"main.test"
# (Host or None, request line target, extra header lines, method)
TABLE: list[tuple[bytes | None, bytes, bytes, bytes]] = [
    (MAIN, b"/", b"", b"GET"),
    (MAIN, b"/api/x?q=1", b"", b"GET"),
    (MAIN, b"/api", b"", b"GET"),
    (MAIN, b"/api?z=1&y=2", b"", b"GET"),
    (MAIN, b"/api//x/./y/../z", b"", b"GET"),
    (MAIN, b"/api/a%20b", b"", b"GET"),
    (MAIN, b"/api/%41%2fc?k=%20", b"", b"GET"),
    (MAIN, b"/%61pi/decoded", b"", b"GET"),
    (MAIN, b"/exact", b"", b"GET"),
    (MAIN, b"/exactly?x", b"", b"GET"),
    (MAIN, b"/exact/1", b"", b"GET"),
    (MAIN, b"/only", b"", b"GET"),
    (MAIN, b"/only/x", b"", b"GET"),
    (MAIN, b"/static/a.png", b"", b"GET"),
    (MAIN, b"/img/a.png", b"", b"GET"),
    (MAIN, b"/CaSe/x", b"", b"GET"),
    (MAIN, b"/old?x=1", b"", b"GET"),
    (MAIN, b"/old", b"", b"GET"),
    (MAIN, b"/go/abc?d", b"", b"GET"),
    (MAIN, b"/gone", b"", b"GET"),
    (MAIN, b"/teapot", b"", b"GET"),
    (MAIN, b"/empty", b"", b"GET"),
    (MAIN, b"/moved", b"", b"GET"),
    (MAIN, b"/text?a=1&b=2", b"X-Thing: yes\r\n", b"GET"),
    (MAIN, b"/text?A=3", b"", b"HEAD"),
    (b"MAIN.TEST.", b"/text", b"", b"GET"),
    (b"alias.test:8080", b"/text", b"", b"GET"),
    (b"foo.wild.test", b"/", b"", b"GET"),
    (b"a.x.wild.test", b"/", b"", b"GET"),
    (b"wild.test", b"/", b"", b"GET"),
    (b"dot.test", b"/", b"", b"GET"),
    (b"a.dot.test", b"/", b"", b"GET"),
    (b"www.tail.org", b"/", b"", b"GET"),
    (b"abc.rx.test", b"/", b"", b"GET"),
    (b"ABC.rx.test", b"/", b"", b"GET"),
    (b"unknown.test", b"/q?r", b"", b"GET"),
    (None, b"/nohost", b"", b"GET"),
    (MAIN, b"http://foo.wild.test/abs?q", b"", b"GET"),  # the request line's host wins
    (MAIN, b"http://MAIN.test:99/api/abs", b"", b"GET"),
    *[(MAIN, b"/u/?user=" + name, b"", b"GET") for name in (b"alice", b"bob", b"carol", b"dan")],
    (MAIN, b"/n/x", b"", b"GET"),
    (MAIN, b"/n/deep/a", b"", b"GET"),
    (MAIN, b"/n/a.gif", b"", b"GET"),
    (MAIN, b"/n/deep/a.gif", b"", b"GET"),
    (MAIN, b"/other.gif", b"", b"GET"),
    (MAIN, b"/m/a.gif", b"", b"GET"),
    (MAIN, b"/m/a.png", b"", b"GET"),
    (MAIN, b"/n", b"", b"GET"),
    (MAIN, b"/", b"", b"GET"),
]


def both(a: int, b: int) -> contextlib.AbstractAsyncContextManager[tuple[int, int]]:
    """(nginx port, hakeeper port) serving the same config text."""
    return nginx_and_hakeeper(CONF, "hk-nginx-routes", a=a, b=b)


def _named(name: bytes) -> object:
    def handler(conn: BackendConn, seen: Seen) -> None:
        conn.send(simple_response(body=name + b" " + seen.target))

    return handler


async def _observe(port: int) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for host, target, extra, method in TABLE:
        version = b"HTTP/1.1" if host is not None else b"HTTP/1.0"
        head = method + b" " + target + b" " + version + b"\r\n"
        if host is not None:
            head += b"Host: " + host + b"\r\n"
        resp = await request(port, head + extra + b"\r\n", head_request=method == b"HEAD")
        location = (resp.header(b"location") or b"").replace(str(port).encode(), b"PORT")
        body = re.sub(rb"nginx/[0-9.]+|hakeeper", b"SERVER", resp.body)
        body = body.replace(str(port).encode(), b"PORT")
        out.append(
            (
                method + b" " + (host or b"-") + b" " + target,
                resp.status,
                location,
                resp.header(b"content-type"),
                # the page tail names the server: its length differs
                None
                if resp.header(b"content-type") == b"text/html"
                else resp.header(b"content-length"),
                resp.keep_alive,
                body,
            )
        )
    return out


def test_routing_return_and_uri_parts_as_nginx() -> None:
    async def main() -> None:
        backends = [await Backend(_named(n)).start() for n in (b"A", b"B")]  # type: ignore[arg-type]
        try:
            async with both(*(b.port for b in backends)) as (nport, hport):
                want = await _observe(nport)
                got = await _observe(hport)
                diffs = [(w, g) for w, g in zip(want, got, strict=True) if w != g]
                assert not diffs, "\n".join(f"nginx {w}\nhk    {g}" for w, g in diffs)
        finally:
            for b in backends:
                await b.stop()

    run(main(), limit=60)
