"""Checker probes against real local servers on 127.0.0.1 (TCP, HTTP, SSL, SMTP, DNS, UDP, ping,
MISC, FILE) and `hakeeper genhash` against md5sum and keepalived's own genhash."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from uvloop_support import free_port

from hakeeper.check.probes import ProbeResult, Target, start_probe
from hakeeper.conf.model import (
    BfdCheck,
    Checker,
    CheckerCommon,
    DnsCheck,
    FileCheck,
    HttpCheck,
    HttpUrl,
    MiscCheck,
    PingCheck,
    SmtpCheck,
    TcpCheck,
    TrackFile,
    UdpCheck,
)
from hakeeper.lab.netns import wait_until

LOCAL = ipaddress.IPv4Address("127.0.0.1")
BODY = b"<html><body>hakeeper backend 1\n</body></html>\n"
COMMON = CheckerCommon(connect_timeout=2.0)


def probe(check: Checker, port: int | None, timeout: float = 2.0, **kw: object) -> ProbeResult:
    async def go() -> ProbeResult:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[ProbeResult] = loop.create_future()
        start_probe(loop, check, Target(LOCAL, port), timeout, fut.set_result, **kw)  # type: ignore[arg-type]
        return await asyncio.wait_for(fut, timeout + 5)

    return asyncio.run(go())


@contextlib.asynccontextmanager
async def serving(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def http_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    path = head.split()[1]
    status = b"200 OK" if path != b"/missing" else b"404 Not Found"
    host = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"host:")]
    body = BODY if path != b"/host" else host[0]
    writer.write(b"HTTP/1.0 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    await writer.drain()
    writer.close()


def http_check(*urls: HttpUrl, ssl_: bool = False, **kw: object) -> HttpCheck:
    return HttpCheck(COMMON, ssl=ssl_, urls=urls, kind="SSL_GET" if ssl_ else "HTTP_GET", **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- TCP


def test_tcp_check_up_on_listener_down_on_closed_port() -> None:
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        port = lsock.getsockname()[1]
        assert probe(TcpCheck(COMMON), port).ok
    res = probe(TcpCheck(COMMON), port)
    assert not res.ok
    assert "refused" in res.detail.lower()


def test_tcp_check_times_out_on_a_blackhole() -> None:
    # a listener with a full backlog that never accepts still completes handshakes on Linux,
    # so use an unroutable-in-lab TEST-NET address bound to nothing: connect hangs or fails
    res = probe(TcpCheck(COMMON), 9, timeout=0.3)
    assert not res.ok


def test_tcp_check_bindto_sets_the_source_address() -> None:
    async def go() -> tuple[ProbeResult, str]:
        peers: list[str] = []

        async def h(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            peers.append(w.get_extra_info("peername")[0])
            w.close()

        async with serving(h) as port:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[ProbeResult] = loop.create_future()
            t = Target(LOCAL, port, bindto=ipaddress.IPv4Address("127.0.0.9"))
            start_probe(loop, TcpCheck(COMMON), t, 2, fut.set_result)
            res = await fut
            for _ in range(100):
                if peers:
                    break
                await asyncio.sleep(0.01)
            return res, peers[0]

    res, peer = asyncio.run(go())
    assert res.ok and peer == "127.0.0.9"


# ---------------------------------------------------------------------------------- HTTP


def test_http_get_status_digest_and_regex() -> None:
    digest = hashlib.md5(BODY).hexdigest()

    async def go() -> list[ProbeResult]:
        async with serving(http_handler) as port:
            checks = [
                http_check(HttpUrl("/", digest=digest)),
                http_check(HttpUrl("/", digest="0" * 32)),
                http_check(HttpUrl("/missing")),
                http_check(HttpUrl("/missing", status_codes=((404, 404),))),
                http_check(HttpUrl("/", regex="backend [0-9]")),
                http_check(HttpUrl("/", regex="backend [0-9]", regex_no_match=True)),
                http_check(HttpUrl("/"), HttpUrl("/missing")),  # every url must pass
            ]
            out = []
            for c in checks:
                loop = asyncio.get_running_loop()
                fut: asyncio.Future[ProbeResult] = loop.create_future()
                start_probe(loop, c, Target(LOCAL, port), 2, fut.set_result)
                out.append(await fut)
            return out

    results = asyncio.run(go())
    assert [r.ok for r in results] == [True, False, False, True, True, False, False]
    assert "digest mismatch" in results[1].detail
    assert "404" in results[2].detail


def test_http_host_header_is_virtualhost_or_ip_port() -> None:
    async def go() -> tuple[int, bytes, bytes]:
        from hakeeper.check.probe_stream import fetch

        async with serving(http_handler) as port:
            t = Target(LOCAL, port)
            plain = await fetch(t, "/host")
            vhost = await fetch(t, "/host", virtualhost="www.example.org", protocol="1.1")
            return port, plain.rpartition(b"\r\n\r\n")[2], vhost.rpartition(b"\r\n\r\n")[2]

    port, plain, vhost = asyncio.run(go())
    assert plain == b"Host: 127.0.0.1:%d" % port
    assert vhost == b"Host: www.example.org"


def _self_signed(tmp: Path) -> ssl.SSLContext | None:
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    key, crt = tmp / "k.pem", tmp / "c.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(crt), str(key))
    return ctx


def test_ssl_get_without_verification(tmp_path: Path) -> None:
    server_ctx = _self_signed(tmp_path)
    if server_ctx is None:
        pytest.skip("needs openssl to make a test certificate")
    digest = hashlib.md5(BODY).hexdigest()

    async def go() -> ProbeResult:
        async with serving(http_handler, tls=server_ctx) as port:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[ProbeResult] = loop.create_future()
            c = http_check(HttpUrl("/", digest=digest), ssl_=True)
            start_probe(loop, c, Target(LOCAL, port), 3, fut.set_result)
            return await fut

    assert asyncio.run(go()).ok


def test_http_times_out_on_a_silent_server() -> None:
    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await r.read()
        finally:
            w.close()

    async def go() -> ProbeResult:
        async with serving(silent) as port:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[ProbeResult] = loop.create_future()
            start_probe(loop, http_check(HttpUrl("/")), Target(LOCAL, port), 0.3, fut.set_result)
            return await asyncio.wait_for(fut, 3)

    res = asyncio.run(go())
    assert not res.ok


# ------------------------------------------------------------------------------- genhash


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _genhash(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "hakeeper", "genhash", *args],
        capture_output=True, text=True, timeout=20, check=True,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    (tmp_path / "index.html").write_bytes(BODY * 50)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: _accepts(port), timeout=10, what="http.server listening")
        yield port, tmp_path / "index.html"
    finally:
        proc.terminate()
        proc.wait(5)


def test_genhash_matches_md5sum(http_dir: tuple[int, Path]) -> None:
    port, path = http_dir
    md5sum = subprocess.run(["md5sum", str(path)], capture_output=True, text=True, check=True)
    expected = md5sum.stdout.split()[0]
    assert _genhash("-s", "127.0.0.1", "-p", str(port), "-u", "/index.html") == expected
    sha1 = hashlib.sha1(path.read_bytes()).hexdigest()
    assert _genhash("-s", "127.0.0.1", "-p", str(port), "-u", "/index.html", "-H", "sha1") == sha1


def test_genhash_digest_makes_http_get_pass(http_dir: tuple[int, Path]) -> None:
    port, _path = http_dir
    digest = _genhash("-s", "127.0.0.1", "-p", str(port), "-u", "/index.html")
    assert probe(http_check(HttpUrl("/index.html", digest=digest)), port).ok


@pytest.mark.interop("keepalived")
def test_genhash_equals_keepalived_genhash(http_dir: tuple[int, Path]) -> None:
    port, _path = http_dir
    keepalived = shutil.which("keepalived") or "/usr/sbin/keepalived"
    for proto in ("1.0", "1.1"):
        ref = subprocess.run(
            [keepalived, "-T", "-s", "127.0.0.1", "-p", str(port), "-u", "/", "-P", proto],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
        ours = _genhash("-s", "127.0.0.1", "-p", str(port), "-u", "/", "-P", proto)
        assert ours == ref.stdout.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------- SMTP


def smtp_server(banner: bytes = b"220 sink ESMTP\r\n") -> Callable[..., Awaitable[None]]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(banner)
            while line := await reader.readline():
                if line.upper().startswith(b"HELO"):
                    writer.write(b"250-sink greets you\r\n250 OK\r\n")
                elif line.upper().startswith(b"QUIT"):
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    break
                else:
                    writer.write(b"500 what\r\n")
        finally:
            writer.close()

    return handler


def test_smtp_check_banner_helo_quit() -> None:
    async def go(banner: bytes) -> ProbeResult:
        async with serving(smtp_server(banner)) as port:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[ProbeResult] = loop.create_future()
            c = SmtpCheck(COMMON, helo_name="lb.example")
            start_probe(loop, c, Target(LOCAL, port), 2, fut.set_result)
            return await fut

    assert asyncio.run(go(b"220 sink ESMTP\r\n")).ok
    res = asyncio.run(go(b"554 go away\r\n"))
    assert not res.ok and "554" in res.detail


# ------------------------------------------------------------------------------ UDP / DNS


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, answer: Callable[[bytes], bytes | None]) -> None:
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def udp_probe_with(
    answer: Callable[[bytes], bytes | None] | None, check: Checker, timeout: float = 1.0
) -> ProbeResult:
    loop = asyncio.get_running_loop()
    transport = None
    if answer is not None:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(answer), local_addr=("127.0.0.1", 0)
        )
        port = transport.get_extra_info("sockname")[1]
    else:
        port = free_port(socket.SOCK_DGRAM)  # nothing listens: ICMP port unreachable
    try:
        fut: asyncio.Future[ProbeResult] = loop.create_future()
        start_probe(loop, check, Target(LOCAL, port), timeout, fut.set_result)
        return await asyncio.wait_for(fut, timeout + 5)
    finally:
        if transport is not None:
            transport.close()


def test_udp_check_echo_closed_port_and_reply_pattern() -> None:
    echo = UdpCheck(COMMON, payload=b"\x01\x02hello", require_reply=True)
    assert asyncio.run(udp_probe_with(lambda d: d, echo)).ok
    closed = asyncio.run(udp_probe_with(None, UdpCheck(COMMON, payload=b"x")))
    assert not closed.ok and "refused" in closed.detail.lower()
    # no require_reply: silence (no ICMP error) until the timeout is success
    assert asyncio.run(udp_probe_with(lambda d: None, UdpCheck(COMMON), 0.3)).ok
    patterned = UdpCheck(
        COMMON,
        payload=b"\x01",
        require_reply=True,
        reply_data=b"\xab\x02\x03",
        reply_mask=b"\xff\x0f\xff",
    )
    assert asyncio.run(udp_probe_with(lambda d: b"\xab\x72\x03\x04", patterned)).ok
    assert not asyncio.run(udp_probe_with(lambda d: b"\xab\x73\x03", patterned, 0.3)).ok
    short = UdpCheck(COMMON, require_reply=True, min_reply_length=4)
    assert not asyncio.run(udp_probe_with(lambda d: b"ab", short, 0.3)).ok


def dns_responder(rcode: int = 0, wrong_id: bool = False) -> Callable[[bytes], bytes]:
    def answer(query: bytes) -> bytes:
        qid = struct.unpack("!H", query[:2])[0] ^ (1 if wrong_id else 0)
        flags = 0x8180 | rcode
        return struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0) + query[12:]

    return answer


def test_dns_check_wants_our_id_and_noerror() -> None:
    check = DnsCheck(COMMON, type="A", name="www.example.org")
    assert asyncio.run(udp_probe_with(dns_responder(), check)).ok
    assert not asyncio.run(udp_probe_with(dns_responder(rcode=2), check)).ok
    assert not asyncio.run(udp_probe_with(dns_responder(wrong_id=True), check, 0.3)).ok


# ---------------------------------------------------------------------------------- PING


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_ping_check_localhost(address: str) -> None:
    async def go() -> ProbeResult:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[ProbeResult] = loop.create_future()
        target = Target(ipaddress.ip_address(address), None)
        start_probe(loop, PingCheck(COMMON), target, 2, fut.set_result)
        return await asyncio.wait_for(fut, 5)

    res = asyncio.run(go())
    if not res.ok and ("not permitted" in res.detail or "denied" in res.detail):
        pytest.skip(f"ICMP sockets not allowed here: {res.detail}")
    assert res.ok, res.detail


# ---------------------------------------------------------------------------- MISC / FILE


@pytest.mark.parametrize(
    ("code", "dynamic", "ok", "weight"),
    [(0, False, True, None), (1, False, False, None), (0, True, True, -1), (7, True, True, 5),
     (7, False, False, None)],
)  # fmt: skip
def test_misc_check_exit_status(code: int, dynamic: bool, ok: bool, weight: int | None) -> None:
    check = MiscCheck(COMMON, misc_path=f"/bin/sh -c 'exit {code}'", misc_dynamic=dynamic)
    res = probe(check, None)
    assert (res.ok, res.weight) == (ok, weight)


def test_misc_check_timeout_is_a_failure() -> None:
    check = MiscCheck(COMMON, misc_path="/bin/sleep 5", misc_timeout=0.2)
    res = probe(check, None)
    assert not res.ok and "timed out" in res.detail


def test_file_check_reads_the_tracked_value(tmp_path: Path) -> None:
    f = tmp_path / "weight"
    track = {"w": TrackFile("w", str(f))}
    f.write_text("3\n")
    res = probe(FileCheck("w", dynamic=True, weight=2), None, track_files=track, rs_weight=1)
    assert (res.ok, res.weight) == (True, 7)
    f.write_text("-300\n")
    assert not probe(FileCheck("w"), None, track_files=track).ok
    os.unlink(f)  # unreadable counts as 0: up with the configured weight
    assert probe(FileCheck("w"), None, track_files=track).ok


def test_bfd_check_is_reported_unsupported() -> None:
    res = probe(BfdCheck("bfd1"), None)
    assert not res.ok and "unsupported" in res.detail


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_misc_check_as_another_user_on_uvloop_and_asyncio() -> None:
    """`user nobody` works on uvloop too (it rejects subprocess user=/group=)."""
    import uvloop

    check = MiscCheck(
        COMMON, misc_path="/bin/sh -c 'exit $(($(id -u) == 0))'", user="nobody", misc_dynamic=False
    )

    async def go() -> ProbeResult:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[ProbeResult] = loop.create_future()
        start_probe(loop, check, Target(LOCAL, None), 5, fut.set_result)
        return await asyncio.wait_for(fut, 10)

    assert uvloop.run(go()).ok  # exit 0 only when not running as root
    assert asyncio.run(go()).ok
