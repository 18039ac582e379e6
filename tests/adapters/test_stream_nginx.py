"""nginx `stream { }` served by the userspace L4 proxy on 127.0.0.1 (hakeeper.proxy.stream).

Backends greet with their name (test_l4proxy_support.EchoBackend), so each connection
shows where nginx's balancing sent it; configs are nginx.conf text read by the real reader.
"""

from __future__ import annotations

import asyncio
import socket

from test_l4proxy_support import (
    EchoBackend,
    connect,
    landed,
    refused_port,
    run,
    udp_client,
    udp_echo,
    wait_for,
)
from uvloop_support import free_port

from hakeeper.balance.nginx_hash import ChashBalancer
from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import read_nginx
from hakeeper.proxy.stream import StreamRunner, StreamService, make_group, stream_services


def services(text: str) -> list[StreamService]:
    d = Diagnostics()
    config = read_nginx(parse_nginx_text(text, "stream.conf", d), d)
    found = stream_services(config.stream, d)
    assert not d.has_errors, [x.format() for x in d]
    return found


def upstream_conf(port: int, servers: list[str], extra: str = "", server_extra: str = "") -> str:
    lines = "\n".join(f"    server {s};" for s in servers)
    return f"""
stream {{
  upstream back {{
{lines}
    {extra}
  }}
  server {{
    listen 127.0.0.1:{port};
    proxy_pass back;
    proxy_connect_timeout 2s;
    {server_extra}
  }}
}}
"""


async def _backends(n: int) -> list[EchoBackend]:
    return [await EchoBackend("abcdefgh"[i]).start() for i in range(n)]


async def _serve(text: str) -> tuple[StreamRunner, int]:
    runner = StreamRunner()
    found = services(text)
    await runner.apply(found)
    assert not runner.errors
    return runner, runner.sockname(found[0].key)[1]


def _close(runner: StreamRunner, backends: list[EchoBackend]) -> asyncio.Future[None]:
    for b in backends:
        b.close()
    return asyncio.ensure_future(runner.close())


def test_swrr_5_1_1_gives_nginx_sequence_by_connection() -> None:
    async def main() -> None:
        bs = await _backends(3)
        weights = [5, 1, 1]
        port = free_port()
        servers = [f"127.0.0.1:{b.port} weight={w}" for b, w in zip(bs, weights, strict=True)]
        runner, port = await _serve(upstream_conf(port, servers))
        try:
            seen = [await landed(port) for _ in range(14)]
            assert "".join(seen) == "aabacaa" * 2
        finally:
            await _close(runner, bs)

    run(main())


def test_dead_backend_is_skipped_and_marked_failed_for_fail_timeout() -> None:
    async def main() -> None:
        bs = await _backends(2)
        dead = refused_port()
        port = free_port()
        servers = [
            f"127.0.0.1:{bs[0].port}",
            f"127.0.0.1:{dead} max_fails=1 fail_timeout=30s",
            f"127.0.0.1:{bs[1].port}",
        ]
        runner, port = await _serve(upstream_conf(port, servers))
        try:
            seen = [await landed(port) for _ in range(8)]
            # the dead peer fails once, the connection moves on to the next peer, and
            # the dead one is skipped while fail_timeout runs: the pure balancer fed the
            # same connect results gives the same sequence
            ref = make_group(services(upstream_conf(port, servers))[0].upstream)
            names = {f"127.0.0.1:{b.port}": b.name for b in bs}
            expected = []
            for _ in range(8):
                tried: list[str] = []
                while (item := ref.pick("", tried, 0.0)) not in names:
                    assert item is not None
                    ref.report(item, False, 0.0)
                    tried.append(item)
                ref.report(item, True, 0.0)
                expected.append(names[item])
            assert seen == expected
            assert set(seen) == {"a", "b"}
            core = runner.core(("TCP", "127.0.0.1", port))
            peers = {item: p for item, p in core.group.state()}
            assert peers[f"127.0.0.1:{dead}"].fails == 1
            assert core.by_key[f"127.0.0.1:{dead}"].failed == 1
            # every try is freed: no connection slot is left held
            await wait_for(lambda: all(p.conns == 0 for p in peers.values()))
        finally:
            await _close(runner, bs)

    run(main())


def test_next_upstream_off_closes_the_client_on_a_failed_connect() -> None:
    async def main() -> None:
        bs = await _backends(1)
        dead = refused_port()
        port = free_port()
        servers = [f"127.0.0.1:{dead}", f"127.0.0.1:{bs[0].port}"]
        runner, port = await _serve(
            upstream_conf(port, servers, server_extra="proxy_next_upstream off;")
        )
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await reader.read() == b""  # closed without reaching a backend
            writer.close()
            assert await landed(port) == "a"  # the dead one is now skipped
        finally:
            await _close(runner, bs)

    run(main())


def test_next_upstream_tries_bounds_the_attempts() -> None:
    async def main() -> None:
        bs = await _backends(1)
        dead = [refused_port() for _ in range(3)]
        port = free_port()
        servers = [f"127.0.0.1:{d}" for d in dead] + [f"127.0.0.1:{bs[0].port}"]
        runner, port = await _serve(
            upstream_conf(port, servers, server_extra="proxy_next_upstream_tries 2;")
        )
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await reader.read() == b""  # two dead peers tried, then given up
            writer.close()
            core = runner.core(("TCP", "127.0.0.1", port))
            assert sum(core.by_key[f"127.0.0.1:{d}"].failed for d in dead) == 2
        finally:
            await _close(runner, bs)

    run(main())


def test_least_conn_counts_live_sessions() -> None:
    async def main() -> None:
        bs = await _backends(3)
        port = free_port()
        servers = [f"127.0.0.1:{b.port}" for b in bs]
        runner, port = await _serve(upstream_conf(port, servers, extra="least_conn;"))
        try:
            held = [await connect(port) for _ in range(3)]
            assert sorted(c.name for c in held) == ["a", "b", "c"]
            held[1].close()  # its peer drops to 0 sessions
            gone = held[1].name
            core = runner.core(("TCP", "127.0.0.1", port))
            peers = {item: p for item, p in core.group.state()}
            await wait_for(lambda: sum(p.conns for p in peers.values()) == 2)
            again = await connect(port)
            assert again.name == gone
            for c in [held[0], held[2], again]:
                c.close()
        finally:
            await _close(runner, bs)

    run(main())


def test_hash_remote_addr_consistent_pins_each_client_address() -> None:
    async def main() -> None:
        bs = await _backends(3)
        port = free_port()
        servers = [f"127.0.0.1:{b.port}" for b in bs]
        text = upstream_conf(port, servers, extra="hash $remote_addr consistent;")
        runner, port = await _serve(text)
        ring = make_group(services(text)[0].upstream).balancer
        assert isinstance(ring, ChashBalancer)
        names = {f"127.0.0.1:{b.port}": b.name for b in bs}
        try:
            for last in range(1, 9):
                src = f"127.0.0.{last}"
                seen = {await landed(port, source=src) for _ in range(3)}
                assert seen == {names[ring.owner(src)]}
        finally:
            await _close(runner, bs)

    run(main())


def test_reload_keeps_established_sessions_and_uses_new_weights() -> None:
    async def main() -> None:
        bs = await _backends(2)
        port = free_port()
        first = [f"127.0.0.1:{bs[0].port}", f"127.0.0.1:{bs[1].port} down"]
        runner, port = await _serve(upstream_conf(port, first))
        try:
            held = await connect(port)
            assert held.name == "a"
            key = ("TCP", "127.0.0.1", port)
            old = runner.core(key)
            second = [f"127.0.0.1:{bs[0].port} down", f"127.0.0.1:{bs[1].port}"]
            await runner.apply(services(upstream_conf(port, second, extra="least_conn;")))
            new = runner.core(key)
            assert new is not old and new.previous is old
            assert [await landed(port) for _ in range(3)] == ["b", "b", "b"]
            assert await held.echo(b"still here") == b"still here"
            held.close()
            # the old session is released to the balancer that picked it, not the new one
            await wait_for(lambda: old.live == 0 and new.live == 0)
            assert all(p.conns == 0 for _, p in old.group.state())
            assert all(p.conns == 0 for _, p in new.group.state())
            await runner.apply(services(upstream_conf(port, second)))
            assert runner.core(key).previous is None  # no live sessions left to pass on
        finally:
            await _close(runner, bs)

    run(main())


def test_udp_listen_relays_datagrams_with_swrr_per_client() -> None:
    async def main() -> None:
        echoes = [await udp_echo(name) for name in "ab"]
        ports = [b.port for _, b in echoes]
        port = free_port(socket.SOCK_DGRAM)
        text = f"""
stream {{
  upstream dns {{ server 127.0.0.1:{ports[0]} weight=2; server 127.0.0.1:{ports[1]}; }}
  server {{ listen 127.0.0.1:{port} udp; proxy_pass dns; proxy_timeout 5s; }}
}}
"""
        runner = StreamRunner()
        await runner.apply(services(text))
        clients = []
        try:
            answers = []
            for i in range(3):
                t, p = await udp_client(port)
                clients.append(t)
                for j in range(2):  # a flow sticks to its peer
                    t.sendto(b"q%d%d" % (i, j))
                    answers.append(await asyncio.wait_for(p.queue.get(), 5))
            assert answers == [b"a:q00", b"a:q01", b"b:q10", b"b:q11", b"a:q20", b"a:q21"]
        finally:
            for t in clients + [e for e, _ in echoes]:
                t.close()
            await runner.close()

    run(main())


def test_proxy_timeout_closes_idle_tcp_sessions_only() -> None:
    async def main() -> None:
        bs = await _backends(1)
        port = free_port()
        text = upstream_conf(port, [f"127.0.0.1:{bs[0].port}"], server_extra="proxy_timeout 1s;")
        runner, port = await _serve(text)
        loop = asyncio.get_running_loop()
        try:
            idle = await connect(port)
            busy = await connect(port)
            start = loop.time()
            # the busy one talks every 0.3 s for 2.4 s and stays open
            while loop.time() - start < 2.4:
                assert await busy.echo(b"ping") == b"ping"
                await asyncio.sleep(0.3)
            # the idle one was closed by the proxy after about 1 s without data
            assert await asyncio.wait_for(idle.reader.read(), 5) == b""
            assert runner.timed_out == 1
            busy.close()
            idle.close()
        finally:
            await _close(runner, bs)

    run(main())


def test_first_eof_ends_the_session_unless_proxy_half_close_on() -> None:
    async def main() -> None:
        bs = await _backends(1)  # EchoBackend answers a digest line after the client's EOF
        servers = [f"127.0.0.1:{bs[0].port}"]
        for extra, expect_digest in (("", False), ("proxy_half_close on;", True)):
            runner, port = await _serve(upstream_conf(free_port(), servers, server_extra=extra))
            try:
                c = await connect(port)
                assert await c.echo(b"data") == b"data"
                c.writer.write_eof()
                rest = await asyncio.wait_for(c.reader.read(), 5)
                assert (rest != b"") is expect_digest, (extra, rest)
                c.close()
            finally:
                await runner.close()
        for b in bs:
            b.close()

    run(main())
