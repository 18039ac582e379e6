"""A fake broadcast segment for runtime tests: sockets that hand payloads to each other.

Stands in for `hakeeper.io.vrrp_socket.VrrpSocket` (same attributes the runtime uses), so
whole daemons can run in one asyncio loop without root. Delivery goes through
`loop.call_soon`, like a real readable socket would.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from hakeeper.io.vrrp_socket import ReceivedPacket, SocketStats, VrrpSocketConfig


@dataclass
class FakeWire:
    sockets: list[FakeSocket] = field(default_factory=list)
    cut: set[str] = field(default_factory=set)  # sources whose packets are dropped
    sent: list[tuple[str, bytes]] = field(default_factory=list)
    datagrams: list[tuple[str, bytes]] = field(default_factory=list)  # send_datagram (AH)
    ifindex: dict[str, int] = field(default_factory=dict)  # interface name -> index (1)

    def factory(self, source: str) -> Callable[[VrrpSocketConfig], FakeSocket]:
        def make(config: VrrpSocketConfig) -> FakeSocket:
            sock = FakeSocket(config, self, config.src_ip or source)
            self.sockets.append(sock)
            return sock

        return make


class FakeSocket:
    def __init__(self, config: VrrpSocketConfig, wire: FakeWire, source: str) -> None:
        self.config = config
        self.wire = wire
        self.source: str | None = source
        self.stats = SocketStats()
        self.closed = False
        self.ifindex = wire.ifindex.get(config.ifname, 1)
        self._cb: Callable[[ReceivedPacket], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def destinations(self) -> tuple[str, ...]:
        return self.config.unicast_peers or (self.config.group,)

    def send_to(self, payload: bytes, dst: str) -> bool:
        self.stats.tx += 1
        self.wire.sent.append((str(self.source), payload))
        if self.source in self.wire.cut:
            return True
        for other in self.wire.sockets:
            if other is self or other.closed or other._cb is None or other._loop is None:
                continue
            if other.config.protocol != self.config.protocol:
                continue
            pkt = ReceivedPacket(socket.AF_INET, payload, str(self.source), dst, 255, 1)
            other._loop.call_soon(other._deliver, pkt)
        return True

    def send_datagram(self, datagram: bytes, dst: str) -> bool:
        """A whole IPv4 datagram (IP_HDRINCL, e.g. AH): receivers get header + payload."""
        self.stats.tx += 1
        self.wire.datagrams.append((str(self.source), datagram))
        if self.source in self.wire.cut:
            return True
        for other in self.wire.sockets:
            if other is self or other.closed or other._cb is None or other._loop is None:
                continue
            if other.config.protocol != self.config.protocol:
                continue
            pkt = ReceivedPacket(
                socket.AF_INET, datagram[20:], str(self.source), dst, 255, 1, datagram[:20]
            )
            other._loop.call_soon(other._deliver, pkt)
        return True

    def _deliver(self, pkt: ReceivedPacket) -> None:
        if self._cb is not None and not self.closed:
            self.stats.rx += 1
            self._cb(pkt)

    def attach(self, loop: asyncio.AbstractEventLoop, cb: Callable[[ReceivedPacket], None]) -> None:
        self._loop = loop
        self._cb = cb

    def close(self) -> None:
        self.closed = True
        self._cb = None
