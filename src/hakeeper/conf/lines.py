"""Converters for keepalived.conf's structured arguments and value-block lines.

Value blocks (virtual_ipaddress, track_script, unicast_peer, virtual_server_group, ...)
hold one item per line; each function here turns one line (or one keyword's argument
list) into a model value, or reports why not and returns INVALID. Syntax follows
keepalived.conf(5): `IP[/len] [brd IP] [dev IF] [scope S] [label L] ...` for addresses,
`NAME [weight W [reverse|noreverse]]` for trackers, `ip route`/`ip rule` words for
routes and rules, `IP[-last]|CIDR [PORT]` and `fwmark N [inet|inet6]` for groups.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hakeeper.conf.diagnostics import Diagnostics, Location, did_you_mean
from hakeeper.conf.model import (
    LvsMethod,
    RouteSpec,
    SorryServer,
    TrackRef,
    UnicastPeer,
    VirtualAddress,
    VsgEntry,
)
from hakeeper.conf.schema import (
    ARG_DOCS,
    INVALID,
    Parse,
    arity,
    described,
    ip_port,
    to_int,
    to_ip,
    words_of,
)
from hakeeper.conf.tree import Node


@described("(no arguments)")
def no_args(node: Node, diags: Diagnostics) -> Any:
    if not arity(node, diags, 0, 0, "no arguments before its block"):
        return INVALID
    return None


@described("(no arguments)")
def flag_name(node: Node, diags: Diagnostics) -> Any:
    """A bare flag whose value is its own name (scheduler flags)."""
    if not arity(node, diags, 0, 0, "no arguments"):
        return INVALID
    return node.keyword.text


@described("NAME")
def name_head(node: Node, diags: Diagnostics) -> Any:
    if not arity(node, diags, 1, 1, "a name"):
        return INVALID
    return node.args[0].text


@described("NAME... per line")
def line_words(node: Node, diags: Diagnostics) -> Any:
    """A value-block line as a tuple of all its words."""
    del diags
    return tuple(w.text for w in words_of(node))


@described("STRING...")
def args_tuple(node: Node, diags: Diagnostics) -> Any:
    """A keyword's arguments as a tuple of strings, at least one."""
    if not arity(node, diags, 1, None, "at least one value"):
        return INVALID
    return tuple(w.text for w in node.args)


@described("[STRING...]")
def words_tuple_opt(node: Node, diags: Diagnostics) -> Any:
    del diags
    return tuple(w.text for w in node.args)


@described("USER [GROUP]")
def user_group(node: Node, diags: Diagnostics) -> Any:
    if not arity(node, diags, 1, 2, "USERNAME [GROUPNAME]"):
        return INVALID
    return (node.args[0].text, node.args[1].text if len(node.args) > 1 else None)


@described("IPADDR|HOST [PORT]")
def smtp_server(node: Node, diags: Diagnostics) -> Any:
    if not arity(node, diags, 1, 2, "an address or host name [PORT]"):
        return INVALID
    port = to_int(node.args[1], diags, 1, 65535, "smtp_server port") if len(node.args) > 1 else 25
    if port is INVALID:
        return INVALID
    return (node.args[0].text, port)


def weight(lo: int, hi: int) -> Parse:
    """`weight W [reverse]` -> (W, reverse)."""

    def parse(node: Node, diags: Diagnostics) -> Any:
        if not arity(node, diags, 1, 2, f"an integer in {lo}..{hi} [reverse]"):
            return INVALID
        value = to_int(node.args[0], diags, lo, hi, "'weight'")
        if value is INVALID:
            return INVALID
        reverse = False
        if len(node.args) == 2:
            w = node.args[1]
            if w.text != "reverse":
                diags.error(w.loc, f"'weight' expects 'reverse' after the number, got '{w.text}'")
                return INVALID
            reverse = True
        return (value, reverse)

    ARG_DOCS[parse] = f"INTEGER {lo}..{hi} [reverse]"
    return parse


@described("[VALUE] [overwrite]")
def init_file(node: Node, diags: Diagnostics) -> Any:
    """`init_file [VALUE] [overwrite]` -> (value, overwrite)."""
    value = 0
    overwrite = False
    for w in node.args:
        if w.text == "overwrite":
            overwrite = True
            continue
        got = to_int(w, diags, -2147483648, 2147483647, "'init_file' value")
        if got is INVALID:
            return INVALID
        value = got
    return (value, overwrite)


def track_ref(lo: int, hi: int) -> Parse:
    """A track_* block line: `NAME [weight W [reverse|noreverse|no_reverse]]`."""

    def parse(node: Node, diags: Diagnostics) -> Any:
        words = words_of(node)
        name = words[0].text
        rest = words[1:]
        if not rest:
            return TrackRef(name, loc=node.loc)
        if rest[0].text != "weight" or len(rest) < 2 or len(rest) > 3:
            diags.error(rest[0].loc, f"expected '{name} [weight W [reverse|noreverse]]'")
            return INVALID
        value = to_int(rest[1], diags, lo, hi, f"weight of '{name}'")
        if value is INVALID:
            return INVALID
        reverse: bool | None = None
        if len(rest) == 3:
            flag = rest[2].text
            if flag not in ("reverse", "noreverse", "no_reverse"):
                diags.error(rest[2].loc, f"expected reverse or noreverse, got '{flag}'")
                return INVALID
            reverse = flag == "reverse"
        return TrackRef(name, value, reverse, loc=node.loc)

    ARG_DOCS[parse] = f"per line: NAME [weight {lo}..{hi} [reverse|noreverse]]"
    return parse


@described("per line: IPADDR [min_ttl N] [max_ttl N]")
def unicast_peer(node: Node, diags: Diagnostics) -> Any:
    words = words_of(node)
    ip = to_ip(words[0], diags, "unicast_peer")
    if ip is INVALID:
        return INVALID
    ttls: dict[str, int] = {}
    rest = words[1:]
    while rest:
        opt = rest[0].text
        if opt not in ("min_ttl", "max_ttl") or len(rest) < 2:
            diags.error(rest[0].loc, f"expected 'min_ttl N' or 'max_ttl N', got '{opt}'")
            return INVALID
        value = to_int(rest[1], diags, 0, 255, f"'{opt}'")
        if value is INVALID:
            return INVALID
        ttls[opt] = value
        rest = rest[2:]
    return UnicastPeer(ip, ttls.get("min_ttl"), ttls.get("max_ttl"))


_VIP_VALUE_OPTS = frozenset(
    {"brd", "broadcast", "dev", "scope", "label", "peer", "preferred_lft", "track_group"}
)
_VIP_FLAGS = frozenset(
    {"home", "-nodad", "nodad", "mngtmpaddr", "noprefixroute", "autojoin", "no_track", "use_vmac"}
)
SCOPES = frozenset({"site", "link", "host", "nowhere", "global"})


@described("per line: IPADDR[/LEN] [brd IP] [dev IF] [scope S] [label L] [peer IP] [flags]")
def vip(node: Node, diags: Diagnostics) -> Any:
    """`IP[/len] [brd IP|+|-] [dev IF] [scope S] [label L] [peer IP] [flags...]`."""
    words = words_of(node)
    first = words[0]
    try:
        address: Any = ipaddress.ip_interface(first.text)
    except ValueError:
        diags.error(first.loc, f"expected an address IP[/prefix], got '{first.text}'")
        return INVALID
    values: dict[str, str] = {}
    flags: list[str] = []
    rest = list(words[1:])
    i = 0
    while i < len(rest):
        w = rest[i]
        if w.text in _VIP_VALUE_OPTS:
            if i + 1 >= len(rest):
                diags.error(w.loc, f"'{w.text}' needs a value")
                return INVALID
            key = "brd" if w.text == "broadcast" else w.text
            values[key] = rest[i + 1].text
            i += 2
            continue
        if w.text in _VIP_FLAGS:
            flags.append(w.text)
            i += 1
            continue
        known = sorted(_VIP_VALUE_OPTS | _VIP_FLAGS)
        diags.error(w.loc, f"unknown address option '{w.text}'{did_you_mean(w.text, known)}")
        return INVALID
    scope = values.get("scope")
    if scope is not None and scope not in SCOPES and not scope.isdigit():
        diags.error(node.loc, f"scope must be one of {'|'.join(sorted(SCOPES))}, got '{scope}'")
        return INVALID
    extra = tuple(f for f in flags if f not in ("no_track", "use_vmac")) + tuple(
        f"{k} {v}" for k, v in values.items() if k in ("preferred_lft", "track_group")
    )
    return VirtualAddress(
        address,
        dev=values.get("dev"),
        brd=values.get("brd"),
        scope=scope,
        label=values.get("label"),
        peer=values.get("peer"),
        use_vmac="use_vmac" in flags,
        no_track="no_track" in flags,
        options=extra,
        loc=node.loc,
    )


@described("per line: ip route / ip rule words [no_track] [track_group G]")
def route(node: Node, diags: Diagnostics) -> Any:
    """A route or rule line, kept as words; the first address-like word is checked."""
    words = words_of(node)
    texts = [w.text for w in words]
    track_group = None
    if "track_group" in texts:
        i = texts.index("track_group")
        if i + 1 >= len(texts):
            diags.error(words[i].loc, "'track_group' needs a name")
            return INVALID
        track_group = texts[i + 1]
        del texts[i : i + 2]
    no_track = "no_track" in texts
    texts = [t for t in texts if t != "no_track"]
    for w in words:
        if w.text in ("from", "to", "via", "gw", "src", "or") or w.text[:1].isalpha():
            continue
        if w.text[:1].isdigit() and ("." in w.text or ":" in w.text or "/" in w.text):
            try:
                ipaddress.ip_network(w.text, strict=False)
            except ValueError:
                diags.error(w.loc, f"malformed address '{w.text}' in route/rule")
                return INVALID
    return RouteSpec(tuple(texts), no_track, track_group, loc=node.loc)


_DEPRECATED_ROUTE_WORDS = {"or": "nexthop", "gw": "via"}


@described("per line: ip route words [no_track] [track_group G]")
def ip_route(node: Node, diags: Diagnostics) -> Any:
    """A route line; `or` and `gw` are deprecated, as keepalived says (still read)."""
    got = route(node, diags)
    if got is not INVALID:
        for w in words_of(node):
            better = _DEPRECATED_ROUTE_WORDS.get(w.text)
            if better is not None and not w.quoted:
                diags.warning(w.loc, f"'{w.text}' in a route is deprecated; use '{better}'")
    return got


@described("per line: ip rule words (from/to/table/preference ...) [no_track] [track_group G]")
def rule(node: Node, diags: Diagnostics) -> Any:
    """An `ip rule` line; keepalived invents a preference when none is given, so say so."""
    got = route(node, diags)
    if got is not INVALID and not {"preference", "prio", "priority", "pref", "order"} & set(
        got.words
    ):
        diags.warning(
            node.loc,
            "rule has no preference: keepalived assigns one (16384 downwards), "
            "which is probably not what you want",
        )
    return got


@described("CODE|LOW-HIGH...")
def status_codes(node: Node, diags: Diagnostics) -> Any:
    """`status_code 200 | 200-299 400-499 503 ...` -> ((lo, hi), ...)."""
    if not arity(node, diags, 1, None, "status codes or ranges like 200-299"):
        return INVALID
    out: list[tuple[int, int]] = []
    for w in node.args:
        lo_text, _, hi_text = w.text.partition("-")
        try:
            lo = int(lo_text)
            hi = int(hi_text) if hi_text else lo
        except ValueError:
            diags.error(w.loc, f"status_code expects codes or ranges like 200-299, got '{w.text}'")
            return INVALID
        if not (100 <= lo <= hi <= 999):
            diags.error(w.loc, f"status_code must be in 100..999 with low <= high, got '{w.text}'")
            return INVALID
        out.append((lo, hi))
    return tuple(out)


def hex_groups(node: Node, diags: Diagnostics, wildcards: bool) -> tuple[bytes, bytes] | None:
    """keepalived's free-form HEX_STR: blank-separated groups, read two nibbles at a time.

    A group's lone last nibble is a whole byte (`Ab12f 3` -> AB 12 0F 03, keepalived.conf(5)).
    With `wildcards`, an X/x nibble matches anything: it is 0 in the data and 0 in the mask.
    Returns (data, mask), or None after reporting the first bad character at its column.
    """
    data = bytearray()
    mask = bytearray()
    for word in node.args:
        base = word.loc.col + (1 if word.quoted else 0)
        for offset, group in _blank_split(word.text):
            for start in range(0, len(group), 2):
                pair = group[start : start + 2]
                value = 0
                bits = 0xF if len(pair) == 1 else 0  # a lone nibble's high half is a known 0
                for i, ch in enumerate(pair):
                    value <<= 4
                    bits <<= 4
                    if wildcards and ch in "xX":
                        continue
                    if ch not in _HEX_DIGITS:
                        col = base + offset + start + i
                        loc = Location(word.loc.file, word.loc.line, col)
                        allowed = "hex digits or X" if wildcards else "hex digits"
                        diags.error(
                            loc, f"'{node.keyword.text}' expects {allowed}, got '{ch}' in '{group}'"
                        )
                        return None
                    value |= int(ch, 16)
                    bits |= 0xF
                data.append(value)
                mask.append(bits)
    return bytes(data), bytes(mask)


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _blank_split(text: str) -> list[tuple[int, str]]:
    """(offset, group) for each blank-separated group of a word (quoted words may hold blanks)."""
    out: list[tuple[int, str]] = []
    start = -1
    for i, ch in enumerate(text + " "):
        if ch.isspace():
            if start >= 0:
                out.append((start, text[start:i]))
                start = -1
        elif start < 0:
            start = i
    return out


@described("HEX_STR (groups of hex digits; a lone last nibble of a group is 0N)")
def hex_payload(node: Node, diags: Diagnostics) -> Any:
    if not arity(node, diags, 1, None, "HEX_STR"):
        return INVALID
    parsed = hex_groups(node, diags, wildcards=False)
    return INVALID if parsed is None else parsed[0]


@described("[HEX_STR] (hex groups; X/x = any nibble)")
def hex_pattern(node: Node, diags: Diagnostics) -> Any:
    """`require_reply [HEX_STR]`: () without a pattern, else (expected bytes, nibble mask)."""
    if not node.args:
        return ()
    parsed = hex_groups(node, diags, wildcards=True)
    return INVALID if parsed is None else parsed


LVS_METHODS = ("NAT", "DR", "TUN")


@described("NAT|DR|TUN [type ipip|gue port N|gre] [csum opts]")
def lvs_method(node: Node, diags: Diagnostics) -> Any:
    """`NAT|DR|TUN [type ipip|gue port N|gre] [nocsum|csum|remcsum]`."""
    if not arity(node, diags, 1, 6, "NAT|DR|TUN [type ipip|gue port N|gre] [nocsum|csum|remcsum]"):
        return INVALID
    first = node.args[0]
    method = first.text.upper()
    if method not in LVS_METHODS:
        diags.error(
            first.loc, f"'{node.keyword.text}' must be one of NAT|DR|TUN, got '{first.text}'"
        )
        return INVALID
    rest = [w.text for w in node.args[1:]]
    if rest and method != "TUN":
        diags.error(node.args[1].loc, f"'{method}' takes no options")
        return INVALID
    ttype = port = csum = None
    i = 0
    while i < len(rest):
        if rest[i] == "type" and i + 1 < len(rest) and rest[i + 1] in ("ipip", "gue", "gre"):
            ttype = rest[i + 1]
            i += 2
        elif rest[i] == "port" and i + 1 < len(rest) and rest[i + 1].isdigit():
            port = int(rest[i + 1])
            i += 2
        elif rest[i] in ("nocsum", "csum", "remcsum"):
            csum = rest[i]
            i += 1
        else:
            diags.error(node.args[1 + i].loc, f"unexpected tunnel option '{rest[i]}'")
            return INVALID
    if ttype == "gue" and port is None:
        diags.error(node.loc, "tunnel type gue needs 'port N'")
        return INVALID
    return LvsMethod(method, ttype, port, csum)


@described("[SECONDS] (bare: 360)")
def persistence_timeout(node: Node, diags: Diagnostics) -> Any:
    """`persistence_timeout [SECS]`: bare keyword means 360 s (6 minutes)."""
    if not arity(node, diags, 0, 1, "an optional number of seconds"):
        return INVALID
    if not node.args:
        return 360
    return to_int(node.args[0], diags, 1, 2678400, "'persistence_timeout'")


@described("IPADDR [PORT]")
def sorry_server(node: Node, diags: Diagnostics) -> Any:
    got = ip_port(node, diags, node.args, "IPADDR [PORT]")
    if got is INVALID:
        return INVALID
    return SorryServer(got[0], got[1])


@described("IPADDR [PORT]")
def real_server_head(node: Node, diags: Diagnostics) -> Any:
    return ip_port(node, diags, node.args, "IPADDR [PORT]")


@described("IPADDR [PORT] | fwmark N | group NAME")
def vs_head(node: Node, diags: Diagnostics) -> Any:
    """`IPADDR [PORT]` | `fwmark N` | `group NAME`.

    Returns ("addr", ip, port), ("fwmark", n) or ("group", name).
    """
    args = node.args
    if args and args[0].text in ("fwmark", "group"):
        if len(args) != 2:
            diags.error(node.loc, f"'virtual_server {args[0].text}' expects one value")
            return INVALID
        if args[0].text == "group":
            return ("group", args[1].text)
        mark = to_int(args[1], diags, 1, 4294967295, "fwmark")
        return INVALID if mark is INVALID else ("fwmark", mark)
    got = ip_port(node, diags, args, "IPADDR [PORT] | fwmark N | group NAME")
    if got is INVALID:
        return INVALID
    return ("addr", got[0], got[1])


@described("per line: IP[-LAST]|CIDR [PORT] | fwmark N [inet|inet6]")
def vsg_entry(node: Node, diags: Diagnostics) -> Any:
    words = words_of(node)
    if words[0].text == "fwmark":
        if not 2 <= len(words) <= 3:
            diags.error(node.loc, "expected 'fwmark N [inet|inet6]'")
            return INVALID
        mark = to_int(words[1], diags, 1, 4294967295, "fwmark")
        family = words[2].text if len(words) == 3 else None
        if family not in (None, "inet", "inet6"):
            diags.error(words[2].loc, f"expected inet or inet6, got '{family}'")
            return INVALID
        return INVALID if mark is INVALID else VsgEntry(fwmark=mark, family=family)
    if len(words) > 2:
        diags.error(words[2].loc, "expected 'IP[-range]|CIDR [PORT]'")
        return INVALID
    port = to_int(words[1], diags, 0, 65535, "port") if len(words) == 2 else None
    if port is INVALID:
        return INVALID
    spec = words[0].text
    try:
        if "/" in spec:
            net = ipaddress.ip_network(spec, strict=False)
            return VsgEntry(net[0], net[-1], port)
        first_text, dash, last_text = spec.partition("-")
        first = ipaddress.ip_address(first_text)
        if not dash:
            return VsgEntry(first, first, port)
        if "." in last_text or ":" in last_text:
            last = ipaddress.ip_address(last_text)
        else:
            sep = "." if first.version == 4 else ":"
            head = first_text.rsplit(sep, 1)[0]
            last = ipaddress.ip_address(f"{head}{sep}{last_text}")
        if last.version != first.version or last < first:  # type: ignore[operator]
            raise ValueError(spec)
        return VsgEntry(first, last, port)
    except ValueError:
        diags.error(words[0].loc, f"expected an address, range (a.b.c.d-e) or CIDR, got '{spec}'")
        return INVALID
