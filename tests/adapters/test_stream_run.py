"""`hakeeper run --nginx FILE` with `stream { }`: serve, reload on SIGHUP, refuse bad configs, stop.

The command runs as a child process on 127.0.0.1; the backends are the greeting echo
servers of test_l4proxy_support, in this test's event loop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading

from test_l4proxy_support import EchoBackend, connect, landed, run
from uvloop_support import free_port, run_nginx_once

STREAM = """
events {{ }}
stream {{
    upstream back {{
        server 127.0.0.1:{a}{a_down};
        server 127.0.0.1:{b}{b_down};
    }}
    server {{ listen 127.0.0.1:{port}; proxy_pass back; }}
}}
"""


class Proc:
    """`hakeeper run --nginx conf` with its stderr collected line by line."""

    def __init__(self, conf: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hakeeper", "run", "--nginx", conf],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    async def wait_line(self, text: str, limit: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + limit
        while not any(text in ln for ln in self.lines):
            assert self.proc.poll() is None, "".join(self.lines)
            assert loop.time() < end, f"no {text!r} in stderr: {''.join(self.lines)}"
            await asyncio.sleep(0.02)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            code = -9
        self.reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code


async def _first_greeting(port: int, proc: Proc) -> str:
    loop = asyncio.get_running_loop()
    end = loop.time() + 15
    while True:
        try:
            return await landed(port)
        except OSError:
            assert proc.proc.poll() is None, "".join(proc.lines)
            assert loop.time() < end, "hakeeper did not start listening"
            await asyncio.sleep(0.05)


def test_run_serves_stream_reloads_on_sighup_and_stops() -> None:
    async def main() -> None:
        a, b = await EchoBackend("a").start(), await EchoBackend("b").start()
        work = tempfile.mkdtemp(prefix="hk-stream-run-")
        conf = os.path.join(work, "nginx.conf")
        port = free_port()

        def write(a_down: str, b_down: str, extra: str = "") -> None:
            with open(conf, "w") as f:
                f.write(
                    STREAM.format(a=a.port, b=b.port, port=port, a_down=a_down, b_down=b_down)
                    + extra
                )

        write("", " down")
        proc = Proc(conf)
        try:
            assert await _first_greeting(port, proc) == "a"
            held = await connect(port)
            assert held.name == "a"

            write(" down", "")
            proc.proc.send_signal(signal.SIGHUP)
            loop = asyncio.get_running_loop()
            end = loop.time() + 10
            while await landed(port) != "b":  # new connections follow the new config
                assert loop.time() < end, "".join(proc.lines)
                await asyncio.sleep(0.02)
            assert await held.echo(b"established") == b"established"

            write("", "", extra="stream { bogus; }\n")  # an error: the old config stays
            proc.proc.send_signal(signal.SIGHUP)
            await proc.wait_line("stream reload of")
            assert [await landed(port) for _ in range(3)] == ["b", "b", "b"]
            assert await held.echo(b"still") == b"still"
            held.close()
        finally:
            code = proc.stop()
            a.close()
            b.close()
            shutil.rmtree(work, ignore_errors=True)
        assert code == 0, "".join(proc.lines)
        with socket.socket() as s:  # the stream child is gone with its listener
            s.bind(("127.0.0.1", port))

    run(main(), limit=60)


def test_bad_stream_config_refuses_to_start() -> None:
    work = tempfile.mkdtemp(prefix="hk-stream-run-")
    try:
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write("events {}\nstream {\n  server { listen 9; proxy_pas 127.0.0.1:1; }\n}\n")
        done = run_nginx_once(conf)
        assert done.returncode == 1
        assert f'{conf}:3:22: error: unknown directive "proxy_pas"' in done.stderr
        assert "test failed" in done.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_listener_that_cannot_bind_fails_the_start() -> None:
    async def main() -> None:
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        work = tempfile.mkdtemp(prefix="hk-stream-run-")
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(
                f"events {{}}\nstream {{ server {{ listen 127.0.0.1:{port}; "
                "proxy_pass 127.0.0.1:1; } }\n"
            )
        proc = Proc(conf)
        try:
            code = await asyncio.get_running_loop().run_in_executor(None, proc.proc.wait, 30)
            assert code == 1
            proc.reader.join(5)
            assert "stream servers did not start" in "".join(proc.lines)
        finally:
            proc.stop()
            blocker.close()
            shutil.rmtree(work, ignore_errors=True)

    run(main(), limit=60)


def test_stream_block_added_by_reload_starts_serving() -> None:
    async def main() -> None:
        a = await EchoBackend("a").start()
        work = tempfile.mkdtemp(prefix="hk-stream-run-")
        conf = os.path.join(work, "nginx.conf")
        http_port, port = free_port(), free_port()
        http = (
            f"events {{}}\nhttp {{ server {{ listen 127.0.0.1:{http_port}; "
            "location / { proxy_pass http://127.0.0.1:1; } } }\n"
        )
        with open(conf, "w") as f:
            f.write(http)
        proc = Proc(conf)
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + 15
            while True:  # the HTTP listener is up: the command has started
                try:
                    _, w = await asyncio.open_connection("127.0.0.1", http_port)
                    w.close()
                    break
                except OSError:
                    assert proc.proc.poll() is None, "".join(proc.lines)
                    assert loop.time() < end, "hakeeper did not start"
                    await asyncio.sleep(0.05)
            with open(conf, "w") as f:
                f.write(http + f"stream {{ server {{ listen 127.0.0.1:{port}; ")
                f.write(f"proxy_pass 127.0.0.1:{a.port}; }} }}\n")
            proc.proc.send_signal(signal.SIGHUP)
            assert await _first_greeting(port, proc) == "a"
        finally:
            code = proc.stop()
            a.close()
            shutil.rmtree(work, ignore_errors=True)
        assert code == 0, "".join(proc.lines)
        for p in (http_port, port):  # neither listener outlives the command
            with socket.socket() as s:
                s.bind(("127.0.0.1", p))

    run(main(), limit=60)
