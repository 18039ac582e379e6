"""UDP half of the userspace L4 data plane: per-client flows relayed to a scheduled real server.

Follows IPVS' UDP handling where it is observable: the first datagram from a client address
schedules a flow onto one real server, later datagrams of that address (and the server's
answers) follow it until the flow has been idle for `udp_idle_timeout` seconds (IPVS' UDP
timeout, 300 s by default); a flow counts as an *inactive* connection of its server, as
`ipvsadm -L` shows UDP flows. Each flow has its own connected socket towards the server, so
answers are matched to the client by socket, not by parsing. Datagrams that arrive while
the flow's socket is being set up are queued (bounded) and sent in order once it is ready.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from collections.abc import Callable

    from hakeeper.dataplane.userspace import BackendState, ServiceCore

log = logging.getLogger(__name__)

#: Datagrams kept per flow while its backend socket is being created (beyond: dropped).
MAX_PENDING = 64


class _BackendEndpoint(asyncio.DatagramProtocol):
    """The flow's connected socket to its real server: answers go back to the client."""

    __slots__ = ("flow",)

    def __init__(self, flow: UdpFlow) -> None:
        self.flow = flow

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int] | None) -> None:
        self.flow.from_backend(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port/host unreachable from the real server: count it; IPVS keeps the flow.
        self.flow.backend.failed += 1
        log.debug("udp flow %s -> %s: %s", self.flow.client, self.flow.backend.key, exc)


class UdpFlow:
    """One client address bound to one real server until it goes idle."""

    __slots__ = (
        "backend",
        "client",
        "closed",
        "last_seen",
        "pending",
        "service",
        "timer",
        "transport",
    )

    def __init__(self, service: UdpService, client: tuple[str, int], backend: BackendState):
        self.service = service
        self.client = client
        self.backend = backend
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] | None = []
        self.closed = False
        self.last_seen = service.loop.time()
        self.timer: asyncio.TimerHandle | None = None
        backend.inactive += 1

    async def open(self) -> None:
        loop = self.service.loop
        b = self.backend
        family = socket.AF_INET6 if ":" in b.addr[0] else socket.AF_INET
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _BackendEndpoint(self), remote_addr=b.addr, family=family
            )
        except OSError as e:
            b.failed += 1
            log.info("%s: udp socket to %s failed: %s", self.service.name, b.key, e)
            self.close()
            return
        if self.closed:
            transport.close()
            return
        self.transport = transport
        pending, self.pending = self.pending, None
        for data in pending or ():
            transport.sendto(data)
        self._arm()

    def _arm(self) -> None:
        idle = self.service.core.spec.udp_idle_timeout
        self.timer = self.service.loop.call_at(self.last_seen + idle, self._check_idle)

    def _check_idle(self) -> None:
        self.timer = None
        if self.closed:
            return
        idle = self.service.core.spec.udp_idle_timeout
        if self.service.loop.time() >= self.last_seen + idle:
            self.close()
        else:
            self._arm()

    def to_backend(self, data: bytes) -> None:
        self.last_seen = self.service.loop.time()
        self.backend.bytes_in += len(data)
        t = self.transport
        if t is not None:
            t.sendto(data)
        elif self.pending is not None and len(self.pending) < MAX_PENDING:
            self.pending.append(data)
        else:
            self.service.dropped += 1

    def from_backend(self, data: bytes) -> None:
        self.last_seen = self.service.loop.time()
        self.backend.bytes_out += len(data)
        listener = self.service.transport
        if listener is not None:
            listener.sendto(data, self.client)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.backend.inactive -= 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()
        if self.service.flows.get(self.client) is self:
            del self.service.flows[self.client]


class _Listener(asyncio.DatagramProtocol):
    """The VIP:port socket: datagrams from clients are demultiplexed by source address."""

    def __init__(self, service: UdpService) -> None:
        self.service = service

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int] | None) -> None:
        if addr is None:
            return
        self.service.from_client(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("%s: %s", self.service.name, exc)


class UdpService:
    """One UDP listener and its flows."""

    #: The flow type a new client gets (the nginx stream proxy reports to its balancer).
    flow_class: ClassVar[type[UdpFlow]] = UdpFlow

    def __init__(self, core: ServiceCore, loop: asyncio.AbstractEventLoop) -> None:
        self.core = core
        self.loop = loop
        self.name = f"{core.spec.host}:{core.spec.port}/udp"
        self.flows: dict[tuple[str, int], UdpFlow] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.sockname: tuple[str, int] = (core.spec.host, core.spec.port)
        self.dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, sock: socket.socket) -> None:
        """Serve on `sock`, a bound UDP socket (see `userspace.open_listener`)."""
        self.sockname = sock.getsockname()[:2]
        self.name = f"{self.sockname[0]}:{self.sockname[1]}/udp"
        factory: Callable[[], _Listener] = lambda: _Listener(self)  # noqa: E731
        self.transport, _ = await self.loop.create_datagram_endpoint(factory, sock=sock)

    def from_client(self, data: bytes, client: tuple[str, int]) -> None:
        flow = self.flows.get(client)
        if flow is None:
            backend = self.core.pick(client, self.loop.time())
            if backend is None:
                self.dropped += 1
                return
            flow = self.flow_class(self, client, backend)
            self.flows[client] = flow
            task = self.loop.create_task(flow.open())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        flow.to_backend(data)

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        for flow in list(self.flows.values()):
            flow.close()
        for task in self._tasks:
            task.cancel()
