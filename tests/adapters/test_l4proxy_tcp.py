"""The userspace L4 proxy over real loopback sockets: scheduling, failover, relay and updates.

Each test runs echo backends that greet with their name, so the client sees where the
scheduler sent it. Counts (active/inactive) are read from `UserspaceDataplane.stats()`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
from test_l4proxy_support import (
    EchoBackend,
    connect,
    counts,
    landed,
    proxy,
    refused_port,
    run,
    wait_for,
)
from uvloop_support import hanging_port

from hakeeper.balance import LVS_SCHEDULERS
from hakeeper.balance.lvs import RealServer, WeightedRoundRobin
from hakeeper.dataplane.userspace import Backend, L4Service, UserspaceDataplane


async def _backends(n: int) -> list[EchoBackend]:
    return [await EchoBackend(f"s{i}").start() for i in range(n)]


def test_rr_cycles_exactly_over_new_connections() -> None:
    async def main() -> None:
        bs = await _backends(3)
        dp, _, port = await proxy(bs, "rr")
        try:
            seen = [await landed(port) for _ in range(30)]
            assert seen == ["s0", "s1", "s2"] * 10
        finally:
            await dp.close()
            for b in bs:
                b.close()

    run(main())


def test_wrr_follows_the_kernel_sequence_and_weights() -> None:
    async def main() -> None:
        bs = await _backends(3)
        weights = [3, 2, 1]
        dp, _, port = await proxy([b.weighted(w) for b, w in zip(bs, weights, strict=True)], "wrr")
        try:
            seen = [await landed(port) for _ in range(60)]
            ref = WeightedRoundRobin()
            servers = [RealServer(f"s{i}", w) for i, w in enumerate(weights)]
            expected = [ref.pick(servers).key for _ in range(60)]  # type: ignore[union-attr]
            assert seen == expected
            assert [seen.count(f"s{i}") for i in range(3)] == [30, 20, 10]
        finally:
            await dp.close()
            for b in bs:
                b.close()

    run(main())


def test_lc_sends_new_connections_to_the_least_loaded_server() -> None:
    async def main() -> None:
        bs = await _backends(3)
        dp, _, port = await proxy(bs, "lc")
        keys = [b.spec.key for b in bs]
        try:
            held = [await connect(port) for _ in range(4)]
            # ties go to the first in list order; each held connection adds load
            assert [c.name for c in held] == ["s0", "s1", "s2", "s0"]
            await wait_for(lambda: counts(dp)[keys[0]] == (2, 0))
            assert counts(dp)[keys[1]] == (1, 0)
            held[1].close()  # s1 drops to 0 active
            held[2].close()
            await wait_for(lambda: counts(dp)[keys[1]] == (0, 0) == counts(dp)[keys[2]])
            nxt = [await connect(port) for _ in range(3)]
            assert [c.name for c in nxt] == ["s1", "s2", "s1"]
            for c in held + nxt:
                c.close()
            await wait_for(lambda: all(v == (0, 0) for v in counts(dp).values()))
        finally:
            await dp.close()
            for b in bs:
                b.close()

    run(main())


def test_half_closed_connection_counts_as_inactive() -> None:
    async def main() -> None:
        bs = await _backends(1)
        dp, _, port = await proxy(bs, "wlc")
        key = bs[0].spec.key
        try:
            c = await connect(port)
            await wait_for(lambda: counts(dp)[key] == (1, 0))
            c.writer.write_eof()  # client -> proxy -> backend EOF; backend answers then closes
            assert len(await c.reader.readline()) == 65
            await wait_for(lambda: counts(dp)[key] == (0, 0))
            c.close()
        finally:
            await dp.close()
            bs[0].close()

    run(main())


def test_every_scheduler_serves_connections() -> None:
    async def main() -> None:
        bs = await _backends(3)
        names = {"s0", "s1", "s2"}
        try:
            for sched in sorted(LVS_SCHEDULERS):
                dp, _, port = await proxy(bs, sched)
                try:
                    seen = [await landed(port) for _ in range(4)]
                    assert set(seen) <= names, sched
                finally:
                    await dp.close()
        finally:
            for b in bs:
                b.close()

    run(main())


def test_persistence_pins_a_client_and_granularity_groups_clients() -> None:
    async def main() -> None:
        bs = await _backends(3)
        try:
            dp, _, port = await proxy(bs, "rr", persistence_timeout=60)
            try:
                a = [await landed(port, "127.0.0.2") for _ in range(6)]
                b = [await landed(port, "127.0.0.3") for _ in range(6)]
                assert len(set(a)) == 1 and len(set(b)) == 1
                assert a[0] != b[0]  # /32 templates: two clients, two rr picks
                assert dp.stats()[0].persistence_templates == 2
            finally:
                await dp.close()
            dp, _, port = await proxy(
                bs, "rr", persistence_timeout=60, persistence_granularity="255.255.255.0"
            )
            try:
                seen = {await landed(port, f"127.0.0.{i}") for i in (2, 3, 4, 2)}
                assert len(seen) == 1
            finally:
                await dp.close()
        finally:
            for b_ in bs:
                b_.close()

    run(main())


def test_refused_backend_fails_over_and_is_counted() -> None:
    async def main() -> None:
        bs = await _backends(2)
        dead = Backend("127.0.0.1", refused_port())
        dp, _, port = await proxy([dead, bs[0].spec, bs[1].spec], "rr")
        try:
            seen = [await landed(port) for _ in range(6)]
            assert set(seen) == {"s0", "s1"}
            (st,) = dp.stats()
            by_key = {b.key: b for b in st.backends}
            assert by_key[dead.key].failed >= 1
            assert by_key[dead.key].active == by_key[dead.key].inactive == 0
        finally:
            await dp.close()
            for b in bs:
                b.close()

    run(main())


def test_connect_timeout_tries_the_next_server() -> None:
    async def main() -> None:
        bs = await _backends(1)
        # A listener with a full accept queue never completes new handshakes: SYNs are dropped.
        async with hanging_port() as stuck_port:
            dead = Backend("127.0.0.1", stuck_port)
            dp, _, port = await proxy([dead, bs[0].spec], "rr", connect_timeout=0.3)
            try:
                t0 = asyncio.get_running_loop().time()
                assert await landed(port) == "s0"
                assert asyncio.get_running_loop().time() - t0 >= 0.25
                (st,) = dp.stats()
                assert st.backends[0].failed == 1
            finally:
                await dp.close()
                bs[0].close()

    run(main())


def test_no_usable_server_closes_the_client() -> None:
    async def main() -> None:
        bs = await _backends(1)
        dp, _, port = await proxy([bs[0].weighted(0)], "wlc")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await reader.read() == b""
            writer.close()
            assert dp.stats()[0].no_backend == 1
        finally:
            await dp.close()
            bs[0].close()

    run(main())


def test_half_close_and_large_transfer_keep_every_byte() -> None:
    async def main() -> None:
        bs = await _backends(1)
        dp, _, port = await proxy(bs, "rr")
        try:
            c = await connect(port)
            payload = os.urandom(1 << 20) * 16  # 16 MiB each way, through flow control
            got = bytearray()

            async def reader() -> None:
                while len(got) < len(payload):
                    got.extend(await c.reader.read(1 << 18))

            task = asyncio.create_task(reader())
            for i in range(0, len(payload), 1 << 20):
                c.writer.write(payload[i : i + (1 << 20)])
                await c.writer.drain()
            await task
            assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
            # the backend only answers after the client's EOF reached it through the proxy
            assert await c.finish() == hashlib.sha256(payload).hexdigest()
            (st,) = dp.stats()
            assert st.backends[0].bytes_in == len(payload)
            assert st.backends[0].bytes_out == len(payload) + 3 + 65
        finally:
            await dp.close()
            bs[0].close()

    run(main())


def test_update_removing_or_quiescing_a_server_keeps_its_connections() -> None:
    async def main() -> None:
        bs = await _backends(3)
        dp, svc, port = await proxy(bs, "rr")
        try:
            c0 = await connect(port)
            c1 = await connect(port)
            assert (c0.name, c1.name) == ("s0", "s1")
            # s0 removed, s1 quiesced (weight 0): both keep their established connections
            new = L4Service(
                svc.host,
                svc.port,
                svc.protocol,
                "rr",
                (bs[1].weighted(0), bs[2].spec),
            )
            await dp.apply([new])
            assert {await landed(port) for _ in range(4)} == {"s2"}
            assert await c0.echo(b"still here") == b"still here"
            assert await c1.echo(b"me too") == b"me too"
            assert await c0.finish() == hashlib.sha256(b"still here").hexdigest()
            assert await c1.finish() == hashlib.sha256(b"me too").hexdigest()
            (st,) = dp.stats()
            assert [b.key for b in st.backends] == [bs[1].spec.key, bs[2].spec.key]
            # weight back up: s1 takes new connections again
            await dp.apply([new.__class__(svc.host, svc.port, "TCP", "rr", (bs[1].spec,))])
            assert await landed(port) == "s1"
        finally:
            await dp.close()
            for b in bs:
                b.close()

    run(main())


def test_removing_a_service_closes_its_listener_only() -> None:
    async def main() -> None:
        bs = await _backends(1)
        dp, _, port = await proxy(bs, "rr")
        try:
            c = await connect(port)
            await dp.apply([])
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", port)
            assert await c.echo(b"x") == b"x"
            c.close()
        finally:
            await dp.close()
            bs[0].close()

    run(main())


def test_bytes_and_eof_sent_before_the_backend_is_connected_are_relayed() -> None:
    async def main() -> None:
        bs = await _backends(1)
        dp, _, port = await proxy(bs, "wlc")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"early bytes")  # before the proxy has a backend connection
            writer.write_eof()
            out = await reader.read()
            assert (
                out
                == b"s0\nearly bytes" + hashlib.sha256(b"early bytes").hexdigest().encode() + b"\n"
            )
            writer.close()
            await wait_for(lambda: counts(dp)[bs[0].spec.key] == (0, 0))
        finally:
            await dp.close()
            bs[0].close()

    run(main())


def test_freebind_listens_on_a_vip_this_host_does_not_have_yet() -> None:
    async def main() -> None:
        # 198.18.0.0/15 is not configured here; IP_FREEBIND lets a BACKUP pre-bind the VIP.
        svc = L4Service("198.18.77.1", 0, "TCP", "rr", (Backend("127.0.0.1", refused_port()),))
        dp = UserspaceDataplane()
        try:
            await dp.apply([svc])
            assert dp.sockname(svc.key)[0] == "198.18.77.1"
            # without freebind the bind fails: recorded, the other service keeps running
            other = L4Service("198.18.77.2", 0, freebind=False)
            await dp.apply([svc, other])
            assert list(dp.services) == [svc.key]
            assert "assign" in dp.errors[other.key]  # EADDRNOTAVAIL
            await dp.apply([svc])
            assert dp.errors == {}
        finally:
            await dp.close()

    run(main())


def test_client_resets_at_any_stage_leave_no_counts_behind() -> None:
    async def main() -> None:
        import socket
        import struct

        bs = await _backends(2)
        dp, _, port = await proxy(bs, "wlc")
        loop = asyncio.get_running_loop()
        try:
            for i in range(60):
                s = socket.socket()
                s.setblocking(False)
                await loop.sock_connect(s, ("127.0.0.1", port))
                if i % 3 >= 1:
                    await loop.sock_sendall(s, b"x" * 1000)
                if i % 3 == 2:
                    await loop.sock_recv(s, 3)  # the greeting: backend connected
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()  # RST
            await wait_for(lambda: all(v == (0, 0) for v in counts(dp).values()))
            await wait_for(lambda: sum(b.open for b in bs) == 0)
            assert await landed(port) in {"s0", "s1"}
        finally:
            await dp.close()
            for b in bs:
                b.close()

    run(main())
