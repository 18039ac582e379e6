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


# regex captures, named captures, `rewrite` (every flag), `set`, variables in
# `proxy_pass`, `proxy_set_header` and a `hash` key, `allow`/`deny` at every level
PHASES_CONF = r"""
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    allow 127.0.0.1;
    deny all;
    upstream app {{ server 127.0.0.1:{a}; server 127.0.0.1:{b}; }}
    upstream hashed {{ hash $1 consistent; server 127.0.0.1:{a}; server 127.0.0.1:{b}; }}
    server {{
        listen 127.0.0.1:{port};
        server_name main.test;
        rewrite ^/srv/(.*)$ /c/$1;
        rewrite ^/srvlast/(.*)$ /p/$1 last;
        set $s "S-$uri";
        location ~ ^/c/(?<first>[a-z]+)/(\d+) {{
            return 200 "1=$1 2=$2 first=$first s=$s 1x=$1x";
        }}
        location /r/ {{ rewrite ^/r/(.*)$ /c/$1 last; }}
        location /b/ {{ rewrite ^/b/(.*)$ /x/$1 break; proxy_pass http://app/u/; }}
        location /l/ {{ rewrite ^/l/(.*)$ /p/$1?z=1 last; }}
        location /p/ {{ proxy_set_header X-Cap "$1|$first|$s"; proxy_pass http://app/pp/; }}
        location /red/ {{ rewrite ^/red/(.*)$ /new/$1 redirect; }}
        location /perm/ {{ rewrite ^/perm/(.*)$ /new/$1? permanent; }}
        location /abs/ {{ rewrite ^/abs/(.*)$ http://other.test/$1; }}
        location /sch/ {{ rewrite ^/sch/(.*) $scheme://$host/z/$1; }}
        location /loop/ {{ rewrite ^ /loop/x last; }}
        location /cyc/ {{ rewrite ^/cyc/(\d)(.*)$ /cyc/$2 last; return 200 "end $uri"; }}
        location /v/ {{ proxy_pass http://app/vv$uri; }}
        location /w/ {{ proxy_pass http://app$request_uri; }}
        location ~ ^/rx/([a-z]+)$ {{ proxy_pass http://app/q/$1; }}
        location /s/ {{ set $a "A$uri"; set $b "$a-$arg_k"; return 200 "a=$a b=$b"; }}
        location /ord/ {{ return 200 "first"; rewrite ^ /p/ last; }}
        location /ord2/ {{
            rewrite ^/ord2/(.*) /p/$1 break; return 200 "never"; proxy_pass http://app;
        }}
        location ~ \.txt$ {{ return 200 "txt 1=$1"; }}
        location /sp/ {{ rewrite ^/sp/(.*)$ /p/$1 last; }}
        location /arg/ {{ rewrite ^/arg/(.*)$ /p/x?v=$1 last; }}
        location /rq/ {{ rewrite ^/rq/(.*)$ /p/$1?; }}
        location /flow/ {{ rewrite ^/flow/(.*)$ /flow2/$1; rewrite ^/flow2/(.*)$ /p/two/$1; }}
        location /h/ {{ rewrite ^/h/(\w+) /hh/$1 break; proxy_pass http://hashed; }}
        location /acc/ {{ allow 127.0.0.2; deny 127.0.0.0/8; proxy_pass http://app; }}
        location /acc2/ {{ deny all; return 200 "return-before-access"; }}
        location /acc3/ {{ deny all; rewrite ^ /p/moved last; }}
        location /acc4/ {{ allow ::1; deny all; proxy_pass http://app; }}
        location /open/ {{ proxy_pass http://app; }}
        location /if/ {{
            if ($arg_a = "xy") {{ return 200 "eq"; }}
            if ($arg_a != "z") {{ set $m "ne"; }}
            if ($http_x_thing ~* ^(yes|ok)$) {{ return 200 "rx $1 $m"; }}
            if ($arg_b) {{ rewrite ^/if/(.*)$ /p/$1 last; }}
            if ($arg_c !~ ^\d+$) {{ return 200 "nd $m"; }}
            if ($arg_d) {{ break; }}
            return 200 "end $m";
            proxy_pass http://app;
        }}
        location /vh/ {{ set $up app; proxy_pass http://$up/vh2$uri; }}
        location /vn/ {{ set $up nowhere; proxy_pass http://$up; }}
        location /va/ {{ proxy_pass http://$arg_to; }}
        location /if2/ {{
            set $f "0";
            if ($f) {{ return 200 "zero is true"; }}
            if ($arg_q) {{ rewrite ^ /p/q break; }}
            return 200 "f";
            proxy_pass http://app;
        }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name ~^(?<sub>[a-z]+)\.rx\.test$ ~^(\w+)\.(num)\.test$;
        location / {{ return 200 "sub=$sub 1=$1 2=$2"; }}
        location ~ ^/(x)$ {{ return 200 "sub=$sub 1=$1 2=$2"; }}
        location ~ ^/y$ {{ return 200 "sub=$sub 1=$1 2=$2"; }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name denied.test;
        deny all;
        location / {{ proxy_pass http://app; }}
        location /ret {{ return 200 "ok"; }}
    }}
}}
"""

PHASES: list[tuple[bytes | None, bytes, bytes, bytes]] = [
    *[
        (MAIN, target, b"", b"GET")
        for target in (
            b"/c/abc/123",
            b"/r/abc/456?q=1",
            b"/b/a%20b?q=2",
            b"/l/k?m=2",
            b"/red/a%20b?q=3",
            b"/red/%26%2B%3B%3F%23%25%22%27%3C%3E%7E%40%3D%2C%24%20%09%C3%A9",
            b"/red/a+b",
            b"/perm/x?q=4",
            b"/abs/y?q=5",
            b"/sch/q?u=1",
            b"/loop/",
            b"/cyc/1234567890",
            b"/cyc/12345678901",
            b"/v/z?q=6",
            b"/w/z?q=7",
            b"/rx/abc?q=8",
            b"/s/1?k=K",
            b"/ord/",
            b"/ord2/k?x=1",
            b"/srv/abc/12",
            b"/srvlast/q?a=1",
            b"/srv/a/b.txt",
            b"/sp/a%20b",
            b"/arg/a%26b%20c?o=1",
            b"/arg/%5C%5E%60%7B%7C%7D%2B%3D%3B%23%25%22%27%3C%3E%3F%5B%5D%2F%3A%40%21",
            b"/arg/a+b",
            b"/rq/k?drop=1",
            b"/flow/f?x=1",
            *[b"/h/" + name for name in (b"alice", b"bob", b"carol", b"dan", b"erin")],
            b"/acc/",
            b"/acc2/",
            b"/acc3/",
            b"/acc4/",
            b"/open/x",
        )
    ],
    *[
        (host, t, b"", b"GET")
        for host in (b"abc.rx.test", b"q.num.test")
        for t in (b"/", b"/x", b"/y")
    ],
    *[
        (MAIN, b"/if/k" + query, b"", b"GET")
        for query in (b"?a=xy", b"?a=z&c=12", b"?c=1x", b"?b=1", b"?c=5&d=1", b"")
    ],
    (MAIN, b"/if/k", b"X-Thing: OK\r\n", b"GET"),
    (MAIN, b"/if2/x", b"", b"GET"),
    *[
        (MAIN, target, b"", b"GET")
        for target in (b"/vh/x?q=1", b"/vn/x", b"/va/x?to=app", b"/va/y?to=APP", b"/va/z?to=zz")
    ],
    (MAIN, b"/if2/x?q=1", b"", b"GET"),
    (b"denied.test", b"/", b"", b"GET"),
    (b"denied.test", b"/ret", b"", b"GET"),
]


def both(
    a: int, b: int, conf: str = CONF
) -> contextlib.AbstractAsyncContextManager[tuple[int, int]]:
    """(nginx port, hakeeper port) serving the same config text."""
    return nginx_and_hakeeper(conf, "hk-nginx-routes", a=a, b=b)


def _named(name: bytes) -> object:
    def handler(conn: BackendConn, seen: Seen) -> None:
        cap = next((v for k, v in seen.headers if k.lower() == b"x-cap"), None)
        tail = b" x-cap=" + cap if cap is not None else b""
        conn.send(simple_response(body=name + b" " + seen.target + tail))

    return handler


async def _observe(
    port: int, table: list[tuple[bytes | None, bytes, bytes, bytes]] = TABLE
) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for host, target, extra, method in table:
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


def test_captures_rewrite_set_and_access_as_nginx() -> None:
    async def main() -> None:
        backends = [await Backend(_named(n)).start() for n in (b"A", b"B")]  # type: ignore[arg-type]
        try:
            async with both(*(b.port for b in backends), conf=PHASES_CONF) as (nport, hport):
                want = await _observe(nport, PHASES)
                got = await _observe(hport, PHASES)
                diffs = [(w, g) for w, g in zip(want, got, strict=True) if w != g]
                assert not diffs, "\n".join(f"nginx {w}\nhk    {g}" for w, g in diffs)
        finally:
            for b in backends:
                await b.stop()

    run(main(), limit=60)
