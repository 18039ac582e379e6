"""Active health checks of `stream {}` upstreams (nginx Plus health_check) on 127.0.0.1.

The stream runner (hakeeper.proxy.stream) serves nginx.conf text read by the real reader;
TCP backends greet with their name (test_l4proxy_support.EchoBackend), UDP backends answer
`name:` + the datagram. A backend is stopped and started again on the same port; every wait
is a condition with a deadline.
"""

from __future__ import annotations

import asyncio

from test_l4proxy_support import (
    EchoBackend,
    NamedUdpEcho,
    _Echo,
    landed,
    run,
    udp_client,
    udp_echo,
    wait_for,
)
from test_stream_nginx import services
from uvloop_support import free_port

from hakeeper.proxy.stream import StreamRunner

INTERVAL = "interval=100ms"


def tcp_conf(port: int, ports: list[int], check: str, extra: str = "") -> str:
    lines = "".join(f"server 127.0.0.1:{p}; " for p in ports)
    return f"""
stream {{
  {extra}
  upstream back {{ {lines} }}
  server {{
    listen 127.0.0.1:{port};
    proxy_pass back;
    proxy_connect_timeout 1s;
    {check}
  }}
}}
"""


def udp_conf(port: int, ports: list[int], check: str, extra: str = "") -> str:
    lines = "".join(f"server 127.0.0.1:{p}; " for p in ports)
    return f"""
stream {{
  {extra}
  upstream dns {{ {lines} }}
  server {{
    listen 127.0.0.1:{port} udp;
    proxy_pass dns;
    proxy_timeout 1s;
    {check}
  }}
}}
"""


def states(runner: StreamRunner) -> dict[str, str]:
    """server "host:port" -> up / down / checking, from the runner's checker."""
    assert runner.health is not None
    return {str(r["server"]): str(r["state"]) for r in runner.health.snapshot()}


def checked(runner: StreamRunner) -> bool:
    assert runner.health is not None
    return all(int(r["checks"]) >= 1 for r in runner.health.snapshot())


async def reopen(b: EchoBackend) -> None:
    loop = asyncio.get_running_loop()
    b.server = await loop.create_server(lambda: _Echo(b), "127.0.0.1", b.port)


async def serve(text: str) -> tuple[StreamRunner, int]:
    runner = StreamRunner()
    found = services(text)
    await runner.apply(found)
    assert not runner.errors
    return runner, runner.sockname(found[0].key)[1]


def test_tcp_check_takes_a_dead_backend_out_and_brings_it_back() -> None:
    async def main() -> None:
        a, b = await EchoBackend("a").start(), await EchoBackend("b").start()
        runner, port = await serve(
            tcp_conf(free_port(), [a.port, b.port], f"health_check {INTERVAL} passes=2;")
        )
        kb = f"127.0.0.1:{b.port}"
        try:
            await wait_for(lambda: checked(runner), 3.0)
            assert set(states(runner).values()) == {"up"}
            assert {await landed(port) for _ in range(4)} == {"a", "b"}
            b.close()
            await wait_for(lambda: states(runner)[kb] == "down", 3.0)
            accepted = a.accepted
            assert [await landed(port) for _ in range(6)] == ["a"] * 6
            assert a.accepted == accepted + 6
            await reopen(b)
            await wait_for(lambda: states(runner)[kb] == "up", 3.0)
            assert {await landed(port) for _ in range(4)} == {"a", "b"}
        finally:
            a.close()
            b.close()
            await runner.close()

    run(main())


def test_tcp_match_expect_fails_a_live_backend_that_answers_wrong() -> None:
    async def main() -> None:
        a, b = await EchoBackend("a").start(), await EchoBackend("b").start()
        # both greet with their name; only "a\n" passes `expect ~ "^a"`; b's probe waits
        # for more data until health_check_timeout
        text = tcp_conf(
            free_port(),
            [a.port, b.port],
            f"health_check {INTERVAL} match=greets_a; health_check_timeout 300ms;",
            extra='match greets_a { send "hello\\x0a"; expect ~ "^a"; }',
        )
        runner, port = await serve(text)
        try:
            await wait_for(lambda: states(runner)[f"127.0.0.1:{b.port}"] == "down", 3.0)
            assert states(runner)[f"127.0.0.1:{a.port}"] == "up"
            assert [await landed(port) for _ in range(4)] == ["a"] * 4
        finally:
            a.close()
            b.close()
            await runner.close()

    run(main())


def test_every_server_down_closes_the_client_and_mandatory_starts_in_checking() -> None:
    async def main() -> None:
        a = await EchoBackend("a").start()
        runner, port = await serve(
            tcp_conf(free_port(), [a.port], f"health_check {INTERVAL} mandatory;")
        )
        ka = f"127.0.0.1:{a.port}"
        try:
            assert states(runner)[ka] in ("checking", "up")
            await wait_for(lambda: states(runner)[ka] == "up", 3.0)
            assert await landed(port) == "a"
            a.close()
            await wait_for(lambda: states(runner)[ka] == "down", 3.0)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                assert await asyncio.wait_for(reader.read(), 3.0) == b""  # no live upstreams
            finally:
                writer.close()
        finally:
            a.close()
            await runner.close()

    run(main())


def test_reload_keeps_the_state_of_an_unchanged_check() -> None:
    async def main() -> None:
        a, b = await EchoBackend("a").start(), await EchoBackend("b").start()
        listen = free_port()
        first = tcp_conf(listen, [a.port, b.port], f"health_check {INTERVAL} fails=1;")
        runner, port = await serve(first)
        kb = f"127.0.0.1:{b.port}"
        try:
            b.close()
            await wait_for(lambda: states(runner)[kb] == "down", 3.0)
            # the same check after a reload (a new balancer for the listener): b stays out
            await runner.apply(services(first))
            assert states(runner)[kb] == "down"
            assert [await landed(port) for _ in range(4)] == ["a"] * 4
            # a changed check is a new one: it starts up (no `mandatory`); with fails=50 it
            # would need 5 s to see b down again
            changed = first.replace("fails=1;", "fails=50;")
            await runner.apply(services(changed))
            assert states(runner)[kb] == "up"
        finally:
            a.close()
            b.close()
            await runner.close()

    run(main())


def test_udp_check_with_send_expect_takes_a_dead_backend_out_and_brings_it_back() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ta, a = await udp_echo("a")
        tb, b = await udp_echo("b")
        text = udp_conf(
            free_port(),
            [a.port, b.port],
            f"health_check udp {INTERVAL} match=ping;",
            extra='match ping { send "ping"; expect ~ "^[ab]:ping$"; }',
        )
        runner, port = await serve(text)
        kb = f"127.0.0.1:{b.port}"
        try:
            await wait_for(lambda: checked(runner), 3.0)
            assert set(states(runner).values()) == {"up"}
            tb.close()  # the port answers ICMP port unreachable now
            await wait_for(lambda: states(runner)[kb] == "down", 3.0)
            for _ in range(4):  # each client socket is a new flow: all go to a
                t, c = await udp_client(port)
                try:
                    t.sendto(b"x")
                    assert await asyncio.wait_for(c.queue.get(), 3.0) == b"a:x"
                finally:
                    t.close()
            tb2, _ = await loop.create_datagram_endpoint(
                lambda: NamedUdpEcho("b"), local_addr=("127.0.0.1", b.port)
            )
            try:
                await wait_for(lambda: states(runner)[kb] == "up", 3.0)
            finally:
                tb2.close()
        finally:
            ta.close()
            tb.close()
            await runner.close()

    run(main())


def test_udp_check_without_match_fails_on_icmp_unreachable_only() -> None:
    async def main() -> None:
        ta, a = await udp_echo("a")
        dead = free_port(kind=2)  # SOCK_DGRAM: nothing listens there
        runner, _port = await serve(
            udp_conf(free_port(), [a.port, dead], "health_check udp interval=200ms;")
        )
        try:
            await wait_for(lambda: states(runner)[f"127.0.0.1:{dead}"] == "down", 3.0)
            await wait_for(lambda: checked(runner), 3.0)
            assert states(runner)[f"127.0.0.1:{a.port}"] == "up"
        finally:
            ta.close()
            await runner.close()

    run(main())
