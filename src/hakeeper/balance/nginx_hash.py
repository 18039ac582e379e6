"""nginx hash balancers: `ip_hash`, `hash KEY` and `hash KEY consistent` (ketama).

Follows nginx's modules/ngx_http_upstream_ip_hash_module.c and _hash_module.c (read for
facts, not copied):

* ip_hash: `hash = 89`, then for each of the first 3 octets of an IPv4 client (all 16 of an
  IPv6 one, 3 zero bytes for anything else) `hash = (hash * 113 + octet) % 6271`; `w = hash %
  total_weight` is walked over the peers' weights (down peers keep their share). A miss
  (tried, down, failed, full) re-iterates from the last hash; after 20 misses: round-robin.
* hash KEY: `crc32([rehash] KEY) >> 16 & 0x7fff` accumulated into the request's hash
  (Cache::Memcached compatible; the rehash count is prefixed as decimal text from the second
  round on), `% total_weight` walked over weights, 20 misses then round-robin.
* hash KEY consistent: 160 points per unit of weight; for a peer configured as "host:port"
  the base is crc32 over `host "\\0" port`, and point j is `crc32(base, previous point as 4
  little-endian bytes)`, starting from 0. Points are sorted and duplicates dropped. A request
  hashes `crc32(KEY)`, finds the first point >= it and walks clockwise; all peers sharing the
  point's server text are chosen among by SWRR. 20 misses then round-robin.

crc32 is zlib's (identical to ngx_crc32). An empty key, or a single peer, means round-robin.
"""

from __future__ import annotations

import bisect
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from hakeeper.balance.nginx import (
    HASH_MAX_TRIES,
    IPAddress,
    Peer,
    UpstreamBalancer,
    UpstreamRequest,
    UpstreamServer,
)

KETAMA_POINTS_PER_WEIGHT = 160


def ip_hash_octets(client: IPAddress | None) -> bytes:
    if isinstance(client, IPv4Address):
        return client.packed[:3]
    if isinstance(client, IPv6Address):
        return client.packed
    return b"\0\0\0"


def _walk_weights(peers: Sequence[Peer], w: int) -> Peer:
    for peer in peers:
        if w < peer.weight:
            return peer
        w -= peer.weight
    return peers[-1]  # unreachable while w < total_weight


class IpHashRequest(UpstreamRequest):
    def __init__(self, balancer: UpstreamBalancer, client: IPAddress | None) -> None:
        super().__init__(balancer)
        self.addr = ip_hash_octets(client)
        self.hash = 89
        self.hash_tries = 0

    def get(self, now: float) -> Peer | None:
        t = int(now)
        if self.hash_tries > HASH_MAX_TRIES or self.peers.single:
            return self._get_rr(t)
        h = self.hash
        while True:
            for octet in self.addr:
                h = (h * 113 + octet) % 6271
            peer = _walk_weights(self.peers.peers, h % self.peers.total_weight)
            if peer.index not in self.tried and peer.eligible(t):
                self.hash = h
                return self._found(peer, t)
            self.hash_tries += 1
            if self.hash_tries > HASH_MAX_TRIES:
                return self._get_rr(t)


class IpHashBalancer(UpstreamBalancer):
    method = "ip_hash"
    allows_backup = False

    def begin(self, *, client: IPAddress | None = None, key: bytes | str = b"") -> UpstreamRequest:
        return IpHashRequest(self, client)


def _key_bytes(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else key


class HashRequest(UpstreamRequest):
    def __init__(self, balancer: UpstreamBalancer, key: bytes | str) -> None:
        super().__init__(balancer)
        self.key = _key_bytes(key)
        self.hash = 0
        self.rehash = 0
        self.hash_tries = 0

    def get(self, now: float) -> Peer | None:
        t = int(now)
        if self.hash_tries > HASH_MAX_TRIES or self.peers.single or not self.key:
            return self._get_rr(t)
        while True:
            prefix = str(self.rehash).encode() if self.rehash > 0 else b""
            self.hash += (zlib.crc32(prefix + self.key) >> 16) & 0x7FFF
            self.rehash += 1
            peer = _walk_weights(self.peers.peers, self.hash % self.peers.total_weight)
            if peer.index not in self.tried and peer.eligible(t):
                return self._found(peer, t)
            self.hash_tries += 1
            if self.hash_tries > HASH_MAX_TRIES:
                return self._get_rr(t)


class HashBalancer(UpstreamBalancer):
    method = "hash"
    allows_backup = False

    def begin(self, *, client: IPAddress | None = None, key: bytes | str = b"") -> UpstreamRequest:
        return HashRequest(self, key)


@dataclass(frozen=True, slots=True)
class ChashPoint:
    hash: int
    server: str


def split_host_port(server: str) -> tuple[bytes, bytes]:
    """nginx's split of a configured server: "unix:..." has no port; otherwise the trailing
    ":digits" (if any) is the port."""
    raw = server.encode()
    if raw[:5].lower() == b"unix:":
        return raw[5:], b""
    j = 0
    while j < len(raw):
        c = raw[len(raw) - j - 1]
        if c == ord(":"):
            return raw[: len(raw) - j - 1], raw[len(raw) - j :]
        if not ord("0") <= c <= ord("9"):
            break
        j += 1
    return raw, b""


def ketama_points(peers: Sequence[Peer]) -> list[ChashPoint]:
    """The sorted, de-duplicated continuum nginx builds for `hash ... consistent`."""
    points: list[ChashPoint] = []
    for peer in peers:
        host, port = split_host_port(peer.server)
        base = zlib.crc32(host + b"\0" + port)
        prev = 0
        for _ in range(peer.weight * KETAMA_POINTS_PER_WEIGHT):
            h = zlib.crc32(prev.to_bytes(4, "little"), base)
            points.append(ChashPoint(h, peer.server))
            prev = h
    points.sort(key=lambda p: p.hash)
    out: list[ChashPoint] = []
    for p in points:
        if not out or out[-1].hash != p.hash:
            out.append(p)
    return out


def _serves(server: str) -> Callable[[Peer], bool]:
    return lambda peer: peer.server == server


class ChashRequest(UpstreamRequest):
    balancer: ChashBalancer

    def __init__(self, balancer: ChashBalancer, key: bytes | str) -> None:
        super().__init__(balancer)
        self.key = _key_bytes(key)
        self.hash = bisect.bisect_left(balancer.point_hashes, zlib.crc32(self.key))
        self.hash_tries = 0

    def get(self, now: float) -> Peer | None:
        t = int(now)
        if self.hash_tries > HASH_MAX_TRIES or self.peers.single or not self.key:
            return self._get_rr(t)
        points = self.balancer.points
        while True:
            server = points[self.hash % len(points)].server
            best = self._swrr(t, _serves(server))
            if best is not None:
                return self._found(best, t)
            self.hash += 1
            self.hash_tries += 1
            if self.hash_tries > HASH_MAX_TRIES:
                return self._get_rr(t)


class ChashBalancer(UpstreamBalancer):
    method = "hash_consistent"
    allows_backup = False

    def __init__(self, servers: Sequence[UpstreamServer], *, rng: random.Random | None = None):
        super().__init__(servers, rng=rng)
        self.points = ketama_points(self.primary.peers)
        self.point_hashes = [p.hash for p in self.points]

    def begin(self, *, client: IPAddress | None = None, key: bytes | str = b"") -> UpstreamRequest:
        return ChashRequest(self, key)

    def owner(self, key: bytes | str) -> str:
        """The server text a key maps to when every peer is up (for tests and status)."""
        i = bisect.bisect_left(self.point_hashes, zlib.crc32(_key_bytes(key)))
        return self.points[i % len(self.points)].server
