"""`hakeeper run --nginx`: each accepted-but-ignored directive warns once on stderr
(conf/nginx_status.py), also with a `stream { }` child process that reads the same file,
and the file is served all the same."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from uvloop_support import free_port, reap

CONF = """
worker_processes 1;
events {{ worker_connections 512; }}
http {{
    gzip on;
    sendfile on;
    upstream app {{ server 127.0.0.1:9; }}
    server {{
        listen 127.0.0.1:{http};
        location / {{ proxy_pass http://app; proxy_buffering on; }}
    }}
}}
stream {{
    upstream back {{ server 127.0.0.1:9; zone back 64k; }}
    server {{ listen 127.0.0.1:{tcp}; proxy_pass back; }}
}}
"""
MSG = "is accepted but has no effect in hakeeper"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_run_nginx_warns_once_per_ignored_directive_and_serves(tmp_path: Path) -> None:
    http, tcp = free_port(), free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(CONF.format(http=http, tcp=tcp))
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hakeeper", "run", "--nginx", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 20
        while not (_accepts(http) and _accepts(tcp)):  # the stream child has read the file
            assert proc.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, "run --nginx did not start serving"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        reap(proc)
    text = err_path.read_text()
    lines = [line for line in text.splitlines() if MSG in line]
    shown = sorted(line.split('"')[1] for line in lines)
    assert shown == ["gzip", "proxy_buffering", "worker_connections", "zone"], text
    assert f'{conf}:5:5: warning: "gzip" {MSG}' in text
    assert os.path.basename(conf) in lines[0]
