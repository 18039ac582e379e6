"""Differential test of the response header directives against Debian's nginx 1.22.

One nginx.conf is served by nginx and by hakeeper over the same backend, which answers
with the status and header fields a request asks for in its query string (plus its own
`Server: backend/9` and a fixed `Date`). For each request both must send the same status
and, byte for byte, the same `Location`, `Refresh`, `add_header` fields and hidden or
passed upstream fields (the proxy's own `Server` token and the current `Date` are
compared as "ours"; the listening port as PORT). Covers `proxy_redirect` default (with
and without a URI part, in a regex location, inherited by a nested location), `off`,
literal rules with variables, `~`/`~*` rules with captures, `Refresh`, several
`Location` fields, `add_header` with and without `always` and its inheritance,
`proxy_hide_header`, `proxy_pass_header`; through the parsed relay, the raw keep-alive
relay, the closing raw relay and the plain fast path (a lone `location /`).
"""

from __future__ import annotations

import re
import urllib.parse

import pytest
from test_proxy_support import (
    Backend,
    BackendConn,
    Response,
    Seen,
    nginx_and_hakeeper,
    one_route,
    request,
    run,
)

pytestmark = [pytest.mark.interop("nginx"), pytest.mark.slow]

UPSTREAM_DATE = b"Thu, 01 Jan 1970 00:00:00 GMT"

ROUTED = r"""
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    upstream up {{ server 127.0.0.1:{a}; }}
    upstream ka {{ server 127.0.0.1:{a}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{port};
        server_name main.test;
        add_header X-S "server level";
        location / {{ proxy_pass http://up; }}
        location /one/ {{ proxy_pass http://up/uri/; }}
        location /off/ {{ proxy_pass http://up; proxy_redirect off; }}
        location /rx/ {{
            proxy_pass http://up;
            proxy_redirect ~^http://up/(\w+)/(.*)$ http://$host:$server_port/X/$1/$2?$scheme-$proxy_host;
            proxy_redirect ~*^HTTP://OTHER/ /other/;
        }}
        location /lit/ {{
            proxy_pass http://up;
            proxy_redirect http://up/a/ /b/;
            proxy_redirect / /rel/;
            proxy_redirect http://$proxy_host/v/ $scheme://$host/w/;
            proxy_redirect default;
        }}
        location /add/ {{
            proxy_pass http://up;
            add_header X-A "a $status";
            add_header X-B b always;
            add_header X-Empty "";
            proxy_hide_header X-Hide;
            proxy_pass_header Server;
            proxy_pass_header X-Accel-Expires;
        }}
        location /ka/ {{
            proxy_pass http://ka;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_redirect http://ka/ka/ /kk/;
            add_header X-K "k $status";
            proxy_pass_header Date;
        }}
        location /n/ {{
            proxy_pass http://up/nn/;
            location /n/in/ {{ proxy_pass http://up/deep/; }}
        }}
        location ~ ^/re/ {{ proxy_pass http://up; }}
    }}
}}
"""

PLAIN = r"""
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    upstream backend {{ server 127.0.0.1:{a}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            add_header X-K "k $status";
        }}
    }}
}}
"""


def q(*fields: tuple[str, str], status: int = 0) -> bytes:
    """A query string asking the backend for these response fields (and status)."""
    pairs = list(fields) + ([("_s", str(status))] if status else [])
    return b"?" + urllib.parse.urlencode(pairs).encode("ascii")


LOC = "Location"
REF = "Refresh"
# (path + query, extra request header lines, HTTP version)
ROUTED_TABLE: list[tuple[bytes, bytes, bytes]] = [
    (b"/a" + q((LOC, "http://up/x/y")), b"", b"1.1"),
    (b"/a" + q((LOC, "http://up/x/y"), status=301), b"", b"1.1"),
    (b"/a" + q((LOC, "/rel")), b"", b"1.1"),
    (b"/a" + q((LOC, "http://up")), b"", b"1.1"),
    (b"/a" + q((LOC, "http://UP/x")), b"", b"1.1"),
    (b"/a" + q((LOC, "http://up/x"), (LOC, "http://up/y")), b"", b"1.1"),
    (b"/a" + q((REF, "5; url=http://up/r")), b"", b"1.1"),
    (b"/a" + q((REF, "0;URL=http://up/")), b"", b"1.1"),
    (b"/a" + q((REF, "7")), b"", b"1.1"),
    (b"/a" + q((LOC, "http://up/x/y")), b"", b"1.0"),
    (b"/one/a" + q((LOC, "http://up/uri/z")), b"", b"1.1"),
    (b"/one/a" + q((LOC, "http://up/other")), b"", b"1.1"),
    (b"/one/a" + q((REF, "1; url=http://up/uri/r?x=1")), b"", b"1.1"),
    (b"/off/a" + q((LOC, "http://up/x")), b"", b"1.1"),
    (b"/rx/a" + q((LOC, "http://up/foo/bar")), b"", b"1.1"),
    (b"/rx/a" + q((LOC, "http://other/p?q")), b"", b"1.1"),
    (b"/rx/a" + q((LOC, "http://up/")), b"", b"1.1"),
    (b"/lit/a" + q((LOC, "http://up/a/1")), b"", b"1.1"),
    (b"/lit/a" + q((LOC, "/x")), b"", b"1.1"),
    (b"/lit/a" + q((LOC, "http://up/v/2")), b"", b"1.1"),
    (b"/lit/a" + q((LOC, "http://up/3")), b"", b"1.1"),
    (b"/add/a" + q(("X-Hide", "1"), ("X-Pad", "p"), ("X-Accel-Expires", "3")), b"", b"1.1"),
    # (X-Accel-Redirect and -Charset are acted on by nginx: hakeeper only hides them)
    (b"/add/a" + q(("X-Accel-Buffering", "no"), ("X-Accel-Limit-Rate", "0")), b"", b"1.1"),
    (b"/a" + q(("X-Accel-Expires", "9"), ("X-Accel-Buffering", "yes")), b"", b"1.1"),
    (b"/add/a" + q((LOC, "http://up/q")), b"", b"1.1"),
    (b"/add/a" + q(status=404), b"", b"1.1"),
    (b"/add/a" + q(status=204), b"", b"1.1"),
    (b"/add/a" + q(status=500), b"", b"1.1"),
    (b"/a" + q(("X-Pad", "p"), status=404), b"", b"1.1"),
    (b"/a" + q(status=201), b"", b"1.1"),
    (b"/ka/a" + q((LOC, "http://ka/ka/1")), b"", b"1.1"),
    (b"/ka/a" + q((LOC, "http://ka/x")), b"", b"1.1"),
    (b"/ka/a" + q((LOC, "http://ka/ka/2")), b"Connection: close\r\n", b"1.1"),
    (b"/ka/a" + q((REF, "3;url=http://ka/ka/z"), status=418), b"", b"1.1"),
    (b"/ka/a" + q((LOC, "http://ka/ka/3")), b"", b"1.0"),
    (b"/n/a" + q((LOC, "http://up/nn/q")), b"", b"1.1"),
    (b"/n/in/a" + q((LOC, "http://up/nn/q")), b"", b"1.1"),
    (b"/n/in/a" + q((LOC, "http://up/deep/q")), b"", b"1.1"),
    (b"/re/a" + q((LOC, "http://up/re/x")), b"", b"1.1"),
]

PLAIN_TABLE: list[tuple[bytes, bytes, bytes]] = [
    (b"/a" + q((LOC, "http://backend/x")), b"", b"1.1"),
    (b"/a" + q((LOC, "http://backend/x")), b"Connection: close\r\n", b"1.1"),
    (b"/a" + q((LOC, "http://backend/x")), b"", b"1.0"),
    (b"/a" + q((LOC, "http://backend")), b"", b"1.1"),
    (b"/a" + q((REF, "2; URL=http://backend/r"), ("X-Pad", "1")), b"", b"1.1"),
    (b"/a" + q(status=404), b"", b"1.1"),
    (b"/a" + q(status=304), b"", b"1.1"),
]

# the fields compared (lower-cased); Server and Date get their value normalized
WATCHED = (b"location", b"refresh", b"x-a", b"x-b", b"x-empty", b"x-k", b"x-s", b"x-hide")


def _answer(conn: BackendConn, seen: Seen) -> None:
    query = urllib.parse.urlparse(seen.target.decode("latin-1")).query
    status = 200
    fields = b""
    for name, value in urllib.parse.parse_qsl(query):
        if name == "_s":
            status = int(value)
        else:
            fields += f"{name}: {value}\r\n".encode("latin-1")
    body = b"" if status in (204, 304) else seen.target
    length = b"" if status in (204, 304) else b"Content-Length: %d\r\n" % len(body)
    conn.send(
        b"HTTP/1.1 %d X\r\nServer: backend/9\r\nDate: %s\r\n%s%s\r\n"
        % (status, UPSTREAM_DATE, fields, length)
        + body
    )


def _normalized(resp: Response, port: int) -> tuple[object, ...]:
    watched: list[tuple[bytes, bytes]] = []
    for name, value in resp.headers:
        low = name.lower()
        if low == b"server":
            watched.append((low, value if value == b"backend/9" else b"OURS"))
        elif low == b"date":
            ok = re.fullmatch(rb"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", value)
            watched.append((low, value if value == UPSTREAM_DATE or not ok else b"NOW"))
        elif low in WATCHED or low.startswith((b"x-accel-", b"x-pad")):
            watched.append((low, value.replace(str(port).encode(), b"PORT")))
    return resp.status, sorted(watched)


async def _observe(port: int, table: list[tuple[bytes, bytes, bytes]]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for target, extra, version in table:
        host = b"Host: Main.TEST:81\r\n" if version == b"1.1" else b""
        head = b"GET " + target + b" HTTP/" + version + b"\r\n" + host + extra + b"\r\n"
        resp = await request(port, head)
        out.append((target, extra, version, *_normalized(resp, port)))
    return out


def _compare(conf: str, table: list[tuple[bytes, bytes, bytes]], prefix: str) -> None:
    async def main() -> None:
        backend = await Backend(_answer).start()
        try:
            async with nginx_and_hakeeper(conf, prefix, a=backend.port) as (nport, hport):
                want = await _observe(nport, table)
                got = await _observe(hport, table)
        finally:
            await backend.stop()
        diffs = [(w, g) for w, g in zip(want, got, strict=True) if w != g]
        assert not diffs, "\n".join(f"nginx {w}\nhk    {g}" for w, g in diffs)

    run(main(), limit=60)


def test_response_headers_through_routed_locations_as_nginx() -> None:
    _compare(ROUTED, ROUTED_TABLE, "hk-redirect-routed")


def test_response_headers_on_the_plain_fast_path_as_nginx() -> None:
    route = one_route(PLAIN.format(dir="/nonexistent", port=1, a=2))
    assert route.config.routes is None  # the lone `location /` takes the plain path
    _compare(PLAIN, PLAIN_TABLE, "hk-redirect-plain")


def test_nested_location_inherits_the_parent_default() -> None:
    # nginx merges a parent location before its nested ones, so a nested `proxy_pass`
    # without proxy_redirect keeps the parent's default (the table above agrees)
    route = one_route(ROUTED.format(dir="/nonexistent", port=1, a=2))
    table = route.config.routes
    assert table is not None
    rules = {
        p.uri: [r.text for r in p.config.response.redirects.rules]
        for p in table.proxied()
        if p.config.response is not None
    }
    assert rules[b"/nn/"] == ["http://up/nn/ /n/"]
    assert rules[b"/deep/"] == ["http://up/nn/ /n/"]
    assert rules[None] == ["http://up/ /"]  # location / and the regex location
