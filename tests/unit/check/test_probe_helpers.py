"""Pure pieces of the probes and the engine's config mapping: request bytes as keepalived sends
them, response parsing, url verdicts, UDP reply patterns, DNS and ICMP wire formats,
FILE_CHECK values, and model -> policy spec."""

from __future__ import annotations

import hashlib
import ipaddress
import struct

from hakeeper.check.engine import checker_spec, health_spec, rs_label
from hakeeper.check.probe_dgram import (
    dns_answer_ok,
    dns_query,
    echo_reply_matches,
    echo_request,
    inet_checksum,
    reply_matches,
)
from hakeeper.check.probe_stream import (
    build_request,
    evaluate_url,
    host_header,
    parse_response,
)
from hakeeper.check.probes import Target, file_result, target_for
from hakeeper.conf.model import (
    CheckerCommon,
    FileCheck,
    HttpUrl,
    MiscCheck,
    RealServer,
    Script,
    SorryServer,
    TcpCheck,
    TrackFile,
    UdpCheck,
    VirtualServer,
)

IP = ipaddress.ip_address


def test_requests_match_keepalived_genhash_bytes() -> None:
    # captured from `keepalived -T -s 127.0.0.1 -p 58131 -u /x [-P ...] [-V ...]` (2.2.7)
    assert build_request("/x", "127.0.0.1:58131") == (
        b"GET /x HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nHost: 127.0.0.1:58131\r\n\r\n"
    )
    assert build_request("/x", "vh.example", "1.1") == (
        b"GET /x HTTP/1.1\r\nUser-Agent: KeepAliveClient\r\nConnection: close\r\n"
        b"Host: vh.example\r\n\r\n"
    )
    assert build_request("/x", "h", "1.0c").startswith(b"GET /x HTTP/1.0\r\n")
    assert b"Connection: close" in build_request("/x", "h", "1.0C")


def test_host_header() -> None:
    assert host_header(Target(IP("10.0.0.1"), 8080), None, False) == "10.0.0.1:8080"
    assert host_header(Target(IP("10.0.0.1"), 80), None, False) == "10.0.0.1"
    assert host_header(Target(IP("10.0.0.1"), 443), None, True) == "10.0.0.1"
    assert host_header(Target(IP("2001:db8::1"), 81), None, False) == "[2001:db8::1]:81"
    assert host_header(Target(IP("10.0.0.1"), 81), "www.example.org", False) == "www.example.org"


def test_parse_response_and_url_verdicts() -> None:
    body = b"hello world, status OK\n"
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 23\r\n\r\n" + body
    resp = parse_response(raw)
    assert resp is not None and resp.status == 200 and resp.body == body
    assert parse_response(b"garbage") is None
    assert parse_response(b"SSH-2.0-OpenSSH\r\n\r\n") is None
    digest = hashlib.md5(body).hexdigest()
    assert evaluate_url(HttpUrl("/", digest=digest.upper()), resp).ok
    assert not evaluate_url(HttpUrl("/", status_codes=((300, 399), (500, 500))), resp).ok
    assert evaluate_url(HttpUrl("/", status_codes=((100, 199), (200, 200))), resp).ok
    assert evaluate_url(HttpUrl("/", regex="STATUS ok", regex_options=("caseless",)), resp).ok
    assert not evaluate_url(HttpUrl("/", regex="status", regex_max_offset=5), resp).ok
    assert not evaluate_url(HttpUrl("/", regex="("), resp).ok  # bad regex: down, no raise
    assert not evaluate_url(HttpUrl("/"), None).ok


def test_reply_pattern_follows_the_man_page_example() -> None:
    # the HEX_STR grammar itself is tested in tests/unit/conf/test_require_reply.py
    check = UdpCheck(
        CheckerCommon(), require_reply=True, reply_data=b"\x01\x02\x00", reply_mask=b"\xff\xff\x00"
    )
    assert reply_matches(check, b"\x01\x02\xff\x00")
    assert reply_matches(check, b"\x01")  # compared up to the shorter of the two
    assert not reply_matches(check, b"\x01\x03")
    assert not reply_matches(check, b"\x01" * 300)  # longer than max_reply_length 255


def test_dns_query_and_answer() -> None:
    q = dns_query(0x1234, "www.example.org.", "aaaa")
    assert q[:12] == struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    assert q[12:] == b"\x03www\x07example\x03org\x00" + struct.pack("!HH", 28, 1)
    assert dns_query(1, ".", "SOA")[12:] == b"\x00" + struct.pack("!HH", 6, 1)
    answer = struct.pack("!HHHHHH", 0x1234, 0x8180, 1, 1, 0, 0)
    assert dns_answer_ok(answer, 0x1234) is True
    assert dns_answer_ok(answer, 0x4321) is None  # not ours: keep waiting
    assert dns_answer_ok(struct.pack("!HHHHHH", 0x1234, 0x8183, 1, 0, 0, 0), 0x1234) is False
    assert dns_answer_ok(struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0), 0x1234) is None
    assert dns_answer_ok(b"\x12", 0x1234) is None


def test_icmp_echo_wire_format() -> None:
    req = echo_request(False, 0x42, 7, b"abc")
    assert req[0] == 8 and inet_checksum(req) == 0
    reply = bytes([0, 0]) + req[2:]
    ip_header = bytes([0x45]) + b"\0" * 19
    assert echo_reply_matches(ip_header + reply, False, True, 0x42, 7)
    assert not echo_reply_matches(ip_header + req, False, True, 0x42, 7)  # our own request
    assert not echo_reply_matches(ip_header + reply, False, True, 0x43, 7)
    assert echo_reply_matches(reply, False, False, 0x99, 7)  # ping socket rewrote the id
    v6 = echo_request(True, 1, 2, b"")
    assert v6[0] == 128
    assert echo_reply_matches(bytes([129]) + v6[1:], True, True, 1, 2)


def test_file_check_values() -> None:
    track = TrackFile("t", "/nonexistent")
    plain = FileCheck("t")
    assert file_result(plain, track, "5\n").ok
    assert file_result(plain, track, "junk").ok  # unreadable value counts as 0
    assert not file_result(plain, track, "-254").ok
    assert not file_result(plain, None, "1").ok  # unknown track_file
    dyn = FileCheck("t", dynamic=True, weight=10)
    assert file_result(dyn, track, "2", rs_weight=5).weight == 25
    assert file_result(dyn, track, "-1", rs_weight=5).weight == 0
    rev = FileCheck("t", weight=200, reverse=True)
    assert not file_result(rev, track, "2").ok  # -400


def test_target_defaults_and_model_mapping() -> None:
    common = CheckerCommon(connect_port=8080, connect_timeout=2.5, delay_loop=7, retry=3)
    rs_no_port = RealServer(IP("10.0.0.2"), None, 4, checkers=(TcpCheck(common),))
    vs = VirtualServer(
        IP("198.18.0.1"),
        443,
        delay_loop=7,
        inhibit_on_failure=True,
        quorum_up=Script("/bin/up"),
        sorry_server=SorryServer(IP("10.0.0.9"), 80, inhibit=True),
        real_servers=(
            RealServer(IP("10.0.0.1"), 80, 2, notify_down=Script("/bin/down x")),
            rs_no_port,
        ),
    )
    assert target_for(vs, rs_no_port, None).addr == ("10.0.0.2", 443)  # the virtual port
    assert target_for(vs, rs_no_port, common).addr == ("10.0.0.2", 8080)
    spec = health_spec(vs)
    assert spec.key == "addr|198.18.0.1|443|TCP"
    assert [r.key for r in spec.real_servers] == ["10.0.0.1:80", "10.0.0.2"]
    assert (
        spec.real_servers[0].inhibit_on_failure
        and spec.real_servers[0].notify_down == "/bin/down x"
    )
    assert (spec.quorum_up, spec.sorry_server, spec.sorry_server_inhibit) == (
        "/bin/up",
        "10.0.0.9:80",
        True,
    )
    c = spec.real_servers[1].checkers[0]
    assert (c.kind, c.delay_loop, c.retry, c.connect_timeout) == ("TCP_CHECK", 7, 3, 2.5)
    misc = checker_spec(MiscCheck(CheckerCommon(delay_loop=9), "x", misc_dynamic=True), vs)
    assert (misc.connect_timeout, misc.dynamic) == (9, True)
    assert rs_label(IP("2001:db8::1"), 80) == "[2001:db8::1]:80"
