"""The daemon's embedded L7 proxy (`runtime.l7.L7Service`, as `hakeeper run -f ... --nginx
...` runs it) with a `listen ... ssl` address: its workers (forked from the L7 thread, on
IP_FREEBIND sockets) serve HTTPS, a reload swaps the certificate, a reload with a key
that cannot be loaded is refused and the running certificate stays."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from test_proxy_support import run
from tls_support import make_pki, tls_request
from uvloop_support import free_port

from hakeeper.runtime.l7 import L7Service

CONF = """
worker_processes 2;
events {{ }}
http {{
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        location / {{ return 200 "$scheme"; }}
    }}
}}
"""
RAW = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"


def test_l7_service_serves_and_reloads_tls() -> None:
    work = tempfile.mkdtemp(prefix="hk-tls-l7-")

    async def main() -> None:
        pki = make_pki(work)
        port = free_port()
        path = Path(work) / "nginx.conf"
        crt, key = pki.leaf("a.test")
        path.write_text(CONF.format(port=port, crt=crt, key=key))
        svc = L7Service(str(path))
        loop = asyncio.get_running_loop()
        try:
            assert await svc.start()
            got = await tls_request(port, RAW, "a.test")
            assert got.response.body == b"https" and got.cert == pki.der("a.test")

            crt2, key2 = pki.leaf("b.test")
            path.write_text(CONF.format(port=port, crt=crt2, key=key2))
            assert await svc.reload()
            end, streak = loop.time() + 15, 0
            while streak < 6:  # old workers may take a last connection before they drain
                got = await tls_request(port, RAW, "a.test")
                streak = streak + 1 if got.cert == pki.der("b.test") else 0
                assert loop.time() < end, "the new certificate is not served"
                await asyncio.sleep(0.02)

            path.write_text(CONF.format(port=port, crt=crt, key=f"{work}/missing.key"))
            assert not await svc.reload()
            assert "cannot load certificate key" in svc.stats.last_error
            assert (await tls_request(port, RAW, "a.test")).cert == pki.der("b.test")
        finally:
            await svc.stop()

    try:
        run(main(), limit=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
