"""Differential test: the same nginx.conf served by Debian's nginx and by hakeeper.

Both front the same loopback backends. The smooth weighted round-robin sequence (weights
5,1,1), and the status codes for a dead upstream (502), an upstream timeout (504) and
ambiguous framing (400) must be the same.
"""

from __future__ import annotations

import contextlib

import pytest
from test_proxy_support import (
    Backend,
    BackendConn,
    Seen,
    connect,
    nginx_and_hakeeper,
    read_response,
    read_until_closed,
    request,
    run,
    simple_response,
)

pytestmark = [pytest.mark.interop("nginx"), pytest.mark.slow]

CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_read_timeout 1s;
    proxy_connect_timeout 1s;
    upstream app {{
        server 127.0.0.1:{a} weight=5;
        server 127.0.0.1:{b};
        server 127.0.0.1:{c};
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://app; }}
    }}
}}
"""


def both(a: int, b: int, c: int) -> contextlib.AbstractAsyncContextManager[tuple[int, int]]:
    """(nginx port, hakeeper port) serving the same config text."""
    return nginx_and_hakeeper(CONF, "hk-nginx", a=a, b=b, c=c)


def _named(name: bytes) -> object:
    def handler(conn: BackendConn, seen: Seen) -> None:
        if seen.target == b"/slow":
            return  # never answers: proxy_read_timeout
        conn.send(simple_response(body=name))

    return handler


async def _sequence(port: int, n: int) -> list[bytes]:
    reader, writer = await connect(port)
    out = []
    for _ in range(n):
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        out.append((await read_response(reader)).body)
    writer.close()
    return out


def test_same_upstream_sequence_and_error_statuses_as_nginx() -> None:
    async def main() -> None:
        backends = [await Backend(_named(n)).start() for n in (b"a", b"b", b"c")]  # type: ignore[arg-type]
        try:
            async with both(*(b.port for b in backends)) as (nport, hport):
                want = await _sequence(nport, 14)
                got = await _sequence(hport, 14)
                assert b"".join(want) == b"aabacaa" * 2
                assert got == want
                # timeout: both answer 504 after proxy_read_timeout
                for port in (nport, hport):
                    resp = await request(port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                    assert resp.status == 504, port
                # ambiguous framing: 400 and the connection closes
                smuggle = (
                    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                )
                for port in (nport, hport):
                    reader, writer = await connect(port)
                    writer.write(smuggle)
                    assert (await read_response(reader)).status == 400, port
                    await read_until_closed(reader)
                    writer.close()
                # dead upstream: 502 from both
                for b in backends:
                    await b.stop()
                for port in (nport, hport):
                    resp = await request(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    assert resp.status == 502, port
        finally:
            for b in backends:
                await b.stop()

    run(main(), limit=60)
