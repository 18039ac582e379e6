"""TCP relay of the userspace L4 data plane: raw non-blocking sockets driven by loop readers.

One `TcpService` per TCP virtual service. Instead of asyncio transports and protocols (two
transports, two protocols, a task and a future per connection, which cap a new-connection-
per-request load at about half of HAProxy `mode tcp`), each relayed connection is one small
slots object, `Conn`, holding the two sockets. The loop's `add_reader`/`add_writer` call its
methods; bytes go `recv_into` a buffer shared by the whole loop and straight out with `send`,
and only what the receiver does not take at once is copied and kept (reading the sender
pauses until it drained: flow control both ways). Accepts are taken in a batch per wake-up
until EAGAIN; backend connects are non-blocking `connect_ex` + a writer for completion; the
connect timeouts of a service share one timer over a heap instead of a timer per connection.

Behaviour is the one keepalived users see from IPVS NAT, plus HAProxy's `redispatch`:
- counts as IPVS shows them: connecting or half-closed = inactive, established = active;
- a failed connect (refused, `connect_timeout`) counts a failure on that real server and the
  connection is scheduled again without it (`ServiceCore.may_retry` may stop that);
- half-close propagates (EOF from one side becomes `shutdown(SHUT_WR)` on the other once the
  bytes before it are delivered); the pair closes when both directions ended;
- a reset or error on one side resets the other (SO_LINGER 0 then close).
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import errno
import heapq
import logging
import socket
import struct
from ipaddress import ip_address
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hakeeper.dataplane.userspace import BackendState, L4Service, ServiceCore

log = logging.getLogger(__name__)

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
LISTEN_BACKLOG = 1024
#: Accepts per listener wake-up before yielding to the other callbacks of the loop.
ACCEPT_BATCH = 64
#: Client bytes kept while the backend connection is being set up before reading pauses.
PENDING_LIMIT = 256 * 1024
#: One receive buffer for every relayed connection of the loop (callbacks never overlap).
BUFFER_SIZE = 256 * 1024
#: Seconds the listener rests after accept() failed for lack of descriptors/memory.
ACCEPT_BACKOFF = 0.1
_LINGER_RESET = struct.pack("ii", 1, 0)
_ACCEPT_RETRY = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_SOL_TCP = socket.IPPROTO_TCP
_NODELAY = socket.TCP_NODELAY
_SHUT_WR = socket.SHUT_WR
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_STREAM = socket.SOCK_STREAM

# Conn.flags bits
CONNECTING = 1  # backend connect in progress
CONNECTED = 2  # backend socket connected
C_EOF = 4  # client sent EOF (after its bytes were queued to the backend)
B_EOF = 8  # backend sent EOF
C_SHUT = 16  # EOF forwarded to the client (shutdown SHUT_WR done)
B_SHUT = 32  # EOF forwarded to the backend
CLOSED = 64
C_READ = 128  # reader registered on the client socket
B_READ = 256  # reader registered on the backend socket
C_WRITE = 512  # writer registered on the client socket (bytes waiting for it)
B_WRITE = 1024  # writer registered on the backend socket (bytes waiting or connecting)
PAUSED = 2048  # client reading paused while connecting (PENDING_LIMIT)


def open_listener(spec: L4Service, kind: int) -> socket.socket:
    """A bound (and for TCP listening) socket; IP_FREEBIND lets a BACKUP pre-bind the VIP."""
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if spec.freebind:
            level = socket.IPPROTO_IPV6 if family == socket.AF_INET6 else socket.IPPROTO_IP
            with contextlib.suppress(OSError):  # kernels without IPv6 freebind
                sock.setsockopt(level, IP_FREEBIND, 1)
        sock.bind((spec.host, spec.port))
        if kind == socket.SOCK_STREAM:
            sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Conn:
    """One relayed client connection and (once scheduled) its backend connection."""

    __slots__ = (
        "attempt",
        "backend",
        "bs",
        "counted",
        "cs",
        "flags",
        "peer",
        "started",
        "svc",
        "to_b",
        "to_c",
        "tried",
    )

    def __init__(self, svc: TcpService, cs: _socket.socket, peer: tuple[str, int]) -> None:
        self.svc = svc
        self.cs = cs
        self.peer = peer
        self.bs: _socket.socket | None = None
        self.backend: BackendState | None = None
        self.flags = 0
        self.counted = 0  # 0 none, 1 active, 2 inactive
        self.to_b = b""  # bytes waiting for the backend (or for its connect)
        self.to_c = b""  # bytes waiting for the client
        self.tried: set[str] | None = None
        self.attempt = 0
        self.started = 0.0

    # -- accounting (IPVS: ESTABLISHED = active, everything else = inactive)
    def _count(self, state: int) -> None:
        b = self.backend
        if b is None or state == self.counted:
            return
        if self.counted == 1:
            b.active -= 1
        elif self.counted == 2:
            b.inactive -= 1
        if state == 1:
            b.active += 1
        elif state == 2:
            b.inactive += 1
        self.counted = state

    def _release(self, failed: bool = False) -> None:
        """Forget the scheduled backend's counts and its persistence hold."""
        b = self.backend
        if b is None:
            return
        self._count(0)
        svc = self.svc
        core = svc.core
        if core.hooks:
            core.released(b, failed, svc.loop.time())
        if core.persistence is not None:
            core.persistence.connection_closed(ip_address(self.peer[0]), svc.loop.time())
        self.backend = None

    # -- scheduling and connecting
    def connect(self) -> None:
        """Schedule onto a real server and start the non-blocking connect."""
        svc = self.svc
        core = svc.core
        loop = svc.loop
        while not self.flags & CLOSED:
            tried = self.tried
            b = core.pick(self.peer, loop.time(), tried if tried is not None else frozenset())
            if b is None:
                log.warning("%s: no real server available", svc.name)
                self.close()
                return
            self.backend = b
            self._count(2)
            if core.persistence is not None:
                core.persistence.connection_opened(ip_address(self.peer[0]))
            host, port = b.addr
            try:
                bs = _socket.socket(_AF_INET6 if ":" in host else _AF_INET, _STREAM, 0)
            except OSError as e:  # out of descriptors: this connection cannot be served
                log.warning("%s: backend socket: %s", svc.name, e)
                self.reset()
                return
            bs.setblocking(False)
            bs.setsockopt(_SOL_TCP, _NODELAY, 1)
            self.bs = bs
            err = bs.connect_ex((host, port))
            if err == errno.EINPROGRESS:
                self.flags |= CONNECTING | B_WRITE
                self.attempt += 1
                loop.add_writer(bs.fileno(), self.connect_done)
                svc.watch_connect(self)
                return
            if err == 0:
                self.connected()
                return
            if not self.connect_failed(OSError(err, errno.errorcode.get(err, str(err)))):
                return

    def connect_done(self) -> None:
        """Writer callback: the backend connect completed or failed."""
        bs = self.bs
        assert bs is not None
        self.svc.loop.remove_writer(bs.fileno())
        self.flags &= ~(CONNECTING | B_WRITE)
        self.attempt += 1
        err = bs.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err == 0:
            self.connected()
        elif self.connect_failed(OSError(err, errno.errorcode.get(err, str(err)))):
            self.connect()

    def connect_timeout(self) -> None:
        """The service's timeout heap says this connect took longer than connect_timeout."""
        self.flags &= ~CONNECTING
        self.attempt += 1
        if self.flags & B_WRITE and self.bs is not None:
            self.svc.loop.remove_writer(self.bs.fileno())
            self.flags &= ~B_WRITE
        if self.connect_failed(None):
            self.connect()

    def connect_failed(self, e: OSError | None) -> bool:
        """Count the failure and close that socket; True when another server may be tried."""
        svc = self.svc
        core = svc.core
        b = self.backend
        assert b is not None
        bs = self.bs
        if bs is not None:
            bs.close()
            self.bs = None
        b.failed += 1
        tried = self.tried
        if tried is None:
            self.tried = tried = set()
            self.started = svc.loop.time()
        tried.add(b.key)
        self._release(failed=True)
        if core.persistence is not None:
            core.forget_pin(self.peer)
        log.info("%s: connect to %s failed: %s", svc.name, b.key, e or "timed out")
        if core.hooks and not core.may_retry(len(tried), self.started, svc.loop.time()):
            self.close()
            return False
        return True

    def connected(self) -> None:
        bs = self.bs
        assert bs is not None
        loop = self.svc.loop
        flags = self.flags | CONNECTED
        self.flags = flags | B_READ
        loop.add_reader(bs.fileno(), self.backend_readable)
        self._count(2 if flags & C_EOF else 1)
        if self.to_b:
            self.backend.bytes_in += len(self.to_b)  # type: ignore[union-attr]
            self._flush_b()
        elif flags & C_EOF:
            self._shut_b()
        if self.flags & PAUSED:
            self.flags &= ~PAUSED
            if not self.flags & (C_EOF | B_WRITE | CLOSED):
                self.flags |= C_READ
                loop.add_reader(self.cs.fileno(), self.client_readable)

    # -- relay
    def client_readable(self) -> None:
        svc = self.svc
        try:
            n = self.cs.recv_into(svc.buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.reset()
            return
        loop = svc.loop
        flags = self.flags
        if n == 0:
            self.flags = flags = (flags | C_EOF) & ~C_READ
            loop.remove_reader(self.cs.fileno())
            if flags & CONNECTED:
                self._count(2)
                if not self.to_b:
                    self._shut_b()
            return
        if not flags & CONNECTED:  # keep early bytes until the backend is there
            self.to_b += svc.view[:n]
            if len(self.to_b) > PENDING_LIMIT:
                self.flags = (flags | PAUSED) & ~C_READ
                loop.remove_reader(self.cs.fileno())
            return
        self.backend.bytes_in += n  # type: ignore[union-attr]
        bs = self.bs
        try:
            sent = bs.send(svc.view[:n])  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.reset()
            return
        if sent < n:  # the backend is slower: keep the rest, pause the client
            self.to_b = svc.view[sent:n].tobytes()
            self.flags = (flags | B_WRITE) & ~C_READ
            loop.remove_reader(self.cs.fileno())
            loop.add_writer(bs.fileno(), self.backend_writable)  # type: ignore[union-attr]

    def backend_readable(self) -> None:
        svc = self.svc
        bs = self.bs
        try:
            n = bs.recv_into(svc.buf)  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.reset()
            return
        loop = svc.loop
        flags = self.flags
        if n == 0:
            self.flags = flags = (flags | B_EOF) & ~B_READ
            loop.remove_reader(bs.fileno())  # type: ignore[union-attr]
            self._count(2)
            if not self.to_c:
                self._shut_c()
            return
        self.backend.bytes_out += n  # type: ignore[union-attr]
        cs = self.cs
        try:
            sent = cs.send(svc.view[:n])
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.reset()
            return
        if sent < n:  # the client is slower: keep the rest, pause the backend
            self.to_c = svc.view[sent:n].tobytes()
            self.flags = (flags | C_WRITE) & ~B_READ
            loop.remove_reader(bs.fileno())  # type: ignore[union-attr]
            loop.add_writer(cs.fileno(), self.client_writable)

    def backend_writable(self) -> None:
        self._flush_b()

    def client_writable(self) -> None:
        try:
            sent = self.cs.send(self.to_c)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.reset()
            return
        self.to_c = self.to_c[sent:]
        if self.to_c:
            return
        loop = self.svc.loop
        self.flags &= ~C_WRITE
        loop.remove_writer(self.cs.fileno())
        if self.flags & B_EOF:
            self._shut_c()
        else:
            self.flags |= B_READ
            loop.add_reader(self.bs.fileno(), self.backend_readable)  # type: ignore[union-attr]

    def _flush_b(self) -> None:
        """Send what waits for the backend; a writer stays registered until it is all gone."""
        bs = self.bs
        assert bs is not None
        try:
            sent = bs.send(self.to_b)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.reset()
            return
        self.to_b = self.to_b[sent:]
        loop = self.svc.loop
        flags = self.flags
        if self.to_b:
            if not flags & B_WRITE:
                self.flags = flags | B_WRITE
                loop.add_writer(bs.fileno(), self.backend_writable)
            if flags & C_READ:
                self.flags &= ~C_READ
                loop.remove_reader(self.cs.fileno())
            return
        if flags & B_WRITE:
            self.flags = flags = flags & ~B_WRITE
            loop.remove_writer(bs.fileno())
        if flags & C_EOF:
            self._shut_b()
        elif not flags & (C_READ | PAUSED):
            self.flags = flags | C_READ
            loop.add_reader(self.cs.fileno(), self.client_readable)

    def _shut_b(self) -> None:
        if self.flags & C_SHUT:  # the last direction: close() sends this FIN
            self.close()
            return
        self.flags |= B_SHUT
        try:
            self.bs.shutdown(_SHUT_WR)  # type: ignore[union-attr]
        except OSError:
            self.reset()

    def _shut_c(self) -> None:
        if self.flags & B_SHUT:  # the last direction: close() sends this FIN
            self.close()
            return
        self.flags |= C_SHUT
        try:
            self.cs.shutdown(_SHUT_WR)
        except OSError:
            self.reset()

    # -- teardown
    def _unregister(self) -> None:
        loop = self.svc.loop
        flags = self.flags
        if flags & (C_READ | C_WRITE):
            fd = self.cs.fileno()
            if flags & C_READ:
                loop.remove_reader(fd)
            if flags & C_WRITE:
                loop.remove_writer(fd)
        bs = self.bs
        if bs is not None and flags & (B_READ | B_WRITE):
            fd = bs.fileno()
            if flags & B_READ:
                loop.remove_reader(fd)
            if flags & B_WRITE:
                loop.remove_writer(fd)
        self.flags = (flags | CLOSED) & ~(C_READ | C_WRITE | B_READ | B_WRITE | CONNECTING)

    def close(self) -> None:
        """Close both sockets with a FIN: both directions ended (all bytes delivered), or
        the client is turned away (no usable server)."""
        if self.flags & CLOSED:
            return
        self._unregister()
        self.cs.close()
        if self.bs is not None:
            self.bs.close()
        self._release()
        self.svc.conns.discard(self)

    def reset(self) -> None:
        """An error or reset on one side (or no server): reset both (SO_LINGER 0, close)."""
        if self.flags & CLOSED:
            return
        self._unregister()
        for s in (self.cs, self.bs):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                s.close()
        self._release()
        self.svc.conns.discard(self)


class TcpService:
    """One TCP listener and the connections it relays."""

    def __init__(self, core: ServiceCore, loop: asyncio.AbstractEventLoop) -> None:
        self.core = core
        self.loop = loop
        self.name = f"{core.spec.host}:{core.spec.port}/tcp"
        self.conns: set[Conn] = set()
        self.sock: socket.socket | None = None
        self.sockname: tuple[str, int] = (core.spec.host, core.spec.port)
        self.buf = bytearray(BUFFER_SIZE)
        self.view = memoryview(self.buf)
        self._connects: list[tuple[float, int, int, Conn]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._backoff: asyncio.TimerHandle | None = None

    @property
    def clients(self) -> set[Conn]:
        """The relayed connections (name kept from the transport-based relay)."""
        return self.conns

    async def start(self) -> None:
        sock = open_listener(self.core.spec, socket.SOCK_STREAM)
        self.sock = sock
        self.sockname = sock.getsockname()[:2]
        self.name = f"{self.sockname[0]}:{self.sockname[1]}/tcp"
        self.loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        lsock = self.sock
        if lsock is None:
            return
        conns = self.conns
        family = lsock.family
        for _ in range(ACCEPT_BATCH):
            try:
                fd, peer = lsock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _ACCEPT_RETRY:  # rest instead of spinning on a full fd table
                    log.warning("%s: accept: %s", self.name, e)
                    self.loop.remove_reader(lsock.fileno())
                    self._backoff = self.loop.call_later(ACCEPT_BACKOFF, self._resume_accept)
                    return
                continue  # ECONNABORTED and friends: that one client is gone
            # the bare C socket object: socket.socket's Python wrapper costs per connection
            cs = _socket.socket(family, _STREAM, 0, fd)
            cs.setblocking(False)
            cs.setsockopt(_SOL_TCP, _NODELAY, 1)
            conn = Conn(self, cs, peer)
            conns.add(conn)
            conn.flags = C_READ
            self.loop.add_reader(cs.fileno(), conn.client_readable)
            conn.connect()

    def _resume_accept(self) -> None:
        self._backoff = None
        if self.sock is not None:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    # -- connect timeouts: one heap and one timer per service
    def watch_connect(self, conn: Conn) -> None:
        deadline = self.loop.time() + self.core.spec.connect_timeout
        self._seq += 1
        heapq.heappush(self._connects, (deadline, self._seq, conn.attempt, conn))
        if self._timer is None or deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._expire_connects)

    def _expire_connects(self) -> None:
        self._timer = None
        heap = self._connects
        now = self.loop.time()
        while heap and heap[0][0] <= now:
            _, _, attempt, conn = heapq.heappop(heap)
            if conn.attempt == attempt and conn.flags & CONNECTING:
                conn.connect_timeout()
        if heap:
            self._timer_at = heap[0][0]
            self._timer = self.loop.call_at(self._timer_at, self._expire_connects)

    async def stop(self, *, drop: bool = False) -> None:
        """Stop accepting; with `drop`, also reset the relayed connections."""
        if self._backoff is not None:
            self._backoff.cancel()
            self._backoff = None
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        if drop:
            for c in list(self.conns):
                c.reset()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._connects.clear()


__all__ = ["LISTEN_BACKLOG", "PENDING_LIMIT", "Conn", "TcpService", "open_listener"]
