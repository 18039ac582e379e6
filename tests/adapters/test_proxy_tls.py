"""TLS termination and `proxy_pass https://` on real loopback sockets (nginx.conf in).

Certificates come from a throw-away CA made with the `openssl` CLI. Covered: HTTPS to a
plain backend with `$scheme`/`$https` in headers and `return`s (and the same server on a
plain port seeing `http`), SNI choosing between the certificates of two server_names
(wildcard and default fallbacks), the usual port-80 `return 301 https://...`, and
`proxy_pass https://` with SNI, verification and a keep-alive pool reused over TLS.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import ssl
import tempfile
from collections.abc import Iterator

import pytest
from test_proxy_support import Backend, BackendConn, Seen, request, run, simple_response
from tls_support import (
    Pki,
    TlsBackend,
    client_context,
    make_pki,
    read_routes,
    serving,
    tls_request,
)
from uvloop_support import free_port, wait_for

from hakeeper.proxy import health
from hakeeper.proxy.tls import drain


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    work = tempfile.mkdtemp(prefix="hk-tls-")
    try:
        yield make_pki(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _echo(name: bytes):  # type: ignore[no-untyped-def]
    def handler(conn: BackendConn, seen: Seen) -> None:
        proto = seen.header(b"x-forwarded-proto") or b"-"
        https = seen.header(b"x-https") or b"-"
        conn.send(simple_response(body=b"%s %s %s %s" % (name, proto, https, seen.target)))

    return handler


GET = b"GET /p?q=1 HTTP/1.1\r\nHost: a.test\r\n\r\n"


def test_https_listener_to_plain_backend_with_scheme(pki: Pki) -> None:
    crt, key = pki.leaf("a.test")

    async def main() -> None:
        backend = await Backend(_echo(b"B")).start()
        tls_port, plain_port = free_port(), free_port()
        conf = f"""
        events {{}}
        http {{
            server {{
                listen 127.0.0.1:{tls_port} ssl;
                listen 127.0.0.1:{plain_port};
                server_name a.test;
                ssl_certificate {crt};
                ssl_certificate_key {key};
                ssl_protocols TLSv1.2 TLSv1.3;
                proxy_set_header X-Forwarded-Proto $scheme;
                proxy_set_header X-HTTPS $https;
                location / {{ proxy_pass http://127.0.0.1:{backend.port}; }}
                location /s {{ return 200 "$scheme:$https"; }}
                location /rel {{ return 302 /there; }}
            }}
        }}
        """
        routes, diags = read_routes(conf)
        assert not diags.has_errors, [d.format() for d in diags.sorted()]
        try:
            async with serving(routes):
                got = await tls_request(tls_port, GET, "a.test", pki.ca)  # verifies a.test
                assert got.response.status == 200
                assert got.response.body == b"B https on /p?q=1"
                assert got.version == "TLSv1.3"
                plain = await request(plain_port, GET)
                assert plain.body == b"B http - /p?q=1"
                s = await tls_request(tls_port, b"GET /s HTTP/1.1\r\nHost: a.test\r\n\r\n")
                assert s.response.body == b"https:on"
                assert (await request(plain_port, b"GET /s HTTP/1.1\r\nHost: a\r\n\r\n")).body == (
                    b"http:"
                )
                rel = await tls_request(tls_port, b"GET /rel HTTP/1.1\r\nHost: a.test\r\n\r\n")
                assert rel.response.header(b"location") == b"https://a.test:%d/there" % tls_port
                # plain HTTP on the TLS port: no answer in clear (the handshake fails)
                with pytest.raises((ConnectionError, asyncio.IncompleteReadError, OSError)):
                    await request(tls_port, GET)
        finally:
            await backend.stop()

    run(main())


def test_sni_picks_the_certificate_of_the_named_server(pki: Pki) -> None:
    (a_crt, a_key), (b_crt, b_key) = pki.leaf("a.test"), pki.leaf("b.test")
    w_crt, w_key = pki.leaf("w.wild.test")

    async def main() -> None:
        port = free_port()
        conf = f"""
        events {{}}
        http {{
            ssl_certificate {a_crt};
            ssl_certificate_key {a_key};
            server {{ listen 127.0.0.1:{port} ssl; server_name b.test;
                     ssl_certificate {b_crt}; ssl_certificate_key {b_key};
                     return 200 "b $host"; }}
            server {{ listen 127.0.0.1:{port} ssl default_server; server_name a.test;
                     return 200 "a $host"; }}
            server {{ listen 127.0.0.1:{port} ssl; server_name *.wild.test;
                     ssl_certificate {w_crt}; ssl_certificate_key {w_key};
                     return 200 "w $host"; }}
            server {{ listen 127.0.0.1:{port} ssl; server_name c.test;
                     return 200 "c $host"; }}
        }}
        """
        routes, diags = read_routes(conf)
        assert not diags.has_errors, [d.format() for d in diags.sorted()]
        async with serving(routes):
            cases = [
                ("b.test", b"b.test", "b.test", b"b b.test"),
                ("a.test", b"a.test", "a.test", b"a a.test"),
                ("x.wild.test", b"x.wild.test", "w.wild.test", b"w x.wild.test"),
                ("B.TEST", b"b.test", "b.test", b"b b.test"),
                (None, b"b.test", "a.test", b"b b.test"),  # no SNI: the default's cert
                ("nope.test", b"nope.test", "a.test", b"a nope.test"),
                ("c.test", b"c.test", "a.test", b"c c.test"),  # no cert of its own
            ]
            for sni, host, cert, body in cases:
                got = await tls_request(port, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", sni)
                assert got.cert == pki.der(cert), (sni, cert)
                assert got.response.body == body

    run(main())


def test_port_80_redirects_to_https(pki: Pki) -> None:
    crt, key = pki.leaf("a.test")

    async def main() -> None:
        plain, tls = free_port(), free_port()
        conf = f"""
        events {{}}
        http {{
            server {{ listen 127.0.0.1:{plain}; server_name a.test;
                     return 301 https://$host$request_uri; }}
            server {{ listen 127.0.0.1:{tls} ssl; server_name a.test;
                     ssl_certificate {crt}; ssl_certificate_key {key};
                     location / {{ return 200 "secure $request_uri"; }} }}
        }}
        """
        routes, diags = read_routes(conf)
        assert not diags.has_errors, [d.format() for d in diags.sorted()]
        async with serving(routes):
            resp = await request(plain, b"GET /x/y?z=1 HTTP/1.1\r\nHost: A.test:8080\r\n\r\n")
            assert resp.status == 301
            assert resp.header(b"location") == b"https://a.test/x/y?z=1"
            got = await tls_request(tls, b"GET /x/y?z=1 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            assert got.response.body == b"secure /x/y?z=1"

    run(main())


def test_redirects_built_while_routing_say_https_on_a_tls_listener(pki: Pki) -> None:
    """The `/p` -> `/p/` auto-redirect and a `rewrite ... redirect` are made absolute with
    the listener's scheme (nginx: `$scheme` of the connection), not always http."""
    crt, key = pki.leaf("a.test")

    async def main() -> None:
        tls = free_port()
        conf = f"""
        events {{}}
        http {{
            server {{ listen 127.0.0.1:{tls} ssl; server_name a.test;
                     ssl_certificate {crt}; ssl_certificate_key {key};
                     rewrite ^/old$ /new redirect;
                     location /p/ {{ proxy_pass http://127.0.0.1:9; }}
                     location / {{ return 200 "ok"; }} }}
        }}
        """
        routes, diags = read_routes(conf)
        assert not diags.has_errors, [d.format() for d in diags.sorted()]
        async with serving(routes):
            got = await tls_request(tls, b"GET /p?a=1 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            assert got.response.status == 301
            assert got.response.header(b"location") == f"https://a.test:{tls}/p/?a=1".encode()
            got = await tls_request(tls, b"GET /old HTTP/1.1\r\nHost: a.test\r\n\r\n")
            assert got.response.status == 302
            assert got.response.header(b"location") == f"https://a.test:{tls}/new".encode()

    run(main())


def test_proxy_pass_https_with_sni_verification_and_pool(pki: Pki) -> None:
    backend_cert = pki.leaf("backend.test")

    async def main() -> None:
        tls_backend = await TlsBackend(backend_cert, _echo(b"T")).start()
        port = free_port()
        conf = f"""
        events {{}}
        http {{
            upstream secure {{ server 127.0.0.1:{tls_backend.port}; keepalive 4; }}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            server {{
                listen 127.0.0.1:{port};
                location /v/ {{
                    proxy_pass https://secure;
                    proxy_ssl_server_name on;
                    proxy_ssl_name backend.test;
                    proxy_ssl_verify on;
                    proxy_ssl_trusted_certificate {pki.ca};
                }}
                location /bad/ {{
                    proxy_pass https://secure;
                    proxy_ssl_verify on;
                    proxy_ssl_trusted_certificate {pki.ca};
                    proxy_ssl_name wrong.test;
                }}
                location / {{ proxy_pass https://127.0.0.1:{tls_backend.port}; }}
            }}
        }}
        """
        routes, diags = read_routes(conf)
        assert not diags.has_errors, [d.format() for d in diags.sorted()]
        try:
            async with serving(routes) as engines:
                for i in range(5):
                    target = b"/v/%d" % i
                    resp = await request(port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                    assert resp.body == b"T - - " + target
                assert tls_backend.sni == ["backend.test"]  # one handshake: pooled
                assert tls_backend.opened == 1
                stats = engines[port].stats
                assert stats.upstream_reused >= 4
                # default proxy_ssl_server_name off: no SNI; proxy_ssl_verify off: any cert
                resp = await request(port, b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
                assert resp.body == b"T - - /plain"
                assert tls_backend.sni[-1] is None
                # a certificate that does not match proxy_ssl_name: 502, never relayed
                resp = await request(port, b"GET /bad/ HTTP/1.1\r\nHost: x\r\n\r\n")
                assert resp.status == 502
                assert stats.internal_errors == 0
        finally:
            await tls_backend.stop()

    run(main())


def test_health_checks_reach_an_https_upstream_over_tls(pki: Pki) -> None:
    """`health_check` on a `proxy_pass https://` location probes with the location's TLS
    settings (SNI name, verification): a `mandatory` check passes and the server serves;
    probes in plain HTTP would fail on the TLS port and leave it unusable (502)."""
    backend_cert = pki.leaf("backend.test")
    probes: list[bytes] = []

    def handler(conn: BackendConn, seen: Seen) -> None:
        if seen.header(b"user-agent") == b"hakeeper-health-check":
            probes.append(seen.target)
        conn.send(simple_response(body=b"T " + seen.target))

    async def main() -> None:
        tls_backend = await TlsBackend(backend_cert, handler).start()
        port = free_port()
        conf = f"""
        events {{}}
        http {{
            upstream secure {{ server 127.0.0.1:{tls_backend.port}; }}
            server {{
                listen 127.0.0.1:{port};
                location / {{
                    proxy_pass https://secure;
                    proxy_ssl_server_name on;
                    proxy_ssl_name backend.test;
                    proxy_ssl_verify on;
                    proxy_ssl_trusted_certificate {pki.ca};
                    health_check interval=100ms uri=/hc mandatory;
                }}
            }}
        }}
        """
        try:
            routes, diags = read_routes(conf)
            assert not diags.has_errors, [d.format() for d in diags.sorted()]
            async with serving(routes) as engines:
                checks = health.attach(engines[port])
                assert checks is not None
                try:
                    await wait_for(lambda: bool(probes), limit=10)
                    assert probes[0] == b"/hc"
                    assert "backend.test" in tls_backend.sni
                    resp = await request(port, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
                    assert (resp.status, resp.body) == (200, b"T /x")
                finally:
                    health.detach(checks)
        finally:
            await tls_backend.stop()

    run(main())


def test_listener_context_follows_nginx_protocol_defaults(pki: Pki) -> None:
    """nginx 1.22's default `ssl_protocols TLSv1 TLSv1.1 TLSv1.2` on OpenSSL 3: TLSv1.2
    only (Debian's nginx refuses TLSv1.3 without the directive, fails TLSv1/1.1)."""
    crt, key = pki.leaf("a.test")
    port = free_port()
    conf = f"""
    events {{}}
    http {{ server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {crt};
                     ssl_certificate_key {key}; return 200 "ok"; }} }}
    """
    routes, diags = read_routes(conf)
    assert not diags.has_errors
    ctx = routes[0].config.listen_ssl
    assert ctx is not None
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_2
    assert not ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE  # ssl_prefer_server_ciphers off


def test_reject_handshake_default_server_refuses_unknown_names(pki: Pki) -> None:
    b_crt, b_key = pki.leaf("b.test")

    async def main() -> None:
        port = free_port()
        conf = f"""
        events {{}}
        http {{
            server {{ listen 127.0.0.1:{port} ssl default_server; ssl_reject_handshake on; }}
            server {{ listen 127.0.0.1:{port} ssl; server_name b.test;
                     ssl_certificate {b_crt}; ssl_certificate_key {b_key};
                     return 200 "b"; }}
        }}
        """
        routes, diags = read_routes(conf)
        assert not diags.has_errors, [d.format() for d in diags.sorted()]
        async with serving(routes):
            got = await tls_request(port, b"GET / HTTP/1.1\r\nHost: b.test\r\n\r\n", "b.test")
            assert got.cert == pki.der("b.test")
            assert got.response.body == b"b"
            for name in (None, "other.test"):
                with pytest.raises((ssl.SSLError, ConnectionError)):
                    await tls_request(port, b"GET / HTTP/1.1\r\nHost: b.test\r\n\r\n", name)

    run(main())


def test_drain_waits_for_running_handshakes(pki: Pki) -> None:
    """A draining worker first lets accepted connections finish their handshake, so a
    reload does not reset them; it waits at most HANDSHAKE_GRACE after their accept."""
    crt, key = pki.leaf("a.test")

    async def main() -> None:
        port = free_port()
        conf = f"""
        events {{}}
        http {{ server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {crt};
                         ssl_certificate_key {key}; return 200 "ok"; }} }}
        """
        routes, _ = read_routes(conf)
        loop = asyncio.get_running_loop()
        async with serving(routes) as engines:
            engine = engines[port]
            got = await tls_request(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert got.response.body == b"ok"
            # a client that connects and never sends its ClientHello
            _, stalled = await asyncio.open_connection("127.0.0.1", port)
            await wait_for(lambda: engine.stats.accepted >= 1 and bool(handshakes(engine)))
            start = loop.time()
            assert await drain(engine, 0.5)
            assert loop.time() - start >= 0.5  # it waited for the handshake (then gave up)
            stalled.close()
            start = loop.time()
            # a failed handshake is not reported to the protocol: given up after the grace
            assert await drain(engine, 5.0)
            assert loop.time() - start < 2.0

    run(main())


def handshakes(engine: object) -> bool:
    from hakeeper.proxy.tls import _HANDSHAKES

    pending = _HANDSHAKES.get(engine)  # type: ignore[call-overload]
    return pending is not None and pending.waiting()


def test_verify_client_certificates(pki: Pki) -> None:
    """`ssl_verify_client on`: a client certificate from the CA is required (refused in
    the handshake, where nginx would answer 400); `optional`: only checked if sent."""
    crt, key = pki.leaf("a.test")
    client = pki.leaf("client.test")
    other = os.path.join(pki.work, "other-ca")
    os.makedirs(other, exist_ok=True)
    stranger = make_pki(other).leaf("client.test")

    async def main() -> None:
        on, optional = free_port(), free_port()
        conf = f"""
        events {{}}
        http {{
            ssl_certificate {crt};
            ssl_certificate_key {key};
            ssl_client_certificate {pki.ca};
            server {{ listen 127.0.0.1:{on} ssl; ssl_verify_client on; return 200 "on"; }}
            server {{ listen 127.0.0.1:{optional} ssl; ssl_verify_client optional;
                     return 200 "optional"; }}
        }}
        """
        routes, diags = read_routes(conf)
        assert not diags.has_errors, [d.format() for d in diags.sorted()]
        raw = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"
        async with serving(routes):
            assert (await tls_request(on, raw, cert=client)).response.body == b"on"
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await tls_request(on, raw)  # no certificate
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await tls_request(on, raw, cert=stranger)  # from another CA
            assert (await tls_request(optional, raw)).response.body == b"optional"
            got = await tls_request(optional, raw, cert=client)
            assert got.response.body == b"optional"
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await tls_request(optional, raw, cert=stranger)

    run(main())


def test_large_bodies_both_ways_over_tls_on_both_sides(pki: Pki) -> None:
    """Flow control across SSL transports: a 3 MB upload through a TLS listener and a TLS
    upstream, and a 6 MB download back, byte-exact."""
    crt, key = pki.leaf("a.test")
    big = bytes(range(256)) * (6 * 1024 * 1024 // 256)

    def handler(conn: BackendConn, seen: Seen) -> None:
        digest = hashlib.sha256(seen.body).hexdigest().encode()
        conn.send(simple_response(body=big, extra=b"X-Got: " + digest + b"\r\n"))

    async def main() -> None:
        backend = await TlsBackend(pki.leaf("backend.test"), handler).start()
        port = free_port()
        conf = f"""
        events {{}}
        http {{
            client_max_body_size 8m;
            server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {crt};
                     ssl_certificate_key {key};
                     location / {{ proxy_pass https://127.0.0.1:{backend.port}; }} }}
        }}
        """
        routes, diags = read_routes(conf)
        assert not diags.has_errors, [d.format() for d in diags.sorted()]
        upload = big[: 3 * 1024 * 1024]
        head = b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n\r\n" % len(upload)
        try:
            async with serving(routes):
                got = await tls_request(port, head + upload)
                assert got.response.status == 200
                assert got.response.header(b"x-got") == hashlib.sha256(upload).hexdigest().encode()
                assert got.response.body == big
        finally:
            await backend.stop()

    run(main())


def test_websocket_tunnel_over_tls_on_both_sides(pki: Pki) -> None:
    """wss:// through a TLS listener to a TLS upstream: after 101 both transports carry
    the raw tunnel."""
    crt, key = pki.leaf("a.test")

    def upgrade(conn: BackendConn, seen: Seen) -> None:
        assert seen.header(b"Upgrade") == b"websocket"
        conn.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\nhello-from-backend"
        )

    async def main() -> None:
        backend = await TlsBackend(pki.leaf("backend.test"), upgrade).start()
        port = free_port()
        conf = f"""
        events {{}}
        http {{
            server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {crt};
                     ssl_certificate_key {key};
                     location / {{ proxy_pass https://127.0.0.1:{backend.port};
                                  proxy_http_version 1.1;
                                  proxy_set_header Upgrade $http_upgrade;
                                  proxy_set_header Connection "upgrade"; }} }}
        }}
        """
        routes, diags = read_routes(conf)
        assert not diags.has_errors, [d.format() for d in diags.sorted()]
        try:
            async with serving(routes) as engines:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=client_context(), server_hostname=""
                )
                writer.write(
                    b"GET /ws HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: k\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\nearly"
                )
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101 ")
                want = b"hello-from-backendearly"
                assert await reader.readexactly(len(want)) == want
                for i in range(3):
                    msg = b"frame-%d" % i
                    writer.write(msg)
                    assert await reader.readexactly(len(msg)) == msg
                assert engines[port].stats.tunnels == 1
                writer.close()
        finally:
            await backend.stop()

    run(main())
