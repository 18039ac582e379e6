"""Helpers for the TLS proxy tests: a throw-away PKI made with the `openssl` CLI, TLS
backends, TLS clients that report which certificate they were shown, and a hakeeper
engine serving one nginx.conf listener (TLS when it says `listen ... ssl`).

Everything listens on 127.0.0.1 port 0 (or a free port); certificates live two days in a
temporary directory the caller removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from test_proxy_support import (
    Backend,
    BackendConn,
    Handler,
    Response,
    default_handler,
    read_response,
)

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import read_nginx
from hakeeper.proxy.engine import Engine
from hakeeper.proxy.from_nginx import Route, listeners
from hakeeper.proxy.server import bind_listeners
from hakeeper.proxy.tls import check_files, start_listener

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]


@dataclass
class Pki:
    """A CA and leaf certificates signed by it, as PEM files in `work`."""

    work: str
    ca: str = ""
    leaves: dict[str, tuple[str, str]] = field(default_factory=dict)

    def leaf(self, name: str) -> tuple[str, str]:
        """(certificate, key) for DNS name `name` (made once)."""
        if name not in self.leaves:
            crt = os.path.join(self.work, f"{name}.crt")
            key = os.path.join(self.work, f"{name}.key")
            _openssl(
                "req", "-x509", *_EC, "-CA", self.ca, "-CAkey", self.ca[:-4] + ".key",
                "-keyout", key, "-out", crt, "-subj", f"/CN={name}",
                "-addext", f"subjectAltName=DNS:{name}", "-addext", "basicConstraints=CA:FALSE",
            )  # fmt: skip
            self.leaves[name] = (crt, key)
        return self.leaves[name]

    def der(self, name: str) -> bytes:
        with open(self.leaf(name)[0]) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())


def _openssl(*args: str) -> None:
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=30)


def make_pki(work: str) -> Pki:
    pki = Pki(work, os.path.join(work, "ca.crt"))
    _openssl(
        "req", "-x509", *_EC, "-keyout", pki.ca[:-4] + ".key", "-out", pki.ca,
        "-subj", "/CN=hakeeper-test-ca",
    )  # fmt: skip
    return pki


def client_context(
    cafile: str | None = None, cert: tuple[str, str] | None = None
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cert is not None:
        ctx.load_cert_chain(*cert)
    if cafile is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cafile)
    return ctx


@dataclass
class TlsReply:
    response: Response
    cert: bytes  # the server certificate (DER) the client was shown
    version: str


async def tls_request(
    port: int,
    raw: bytes,
    server_name: str | None = None,
    cafile: str | None = None,
    cert: tuple[str, str] | None = None,
) -> TlsReply:
    """One request over a fresh TLS connection with SNI `server_name` (None: no SNI),
    presenting client certificate `cert` if given."""
    ctx = client_context(cafile, cert)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=server_name or ""
    )
    try:
        obj = writer.get_extra_info("ssl_object")
        writer.write(raw)
        resp = await read_response(reader)
        return TlsReply(resp, obj.getpeercert(binary_form=True) or b"", obj.version() or "")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


class TlsBackend(Backend):
    """A `test_proxy_support.Backend` behind TLS; records the SNI names it was sent and
    how many handshakes it did."""

    def __init__(self, cert: tuple[str, str], handler: Handler = default_handler) -> None:
        super().__init__(handler)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(*cert)
        self.sni: list[str | None] = []
        self.ctx.sni_callback = self._sni

    def _sni(self, _obj: object, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.sni.append(name)

    async def start(self) -> TlsBackend:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: BackendConn(self), "127.0.0.1", 0, ssl=self.ctx
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self


def read_routes(text: str, path: str = "nginx.conf") -> tuple[list[Route], Diagnostics]:
    """Every listener route of nginx.conf `text` (certificates loaded like `nginx -t`)."""
    diags = Diagnostics()
    cfg = read_nginx(parse_nginx_text(text, path, diags), diags)
    if not diags.has_errors:
        check_files(cfg.servers, diags)
    routes = listeners(cfg, diags) if not diags.has_errors else []
    return routes, diags


@contextlib.asynccontextmanager
async def serving(routes: list[Route]) -> AsyncIterator[dict[int, Engine]]:
    """One in-process engine per route on its listen address ({port: engine})."""
    engines: dict[int, Engine] = {}
    try:
        for route in routes:
            engine = Engine(route.config, route.balancer)
            (sock,) = bind_listeners(route.listen.host, route.listen.port, 1, reuse_port=False)
            await start_listener(engine, sock)
            engines[route.listen.port] = engine
        yield engines
    finally:
        for engine in engines.values():
            engine.close()
        await asyncio.sleep(0)
