"""UDP_CHECK with `require_reply HEX_STR` against a local UDP responder on 127.0.0.1.

The check comes from keepalived.conf text through the real reader, so the hex grammar,
wildcards and reply lengths are exercised end to end: a matching first reply is up, a
wrong, short or missing one is down.
"""

from __future__ import annotations

import asyncio
import ipaddress
import textwrap
from collections.abc import Callable

import pytest

from hakeeper.check.probe_dgram import udp_probe
from hakeeper.check.probes import ProbeResult, Target
from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.keepalived import build_model
from hakeeper.conf.lexer import LexOptions, parse_keepalived_text
from hakeeper.conf.model import UdpCheck

LOCAL = ipaddress.IPv4Address("127.0.0.1")


def udp_check(body: str) -> UdpCheck:
    text = (
        "virtual_server 127.0.0.1 9 {\n protocol UDP\n real_server 127.0.0.1 9 {\n"
        f"  UDP_CHECK {{\n{textwrap.dedent(body)}  }}\n }}\n}}\n"
    )
    diags = Diagnostics()
    nodes = parse_keepalived_text(text, "t.conf", diags, options=LexOptions(config_id="t"))
    config = build_model(nodes, diags)
    assert diags.errors == []
    check = config.virtual_servers[0].real_servers[0].checkers[0]
    assert isinstance(check, UdpCheck)
    return check


class _Responder(asyncio.DatagramProtocol):
    def __init__(self, answer: Callable[[bytes], bytes | None]) -> None:
        self.answer = answer
        self.seen: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.seen.append(data)
        reply = self.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


def probe(
    check: UdpCheck, answer: Callable[[bytes], bytes | None], timeout: float = 1.0
) -> tuple[ProbeResult, list[bytes]]:
    async def run() -> tuple[ProbeResult, list[bytes]]:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Responder(answer), local_addr=("127.0.0.1", 0)
        )
        try:
            port = transport.get_extra_info("sockname")[1]
            result = await asyncio.wait_for(udp_probe(check, Target(LOCAL, port), timeout), 10)
            return result, proto.seen
        finally:
            transport.close()

    return asyncio.run(run())


CHECK = """\
   payload 01 02 0a0b
   require_reply CAFE x0 0
   min_reply_length 4
   max_reply_length 8
"""


@pytest.mark.parametrize(
    "reply",
    [b"\xca\xfe\x70\x00", b"\xca\xfe\x00\x00\xff\xff", b"\xca\xfe\xf0\x00\x99\x99\x99\x99"],
)
def test_a_matching_reply_is_up(reply: bytes) -> None:
    result, seen = probe(udp_check(CHECK), lambda _d: reply)
    assert result.ok, result.detail
    assert seen == [b"\x01\x02\x0a\x0b"]  # the payload as the groups spell it


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (b"\xca\xfe\x71\x00", "a fixed nibble next to the wildcard differs"),
        (b"\xca\xfe\x00\x01", "the lone last nibble 0 means byte 00"),
        (b"\xcb\xfe\x00\x00", "first byte differs"),
        (b"\xca\xfe\x00", "shorter than min_reply_length"),
        (b"\xca\xfe\x00\x00" + b"\x00" * 5, "longer than max_reply_length"),
    ],
)
def test_a_wrong_reply_is_down(reply: bytes, why: str) -> None:
    result, _seen = probe(udp_check(CHECK), lambda _d: reply)
    assert not result.ok, why
    assert "does not match" in result.detail


def test_silence_is_down_only_when_a_reply_is_required() -> None:
    result, seen = probe(udp_check(CHECK), lambda _d: None, timeout=0.3)
    assert not result.ok and result.detail == "no reply"
    assert len(seen) == 1
    result, _seen = probe(udp_check("   payload 01\n"), lambda _d: None, timeout=0.3)
    assert result.ok


def test_require_reply_without_pattern_accepts_any_reply_of_allowed_length() -> None:
    check = udp_check("   require_reply\n   min_reply_length 2\n")
    assert probe(check, lambda d: b"zz")[0].ok
    assert not probe(check, lambda d: b"z")[0].ok
