"""The userspace L4 proxy's UDP relay on loopback: per-client flows, both ways, idle expiry."""

from __future__ import annotations

import asyncio

from test_l4proxy_support import UdpClient, run, udp_client, udp_echo, wait_for

from hakeeper.dataplane.userspace import L4Service, UserspaceDataplane


async def _ask(t: asyncio.DatagramTransport, p: UdpClient, data: bytes) -> bytes:
    t.sendto(data)
    return await asyncio.wait_for(p.queue.get(), 5)


def test_udp_flows_relay_both_ways_and_stick_to_one_server() -> None:
    async def main() -> None:
        echoes = [await udp_echo(f"s{i}") for i in range(2)]
        svc = L4Service("127.0.0.1", 0, "UDP", "rr", tuple(b for _, b in echoes))
        dp = UserspaceDataplane()
        await dp.apply([svc])
        port = dp.sockname(svc.key)[1]
        clients = [await udp_client(port) for _ in range(2)]
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
        echoes = [await udp_echo(f"s{i}") for i in range(2)]
        svc = L4Service(
            "127.0.0.1", 0, "UDP", "rr", tuple(b for _, b in echoes), udp_idle_timeout=0.2
        )
        dp = UserspaceDataplane()
        await dp.apply([svc])
        port = dp.sockname(svc.key)[1]
        t, p = await udp_client(port)
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
        echoes = [await udp_echo(f"s{i}") for i in range(2)]
        svc = L4Service("127.0.0.1", 0, "UDP", "rr", (echoes[0][1],))
        dp = UserspaceDataplane()
        await dp.apply([svc])
        port = dp.sockname(svc.key)[1]
        old = await udp_client(port)
        try:
            assert await _ask(*old, b"1") == b"s0:1"
            await dp.apply([L4Service("127.0.0.1", 0, "UDP", "rr", (echoes[1][1],))])
            assert await _ask(*old, b"2") == b"s0:2"  # the existing flow keeps its server
            new = await udp_client(port)
            assert await _ask(*new, b"3") == b"s1:3"
            new[0].close()
        finally:
            old[0].close()
            await dp.close()
            for e, _ in echoes:
                e.close()

    run(main())
