"""IPVS hashing schedulers: sh (source hash), dh (destination hash), mh (Maglev).

Bucket tables, hash keys and fallbacks follow the Linux kernel's ip_vs_sh.c, ip_vs_dh.c and
ip_vs_mh.c (read for facts, not copied):

* sh: 256 buckets filled in list order, each destination taking `weight` consecutive buckets;
  key `hash_32(port + addr, 8)` (golden ratio 0x61C88647); `sh-port` hashes the source port
  too, `sh-fallback` walks the table from the home bucket when the home server is unusable.
* dh: 256 buckets dealt round the destinations one at a time; key `addr * 2654435761 & 255`;
  no fallback.
* mh: Maglev (NSDI'16 section 3.4) with IPVS's prime table (default 4093 entries, the kernel's
  CONFIG_IP_VS_MH_TAB_INDEX=12), per-destination offset/skip from hsiphash with IPVS's fixed
  keys, weights turned into turns by gcd and a right shift. A quiesced (weight 0) destination
  keeps its slots (the kernel populates from last_weight), so draining it moves nobody else.

hsiphash on a 64-bit kernel is SipHash-1-3; `siphash()` below is the generic c/d-round
function, checked in the tests against the SipHash-2-4 reference vectors and the kernel's own
64-bit hsiphash self-test vectors (lib/test_siphash.c), so mh tables should equal IPVS's for
the same destination order, weights and table size. Whole tables could not be cross-checked
against a kernel: this one has no IPVS.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

from hakeeper.balance.lvs import NO_FLOW, Flow, IPAddress, RealServer, Scheduler

_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1

SH_TAB_SIZE = 256
DH_TAB_SIZE = 256
#: The primes ip_vs_mh.c offers; index 4 (4093) is the kernel's default.
MH_PRIMES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
MH_DEFAULT_TABLE_SIZE = 4093
_MH_HASH1 = (2654435761, 2654435761)
_MH_HASH2 = (2654446892, 2654446892)
_GOLDEN_RATIO_32 = 0x61C88647


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK64


def siphash(k0: int, k1: int, data: bytes, c_rounds: int = 2, d_rounds: int = 4) -> int:
    """SipHash-c-d over `data` with the 128-bit key (k0, k1); returns the 64-bit value."""
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    v2 = 0x6C7967656E657261 ^ k0
    v3 = 0x7465646279746573 ^ k1

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _MASK64
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK64
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _MASK64
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _MASK64
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    tail = len(data) % 8
    for off in range(0, len(data) - tail, 8):
        m = int.from_bytes(data[off : off + 8], "little")
        v3 ^= m
        rounds(c_rounds)
        v0 ^= m
    b = ((len(data) & 0xFF) << 56) | int.from_bytes(data[len(data) - tail :], "little")
    v3 ^= b
    rounds(c_rounds)
    v0 ^= b
    v2 ^= 0xFF
    rounds(d_rounds)
    return v0 ^ v1 ^ v2 ^ v3


@functools.lru_cache(maxsize=65536)
def hsiphash_u32(key: tuple[int, int], value: int) -> int:
    """The kernel's 64-bit hsiphash (SipHash-1-3) of one native (little-endian) u32."""
    data = (value & _MASK32).to_bytes(4, "little")
    return siphash(key[0], key[1], data, 1, 3) & _MASK32


def addr_fold(addr: IPAddress) -> int:
    """The kernel's host-order address word: IPv4 as is, IPv6 as the XOR of its four words."""
    if isinstance(addr, IPv4Address):
        return int(addr)
    v = int(addr)
    return (v >> 96 ^ v >> 64 ^ v >> 32 ^ v) & _MASK32


def hash_32(value: int, bits: int) -> int:
    """include/linux/hash.h hash_32(): multiply by the golden ratio, keep the top bits."""
    return ((value * _GOLDEN_RATIO_32) & _MASK32) >> (32 - bits)


def _is_unavailable(s: RealServer | None) -> bool:
    return s is None or not s.usable


def _signature(servers: Sequence[RealServer]) -> tuple[tuple[str, int], ...]:
    return tuple((s.key, s.weight) for s in servers)


# ------------------------------------------------------------------------------ sh / dh


class SourceHash(Scheduler):
    """ip_vs_sh over the client address (and port with `port=True`)."""

    name = "sh"

    def __init__(self, *, port: bool = False, fallback: bool = False) -> None:
        self.port = port
        self.fallback = fallback
        self._sig: tuple[tuple[str, int], ...] | None = None
        self._buckets: list[str | None] = [None] * SH_TAB_SIZE

    def _reassign(self, servers: Sequence[RealServer]) -> None:
        self._buckets = [None] * SH_TAB_SIZE
        if not servers:
            return
        d = 0
        count = 0
        for i in range(SH_TAB_SIZE):
            s = servers[d]
            self._buckets[i] = s.key
            count += 1
            if count >= s.weight:
                d = (d + 1) % len(servers)
                count = 0

    def bucket_keys(self, servers: Sequence[RealServer]) -> tuple[str | None, ...]:
        """The 256-entry table for `servers` (for data planes that load it into a map)."""
        self._sync(servers)
        return tuple(self._buckets)

    def _sync(self, servers: Sequence[RealServer]) -> None:
        sig = _signature(servers)
        if sig != self._sig:
            self._reassign(servers)
            self._sig = sig

    @staticmethod
    def hashkey(addr: IPAddress, port: int, offset: int = 0) -> int:
        return (offset + hash_32((port + addr_fold(addr)) & _MASK32, 8)) & (SH_TAB_SIZE - 1)

    def pick(self, servers: Sequence[RealServer], flow: Flow = NO_FLOW) -> RealServer | None:
        self._sync(servers)
        by_key = {s.key: s for s in servers}
        port = flow.sport if self.port else 0
        home = self.hashkey(flow.src, port)
        key = self._buckets[home]
        dest = by_key.get(key) if key is not None else None
        if dest is None:
            return None
        if not _is_unavailable(dest):
            return dest
        if not self.fallback:
            return None
        for offset in range(SH_TAB_SIZE):
            roffset = (offset + home) % SH_TAB_SIZE
            key = self._buckets[self.hashkey(flow.src, port, roffset)]
            cand = by_key.get(key) if key is not None else None
            if not _is_unavailable(cand):
                return cand
        return None


class DestinationHash(Scheduler):
    """ip_vs_dh over the packet's destination address; an unusable home server means None."""

    name = "dh"

    def __init__(self) -> None:
        self._sig: tuple[tuple[str, int], ...] | None = None
        self._buckets: list[str | None] = [None] * DH_TAB_SIZE

    @staticmethod
    def hashkey(addr: IPAddress) -> int:
        return (addr_fold(addr) * 2654435761) & (DH_TAB_SIZE - 1)

    def pick(self, servers: Sequence[RealServer], flow: Flow = NO_FLOW) -> RealServer | None:
        sig = _signature(servers)
        if sig != self._sig:
            self._buckets = [
                servers[i % len(servers)].key if servers else None for i in range(DH_TAB_SIZE)
            ]
            self._sig = sig
        key = self._buckets[self.hashkey(flow.dst)]
        dest = next((s for s in servers if s.key == key), None)
        return None if _is_unavailable(dest) else dest


# ------------------------------------------------------------------------------------ mh


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % p for p in range(2, math.isqrt(n) + 1))


class MaglevHash(Scheduler):
    """ip_vs_mh: Maglev lookup table of a prime size, keyed by client address (and port)."""

    name = "mh"

    def __init__(
        self,
        *,
        table_size: int = MH_DEFAULT_TABLE_SIZE,
        port: bool = False,
        fallback: bool = False,
    ) -> None:
        if not _is_prime(table_size):
            raise ValueError(f"Maglev table size must be prime, got {table_size}")
        self.table_size = table_size
        self.port = port
        self.fallback = fallback
        self._tab_bits = table_size.bit_length() // 2
        self._last_weight: dict[str, int] = {}
        self._sig: tuple[tuple[str, int], ...] | None = None
        self._lookup: list[str | None] = [None] * table_size

    def _hashkey(self, addr: IPAddress, port: int, key: tuple[int, int], offset: int) -> int:
        return hsiphash_u32(key, offset + port + addr_fold(addr))

    @staticmethod
    def _dest_addr_port(key: str) -> tuple[IPAddress, int]:
        """Parse "a.b.c.d:port" / "[v6]:port" / bare address; unparsable keys hash as text."""
        host, _, port = key.rpartition(":")
        if not host:
            host, port = key, "0"
        host = host.strip("[]")
        try:
            addr: IPAddress = IPv4Address(host) if ":" not in host else IPv6Address(host)
            return addr, int(port) if port.isdigit() else 0
        except ValueError:
            return IPv4Address(int.from_bytes(key.encode()[-4:].rjust(4, b"\0"), "big")), 0

    def _populate(self, servers: Sequence[RealServer]) -> None:
        for s in servers:
            if s.weight > 0:
                self._last_weight[s.key] = s.weight
        present = {s.key for s in servers}
        self._last_weight = {k: w for k, w in self._last_weight.items() if k in present}
        lws = [self._last_weight.get(s.key, 0) for s in servers]
        g = 0
        for w in lws:
            if w > 0:
                g = math.gcd(g, w)
        m = self.table_size
        self._lookup = [None] * m
        if g < 1:
            return
        shift = max((max(lws) // g).bit_length() - self._tab_bits, 0)
        setup = []
        for s, lw in zip(servers, lws, strict=True):
            addr, port = self._dest_addr_port(s.key)
            offset = self._hashkey(addr, port, _MH_HASH1, 0) % m
            skip = self._hashkey(addr, port, _MH_HASH2, 0) % (m - 1) + 1
            turns = ((lw // g) >> shift) or (1 if lw else 0)
            setup.append([offset, skip, turns])
        filled = [False] * m
        n = 0
        while n < m:
            for i, s in enumerate(servers):
                ds = setup[i]
                if ds[2] < 1:
                    continue
                for _ in range(ds[2]):
                    c = ds[0]
                    while filled[c]:
                        ds[0] = (ds[0] + ds[1]) % m
                        c = ds[0]
                    filled[c] = True
                    self._lookup[c] = s.key
                    n += 1
                    if n == m:
                        return

    def table(self, servers: Sequence[RealServer]) -> tuple[str | None, ...]:
        """The whole lookup table for `servers` (for data planes that load it into a map)."""
        self._sync(servers)
        return tuple(self._lookup)

    def _sync(self, servers: Sequence[RealServer]) -> None:
        sig = _signature(servers)
        if sig != self._sig:
            self._populate(servers)
            self._sig = sig

    def pick(self, servers: Sequence[RealServer], flow: Flow = NO_FLOW) -> RealServer | None:
        self._sync(servers)
        by_key = {s.key: s for s in servers}
        port = flow.sport if self.port else 0
        m = self.table_size
        home = self._hashkey(flow.src, port, _MH_HASH1, 0) % m
        key = self._lookup[home]
        dest = by_key.get(key) if key is not None else None
        if dest is None:
            return None
        if not _is_unavailable(dest):
            return dest
        if not self.fallback:
            return None
        for offset in range(m):
            roffset = (offset + home) % m
            key = self._lookup[self._hashkey(flow.src, port, _MH_HASH1, roffset) % m]
            if key is None:
                break
            cand = by_key.get(key)
            if not _is_unavailable(cand):
                return cand
        return None
