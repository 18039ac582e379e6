"""Helpers for the userspace L4 proxy tests: named echo backends on 127.0.0.1 and a uvloop runner.

An `EchoBackend` greets each connection with its name and a newline, echoes every byte back,
and when the client half-closes it answers the SHA-256 of everything it received and closes:
so a client can tell where it landed, check integrity, and see half-close propagation.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Coroutine
from typing import Any, cast

from uvloop_support import (
    run_bounded,
    wait_for,  # noqa: F401  (re-exported for the tests)
)

from hakeeper.dataplane.userspace import Backend, L4Service, UserspaceDataplane

T_LIMIT = 30.0


def run(coro: Coroutine[Any, Any, Any], limit: float = T_LIMIT) -> Any:
    """Run one test coroutine on uvloop, bounded in time; loop-level errors fail the test."""
    return run_bounded(coro, limit)


def refused_port() -> int:
    """A loopback port with nothing listening (bound then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


class _Echo(asyncio.Protocol):
    def __init__(self, backend: EchoBackend) -> None:
        self.backend = backend
        self.hash = hashlib.sha256()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        self.backend.open += 1
        self.backend.accepted += 1
        transport.write(self.backend.name.encode() + b"\n")

    def data_received(self, data: bytes) -> None:
        self.hash.update(data)
        self.transport.write(data)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def eof_received(self) -> bool:
        self.transport.write(self.hash.hexdigest().encode() + b"\n")
        self.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.backend.open -= 1


class EchoBackend:
    """A TCP echo server on 127.0.0.1 that says its name first."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.open = 0
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> EchoBackend:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Echo(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def spec(self) -> Backend:
        return Backend("127.0.0.1", self.port)

    def weighted(self, weight: int) -> Backend:
        return Backend("127.0.0.1", self.port, weight)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


class Client:
    """One client connection through the proxy; `name` is the backend that greeted it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str):
        self.reader = reader
        self.writer = writer
        self.name = name

    async def echo(self, data: bytes) -> bytes:
        self.writer.write(data)
        await self.writer.drain()
        return await self.reader.readexactly(len(data))

    async def finish(self) -> str:
        """Half-close, read the backend's digest line, then the proxy's EOF."""
        self.writer.write_eof()
        line = await self.reader.readline()
        rest = await self.reader.read()
        assert rest == b""
        self.writer.close()
        return line.decode().strip()

    def close(self) -> None:
        self.writer.close()


async def connect(port: int, source: str | None = None) -> Client:
    local = (source, 0) if source else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
    name = (await reader.readline()).decode().strip()
    return Client(reader, writer, name)


async def landed(port: int, source: str | None = None) -> str:
    """Connect, learn the backend's name, close."""
    c = await connect(port, source)
    c.close()
    return c.name


async def proxy(
    backends: list[EchoBackend] | list[Backend], scheduler: str = "rr", **kw: Any
) -> tuple[UserspaceDataplane, L4Service, int]:
    specs = [b.spec if isinstance(b, EchoBackend) else b for b in backends]
    svc = L4Service("127.0.0.1", 0, "TCP", scheduler, tuple(specs), **kw)
    dp = UserspaceDataplane()
    await dp.apply([svc])
    port = dp.sockname(svc.key)[1]
    return dp, svc, port


def counts(dp: UserspaceDataplane) -> dict[str, tuple[int, int]]:
    """backend key -> (active, inactive) of the only service."""
    (st,) = dp.stats()
    return {b.key: (b.active, b.inactive) for b in st.backends}


class NamedUdpEcho(asyncio.DatagramProtocol):
    """Answers each datagram with `name:` + the datagram."""

    def __init__(self, name: str) -> None:
        self.name = name.encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int] | None) -> None:
        self.transport.sendto(self.name + b":" + data, addr)


class UdpClient(asyncio.DatagramProtocol):
    """Queues every datagram it receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int] | None) -> None:
        self.queue.put_nowait(data)


async def udp_echo(name: str) -> tuple[asyncio.DatagramTransport, Backend]:
    """A UDP echo on 127.0.0.1 answering `name:` + each datagram, and its address."""
    loop = asyncio.get_running_loop()
    t, _ = await loop.create_datagram_endpoint(
        lambda: NamedUdpEcho(name), local_addr=("127.0.0.1", 0)
    )
    port = t.get_extra_info("sockname")[1]
    return cast(asyncio.DatagramTransport, t), Backend("127.0.0.1", port)


async def udp_client(port: int) -> tuple[asyncio.DatagramTransport, UdpClient]:
    """A UDP socket connected to 127.0.0.1:`port` (one flow) and its answer queue."""
    loop = asyncio.get_running_loop()
    t, p = await loop.create_datagram_endpoint(UdpClient, remote_addr=("127.0.0.1", port))
    return cast(asyncio.DatagramTransport, t), p
