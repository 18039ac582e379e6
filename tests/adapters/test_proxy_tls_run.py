"""`hakeeper run --nginx` with a `listen ... ssl` address: worker processes serve TLS on
their SO_REUSEPORT sockets, sessions resume on any worker (TLSv1.2 and TLSv1.3 tickets),
and a SIGHUP reload that changes the certificate is hitless (new connections get the new
certificate, no request fails meanwhile)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile

from test_proxy_support import Backend, BackendConn, Seen, run, simple_response
from tls_support import client_context, make_pki, tls_request
from uvloop_support import free_port, reap

CONF = """
worker_processes 2;
events {{ }}
http {{
    server {{
        listen 127.0.0.1:{port} ssl reuseport;
        server_name a.test;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        proxy_set_header X-Forwarded-Proto $scheme;
        location / {{ proxy_pass http://127.0.0.1:{backend}; }}
    }}
}}
"""


def _proto(conn: BackendConn, seen: Seen) -> None:
    conn.send(simple_response(body=seen.header(b"x-forwarded-proto") or b"-"))


def resumptions(port: int, version: ssl.TLSVersion, count: int) -> list[bool]:
    """`count` TLS connections, each offering the session of the one before: which ones
    were resumed (blocking; the SO_REUSEPORT socket spreads them over the workers)."""
    ctx = client_context()
    ctx.maximum_version = version
    session, out = None, []
    for _ in range(count):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="a.test", session=session) as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            while tls.recv(4096):
                pass
            out.append(tls.session_reused)
            session = tls.session
    return out


def test_run_nginx_tls_workers_reload_a_new_certificate() -> None:
    work = tempfile.mkdtemp(prefix="hk-tls-run-")

    async def main() -> None:
        pki = make_pki(work)
        old, new = pki.leaf("a.test"), pki.leaf("b.test")
        backend = await Backend(_proto).start()
        port = free_port()
        conf = os.path.join(work, "nginx.conf")

        def write(cert: tuple[str, str]) -> None:
            with open(conf, "w") as f:
                f.write(CONF.format(port=port, crt=cert[0], key=cert[1], backend=backend.port))

        write(old)
        proc = subprocess.Popen(
            [sys.executable, "-m", "hakeeper", "run", "--nginx", conf],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        loop = asyncio.get_running_loop()
        raw = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"
        try:
            end = loop.time() + 15
            while True:
                try:
                    got = await tls_request(port, raw, "a.test")
                    break
                except OSError:
                    if proc.poll() is not None:
                        err = proc.stderr.read() if proc.stderr else b""
                        raise AssertionError(f"hakeeper exited: {err!r}") from None
                    assert loop.time() < end, "hakeeper did not start"
                    await asyncio.sleep(0.05)
            assert got.cert == pki.der("a.test")
            assert got.response.body == b"https"
            # contexts are made before the fork: both workers share the ticket keys
            for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                reused = await loop.run_in_executor(None, resumptions, port, version, 8)
                assert reused == [False] + [True] * 7, (version, reused)
            write(new)
            proc.send_signal(signal.SIGHUP)
            end = loop.time() + 20
            answers = streak = 0
            # every request during the reload succeeds; old workers accept until they are
            # told to drain, so the switch is done once a run of answers has the new cert
            while streak < 8:
                got = await tls_request(port, raw, "a.test")
                assert got.response.status == 200
                answers += 1
                streak = streak + 1 if got.cert == pki.der("b.test") else 0
                assert loop.time() < end, f"reload did not take effect ({answers} answers)"
                await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            assert await loop.run_in_executor(None, proc.wait, 15) == 0
        finally:
            reap(proc)
            await backend.stop()

    try:
        run(main(), limit=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
