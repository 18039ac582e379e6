"""How fast an active health check takes a failing upstream out of rotation, and back.

Three loopback backends behind the L7 engine (one worker, in this process) read from an
nginx.conf with `health_check interval=I fails=F passes=P`; a client sends sequential
keep-alive requests while one backend switches to 500 and later back to 200. Reported per
run: time from the switch to "down" (and to the last 5xx a client saw), the 5xx count,
and the time from the fix to "up". Expected: down within I*F plus one probe round trip.

    .venv/bin/python bench/l7_health.py [--runs 5] [--interval 0.2] [--fails 2] [--passes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from hakeeper.balance.upstream import UpstreamGroup
from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import read_nginx
from hakeeper.proxy import health
from hakeeper.proxy.engine import Engine
from hakeeper.proxy.from_nginx import listeners


class Backend:
    def __init__(self) -> None:
        self.status = 200
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n\r\nok" % self.status)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]


async def one_run(interval: float, fails: int, passes: int) -> dict[str, float]:
    backends = [Backend() for _ in range(3)]
    for b in backends:
        await b.start()
    servers = " ".join(f"server 127.0.0.1:{b.port};" for b in backends)
    ms = int(interval * 1000)
    text = f"""events {{}} http {{ upstream app {{ {servers} }}
      server {{ listen 127.0.0.1:8080; location / {{ proxy_pass http://app;
        proxy_http_version 1.1; proxy_set_header Connection "";
        health_check interval={ms}ms fails={fails} passes={passes} uri=/hc; }} }} }}"""
    diags = Diagnostics()
    (route,) = listeners(read_nginx(parse_nginx_text(text, "bench", diags), diags), diags)
    assert isinstance(route.balancer, UpstreamGroup)
    engine = Engine(route.config, route.balancer)
    await engine.start_listening("127.0.0.1", 0)
    checks = health.attach(engine)
    assert checks is not None
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", engine.ports()[0])

    async def get() -> int:
        writer.write(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        return int(head.split(b" ", 2)[1])

    def state() -> str:
        return str(checks.snapshot()[1]["state"])

    try:
        await asyncio.sleep(interval * 2)
        backends[1].status = 500
        t0 = loop.time()
        n5xx, last5xx, down_at = 0, t0, 0.0
        while loop.time() - t0 < interval * (fails + 3):
            if await get() >= 500:
                n5xx += 1
                last5xx = loop.time()
            if not down_at and state() == "down":
                down_at = loop.time()
            await asyncio.sleep(0.002)
        backends[1].status = 200
        t1 = loop.time()
        while state() != "up":
            if loop.time() - t1 > interval * (passes + 5):
                raise RuntimeError("did not come back")
            await asyncio.sleep(0.002)
        up_at = loop.time()
        return {
            "down_s": down_at - t0,
            "last_5xx_s": last5xx - t0,
            "n_5xx": n5xx,
            "up_s": up_at - t1,
        }
    finally:
        writer.close()
        health.detach(checks)
        engine.close()
        for b in backends:
            if b.server is not None:
                b.server.close()


async def main(args: argparse.Namespace) -> None:
    rows = [await one_run(args.interval, args.fails, args.passes) for _ in range(args.runs)]
    print(f"interval={args.interval}s fails={args.fails} passes={args.passes} runs={args.runs}")
    for key in ("down_s", "last_5xx_s", "n_5xx", "up_s"):
        vals = [r[key] for r in rows]
        print(
            f"  {key:11s} median {statistics.median(vals):.3f}  min {min(vals):.3f}  "
            f"max {max(vals):.3f}"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--fails", type=int, default=2)
    ap.add_argument("--passes", type=int, default=2)
    asyncio.run(main(ap.parse_args()))
