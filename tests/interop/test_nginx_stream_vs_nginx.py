"""Differential test: the same `stream { }` config served by Debian's nginx and by `hakeeper run`.

nginx 1.22 loads `ngx_stream_module.so` (libnginx-mod-stream) and `hakeeper run --nginx`
reads the same file (only the listen port differs); both front the same loopback
backends, which greet each connection (or answer each datagram) with their name. For
each config the backend sequence seen by consecutive new connections must be the same:
smooth weighted round-robin 5,1,1, a dead peer skipped by passive health, least_conn and
max_conns with held sessions, `hash $remote_addr` (plain and consistent) from several
source addresses, backup servers behind dead primaries, UDP sessions, and
`proxy_next_upstream off` closing the client.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import pytest

pytestmark = [pytest.mark.interop("nginx"), pytest.mark.slow]

STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
HEAD = """
load_module {module};
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
"""
DEADLINE = 10.0


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class TcpNamed:
    """Greets each connection with its name, waits for the client's EOF, says bye, closes."""

    def __init__(self, name: str) -> None:
        self.name = name.encode()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(DEADLINE)
            with contextlib.suppress(OSError):
                conn.sendall(self.name + b"\n")
                while conn.recv(4096):
                    pass
                conn.sendall(b"bye\n")  # after the client's EOF: seen only with half-close

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        for t in self.threads:
            t.join(DEADLINE)


class UdpNamed:
    """Answers each datagram with `name:` + the datagram."""

    def __init__(self, name: str) -> None:
        self.name = name.encode()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            self.sock.sendto(self.name + b":" + data, addr)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def greeting(port: int, source: str | None = None) -> str:
    """Connect, read the backend's name ('' if the proxy closed without one), close."""
    with socket.socket() as s:
        s.settimeout(DEADLINE)
        if source:
            s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(64)
            if not chunk:
                break
            data += chunk
        return data.decode().strip()


def hold(port: int) -> tuple[socket.socket, str]:
    s = socket.socket()
    s.settimeout(DEADLINE)
    s.connect(("127.0.0.1", port))
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(64)
        assert chunk, "closed before the greeting"
        data += chunk
    return s, data.decode().strip()


def release(s: socket.socket) -> None:
    """End a held session and wait for the proxy's EOF: by then both proxies have freed the
    peer (nginx ends the session at the client's EOF; hakeeper's relay frees it in the same
    event-loop callback that closes the sockets, before it accepts anything else)."""
    s.shutdown(socket.SHUT_WR)
    while s.recv(4096):
        pass
    s.close()


def ask_udp(port: int, data: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(DEADLINE)
        s.connect(("127.0.0.1", port))
        s.send(data)
        return s.recv(2048)


def _wait_listening(port: int, proc: subprocess.Popen[bytes], udp: bool) -> None:
    end = time.monotonic() + DEADLINE
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    while True:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        with socket.socket(socket.AF_INET, kind) as s:
            try:  # a bind that fails means someone listens there (no balancing pick)
                if not udp:  # (on UDP it would let two sockets share the port)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        assert time.monotonic() < end, "the proxy did not start listening"
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    if proc.stderr is not None:
        proc.stderr.close()


@contextlib.contextmanager
def serve(stream: str, udp: bool = False) -> Iterator[tuple[int, int]]:
    """(nginx port, hakeeper port), each serving `stream` with its own `{port}`."""
    work = tempfile.mkdtemp(prefix=f"hk-stream-{os.getpid()}-")
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    ports = (_free_port(kind), _free_port(kind))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, port in zip(("nginx", "hakeeper"), ports, strict=True):
            text = HEAD.format(module=STREAM_MODULE, dir=work) + stream.replace("{port}", str(port))
            conf = os.path.join(work, f"{name}.conf")
            with open(conf, "w") as f:
                f.write(text)
            if name == "nginx":
                nginx = shutil.which("nginx") or "/usr/sbin/nginx"
                argv = [nginx, "-p", work, "-c", conf]
            else:
                argv = [sys.executable, "-m", "hakeeper", "run", "--nginx", conf]
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            procs.append(proc)
            _wait_listening(port, proc, udp)
        yield ports
    finally:
        for proc in procs:
            _stop(proc)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def tcp3() -> Iterator[list[TcpNamed]]:
    backends = [TcpNamed(n) for n in "abc"]
    yield backends
    for b in backends:
        b.close()


def same_for_both(stream: str, probe: Callable[[int], list[str]]) -> list[str]:
    with serve(stream) as (nginx_port, hk_port):
        expected = probe(nginx_port)
        seen = probe(hk_port)
    assert seen == expected
    return seen


def test_swrr_5_1_1_sequence_matches_nginx(tcp3: list[TcpNamed]) -> None:
    a, b, c = (x.port for x in tcp3)
    stream = f"""
stream {{
    upstream back {{
        server 127.0.0.1:{a} weight=5;
        server 127.0.0.1:{b};
        server 127.0.0.1:{c};
    }}
    server {{ listen 127.0.0.1:{{port}}; proxy_pass back; }}
}}
"""
    seen = same_for_both(stream, lambda port: [greeting(port) for _ in range(14)])
    assert "".join(seen) == "aabacaa" * 2


def test_dead_peer_sequence_matches_nginx(tcp3: list[TcpNamed]) -> None:
    a, b, _ = (x.port for x in tcp3)
    stream = f"""
stream {{
    upstream back {{
        server 127.0.0.1:{a} weight=2;
        server 127.0.0.1:{{dead}} weight=3 max_fails=2 fail_timeout=30s;
        server 127.0.0.1:{b};
    }}
    server {{ listen 127.0.0.1:{{port}}; proxy_pass back; proxy_connect_timeout 2s; }}
}}
"""
    # each proxy gets its own refused port, so its failures are its own
    with serve(stream.replace("{dead}", str(_free_port()))) as (nginx_port, _):
        expected = [greeting(nginx_port) for _ in range(12)]
    with serve(stream.replace("{dead}", str(_free_port()))) as (_, hk_port):
        seen = [greeting(hk_port) for _ in range(12)]
    assert seen == expected
    assert set(seen) == {"a", "b"}


def test_least_conn_with_held_sessions_matches_nginx(tcp3: list[TcpNamed]) -> None:
    a, b, c = (x.port for x in tcp3)
    stream = f"""
stream {{
    upstream back {{
        least_conn;
        server 127.0.0.1:{a} weight=2;
        server 127.0.0.1:{b};
        server 127.0.0.1:{c};
    }}
    server {{ listen 127.0.0.1:{{port}}; proxy_pass back; }}
}}
"""

    def probe(port: int) -> list[str]:
        held = [hold(port) for _ in range(6)]
        names = [n for _, n in held]
        release(held[1][0])
        names.append(greeting(port))
        for s, _ in held[:1] + held[2:]:
            s.close()
        return names

    same_for_both(stream, probe)


def test_hash_remote_addr_consistent_matches_nginx(tcp3: list[TcpNamed]) -> None:
    a, b, c = (x.port for x in tcp3)
    stream = f"""
stream {{
    upstream back {{
        hash $remote_addr consistent;
        server 127.0.0.1:{a};
        server 127.0.0.1:{b};
        server 127.0.0.1:{c};
    }}
    server {{ listen 127.0.0.1:{{port}}; proxy_pass back; }}
}}
"""
    sources = [f"127.0.0.{i}" for i in range(1, 9)]
    seen = same_for_both(stream, lambda port: [greeting(port, src) for src in sources])
    assert len(set(seen)) > 1


def test_next_upstream_off_matches_nginx(tcp3: list[TcpNamed]) -> None:
    a = tcp3[0].port
    stream = f"""
stream {{
    upstream back {{
        server 127.0.0.1:{{dead}};
        server 127.0.0.1:{a};
    }}
    server {{ listen 127.0.0.1:{{port}}; proxy_pass back; proxy_next_upstream off; }}
}}
""".replace("{dead}", str(_free_port()))
    seen = same_for_both(stream, lambda port: [greeting(port) for _ in range(4)])
    assert seen[0] == ""  # the first try hit the dead peer and the client was closed


def test_udp_sessions_match_nginx() -> None:
    backends = [UdpNamed(n) for n in "ab"]
    try:
        a, b = (x.port for x in backends)
        stream = f"""
stream {{
    upstream dns {{ server 127.0.0.1:{a} weight=2; server 127.0.0.1:{b}; }}
    server {{ listen 127.0.0.1:{{port}} udp; proxy_pass dns; proxy_timeout 2s; }}
}}
"""
        with serve(stream, udp=True) as (nginx_port, hk_port):
            expected = [ask_udp(nginx_port, b"q%d" % i) for i in range(6)]
            seen = [ask_udp(hk_port, b"q%d" % i) for i in range(6)]
        assert seen == expected
        assert [x.split(b":")[0] for x in seen] == [b"a", b"b", b"a"] * 2
    finally:
        for x in backends:
            x.close()


def test_hash_remote_addr_matches_nginx(tcp3: list[TcpNamed]) -> None:
    a, b, c = (x.port for x in tcp3)
    stream = f"""
stream {{
    upstream back {{
        hash $remote_addr;
        server 127.0.0.1:{a} weight=2;
        server 127.0.0.1:{b};
        server 127.0.0.1:{c};
    }}
    server {{ listen 127.0.0.1:{{port}}; proxy_pass back; }}
}}
"""
    sources = [f"127.0.0.{i}" for i in range(1, 13)]
    seen = same_for_both(stream, lambda port: [greeting(port, src) for src in sources])
    assert len(set(seen)) > 1


def test_backup_serves_when_primaries_are_dead_like_nginx(tcp3: list[TcpNamed]) -> None:
    a, b, _ = (x.port for x in tcp3)
    stream = f"""
stream {{
    upstream back {{
        server 127.0.0.1:{{dead1}};
        server 127.0.0.1:{{dead2}} weight=2;
        server 127.0.0.1:{a} backup;
        server 127.0.0.1:{b} backup;
    }}
    server {{ listen 127.0.0.1:{{port}}; proxy_pass back; }}
}}
""".replace("{dead1}", str(_free_port())).replace("{dead2}", str(_free_port()))
    seen = same_for_both(stream, lambda port: [greeting(port) for _ in range(6)])
    assert set(seen) == {"a", "b"}


def test_max_conns_matches_nginx(tcp3: list[TcpNamed]) -> None:
    a, b, _ = (x.port for x in tcp3)
    stream = f"""
stream {{
    upstream back {{
        server 127.0.0.1:{a} max_conns=1;
        server 127.0.0.1:{b} max_conns=2;
    }}
    server {{ listen 127.0.0.1:{{port}}; proxy_pass back; }}
}}
"""

    def probe(port: int) -> list[str]:
        held = [hold(port) for _ in range(3)]
        names = [n for _, n in held]
        names.append(greeting(port))  # every peer is full: closed without a backend
        release(held[0][0])
        names.append(greeting(port))
        for s, _ in held[1:]:
            s.close()
        return names

    seen = same_for_both(stream, probe)
    assert seen[3] == ""


@pytest.mark.parametrize("half_close", ["off", "on"])
def test_half_close_matches_nginx(tcp3: list[TcpNamed], half_close: str) -> None:
    a = tcp3[0].port
    stream = f"""
stream {{
    server {{
        listen 127.0.0.1:{{port}};
        proxy_pass 127.0.0.1:{a};
        proxy_half_close {half_close};
    }}
}}
"""

    def probe(port: int) -> list[str]:
        s, name = hold(port)
        s.shutdown(socket.SHUT_WR)
        rest = b""
        while chunk := s.recv(64):
            rest += chunk
        s.close()
        return [name, rest.decode()]

    seen = same_for_both(stream, probe)
    assert seen == ["a", "bye\n" if half_close == "on" else ""]
