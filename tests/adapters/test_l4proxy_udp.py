"""The userspace L4 proxy's UDP relay on loopback: per-client flows, both ways, idle expiry."""

from __future__ import annotations

import asyncio
from typing import cast

from test_l4proxy_support import run, wait_for

from hakeeper.dataplane.userspace import Backend, L4Service, UserspaceDataplane


class _NamedEcho(asyncio.DatagramProtocol):
    """Answers each datagram with `name:` + the datagram."""

    def __init__(self, name: str) -> None:
        self.name = name.encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int] | None) -> None:
        self.transport.sendto(self.name + b":" + data, addr)


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int] | None) -> None:
        self.queue.put_nowait(data)


async def _echo(name: str) -> tuple[asyncio.DatagramTransport, Backend]:
    loop = asyncio.get_running_loop()
    t, _ = await loop.create_datagram_endpoint(
        lambda: _NamedEcho(name), local_addr=("127.0.0.1", 0)
    )
    port = t.get_extra_info("sockname")[1]
    return cast(asyncio.DatagramTransport, t), Backend("127.0.0.1", port)


async def _client(port: int) -> tuple[asyncio.DatagramTransport, _Client]:
    loop = asyncio.get_running_loop()
    t, p = await loop.create_datagram_endpoint(_Client, remote_addr=("127.0.0.1", port))
    return cast(asyncio.DatagramTransport, t), p


async def _ask(t: asyncio.DatagramTransport, p: _Client, data: bytes) -> bytes:
    t.sendto(data)
    return await asyncio.wait_for(p.queue.get(), 5)


def test_udp_flows_relay_both_ways_and_stick_to_one_server() -> None:
    async def main() -> None:
        echoes = [await _echo(f"s{i}") for i in range(2)]
        svc = L4Service("127.0.0.1", 0, "UDP", "rr", tuple(b for _, b in echoes))
        dp = UserspaceDataplane()
        await dp.apply([svc])
        port = dp.sockname(svc.key)[1]
        clients = [await _client(port) for _ in range(2)]
        try:
            a = [await _ask(*clients[0], b"a%d" % i) for i in range(5)]
            b = [await _ask(*clients[1], b"b%d" % i) for i in range(5)]
            assert a == [b"s0:a%d" % i for i in range(5)]
            assert b == [b"s1:b%d" % i for i in range(5)]
            (st,) = dp.stats()
            assert [(s.active, s.inactive) for s in st.backends] == [(0, 1), (0, 1)]
            assert st.backends[0].bytes_in == 10 and st.backends[0].bytes_out == 25
        finally:
            for t, _ in clients:
                t.close()
            await dp.close()
            for t, _ in echoes:
                t.close()

    run(main())


def test_udp_flow_expires_when_idle_and_is_scheduled_again() -> None:
    async def main() -> None:
        echoes = [await _echo(f"s{i}") for i in range(2)]
        svc = L4Service(
            "127.0.0.1", 0, "UDP", "rr", tuple(b for _, b in echoes), udp_idle_timeout=0.2
        )
        dp = UserspaceDataplane()
        await dp.apply([svc])
        port = dp.sockname(svc.key)[1]
        t, p = await _client(port)
        try:
            assert await _ask(t, p, b"x") == b"s0:x"
            assert await _ask(t, p, b"y") == b"s0:y"

            def idle() -> bool:
                return all(s.inactive == 0 for s in dp.stats()[0].backends)

            await wait_for(idle, limit=5)
            assert await _ask(t, p, b"z") == b"s1:z"  # a new flow: rr moved on
        finally:
            t.close()
            await dp.close()
            for e, _ in echoes:
                e.close()

    run(main())


def test_udp_update_swaps_servers_for_new_flows_only() -> None:
    async def main() -> None:
        echoes = [await _echo(f"s{i}") for i in range(2)]
        svc = L4Service("127.0.0.1", 0, "UDP", "rr", (echoes[0][1],))
        dp = UserspaceDataplane()
        await dp.apply([svc])
        port = dp.sockname(svc.key)[1]
        old = await _client(port)
        try:
            assert await _ask(*old, b"1") == b"s0:1"
            await dp.apply([L4Service("127.0.0.1", 0, "UDP", "rr", (echoes[1][1],))])
            assert await _ask(*old, b"2") == b"s0:2"  # the existing flow keeps its server
            new = await _client(port)
            assert await _ask(*new, b"3") == b"s1:3"
            new[0].close()
        finally:
            old[0].close()
            await dp.close()
            for e, _ in echoes:
                e.close()

    run(main())
