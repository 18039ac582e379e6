"""TCP relay of the userspace L4 data plane: raw non-blocking sockets on an edge-triggered epoll.

One `TcpService` per TCP virtual service. Each relayed connection is one small slots object,
`Conn`, holding the client and backend sockets; no transports, protocols, tasks or futures.
Why: with asyncio/uvloop transports (and even with `loop.add_reader`, whose libuv poll
handles cost ~18 epoll_ctl calls per relayed connection), a new-connection-per-request load
ran at about half of HAProxy `mode tcp` per core. Here every socket is registered once, edge
triggered, in one `select.epoll` per event loop (the `Reactor`), whose own descriptor is a
single reader of the asyncio loop; closing a socket removes it from the epoll set for free.

Bytes go `recv_into` a buffer shared by the loop and straight out with `send`; only what the
receiver does not take at once is copied and kept, and reading the sender pauses until that
drained (flow control both ways; an EPOLLOUT edge resumes). Accepts are taken in a batch per
wake-up until EAGAIN; backend connects are non-blocking `connect_ex`, completed by the
EPOLLOUT edge; the connect timeouts of a service share one timer over a heap.

Behaviour is the one keepalived users see from IPVS NAT, plus HAProxy's `redispatch`:
- counts as IPVS shows them: connecting or half-closed = inactive, established = active;
- a failed connect (refused, `connect_timeout`) counts a failure on that real server and the
  connection is scheduled again without it (`ServiceCore.may_retry` may stop that);
- half-close propagates (EOF from one side becomes `shutdown(SHUT_WR)` on the other once the
  bytes before it are delivered); the pair closes when both directions ended;
- a reset or error on one side resets the other (SO_LINGER 0 then close); a client turned
  away (no usable server) is closed with a FIN.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import errno
import functools
import heapq
import logging
import select
import socket
import struct
import weakref
from collections.abc import Callable
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hakeeper.dataplane.userspace import BackendState, L4Service, ServiceCore

log = logging.getLogger(__name__)

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
LISTEN_BACKLOG = 1024
#: Accepts per listener wake-up before yielding to the other callbacks of the loop.
ACCEPT_BATCH = 64
#: epoll events handled per reactor wake-up (the rest come at the next loop iteration).
EVENT_BATCH = 512
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
#: Backend sockets are created non-blocking (no extra ioctl); accepted client sockets stay
#: blocking at the descriptor level (Python's accept cannot ask for SOCK_NONBLOCK) and are
#: therefore only ever read and written with MSG_DONTWAIT: one syscall less per connection.
_STREAM_NB = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
_DONTWAIT = socket.MSG_DONTWAIT
_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR
_HUP = select.EPOLLHUP
_RDHUP = select.EPOLLRDHUP
#: Registered once per socket: input, output, peer shutdown, edge triggered.
_MASK = _IN | _OUT | _RDHUP | select.EPOLLET
#: Client sockets start without EPOLLOUT (it would only report the fresh socket writable: one
#: wasted dispatch per connection); it is added the first time the client is slower than us.
_MASK_IN = _IN | _RDHUP | select.EPOLLET
#: Event bits after which reading must go on until EOF/EAGAIN (a FIN or error is queued).
_DRAIN = _RDHUP | _HUP | _ERR

# Conn.flags bits
CONNECTING = 1  # backend connect in progress
CONNECTED = 2  # backend socket connected
C_EOF = 4  # client sent EOF
B_EOF = 8  # backend sent EOF
C_SHUT = 16  # EOF forwarded to the client (shutdown SHUT_WR done)
B_SHUT = 32  # EOF forwarded to the backend
CLOSED = 64
C_HELD = 128  # client reading stopped with data possibly unread (backend slow/connecting)
B_HELD = 256  # backend reading stopped with data possibly unread (client slow)
C_OUT = 512  # EPOLLOUT is in the client socket's registration


@functools.lru_cache(maxsize=4096)
def _family(host: str) -> int:
    """AF_INET / AF_INET6 for an address literal, 0 for a name (resolved off the loop)."""
    try:
        return _AF_INET6 if ip_address(host.partition("%")[0]).version == 6 else _AF_INET
    except ValueError:
        return 0


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


class Reactor:
    """One edge-triggered epoll per event loop, itself one reader of that loop.

    `handlers` maps a registered descriptor to its callback (called with the event bits);
    a descriptor is dropped from `handlers` before its socket is closed, so a stale event
    of a closed socket finds no handler.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop_ref = weakref.ref(loop)  # weak: the reactor table is keyed by the loop
        self.ep = select.epoll()
        self.handlers: dict[int, Callable[[int], None]] = {}
        self.users = 0
        self.buf = bytearray(BUFFER_SIZE)
        self.view = memoryview(self.buf)
        loop.add_reader(self.ep.fileno(), self.poll)

    def poll(self) -> None:
        handlers = self.handlers
        for fd, ev in self.ep.poll(0, EVENT_BATCH):
            h = handlers.get(fd)
            if h is None:
                continue
            try:
                h(ev)
            except Exception:  # a bug must cost one connection, never the loop
                log.exception("relay: event handler failed")

    def close(self) -> None:
        loop = self.loop_ref()
        if loop is not None:
            with contextlib.suppress(Exception):  # the loop may be closed already
                loop.remove_reader(self.ep.fileno())
        self.ep.close()


_reactors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Reactor] = (
    weakref.WeakKeyDictionary()
)


def _acquire(loop: asyncio.AbstractEventLoop) -> Reactor:
    r = _reactors.get(loop)
    if r is None:
        _reactors[loop] = r = Reactor(loop)
    r.users += 1
    return r


def _release(r: Reactor) -> None:
    r.users -= 1
    loop = r.loop_ref()
    if r.users <= 0 and loop is not None and _reactors.get(loop) is r:
        del _reactors[loop]
        r.close()


class Conn:
    """One relayed client connection and (once scheduled) its backend connection."""

    __slots__ = (
        "attempt",
        "backend",
        "bfd",
        "bs",
        "cfd",
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

    def __init__(self, svc: TcpService, cs: _socket.socket, fd: int, peer: tuple[str, int]) -> None:
        self.svc = svc
        self.cs = cs
        self.cfd = fd
        self.peer = peer
        self.bs: _socket.socket | None = None
        self.bfd = -1
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
        while not self.flags & CLOSED:
            tried = self.tried
            b = core.pick(self.peer, svc.loop.time(), tried if tried is not None else frozenset())
            if b is None:
                log.warning("%s: no real server available", svc.name)
                self.close()
                return
            self.backend = b
            self._count(2)
            if core.persistence is not None:
                core.persistence.connection_opened(ip_address(self.peer[0]))
            host, port = b.addr
            family = _family(host)
            if not family:  # a name (nginx stream servers may be names): resolve off the loop
                task = svc.loop.create_task(self._resolve(host, port))
                svc.tasks.add(task)
                task.add_done_callback(svc.tasks.discard)
                return
            if not self._open(family, (host, port)):
                return

    def _open(self, family: int, addr: tuple[Any, ...]) -> bool:
        """Start the non-blocking connect to `addr`; True when it failed at once and another
        server may be tried."""
        svc = self.svc
        try:
            bs = _socket.socket(family, _STREAM_NB, 0)
        except OSError as e:  # out of descriptors: this connection cannot be served
            log.warning("%s: backend socket: %s", svc.name, e)
            self.reset()
            return False
        bs.setsockopt(_SOL_TCP, _NODELAY, 1)
        err = bs.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS):
            bs.close()
            return self.connect_failed(OSError(err, errno.errorcode.get(err, str(err))))
        self.bs = bs
        self.bfd = fd = bs.fileno()
        svc.reactor.handlers[fd] = self.on_backend
        svc.reactor.ep.register(fd, _MASK)
        if err == 0:
            self.connected()
        else:
            self.flags |= CONNECTING
            self.attempt += 1
            svc.watch_connect(self)
        return False

    async def _resolve(self, host: str, port: int) -> None:
        """Connect to a real server given by name: its first address (getaddrinfo order)."""
        try:
            infos = await self.svc.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, addr = infos[0][0], infos[0][4]
        except OSError as e:  # gaierror included: a failed connect to that server
            if not self.flags & CLOSED and self.connect_failed(e):
                self.connect()
            return
        if not self.flags & CLOSED and self._open(family, addr):
            self.connect()

    def connect_failed(self, e: OSError | None) -> bool:
        """Count the failure on the real server; True when another server may be tried."""
        svc = self.svc
        core = svc.core
        b = self.backend
        assert b is not None
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

    def _drop_backend(self) -> None:
        """Close a backend socket whose connect failed (the client stays)."""
        self.flags &= ~CONNECTING
        self.attempt += 1
        if self.bs is not None:
            self.svc.reactor.handlers.pop(self.bfd, None)
            self.bs.close()
            self.bs = None
            self.bfd = -1

    def connect_timeout(self) -> None:
        """The service's timeout heap says this connect took longer than connect_timeout."""
        self._drop_backend()
        if self.connect_failed(None):
            self.connect()

    def connected(self) -> None:
        flags = self.flags = (self.flags | CONNECTED) & ~CONNECTING
        self.attempt += 1
        self._count(2 if flags & C_EOF else 1)
        if self.to_b:
            self.backend.bytes_in += len(self.to_b)  # type: ignore[union-attr]
            self._flush_b()
        elif flags & C_EOF:
            self._shut_b()
        elif flags & C_HELD:
            self.flags &= ~C_HELD
            self._read_client(True)

    # -- events
    def on_client(self, ev: int) -> None:
        if ev & _OUT and self.to_c:
            self._flush_c()
        if ev & (_IN | _DRAIN) and not self.flags & (C_EOF | CLOSED):
            self._read_client(bool(ev & _DRAIN))

    def on_backend(self, ev: int) -> None:
        flags = self.flags
        if flags & CONNECTING:
            if ev & (_ERR | _HUP):
                err = self.bs.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # type: ignore[union-attr]
                self._drop_backend()
                if self.connect_failed(OSError(err, errno.errorcode.get(err, str(err)))):
                    # later: a new socket may reuse a descriptor still in this event batch
                    self.svc.loop.call_soon(self.connect)
                return
            if not ev & _OUT:
                return
            self.connected()
            if self.flags & CLOSED:
                return
        if ev & _OUT and self.to_b:
            self._flush_b()
        if ev & (_IN | _DRAIN) and not self.flags & (B_EOF | CLOSED):
            self._read_backend(bool(ev & _DRAIN))

    # -- relay
    def _read_client(self, drain: bool) -> None:
        """Read the client until EAGAIN (or one short read when no FIN/error is queued)."""
        reactor = self.svc.reactor
        buf = reactor.buf
        view = reactor.view
        cs = self.cs
        while True:
            flags = self.flags
            if flags & CLOSED:
                return
            if (not flags & CONNECTED and len(self.to_b) > PENDING_LIMIT) or (
                flags & CONNECTED and self.to_b
            ):
                self.flags = flags | C_HELD  # resumed when to_b drained
                return
            try:
                n = cs.recv_into(buf, 0, _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.reset()
                return
            if n == 0:
                self._client_eof()
                return
            if not flags & CONNECTED:  # keep early bytes until the backend is there
                self.to_b += view[:n]
            else:
                self.backend.bytes_in += n  # type: ignore[union-attr]
                try:
                    sent = self.bs.send(view[:n])  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    self.reset()
                    return
                if sent < n:  # the backend is slower: keep the rest; EPOLLOUT resumes
                    self.to_b = view[sent:n].tobytes()
            if n < BUFFER_SIZE and not drain:
                return

    def _read_backend(self, drain: bool) -> None:
        """Read the backend until EAGAIN (or one short read when no FIN/error is queued)."""
        reactor = self.svc.reactor
        buf = reactor.buf
        view = reactor.view
        bs = self.bs
        assert bs is not None
        while True:
            flags = self.flags
            if flags & CLOSED:
                return
            if self.to_c:
                self.flags = flags | B_HELD
                return
            try:
                n = bs.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.reset()
                return
            if n == 0:
                self._backend_eof()
                return
            self.backend.bytes_out += n  # type: ignore[union-attr]
            try:
                sent = self.cs.send(view[:n], _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.reset()
                return
            if sent < n:  # the client is slower: keep the rest; EPOLLOUT resumes
                self.to_c = view[sent:n].tobytes()
                if not self.flags & C_OUT:
                    self.flags |= C_OUT
                    reactor.ep.modify(self.cfd, _MASK)  # reports at once if writable now
            if n < BUFFER_SIZE and not drain:
                return

    def _send(self, sock: _socket.socket, data: bytes) -> bytes | None:
        """Send what `sock` takes of `data` now: the rest, or None once reset on an error."""
        try:
            sent = sock.send(data, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return data
        except OSError:
            self.reset()
            return None
        return data[sent:]

    def _flush_b(self) -> None:
        """Send what waits for the backend; once it is all gone, go on reading the client."""
        rest = self._send(self.bs, self.to_b)  # type: ignore[arg-type]
        if rest is None:
            return
        self.to_b = rest
        if rest:
            return
        flags = self.flags
        if flags & C_EOF:
            self._shut_b()
        elif flags & C_HELD:
            self.flags = flags & ~C_HELD
            self._read_client(True)

    def _flush_c(self) -> None:
        """Send what waits for the client; once it is all gone, go on reading the backend."""
        rest = self._send(self.cs, self.to_c)
        if rest is None:
            return
        self.to_c = rest
        if rest:
            return
        flags = self.flags
        if flags & B_EOF:
            self._shut_c()
        elif flags & B_HELD:
            self.flags = flags & ~B_HELD
            self._read_backend(True)

    def _client_eof(self) -> None:
        flags = self.flags = self.flags | C_EOF
        if flags & CONNECTED:
            self._count(2)
            if not self.to_b:
                self._shut_b()

    def _backend_eof(self) -> None:
        self.flags |= B_EOF
        self._count(2)
        if not self.to_c:
            self._shut_c()

    def _shut_b(self) -> None:
        self._shut(self.bs, B_SHUT, C_SHUT)  # type: ignore[arg-type]

    def _shut_c(self) -> None:
        self._shut(self.cs, C_SHUT, B_SHUT)

    def _shut(self, sock: _socket.socket, mine: int, other: int) -> None:
        """Pass an EOF on as SHUT_WR on `sock`; close when `other` direction already ended
        or the service does not half-close."""
        if self.flags & other or not self.svc.half_close:
            self.close()
            return
        self.flags |= mine
        try:
            sock.shutdown(_SHUT_WR)
        except OSError:
            self.reset()

    # -- teardown
    def _teardown(self, linger: bytes | None) -> None:
        self.flags = (self.flags | CLOSED) & ~CONNECTING
        handlers = self.svc.reactor.handlers
        handlers.pop(self.cfd, None)
        for s in (self.cs, self.bs):
            if s is None:
                continue
            if linger is not None:
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            s.close()  # also leaves the epoll set
        if self.bs is not None:
            handlers.pop(self.bfd, None)
        self._release()
        self.svc.conns.discard(self)

    def close(self) -> None:
        """Close both sockets with a FIN: both directions ended (all bytes delivered), or
        the client is turned away (no usable server)."""
        if not self.flags & CLOSED:
            self._teardown(None)

    def reset(self) -> None:
        """An error or reset on one side (or no descriptor left): reset both sides."""
        if not self.flags & CLOSED:
            self._teardown(_LINGER_RESET)


class TcpService:
    """One TCP listener and the connections it relays."""

    #: False: the first EOF (once the bytes before it are delivered) closes both sides, as
    #: nginx's stream proxy does without `proxy_half_close on` (hakeeper.proxy.stream).
    half_close = True

    def __init__(self, core: ServiceCore, loop: asyncio.AbstractEventLoop) -> None:
        self.core = core
        self.loop = loop
        self.name = f"{core.spec.host}:{core.spec.port}/tcp"
        self.conns: set[Conn] = set()
        self.sock: socket.socket | None = None
        self.sockname: tuple[str, int] = (core.spec.host, core.spec.port)
        self.reactor: Reactor = None  # type: ignore[assignment]  # set by start()
        self._connects: list[tuple[float, int, int, Conn]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._backoff: asyncio.TimerHandle | None = None
        #: name resolutions in flight (real servers given by name)
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def clients(self) -> set[Conn]:
        """The relayed connections (name kept from the transport-based relay)."""
        return self.conns

    async def start(self) -> None:
        sock = open_listener(self.core.spec, socket.SOCK_STREAM)
        self.sock = sock
        self.sockname = sock.getsockname()[:2]
        self.name = f"{self.sockname[0]}:{self.sockname[1]}/tcp"
        self.reactor = _acquire(self.loop)
        self.loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        lsock = self.sock
        if lsock is None:
            return
        conns = self.conns
        family = lsock.family
        reactor = self.reactor
        handlers = reactor.handlers
        register = reactor.ep.register
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
            # the bare C socket object (socket.socket's Python wrapper costs per connection);
            # the type flag only tells Python "never wait": I/O on it uses MSG_DONTWAIT
            cs = _socket.socket(family, _STREAM_NB, 0, fd)
            cs.setsockopt(_SOL_TCP, _NODELAY, 1)
            conn = Conn(self, cs, fd, peer)
            conns.add(conn)
            handlers[fd] = conn.on_client
            register(fd, _MASK_IN)
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
            if self.reactor is not None:
                _release(self.reactor)
                self.reactor = None  # type: ignore[assignment]


__all__ = ["LISTEN_BACKLOG", "PENDING_LIMIT", "Conn", "Reactor", "TcpService", "open_listener"]
