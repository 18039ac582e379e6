"""VRRP advertisement codec: RFC 3768 (v2) and RFC 5798/9568 (v3) payloads for IPv4 and IPv6.

Owns the bytes after the IP header: encode/decode, the Internet checksum in every form
keepalived and FRR use, v2 PASS authentication data, and the receive-path classification
of bad packets. Pure: no sockets, clocks or randomness; the adapter passes in the source,
destination and TTL it read from the IP header.

Checksums (see shared/anchors/keepalived.md §1.9 and §5c):

* v2: one's complement sum over the VRRP message only (RFC 3768 §5.3.8).
* v3 over IPv6: always with the RFC 8200 §8.1 pseudo-header (RFC 5798 §5.2.8).
* v3 over IPv4: two readings exist. ``ChecksumForm.PSEUDO`` adds the IPv4 pseudo-header
  (src, dst, 0, 112, length) using the packet's real destination; this is keepalived's
  default and what we send by default. ``ChecksumForm.MESSAGE`` is the message-only form
  of RFC 9568 / keepalived ``v3_checksum_as_v2`` / Cisco. On receive both are accepted and
  :attr:`Advert.checksum_form` says which one matched. FRR always puts 224.0.0.18 in the
  pseudo-header, even for unicast; that form is accepted too (``PSEUDO_GROUP``).

Errors: peers' garbage never raises. :func:`decode` returns a :class:`DecodeError` with a
:class:`DropReason`; :func:`check_local` compares a decoded advert with the local instance
(version, auth, interval, VIP list) and says whether to drop it and what to log. Our own
misuse (encoding an impossible advert) raises ``ValueError``.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

VRRP_PROTOCOL = 112
VRRP_TTL = 255
MCAST_GROUP4 = ipaddress.IPv4Address("224.0.0.18")
MCAST_GROUP6 = ipaddress.IPv6Address("ff02::12")
TYPE_ADVERTISEMENT = 1
AUTH_DATA_LEN = 8
V2_HEADER_LEN = 8
V3_HEADER_LEN = 8
MAX_V3_INTERVAL_CS = 0x0FFF  # 12 bits: 40.95 s


class AuthType(enum.IntEnum):
    """v2 Auth Type field (RFC 2338 values, kept by keepalived)."""

    NONE = 0
    PASS = 1
    AH = 2


class ChecksumForm(enum.Enum):
    """Which checksum a v3 advert carries (or should carry)."""

    MESSAGE = "message"  # v2 and RFC 9568 IPv4: the VRRP message alone
    PSEUDO = "pseudo"  # pseudo-header with the packet's real destination (keepalived)
    PSEUDO_GROUP = "pseudo-group"  # pseudo-header with the multicast group as dst (FRR)


class DropReason(enum.Enum):
    """Why a received advert is discarded (counted by the driver, logged rate-limited)."""

    TOO_SHORT = "too short"
    BAD_VERSION = "bad version"
    BAD_TYPE = "bad type"
    COUNT_MISMATCH = "address count does not match length"
    BAD_CHECKSUM = "bad checksum"
    BAD_TTL = "ttl/hop-limit is not 255"
    BAD_FAMILY = "address family mismatch"
    VERSION_MISMATCH = "version differs from the local instance"
    AUTH_MISMATCH = "authentication mismatch"
    INTERVAL_MISMATCH = "advert interval differs (v2)"
    UNKNOWN_VRID = "no local instance for this VRID"
    OWN_ADVERT = "our own advert looped back"


@dataclass(frozen=True, slots=True)
class Advert:
    """A decoded (or to-be-encoded) VRRP advertisement.

    ``interval_cs`` is in centiseconds for both versions (v2 seconds x 100).
    ``auth_data`` is the raw 8-byte v2 auth field (empty for v3).
    ``source`` is the IP source address given by the adapter on receive.
    """

    version: int
    vrid: int
    priority: int
    addresses: tuple[IPAddress, ...]
    interval_cs: int
    auth_type: AuthType = AuthType.NONE
    auth_data: bytes = b""
    source: IPAddress | None = None
    checksum_form: ChecksumForm = ChecksumForm.MESSAGE

    @property
    def interval(self) -> float:
        """Advert interval in seconds."""
        return self.interval_cs / 100.0

    @property
    def family(self) -> int:
        """4 or 6, from the addresses (or the source when there are none)."""
        if self.addresses:
            return self.addresses[0].version
        return self.source.version if self.source is not None else 4


@dataclass(frozen=True, slots=True)
class DecodeError:
    """A packet that failed a structural check; never raised, returned."""

    reason: DropReason
    detail: str = ""


def internet_checksum(data: bytes) -> int:
    """RFC 1071 16-bit one's complement of the one's complement sum."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    """IPv4 (src, dst, 0, 112, len16) or IPv6 (src, dst, len32, 0, 112) pseudo-header."""
    if src.version != dst.version:
        raise ValueError(f"pseudo-header needs one family: {src} / {dst}")
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, VRRP_PROTOCOL, length)
    return src.packed + dst.packed + struct.pack("!I3xB", length, VRRP_PROTOCOL)


def pass_auth_data(password: str | bytes) -> bytes:
    """keepalived PASS auth: the password truncated to 8 bytes, zero-padded."""
    raw = password.encode() if isinstance(password, str) else password
    return raw[:AUTH_DATA_LEN].ljust(AUTH_DATA_LEN, b"\x00")


def _v3_checksum(message: bytes, form: ChecksumForm, src: IPAddress, dst: IPAddress) -> int:
    if form is ChecksumForm.MESSAGE and src.version == 4:
        return internet_checksum(message)
    if form is ChecksumForm.PSEUDO_GROUP:
        dst = MCAST_GROUP4 if src.version == 4 else MCAST_GROUP6
    return internet_checksum(pseudo_header(src, dst, len(message)) + message)


def encode(
    advert: Advert,
    *,
    src: IPAddress | None = None,
    dst: IPAddress | None = None,
    checksum: ChecksumForm = ChecksumForm.PSEUDO,
) -> bytes:
    """Encode ``advert`` as the VRRP payload of an IP packet.

    v3 needs ``src`` and ``dst`` (the IP header's addresses) for the pseudo-header; IPv6
    always uses it, IPv4 uses it unless ``checksum`` is MESSAGE. ``dst`` defaults to the
    multicast group. Raises ValueError for values that cannot be encoded.
    """
    if not 1 <= advert.vrid <= 255:
        raise ValueError(f"VRID {advert.vrid} out of 1..255")
    if not 0 <= advert.priority <= 255:
        raise ValueError(f"priority {advert.priority} out of 0..255")
    if len(advert.addresses) > 255:
        raise ValueError("more than 255 addresses")
    family = advert.family
    if any(a.version != family for a in advert.addresses):
        raise ValueError("addresses of mixed families")
    addrs = b"".join(a.packed for a in advert.addresses)
    count = len(advert.addresses)
    if advert.version == 2:
        if family != 4:
            raise ValueError("VRRPv2 carries IPv4 only")
        if advert.interval_cs % 100 or not 100 <= advert.interval_cs <= 25500:
            raise ValueError(f"v2 advert interval must be whole seconds 1..255: {advert.interval}")
        auth = advert.auth_data
        if advert.auth_type is AuthType.NONE and not auth:
            auth = bytes(AUTH_DATA_LEN)
        if len(auth) != AUTH_DATA_LEN:
            raise ValueError("v2 auth data must be 8 bytes")
        head = struct.pack(
            "!BBBBBBH",
            0x21,
            advert.vrid,
            advert.priority,
            count,
            int(advert.auth_type),
            advert.interval_cs // 100,
            0,
        )
        message = head + addrs + auth
        csum = internet_checksum(message)
        return message[:6] + struct.pack("!H", csum) + message[8:]
    if advert.version != 3:
        raise ValueError(f"unknown VRRP version {advert.version}")
    if not 1 <= advert.interval_cs <= MAX_V3_INTERVAL_CS:
        raise ValueError(f"v3 advert interval {advert.interval_cs} cs out of 1..4095")
    head = struct.pack("!BBBBHH", 0x31, advert.vrid, advert.priority, count, advert.interval_cs, 0)
    message = head + addrs
    needs_pseudo = family == 6 or checksum is not ChecksumForm.MESSAGE
    if needs_pseudo:
        if src is None:
            raise ValueError("v3 pseudo-header checksum needs the source address")
        if dst is None:
            dst = MCAST_GROUP4 if family == 4 else MCAST_GROUP6
        csum = _v3_checksum(message, checksum, src, dst)
    else:
        csum = internet_checksum(message)
    return message[:6] + struct.pack("!H", csum) + message[8:]


def decode(
    data: bytes,
    *,
    src: IPAddress,
    dst: IPAddress,
    ttl: int | None = None,
) -> Advert | DecodeError:
    """Decode a received VRRP payload; structural problems come back as DecodeError.

    ``src``/``dst`` are the IP header's addresses (needed for v3 pseudo-header checksums
    and the family); ``ttl`` is the TTL / hop limit. RFC 3768 §7.1 / RFC 5798 §7.1: a
    multicast advert must have TTL 255; unicast ones are not TTL-checked (keepalived).
    """
    family = src.version
    if len(data) < V2_HEADER_LEN:
        return DecodeError(DropReason.TOO_SHORT, f"{len(data)} bytes")
    if ttl is not None and dst.is_multicast and ttl != VRRP_TTL:
        return DecodeError(DropReason.BAD_TTL, f"ttl {ttl}")
    version = data[0] >> 4
    vtype = data[0] & 0x0F
    if version not in (2, 3):
        return DecodeError(DropReason.BAD_VERSION, f"version {version}")
    if vtype != TYPE_ADVERTISEMENT:
        return DecodeError(DropReason.BAD_TYPE, f"type {vtype}")
    vrid, priority, count = data[1], data[2], data[3]
    alen = 4 if family == 4 else 16
    if version == 2:
        if family != 4:
            return DecodeError(DropReason.BAD_FAMILY, "VRRPv2 over IPv6")
        expected = V2_HEADER_LEN + alen * count + AUTH_DATA_LEN
    else:
        expected = V3_HEADER_LEN + alen * count
    if len(data) != expected:
        return DecodeError(
            DropReason.COUNT_MISMATCH, f"count {count} needs {expected} bytes, got {len(data)}"
        )
    (received_csum,) = struct.unpack_from("!H", data, 6)
    zeroed = data[:6] + b"\x00\x00" + data[8:]
    form: ChecksumForm | None = None
    if version == 2:
        if internet_checksum(zeroed) == received_csum:
            form = ChecksumForm.MESSAGE
    else:
        candidates = (
            (ChecksumForm.PSEUDO, ChecksumForm.MESSAGE, ChecksumForm.PSEUDO_GROUP)
            if family == 4
            else (ChecksumForm.PSEUDO, ChecksumForm.PSEUDO_GROUP)
        )
        for candidate in candidates:
            if _v3_checksum(zeroed, candidate, src, dst) == received_csum:
                form = candidate
                break
    if form is None:
        return DecodeError(DropReason.BAD_CHECKSUM, f"checksum {received_csum:#06x}")
    raw_addrs = data[V2_HEADER_LEN : V2_HEADER_LEN + alen * count]
    addresses: tuple[IPAddress, ...] = tuple(
        ipaddress.ip_address(raw_addrs[i : i + alen]) for i in range(0, len(raw_addrs), alen)
    )
    if version == 2:
        try:
            auth_type = AuthType(data[4])
        except ValueError:
            return DecodeError(DropReason.AUTH_MISMATCH, f"unknown auth type {data[4]}")
        return Advert(
            version=2,
            vrid=vrid,
            priority=priority,
            addresses=addresses,
            interval_cs=data[5] * 100,
            auth_type=auth_type,
            auth_data=bytes(data[-AUTH_DATA_LEN:]),
            source=src,
            checksum_form=form,
        )
    (rsvd_interval,) = struct.unpack_from("!H", data, 4)
    return Advert(
        version=3,
        vrid=vrid,
        priority=priority,
        addresses=addresses,
        interval_cs=rsvd_interval & 0x0FFF,
        source=src,
        checksum_form=form,
    )


@dataclass(frozen=True, slots=True)
class LocalExpect:
    """What the local instance expects of a peer's advert (RFC 3768/5798 §7.1 checks)."""

    version: int
    interval_cs: int
    vips: tuple[IPAddress, ...] = ()
    auth_type: AuthType = AuthType.NONE
    auth_data: bytes = b""
    skip_check_adv_addr: bool = False


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Outcome of :func:`check_local`: drop or not, plus misconfiguration notes to log."""

    drop: DropReason | None = None
    notes: tuple[str, ...] = field(default=())


def check_local(advert: Advert, expect: LocalExpect) -> CheckResult:
    """Compare a structurally valid advert with the local instance.

    * version differs: drop.
    * v2 auth type or PASS data differs: drop (AH is verified by the adapter with
      :mod:`hakeeper.vrrp.auth_ah` before this, so only the type is compared here).
    * v2 advert interval differs: drop (RFC 3768 §7.1, keepalived).
    * v3 advert interval differs: keep (the backup learns Master_Adver_Interval), note it.
    * VIP list differs: keep, note it (RFC "MAY log"; keepalived logs).
    """
    notes: list[str] = []
    if advert.version != expect.version:
        return CheckResult(DropReason.VERSION_MISMATCH, (f"got v{advert.version}",))
    if advert.version == 2:
        if advert.auth_type is not expect.auth_type:
            return CheckResult(
                DropReason.AUTH_MISMATCH,
                (f"auth type {advert.auth_type.name} != local {expect.auth_type.name}",),
            )
        if expect.auth_type is AuthType.PASS and advert.auth_data != pass_auth_data(
            expect.auth_data
        ):
            return CheckResult(DropReason.AUTH_MISMATCH, ("password differs",))
        if advert.interval_cs != expect.interval_cs:
            return CheckResult(
                DropReason.INTERVAL_MISMATCH,
                (f"advert_int {advert.interval:g}s != local {expect.interval_cs / 100:g}s",),
            )
    elif advert.interval_cs != expect.interval_cs:
        notes.append(
            f"advert_int {advert.interval:g}s differs from local {expect.interval_cs / 100:g}s;"
            " adopting the master's"
        )
    if not expect.skip_check_adv_addr and (
        advert.priority != 0 and set(advert.addresses) != set(expect.vips)
    ):
        notes.append(
            "VIP list differs: advert has "
            + ",".join(map(str, advert.addresses))
            + " local has "
            + ",".join(map(str, expect.vips))
        )
    return CheckResult(None, tuple(notes))
