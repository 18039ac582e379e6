"""Worker processes on SO_REUSEPORT sockets, fd passing, and a reload that loses nothing.

The master (this test process) forks the workers; the backend runs in a thread on a
socket bound before the fork; a load thread makes requests on fresh connections while
the master reloads twice. Every request must succeed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable

import uvloop
from test_proxy_support import Backend, make_config

from hakeeper.proxy.config import Peer
from hakeeper.proxy.server import (
    Master,
    bind_listeners,
    recv_listeners,
    send_listeners,
    worker_count,
)


class BackendThread:
    """A loopback backend on its own uvloop in a thread (started after the fork)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.loop = uvloop.new_event_loop()
        self.backend = Backend(keep_bodies=False)
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.backend.server = await self.loop.create_server(
                lambda: __import__("test_proxy_support").BackendConn(self.backend), sock=self.sock
            )
            self.started.set()

        self.loop.run_until_complete(main())
        self.loop.run_forever()

    def start(self) -> None:
        self.thread.start()
        assert self.started.wait(10)

    def stop(self) -> None:
        async def shutdown() -> None:
            await self.backend.stop()

        fut = asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
        fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


# load threads stop when told (stop event) or after this bound, which must outlast two
# reloads on a loaded box (forking workers, waiting for them, draining the old ones)
LOAD_BOUND = 90.0


def _wait(
    cond: Callable[[], bool],
    what: str,
    limit: float = 30.0,
    detail: Callable[[], object] = lambda: "",
) -> None:
    """Wait on a condition with a generous deadline (the box may be loaded)."""
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {detail()}"
        time.sleep(0.01)


def _get(port: int, path: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def test_worker_count() -> None:
    assert worker_count("3") == 3
    assert worker_count(2) == 2
    assert worker_count("auto") == len(os.sched_getaffinity(0))


def test_listeners_share_a_port_and_pass_over_scm_rights() -> None:
    socks = bind_listeners("127.0.0.1", 0, 3)
    try:
        ports = {s.getsockname()[1] for s in socks}
        assert len(ports) == 1
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in socks)
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with a, b:
            send_listeners(a, socks)
            got = recv_listeners(b)
        try:
            assert [g.getsockname() for g in got] == [s.getsockname() for s in socks]
            assert all(g.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for g in got)
        finally:
            for g in got:
                g.close()
    finally:
        for s in socks:
            s.close()


def test_two_workers_serve_and_reload_loses_no_request() -> None:
    backend = BackendThread()
    config = make_config([Peer("127.0.0.1", backend.port)])
    master = Master(config, workers=2)
    master.start()
    backend.start()  # threads only after the fork
    try:
        assert len(master.pids) == 2
        assert b" 200 " in _get(master.port, b"/first")
        results: list[bytes] = []
        failures: list[str] = []
        stop = threading.Event()

        def load() -> None:
            deadline = time.monotonic() + LOAD_BOUND
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    reply = _get(master.port, b"/load")
                except OSError as exc:
                    failures.append(repr(exc))
                    continue
                if b" 200 " not in reply.split(b"\r\n", 1)[0]:
                    failures.append(reply[:80].decode("latin-1"))
                results.append(reply)

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        _wait(lambda: len(results) >= 5, "requests before the reload")
        old = list(master.pids)
        t_reload = time.monotonic()
        master.reload()
        mid = list(master.pids)
        master.reload()
        t_reload = time.monotonic() - t_reload
        seen = len(results)
        _wait(
            lambda: len(results) > max(20, seen + 5),
            "requests after the reloads",
            detail=lambda: (
                f"reloads took {t_reload:.1f} s, {seen} -> {len(results)} answers, "
                f"{sum(t.is_alive() for t in threads)} load threads alive, "
                f"failures {failures[:3]}"
            ),
        )
        stop.set()
        for t in threads:
            t.join(30)
        assert set(old).isdisjoint(mid) and set(mid).isdisjoint(master.pids)
        for pid in old + mid:  # the drained workers have exited
            assert not os.path.exists(f"/proc/{pid}") or _is_zombie_free(pid)
        assert failures == []
        assert len(results) > 20
        assert b" 200 " in _get(master.port, b"/last")
    finally:
        master.stop()
        backend.stop()


def _is_zombie_free(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return True


def _keepalive_client(
    port: int, stop: threading.Event, failures: list[str], tally: list[int]
) -> int:
    """Back-to-back requests on persistent connections; a new connection only after the
    server announced `Connection: close`. Any EOF or reset with a request out is a loss."""
    done = 0
    deadline = time.monotonic() + LOAD_BOUND
    while not stop.is_set() and time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            buf = b""
            while not stop.is_set():
                try:
                    s.sendall(b"GET /ka HTTP/1.1\r\nHost: x\r\n\r\n")
                    while b"\r\n\r\n" not in buf:
                        chunk = s.recv(65536)
                        if not chunk:
                            failures.append("EOF with a request outstanding")
                            return done
                        buf += chunk
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    while len(buf) < length:
                        chunk = s.recv(65536)
                        if not chunk:
                            failures.append("EOF in a body")
                            return done
                        buf += chunk
                    buf = buf[length:]
                except OSError as exc:
                    failures.append(repr(exc))
                    return done
                if b" 200 " not in head.split(b"\r\n", 1)[0]:
                    failures.append(head[:60].decode("latin-1"))
                done += 1
                tally.append(1)
                if b"connection: close" in head.lower():
                    break
    return done


def test_reload_loses_no_keepalive_request() -> None:
    backend = BackendThread()
    config = make_config([Peer("127.0.0.1", backend.port)])
    master = Master(config, workers=2)
    master.start()
    backend.start()
    try:
        stop = threading.Event()
        failures: list[str] = []
        counts: list[int] = []
        tally: list[int] = []
        threads = [
            threading.Thread(
                target=lambda: counts.append(_keepalive_client(master.port, stop, failures, tally))
            )
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        _wait(lambda: len(tally) >= 10, "keep-alive requests before the reload")
        master.reload()
        master.reload()
        seen = len(tally)
        _wait(lambda: len(tally) > max(20, seen + 10), "keep-alive requests after the reloads")
        stop.set()
        for t in threads:
            t.join(30)
        assert failures == []
        assert sum(counts) > 20
    finally:
        master.stop()
        backend.stop()


def _children() -> set[int]:
    """The live child pids of this process (every thread's)."""
    out: set[int] = set()
    for tid in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{tid}/children") as f:
            out.update(int(p) for p in f.read().split())
    return out


def test_a_reload_whose_workers_cannot_start_keeps_the_running_ones() -> None:
    """New workers that die before they are ready: the reload raises, every one of them
    is reaped (none left untracked), and the old workers go on serving."""
    backend = BackendThread()
    good = make_config([Peer("127.0.0.1", backend.port)])
    bad = make_config([Peer("127.0.0.1", backend.port)], server_name="bad")

    def factory(config: object) -> None:
        if config is bad:  # runs in the new worker, before it reports ready
            raise RuntimeError("cannot build the balancer")

    master = Master(good, workers=2, balancer_factory=factory)
    master.start()
    backend.start()  # threads only after the fork
    try:
        running = list(master.pids)
        assert _children() == set(running)
        try:
            master.reload(bad)
        except RuntimeError as exc:
            assert "did not become ready" in str(exc)
        else:
            raise AssertionError("the reload should have failed")
        assert master.pids == running
        assert master.config is good
        assert _children() == set(running)  # the failed batch is reaped
        assert b" 200 " in _get(master.port, b"/after")
    finally:
        master.stop()
        backend.stop()
