"""The raw-socket TCP relay (dataplane/relay.py) on loopback: flow control, resets, early bytes.

Complements test_l4proxy_tcp.py (scheduling, counts, half-close) with what the epoll relay
itself must get right: a slow reader bounds what the proxy holds, a reset crosses the proxy
as a reset, bytes past PENDING_LIMIT wait for a backend that connects late, and the per-loop
epoll is released when the last service stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct

from test_l4proxy_support import EchoBackend, connect, counts, proxy, run, wait_for
from uvloop_support import hanging_port

from hakeeper.dataplane import relay
from hakeeper.dataplane.userspace import Backend


class _Flood(asyncio.Protocol):
    """Writes `total` bytes as fast as the peer takes them, then closes."""

    def __init__(self, total: int, sent: list[int]) -> None:
        self.total = total
        self.sent = sent

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        self.paused = False
        self.sent.append(0)
        self._more()

    def _more(self) -> None:
        chunk = b"z" * 65536
        while not self.paused and self.sent[-1] < self.total:
            self.t.write(chunk)  # type: ignore[attr-defined]
            self.sent[-1] += len(chunk)
        if self.sent[-1] >= self.total:
            self.t.write_eof()  # type: ignore[attr-defined]

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._more()


def test_a_client_that_does_not_read_stalls_the_backend_not_the_proxy_memory() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        total = 64 << 20
        sent: list[int] = []
        server = await loop.create_server(lambda: _Flood(total, sent), "127.0.0.1", 0)
        bport = server.sockets[0].getsockname()[1]
        dp, _, port = await proxy([Backend("127.0.0.1", bport)], "rr")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
            writer.transport.pause_reading()  # type: ignore[attr-defined]
            # the backend's writes stop once the socket buffers on the way are full
            await wait_for(lambda: bool(sent) and sent[-1] > 0)
            last = -1
            while sent[-1] != last:
                last = sent[-1]
                await asyncio.sleep(0.2)
            assert sent[-1] < total
            tcp = dp._tcp[next(iter(dp._tcp))]
            (conn,) = tcp.conns
            assert len(conn.to_c) <= relay.BUFFER_SIZE  # the proxy keeps at most one read
            writer.transport.resume_reading()  # type: ignore[attr-defined]
            got = 0
            while chunk := await reader.read(1 << 20):
                got += len(chunk)
            assert got == total
            writer.close()
        finally:
            await dp.close()
            server.close()

    run(main())


def test_a_backend_reset_reaches_the_client_as_a_reset() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        accepted: asyncio.Queue[socket.socket] = asyncio.Queue()
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        lsock.setblocking(False)

        async def acceptor() -> None:
            while True:
                s, _ = await loop.sock_accept(lsock)
                await accepted.put(s)

        task = asyncio.create_task(acceptor())
        dp, _, port = await proxy([Backend("127.0.0.1", lsock.getsockname()[1])], "wlc")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hello")
            s = await asyncio.wait_for(accepted.get(), 5)
            assert await loop.sock_recv(s, 5) == b"hello"
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            try:
                data = await asyncio.wait_for(reader.read(), 5)
            except ConnectionResetError:
                data = None
            assert data is None  # a FIN would have read as b""
            writer.close()
            await wait_for(lambda: all(v == (0, 0) for v in counts(dp).values()))
        finally:
            task.cancel()
            await dp.close()
            lsock.close()

    run(main())


def test_bytes_past_the_pending_limit_wait_for_a_late_backend() -> None:
    async def main() -> None:
        good = await EchoBackend("s0").start()
        async with hanging_port() as stuck_port:  # its handshakes never complete
            dead = Backend("127.0.0.1", stuck_port)
            dp, _, port = await proxy([dead, good.spec], "rr", connect_timeout=0.3)
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                payload = os.urandom(4 * relay.PENDING_LIMIT)
                writer.write(payload)  # all of it before any backend is connected
                writer.write_eof()
                out = await asyncio.wait_for(reader.read(), 10)
                digest = hashlib.sha256(payload).hexdigest().encode()
                assert out == b"s0\n" + payload + digest + b"\n"
                (st,) = dp.stats()
                assert st.backends[0].failed == 1
                assert st.backends[1].bytes_in == len(payload)
                writer.close()
            finally:
                await dp.close()
                good.close()

    run(main())


def test_many_short_connections_in_parallel_leave_nothing_behind() -> None:
    async def main() -> None:
        bs = [await EchoBackend(f"s{i}").start() for i in range(2)]
        dp, _, port = await proxy(bs, "wlc")

        async def one(i: int) -> bytes:
            c = await connect(port)
            c.writer.write(b"%d" % i)
            c.writer.write_eof()
            try:
                return await c.reader.read()
            finally:
                c.close()

        try:
            outs = await asyncio.gather(*(one(i) for i in range(200)))
            for i, out in enumerate(outs):
                body = b"%d" % i
                assert out == body + hashlib.sha256(body).hexdigest().encode() + b"\n"
            await wait_for(lambda: all(v == (0, 0) for v in counts(dp).values()))
            await wait_for(lambda: sum(b.open for b in bs) == 0)
            tcp = dp._tcp[next(iter(dp._tcp))]
            assert not tcp.conns
            reactor = tcp.reactor
            assert set(reactor.handlers) == set()
        finally:
            await dp.close()
            for b in bs:
                b.close()
        assert asyncio.get_running_loop() not in relay._reactors  # epoll released

    run(main())


def test_a_real_server_given_by_name_is_resolved_off_the_loop() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        # "localhost" comes from /etc/hosts: no DNS query leaves the machine
        infos = await loop.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)
        first = infos[0][4][0]  # the relay connects to the first address, like this server

        async def greet(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"named\n")
            await w.drain()
            w.close()

        server = await asyncio.start_server(greet, first, 0)
        port_b = server.sockets[0].getsockname()[1]
        dp, _, port = await proxy([Backend("localhost", port_b)], "rr")
        try:
            c = await connect(port)
            assert c.name == "named"
            c.close()
            (st,) = dp.stats()
            assert st.backends[0].failed == 0
        finally:
            await dp.close()
            server.close()

    run(main())
