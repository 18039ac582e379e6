"""`hakeeper run --nginx` with `health_check`: the checks run inside the forked workers.

One child process (two workers) on 127.0.0.1; two asyncio backends in this test, one of
which answers 500 to everything. Each worker probes on its own, so the failing backend
sees probes from both workers and, once they have run, no client request.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile

from test_proxy_support import Backend, BackendConn, Seen, request, run, simple_response
from uvloop_support import free_port, reap

CONF = """
worker_processes 2;
events {{ }}
http {{
    upstream app {{ server 127.0.0.1:{good}; server 127.0.0.1:{bad}; }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            proxy_pass http://app;
            health_check interval=100ms fails=1 passes=1 uri=/hc;
        }}
    }}
}}
"""


def test_workers_probe_and_drop_a_failing_server() -> None:
    probes = {"good": 0, "bad": 0}
    client_hits = {"good": 0, "bad": 0}

    def handler(name: str, status: int):  # type: ignore[no-untyped-def]
        def handle(conn: BackendConn, seen: Seen) -> None:
            if seen.target == b"/hc":
                probes[name] += 1
            else:
                client_hits[name] += 1
            conn.send(simple_response(status, name.encode(), close=True))

        return handle

    async def main() -> None:
        good = await Backend(handler("good", 200)).start()
        bad = await Backend(handler("bad", 500)).start()
        work = tempfile.mkdtemp(prefix="hk-health-run-")
        conf = os.path.join(work, "nginx.conf")
        port = free_port()
        with open(conf, "w") as f:
            f.write(CONF.format(good=good.port, bad=bad.port, port=port))
        proc = subprocess.Popen(
            [sys.executable, "-m", "hakeeper", "run", "--nginx", conf],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        loop = asyncio.get_running_loop()
        raw = b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        try:
            end = loop.time() + 15
            # each worker probes at start, then every 100 ms: 6 probes means both have
            # had answers (one worker alone would need ~0.5 s, the deadline is 15 s)
            while probes["bad"] < 6:
                if proc.poll() is not None:
                    err = proc.stderr.read() if proc.stderr else b""
                    raise AssertionError(f"hakeeper exited: {err!r}")
                assert loop.time() < end, "no health probes reached the backend"
                await asyncio.sleep(0.05)
            before = client_hits["bad"]
            statuses = [(await request(port, raw)).status for _ in range(30)]
            assert statuses == [200] * 30
            assert client_hits["bad"] == before
            proc.send_signal(signal.SIGTERM)
            assert await loop.run_in_executor(None, proc.wait, 15) == 0
        finally:
            reap(proc)
            await good.stop()
            await bad.stop()
            os.unlink(conf)
            os.rmdir(work)

    run(main(), limit=40)
