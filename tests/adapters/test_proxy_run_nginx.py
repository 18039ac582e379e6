"""`hakeeper run --nginx FILE` end to end: serve, reload on SIGHUP, refuse bad configs.

The command runs as a child process on 127.0.0.1 with two workers; backends are
asyncio servers in this test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile

from test_proxy_support import Backend, BackendConn, Seen, request, run, simple_response
from uvloop_support import free_port, reap, run_nginx_once

CONF = """
worker_processes 2;
events {{ }}
http {{
    include {inc};
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{ proxy_pass http://app; proxy_http_version 1.1;
                     proxy_set_header Connection ""; }}
    }}
}}
"""
UPSTREAM = "upstream app {{ server 127.0.0.1:{backend}; keepalive 4; }}\n"


def _named(name: bytes):  # type: ignore[no-untyped-def]
    def handler(conn: BackendConn, seen: Seen) -> None:
        conn.send(simple_response(body=name))

    return handler


def _spawn(conf: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hakeeper", "run", "--nginx", conf],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_run_nginx_serves_reloads_and_stops() -> None:
    async def main() -> None:
        one, two = await Backend(_named(b"one")).start(), await Backend(_named(b"two")).start()
        work = tempfile.mkdtemp(prefix="hk-run-nginx-")
        inc = os.path.join(work, "upstream.conf")
        conf = os.path.join(work, "nginx.conf")
        port = free_port()
        with open(inc, "w") as f:
            f.write(UPSTREAM.format(backend=one.port))
        with open(conf, "w") as f:
            f.write(CONF.format(inc="upstream.conf", port=port))
        proc = _spawn(conf)
        loop = asyncio.get_running_loop()
        try:
            end = loop.time() + 15
            while True:
                try:
                    resp = await request(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    break
                except OSError:
                    if proc.poll() is not None:
                        err = proc.stderr.read() if proc.stderr else b""
                        raise AssertionError(f"hakeeper exited: {err!r}") from None
                    assert loop.time() < end
                    await asyncio.sleep(0.05)
            assert resp.body == b"one"
            # change the upstream, SIGHUP: new workers serve the new upstream
            with open(inc, "w") as f:
                f.write(UPSTREAM.format(backend=two.port))
            proc.send_signal(signal.SIGHUP)
            end = loop.time() + 15
            while (await request(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")).body != b"two":
                assert loop.time() < end, "reload did not take effect"
                await asyncio.sleep(0.05)
            # a broken config on SIGHUP is refused and the old one keeps serving
            with open(inc, "w") as f:
                f.write("upstream app { server; }\n")
            proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.3)
            for _ in range(5):
                assert (await request(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")).body == b"two"
            proc.send_signal(signal.SIGTERM)
            assert await loop.run_in_executor(None, proc.wait, 15) == 0
        finally:
            reap(proc)
            await one.stop()
            await two.stop()
            for name in (inc, conf):
                os.unlink(name)
            os.rmdir(work)

    run(main(), limit=60)


def test_run_nginx_refuses_a_bad_config_with_file_and_line() -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
        f.write("events { }\nhttp {\n    proxy_pas http://x;\n}\n")
        path = f.name
    try:
        out = run_nginx_once(path)
        assert out.returncode == 1
        assert f'{path}:3:5: error: unknown directive "proxy_pas"' in out.stderr
    finally:
        os.unlink(path)
