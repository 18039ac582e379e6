"""UDP_CHECK `payload` / `require_reply` HEX_STR as keepalived.conf(5) reads them.

The grammar: blank-separated groups of hex digits, read two nibbles at a time, a group's
lone last nibble a byte of its own (`Ab12f 3` -> AB 12 0F 03); in `require_reply` an X/x
nibble is a wildcard. Bad characters are errors at their own file:line:col.
"""

from __future__ import annotations

from kaconf import build, errors

from hakeeper.conf.model import UdpCheck


def _udp(body: str) -> str:
    return (
        "virtual_server 127.0.0.1 53 {\n protocol UDP\n real_server 127.0.0.2 53 {\n"
        f"  UDP_CHECK {{\n{body}  }}\n }}\n}}\n"
    )


def _check(body: str) -> UdpCheck:
    config, diags = build(_udp(body))
    assert errors(diags) == []
    check = config.virtual_servers[0].real_servers[0].checkers[0]
    assert isinstance(check, UdpCheck)
    return check


MAN_PAGE = bytes([0xAB, 0x12, 0x0F, 0x03, 0x45, 0x06, 0x54, 0x64, 0x43, 0x12, 0x03])


def test_groups_follow_the_man_page_example() -> None:
    check = _check("   payload Ab12f 3 456 546443123\n   require_reply Ab12f 3 456 546443123\n")
    assert check.payload == MAN_PAGE
    assert check.require_reply
    assert check.reply_data == MAN_PAGE
    assert check.reply_mask == b"\xff" * len(MAN_PAGE)


def test_group_boundaries_matter_and_odd_groups_pad_their_last_nibble() -> None:
    # joined these would read AB CD EF; per group the lone nibbles are bytes of their own
    assert _check("   payload ABC DEF\n").payload == b"\xab\x0c\xde\x0f"
    assert _check("   payload 1 2 3\n").payload == b"\x01\x02\x03"
    # a quoted HEX_STR holding blanks reads the same as the bare groups
    assert _check('   payload "ABC DEF"\n').payload == b"\xab\x0c\xde\x0f"


def test_wildcard_nibbles_clear_the_mask() -> None:
    check = _check("   require_reply AB x2 3X X\n")
    assert check.reply_data == b"\xab\x02\x30\x00"
    assert check.reply_mask == b"\xff\x0f\xf0\xf0"  # a lone X is 0X


def test_require_reply_without_a_pattern_only_requires_a_reply() -> None:
    check = _check("   require_reply\n   min_reply_length 2\n   max_reply_length 10\n")
    assert check.require_reply
    assert check.reply_data is None and check.reply_mask is None
    assert (check.min_reply_length, check.max_reply_length) == (2, 10)
    plain = _check("   connect_timeout 2\n")
    assert not plain.require_reply and plain.payload is None
    assert (plain.min_reply_length, plain.max_reply_length) == (0, 255)


def test_bad_characters_are_reported_at_their_column() -> None:
    # line 5 of the file; `payload` starts at col 4, the groups at col 12 and 15
    _config, diags = build(_udp("   payload 01 0g\n"))
    [err] = diags.errors
    assert str(err.loc) == "t.conf:5:16"
    assert "'payload' expects hex digits, got 'g' in '0g'" in err.message
    # X is only a wildcard in require_reply
    _config, diags = build(_udp("   payload ABX\n"))
    [err] = diags.errors
    assert str(err.loc) == "t.conf:5:14"
    _config, diags = build(_udp("   require_reply AB Xz\n"))
    [err] = diags.errors
    assert str(err.loc) == "t.conf:5:22"
    assert "expects hex digits or X, got 'z'" in err.message


def test_payload_needs_a_value_and_lengths_must_be_ordered() -> None:
    _config, diags = build(_udp("   payload\n"))
    assert errors(diags) == ["5: 'payload' expects HEX_STR, got 0 argument(s)"]
    _config, diags = build(_udp("   min_reply_length 20\n   max_reply_length 10\n"))
    assert errors(diags) == ["4: UDP_CHECK min_reply_length 20 > max_reply_length 10"]
