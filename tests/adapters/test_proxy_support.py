"""Shared helpers for the proxy adapter tests: loopback backends, raw clients, a runner.

Everything listens on 127.0.0.1 port 0. Backends are small asyncio servers written here
(httptools for parsing) that record what they received, so tests can assert both what
the client got and what the upstream saw (e.g. that a smuggled request never arrived).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

import httptools
from uvloop_support import (
    free_port,
    run_bounded,
    wait_for,  # noqa: F401  (re-exported for the tests)
)

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import read_nginx
from hakeeper.proxy.balancer import Balancer
from hakeeper.proxy.config import Peer, ProxyConfig, Timeouts, keepalive_headers
from hakeeper.proxy.engine import Engine
from hakeeper.proxy.from_nginx import Route, listeners

T_LIMIT = 20.0


def run(coro: Coroutine[Any, Any, Any], limit: float = T_LIMIT) -> Any:
    """Run one test coroutine on uvloop, bounded in time; loop-level errors fail the test."""
    return run_bounded(coro, limit)


@dataclass
class Seen:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    conn_id: int

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


Handler = Callable[["BackendConn", Seen], Awaitable[None] | None]


def simple_response(
    status: int = 200, body: bytes = b"hello", extra: bytes = b"", close: bool = False
) -> bytes:
    conn = b"Connection: close\r\n" if close else b""
    return (
        b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s%s\r\n" % (status, len(body), extra, conn) + body
    )


class BackendConn(asyncio.Protocol):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.id = backend.next_id()
        self._headers: list[tuple[bytes, bytes]] = []
        self._url = b""
        self._body: list[bytes] = []
        self.tunnel = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.backend.conns.add(self)
        self.backend.opened += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.backend.conns.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            assert self.transport is not None
            self.transport.write(data)  # websocket-ish echo
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            rest = data[int(exc.args[0]) :]
            self.tunnel = True
            if rest and self.transport is not None:
                self.transport.write(rest)
        except httptools.HttpParserError:
            self.backend.errors += 1
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.backend.body_bytes += len(body)
        if self.backend.keep_bodies:
            self._body.append(body)

    def on_message_complete(self) -> None:
        seen = Seen(
            self.parser.get_method(), self._url, self._headers, b"".join(self._body), self.id
        )
        self._headers, self._url, self._body = [], b"", []
        self.backend.seen.append(seen)
        result = self.backend.handler(self, seen)
        if asyncio.iscoroutine(result):
            task = asyncio.get_running_loop().create_task(result)
            self.backend.tasks.add(task)
            task.add_done_callback(self.backend.tasks.discard)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


def default_handler(conn: BackendConn, seen: Seen) -> None:
    conn.send(simple_response(body=b"ok " + seen.target))


class Backend:
    def __init__(self, handler: Handler = default_handler, keep_bodies: bool = True) -> None:
        self.handler = handler
        self.keep_bodies = keep_bodies
        self.seen: list[Seen] = []
        self.conns: set[BackendConn] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.opened = 0
        self.errors = 0
        self.body_bytes = 0
        self._ids = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    async def start(self) -> Backend:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: BackendConn(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def peer(self) -> Peer:
        return Peer("127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for c in list(self.conns):
            if c.transport is not None:
                c.transport.abort()
        for t in list(self.tasks):
            t.cancel()


def make_config(peers: list[Peer], **kw: Any) -> ProxyConfig:
    base: dict[str, Any] = {
        "peers": tuple(peers),
        "http_version": "1.1",
        "headers": keepalive_headers(),
        "upstream_keepalive": 16,
        "timer_resolution": 0.05,
        "timeouts": Timeouts(
            client_header=5, client_body=5, proxy_connect=2, proxy_read=5, proxy_send=5
        ),
    }
    base.update(kw)
    return ProxyConfig(**base)


@dataclass
class Proxy:
    engine: Engine
    port: int
    backends: list[Backend] = field(default_factory=list)


@contextlib.asynccontextmanager
async def proxy_with(
    backends: list[Backend], balancer: Balancer | None = None, **kw: Any
) -> AsyncIterator[Proxy]:
    for b in backends:
        if b.server is None:
            await b.start()
    config = make_config([b.peer for b in backends], **kw)
    engine = Engine(config, balancer)
    await engine.start_listening("127.0.0.1", 0)
    try:
        yield Proxy(engine, engine.ports()[0], backends)
        assert engine.stats.internal_errors == 0
    finally:
        engine.close()
        for b in backends:
            await b.stop()
        await asyncio.sleep(0)


def one_route(text: str, path: str = "nginx.conf") -> Route:
    """The one listener route of nginx.conf `text`; fails the test on any diagnostic."""
    diags = Diagnostics()
    cfg = read_nginx(parse_nginx_text(text, path, diags), diags)
    routes = listeners(cfg, diags)
    assert not diags.has_errors, [d.format() for d in diags.sorted()]
    (route,) = routes
    return route


async def wait_nginx(proc: subprocess.Popen[bytes], port: int, limit: float = 10.0) -> None:
    """Until the nginx child `proc` accepts on 127.0.0.1:`port` (its stderr in the failure
    when it exits first)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            assert loop.time() < end, "nginx did not start"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def nginx_and_hakeeper(
    conf: str, prefix: str, **values: int
) -> AsyncIterator[tuple[int, int]]:
    """(nginx port, hakeeper port) serving the same nginx.conf text: `conf` formatted with
    `dir` (a fresh work directory), `port` and `values`; Debian's nginx runs as a child
    process, hakeeper as an in-process Engine on the same text with its own port."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-")
    nport, hport = free_port(), free_port()
    text = conf.format(dir=work, port=nport, **values)
    path = os.path.join(work, "nginx.conf")
    with open(path, "w") as f:
        f.write(text)
    proc = subprocess.Popen(
        [nginx, "-p", work, "-c", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    engine: Engine | None = None
    try:  # nginx is stopped even when the route or the listener fails
        route = one_route(text.replace(str(nport), str(hport)), path)
        engine = Engine(route.config, route.balancer)
        await engine.start_listening(route.listen.host, route.listen.port)
        await wait_nginx(proc, nport)
        yield nport, hport
    finally:
        if engine is not None:
            engine.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


async def read_response(reader: asyncio.StreamReader, head_request: bool = False) -> Response:
    """Read exactly one response, byte-exact so pipelined answers stay in the reader."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise ConnectionError(
            f"EOF before a complete response (got {exc.partial[:200]!r})"
        ) from exc
    lines = head[:-4].split(b"\r\n")
    version, status_text = lines[0].split(b" ", 2)[:2]
    status = int(status_text)
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(b":") for line in lines[1:])]
    hmap = {k.lower(): v for k, v in headers}
    conn = hmap.get(b"connection", b"").lower()
    keep_alive = conn != b"close" if version == b"HTTP/1.1" else conn == b"keep-alive"
    body = b""
    if head_request or status < 200 or status in (204, 304):
        pass
    elif hmap.get(b"transfer-encoding", b"").lower() == b"chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                break
            parts.append((await reader.readexactly(size + 2))[:-2])
        body = b"".join(parts)
    elif b"content-length" in hmap:
        body = await reader.readexactly(int(hmap[b"content-length"]))
    else:
        body = await reader.read()
        keep_alive = False
    return Response(status, headers, body, keep_alive)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def request(port: int, raw: bytes, head_request: bool = False) -> Response:
    reader, writer = await connect(port)
    try:
        writer.write(raw)
        return await read_response(reader, head_request)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def send_split_and_drain(port: int, data: bytes, split: int) -> None:
    """Send `data` in two writes cut at `split`, then EOF, and read until the proxy closes
    (a reset is a fine answer to garbage); each read bounded at 5 s."""
    reader, writer = await connect(port)
    writer.write(data[:split])
    await asyncio.sleep(0)
    writer.write(data[split:])
    with contextlib.suppress(ConnectionError, OSError):
        writer.write_eof()
    with contextlib.suppress(OSError):
        while await asyncio.wait_for(reader.read(65536), 5.0):
            pass
    writer.close()


async def read_until_closed(reader: asyncio.StreamReader, limit: float = 5.0) -> bytes:
    out = b""
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), limit)
        if not chunk:
            return out
        out += chunk


def test_backend_and_proxy_smoke() -> None:
    async def main() -> None:
        async with proxy_with([Backend()]) as px:
            resp = await request(px.port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            assert resp.status == 200
            assert resp.body == b"ok /a"

    run(main())
