"""Datagram health-check probes: PING_CHECK (ICMP echo), UDP_CHECK and DNS_CHECK.

Follows keepalived.conf(5) and check_ping.c / check_udp.c / check_dns.c behaviour (read for
facts only). PING_CHECK sends one ICMP/ICMPv6 echo through an unprivileged ping socket
(SOCK_DGRAM + IPPROTO_ICMP, allowed by net.ipv4.ping_group_range) and falls back to a raw
socket when that is refused and we are root; the reply must carry our sequence number (and
identifier on raw sockets). UDP_CHECK sends `payload` (random bytes if none) on a connected
socket: an ICMP unreachable (ECONNREFUSED & co.) is down; with `require_reply` a reply of
min..max_reply_length bytes matching the expected bytes under the nibble mask (X = any
nibble, compared over the shorter of reply and pattern) must be the first reply, without
it silence until connect_timeout is up. DNS_CHECK sends one recursive query of `type` for
`name` and is up when a response (QR set, RCODE NOERROR) with our id comes back.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import Any

from hakeeper.check.probes import ProbeResult, Target, open_socket
from hakeeper.conf.model import Checker, DnsCheck, PingCheck, UdpCheck

DNS_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}
_UNREACHABLE = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}
_seq = 0


def _next_seq() -> int:
    global _seq
    _seq = (_seq + 1) & 0xFFFF
    return _seq


def inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def echo_request(v6: bool, ident: int, seq: int, payload: bytes) -> bytes:
    kind = 128 if v6 else 8
    head = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    if v6:  # the kernel fills in the ICMPv6 checksum (it covers a pseudo-header)
        return head + payload
    csum = inet_checksum(head + payload)
    return struct.pack("!BBHHH", kind, 0, csum, ident, seq) + payload


def echo_reply_matches(data: bytes, v6: bool, raw: bool, ident: int, seq: int) -> bool:
    """Is `data` (as one socket read returns it) the echo reply to our request?"""
    if raw and not v6:
        if not data:
            return False
        data = data[(data[0] & 0x0F) * 4 :]  # skip the IPv4 header raw sockets deliver
    if len(data) < 8:
        return False
    kind, _code, _csum, rid, rseq = struct.unpack("!BBHHH", data[:8])
    if kind != (129 if v6 else 0) or rseq != seq:
        return False
    return rid == ident or not raw  # ping sockets rewrite the id and filter for us


def _ping_socket(target: Target) -> tuple[socket.socket, bool]:
    proto = socket.IPPROTO_ICMPV6 if target.ip.version == 6 else socket.IPPROTO_ICMP
    try:
        return open_socket(target, socket.SOCK_DGRAM, proto), False
    except PermissionError:
        return open_socket(target, socket.SOCK_RAW, proto), True


async def ping_probe(target: Target, timeout: float) -> ProbeResult:
    loop = asyncio.get_running_loop()
    sock, raw = _ping_socket(target)
    v6 = target.ip.version == 6
    ident, seq = os.getpid() & 0xFFFF, _next_seq()
    try:
        sock.connect((str(target.ip), 0))
        await loop.sock_sendall(sock, echo_request(v6, ident, seq, b"hakeeper-ping-check"))
        try:
            async with asyncio.timeout(timeout):
                while True:
                    data = await loop.sock_recv(sock, 2048)
                    if echo_reply_matches(data, v6, raw, ident, seq):
                        return ProbeResult(True, "echo reply")
        except TimeoutError:
            return ProbeResult(False, "no echo reply")
    except OSError as exc:
        return ProbeResult(False, f"ping: {exc.strerror or exc}")
    finally:
        sock.close()


# ----------------------------------------------------------------------------------- UDP


def reply_matches(check: UdpCheck, data: bytes) -> bool:
    """keepalived's require_reply verdict for one received datagram.

    The length must lie in min..max_reply_length; with a HEX_STR the reply must equal the
    expected bytes under the nibble mask over the shorter of the two (X nibbles ignored).
    """
    if not check.min_reply_length <= len(data) <= check.max_reply_length:
        return False
    expected, mask = check.reply_data, check.reply_mask
    if not expected or mask is None:
        return True
    n = min(len(data), len(expected))
    return all(data[i] & mask[i] == expected[i] for i in range(n))


async def udp_probe(check: UdpCheck, target: Target, timeout: float) -> ProbeResult:
    loop = asyncio.get_running_loop()
    sock = open_socket(target, socket.SOCK_DGRAM)
    try:
        sock.connect(target.sockaddr())
        await loop.sock_sendall(sock, check.payload or os.urandom(16))
        try:
            async with asyncio.timeout(timeout):
                data = await loop.sock_recv(sock, 65536)
            # a connected socket only hears the target: its first reply is the verdict
            if not check.require_reply or reply_matches(check, data):
                return ProbeResult(True, f"reply of {len(data)} bytes")
            return ProbeResult(False, f"reply of {len(data)} bytes does not match require_reply")
        except TimeoutError:
            if check.require_reply:
                return ProbeResult(False, "no reply")
            return ProbeResult(True, "no ICMP error")
    except OSError as exc:
        if exc.errno in _UNREACHABLE:
            return ProbeResult(False, exc.strerror or str(exc))
        raise
    finally:
        sock.close()


# ----------------------------------------------------------------------------------- DNS


def dns_query(qid: int, name: str, qtype: str) -> bytes:
    labels = [p for p in name.strip(".").split(".") if p]
    qname = b"".join(bytes([len(p)]) + p.encode("ascii") for p in labels) + b"\0"
    code = DNS_TYPES.get(qtype.upper(), 6)
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", code, 1)


def dns_answer_ok(data: bytes, qid: int) -> bool | None:
    """True = good answer, False = error answer to us, None = not ours (keep waiting)."""
    if len(data) < 12:
        return None
    rid, flags = struct.unpack("!HH", data[:4])
    if rid != qid or not flags & 0x8000:
        return None
    return bool(flags & 0x000F == 0)


async def dns_probe(check: DnsCheck, target: Target, timeout: float) -> ProbeResult:
    loop = asyncio.get_running_loop()
    port = target.port or 53
    sock = open_socket(target, socket.SOCK_DGRAM)
    qid = int.from_bytes(os.urandom(2), "big")
    try:
        sock.connect(target.sockaddr(port))
        await loop.sock_sendall(sock, dns_query(qid, check.name, check.type))
        try:
            async with asyncio.timeout(timeout):
                while True:
                    verdict = dns_answer_ok(await loop.sock_recv(sock, 65536), qid)
                    if verdict is not None:
                        detail = f"{check.type} {check.name} answered"
                        return ProbeResult(verdict, detail if verdict else "DNS error rcode")
        except TimeoutError:
            return ProbeResult(False, "no DNS answer")
    except OSError as exc:
        return ProbeResult(False, f"DNS: {exc.strerror or exc}")
    finally:
        sock.close()


def factory_for(
    check: Checker, target: Target, timeout: float
) -> Callable[[], Coroutine[Any, Any, ProbeResult]] | None:
    """A zero-argument maker of this checker's probe coroutine, or None if not ours."""
    if isinstance(check, PingCheck):
        return lambda: ping_probe(target, timeout)
    if isinstance(check, UdpCheck):
        return lambda: udp_probe(check, target, timeout)
    if isinstance(check, DnsCheck):
        return lambda: dns_probe(check, target, timeout)
    return None
