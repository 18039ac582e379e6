"""Active health checks and slow start end to end: nginx.conf -> proxy engine -> loopback backends.

Three (or two) backends on 127.0.0.1 answer with a status the test switches at run time.
The config is read from nginx.conf text like `hakeeper run --nginx` does, the engine is the
worker's, and `health.attach` is the hook the worker calls. Timing bounds are generous
(interval * fails + a margin); the exact ramp shapes are tested with fake time in
tests/unit/balance/test_slow_start.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from test_proxy_support import (
    Backend,
    BackendConn,
    Seen,
    connect,
    one_route,
    read_response,
    request,
    run,
    simple_response,
    wait_for,
)

from hakeeper.balance.upstream import UpstreamGroup
from hakeeper.proxy import health
from hakeeper.proxy.engine import Engine


class Switchable:
    """A backend whose status (for probes and client requests alike) can be changed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.status = 200
        self.clients = 0  # client requests (not health probes) served
        self.probes = 0
        self.backend = Backend(self.handle)

    def handle(self, conn: BackendConn, seen: Seen) -> None:
        if seen.target == b"/hc":
            self.probes += 1
        else:
            self.clients += 1
        conn.send(simple_response(self.status, self.name.encode()))


@dataclass
class Running:
    engine: Engine
    port: int
    group: UpstreamGroup[object]
    checks: health.HealthChecks


@asynccontextmanager
async def serving(
    backends: list[Switchable], servers: str, check: str, http_extra: str = ""
) -> AsyncIterator[Running]:
    engine: Engine | None = None
    checks: health.HealthChecks | None = None
    try:
        for b in backends:
            await b.backend.start()
        lines = "\n".join(f"server 127.0.0.1:{b.backend.port} {servers};" for b in backends)
        # the listen address is only read; the engine below binds an ephemeral port
        text = f"""
        events {{}}
        http {{
            {http_extra}
            upstream app {{ {lines} }}
            server {{
                listen 127.0.0.1:8080;
                location / {{ proxy_pass http://app; proxy_http_version 1.1;
                             proxy_set_header Connection ""; {check} }}
            }}
        }}
        """
        route = one_route(text)
        assert isinstance(route.balancer, UpstreamGroup)
        engine = Engine(route.config, route.balancer)
        await engine.start_listening("127.0.0.1", 0)
        checks = health.attach(engine)
        assert checks is not None
        yield Running(engine, engine.ports()[0], route.balancer, checks)
    finally:
        if checks is not None:
            health.detach(checks)
        if engine is not None:
            engine.close()
        for b in backends:
            await b.backend.stop()
        await asyncio.sleep(0)


async def fetch_many(port: int, n: int) -> list[tuple[int, str]]:
    """n sequential requests on one keep-alive connection: (status, backend name)."""
    reader, writer = await connect(port)
    out = []
    try:
        for _ in range(n):
            writer.write(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
            r = await read_response(reader)
            out.append((r.status, r.body.decode()))
    finally:
        writer.close()
    return out


def state(px: Running, suffix: str) -> dict[str, Any]:
    """The snapshot row of the server whose address ends with `suffix` (":port")."""
    return next(row for row in px.checks.snapshot() if str(row["server"]).endswith(suffix))


def test_failing_backend_leaves_rotation_and_comes_back_after_passes() -> None:
    interval, fails, passes = 0.2, 2, 2

    async def main() -> None:
        bs = [Switchable(n) for n in "abc"]
        check = (
            f"health_check interval={int(interval * 1000)}ms fails={fails} passes={passes} uri=/hc;"
        )
        async with serving(bs, "", check) as px:
            loop = asyncio.get_running_loop()
            await wait_for(lambda: all(b.probes >= 1 for b in bs), 3.0)
            assert {name for _, name in await fetch_many(px.port, 9)} == {"a", "b", "c"}
            # b starts failing: clients may see its 500s only until fails * interval + margin
            bs[1].status = 500
            flipped = loop.time()
            last_5xx = flipped
            statuses: list[int] = []
            while loop.time() - flipped < fails * interval + 1.0:
                for status, _name in await fetch_many(px.port, 3):
                    statuses.append(status)
                    if status >= 500:
                        last_5xx = loop.time()
                await asyncio.sleep(0.02)
            assert last_5xx - flipped <= fails * interval + 0.5, (last_5xx - flipped, statuses)
            row = state(px, f":{bs[1].backend.port}")
            assert row["state"] == "down" and row["failures"] >= fails
            before = bs[1].clients
            got = await fetch_many(px.port, 30)
            assert all(status == 200 for status, _ in got)
            assert bs[1].clients == before  # out of rotation
            # b recovers: back in rotation after `passes` good probes
            bs[1].status = 200
            healed = loop.time()
            await wait_for(lambda: state(px, f":{bs[1].backend.port}")["state"] == "up", 3.0)
            assert loop.time() - healed <= passes * interval + 0.5
            names = [name for _, name in await fetch_many(px.port, 9)]
            assert names.count("b") == 3

    run(main())


def test_mandatory_keeps_a_failing_server_out_from_the_start() -> None:
    async def main() -> None:
        bs = [Switchable(n) for n in "ab"]
        bs[0].status = 503
        async with serving(bs, "", "health_check interval=100ms uri=/hc mandatory;") as px:
            await wait_for(lambda: state(px, f":{bs[1].backend.port}")["state"] == "up", 3.0)
            got = await fetch_many(px.port, 10)
            assert got == [(200, "b")] * 10
            assert state(px, f":{bs[0].backend.port}")["state"] == "down"

    run(main())


def test_all_servers_down_gives_502() -> None:
    async def main() -> None:
        bs = [Switchable(n) for n in "ab"]
        async with serving(bs, "", "health_check interval=100ms uri=/hc;") as px:
            for b in bs:
                b.status = 500
            await wait_for(lambda: all(r["state"] == "down" for r in health.snapshot()), 3.0)
            raw = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"
            assert [(await request(px.port, raw)).status for _ in range(3)] == [502] * 3
            assert bs[0].clients == bs[1].clients == 0

    run(main())


def test_match_block_body_regex_marks_down() -> None:
    async def main() -> None:
        bs = [Switchable(n) for n in "ab"]
        check = "health_check interval=100ms uri=/hc match=notb;"
        # a body of exactly "b" fails `body !~ "^b$"`
        extra = 'match notb { status 200; body !~ "^b$"; }'
        async with serving(bs, "", check, extra) as px:
            await wait_for(lambda: state(px, f":{bs[1].backend.port}")["state"] == "down", 3.0)
            assert state(px, f":{bs[0].backend.port}")["state"] == "up"
            assert {n for _, n in await fetch_many(px.port, 6)} == {"a"}

    run(main())


def test_slow_start_ramp_is_visible_in_the_distribution() -> None:
    ramp = 3.0

    async def main() -> None:
        bs = [Switchable(n) for n in "ab"]
        check = "health_check interval=100ms uri=/hc;"
        async with serving(bs, f"slow_start={int(ramp)}s", check) as px:
            port_b = f":{bs[1].backend.port}"
            bs[1].status = 500
            await wait_for(lambda: state(px, port_b)["state"] == "down", 3.0)
            bs[1].status = 200
            await wait_for(lambda: state(px, port_b)["state"] == "up", 3.0)
            loop = asyncio.get_running_loop()
            up_at = loop.time()
            early = [n for _, n in await fetch_many(px.port, 40)]
            early_f = (loop.time() - up_at) / ramp
            await asyncio.sleep(max(0.0, ramp / 2 - (loop.time() - up_at)))
            mid = [n for _, n in await fetch_many(px.port, 40)]
            await wait_for(lambda: state(px, port_b)["weight"] == 1.0, ramp + 2.0)
            late = [n for _, n in await fetch_many(px.port, 40)]
            share = [x.count("b") / 40 for x in (early, mid, late)]
            assert early_f < 0.5
            assert share[0] < 0.25, share  # f small: b gets a small share
            assert 0.1 < share[1] < 0.45, share  # about f/(1+f) = 1/3 half-way
            assert share[0] < share[1] < share[2]
            assert 0.45 <= share[2] <= 0.55, share  # ramp over: plain SWRR alternates

    run(main())
