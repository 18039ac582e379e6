"""Shared VRRP sockets: one raw socket per `SocketKey`, received adverts demultiplexed by VRID.

RFC 5798 §7.1: a received packet is decoded (`hakeeper.vrrp.packet.decode`, which checks
TTL 255 for multicast, length, version, type and the checksum in either v3 form) and
handed to the instance configured for its VRID; anything else is counted by reason and
dropped, never raised (a garbage packet costs one counter bump). Source/destination strings
are parsed once and cached, since a segment carries few distinct VRRP speakers. Sockets of
`auth_type AH` instances are raw protocol 51: the inner VRID picks the instance, which
checks the AH ICV and anti-replay sequence (`hakeeper.vrrp.auth_ah`) before the decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from hakeeper.io.vrrp_socket import IPPROTO_AH, ReceivedPacket, VrrpSocket, VrrpSocketConfig
from hakeeper.runtime.driver import InstanceDriver
from hakeeper.runtime.params import SocketKey
from hakeeper.vrrp.auth_ah import AH_LEN
from hakeeper.vrrp.packet import Advert, DecodeError, IPAddress, decode

log = logging.getLogger("hakeeper.vrrp")

MAX_ADDR_CACHE = 1024
MAX_DECODED_CACHE = 256

SocketFactory = Callable[[VrrpSocketConfig], VrrpSocket]


class SocketGroup:
    """One socket and the drivers sharing it (by VRID)."""

    def __init__(
        self, key: SocketKey, sock: VrrpSocket, *, check_unicast_src: bool = False
    ) -> None:
        self.key = key
        self.sock = sock
        self.drivers: dict[int, InstanceDriver] = {}
        self.dropped: dict[str, int] = {}
        self._addr_cache: dict[str, IPAddress] = {}
        # decode() is a pure function of (payload, src, dst, ttl) and a steady master sends
        # byte-identical adverts, so the last good decodes are remembered (checksum and all).
        self._decoded: dict[tuple[bytes, str, str, int], Advert] = {}
        # keepalived accepts unicast adverts from anyone unless vrrp_check_unicast_src
        self._peers = frozenset(key.unicast_peers) if check_unicast_src else frozenset()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.sock.attach(loop, self.on_packet)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _addr(self, text: str) -> IPAddress | None:
        cache = self._addr_cache
        addr = cache.get(text)
        if addr is None:
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                return None
            if len(cache) >= MAX_ADDR_CACHE:
                cache.clear()
            cache[text] = addr
        return addr

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def on_packet(self, pkt: ReceivedPacket) -> None:
        if self.key.protocol == IPPROTO_AH:
            self._on_ah_packet(pkt)
            return
        key = (pkt.payload, pkt.src, pkt.dst, pkt.ttl)
        advert = self._decoded.get(key)
        if advert is not None:
            driver = self.drivers.get(advert.vrid)
            if driver is not None:
                driver.on_advert(advert)
                return
        src = self._addr(pkt.src)
        dst = self._addr(pkt.dst)
        if src is None or dst is None:
            self._drop("BAD_ADDRESS")
            return
        if self._peers and pkt.src not in self._peers:
            self._drop("NOT_A_PEER")
            return
        result = decode(pkt.payload, src=src, dst=dst, ttl=pkt.ttl)
        if type(result) is DecodeError:
            payload = pkt.payload
            driver = self.drivers.get(payload[1]) if len(payload) > 1 else None
            if driver is not None:
                driver.on_decode_error(result)
            else:
                self._drop(result.reason.name)
            return
        assert not isinstance(result, DecodeError)
        driver = self.drivers.get(result.vrid)
        if driver is None:
            self._drop("UNKNOWN_VRID")
            return
        if len(self._decoded) >= MAX_DECODED_CACHE:
            self._decoded.clear()
        self._decoded[key] = result
        driver.on_advert(result)

    def _on_ah_packet(self, pkt: ReceivedPacket) -> None:
        """`auth_type AH`: the instance (by the inner VRID) verifies the ICV and the
        sequence number with its own key and counter; then the usual VRRP decode.

        Every AH packet differs (sequence number), so the decode cache is not used.
        """
        payload = pkt.payload
        if len(payload) <= AH_LEN + 1:
            self._drop("TOO_SHORT")
            return
        driver = self.drivers.get(payload[AH_LEN + 1])
        if driver is None:
            self._drop("UNKNOWN_VRID")
            return
        if self._peers and pkt.src not in self._peers:
            self._drop("NOT_A_PEER")
            return
        verified = driver.unwrap_ah(pkt.ip_header + payload)
        if verified is None:
            return
        src = self._addr(pkt.src)
        dst = self._addr(pkt.dst)
        if src is None or dst is None:
            self._drop("BAD_ADDRESS")
            return
        result = decode(verified.vrrp, src=src, dst=dst, ttl=pkt.ttl)
        if type(result) is DecodeError:
            driver.on_decode_error(result)
            return
        assert not isinstance(result, DecodeError)
        if result.vrid != driver.params.vrid:
            self._drop("UNKNOWN_VRID")
            return
        driver.on_advert(result)

    def status(self) -> dict[str, Any]:
        st = self.sock.stats
        return {
            "interface": self.key.ifname,
            "family": 6 if self.key.family != 2 else 4,
            "protocol": self.key.protocol,
            "ifindex": getattr(self.sock, "ifindex", None),
            "source": self.sock.source,
            "destinations": list(self.sock.destinations),
            "vrids": sorted(self.drivers),
            "rx": st.rx,
            "tx": st.tx,
            "rx_malformed": st.rx_malformed,
            "rx_errors": st.rx_errors,
            "tx_errors": st.tx_errors,
            "dropped": dict(self.dropped),
        }


class SocketPool:
    """Opens, shares and closes `SocketGroup`s as instances come and go (reload)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, factory: SocketFactory = VrrpSocket
    ) -> None:
        self.loop = loop
        self.factory = factory
        self.groups: dict[SocketKey, SocketGroup] = {}

    def acquire(
        self, key: SocketKey, unicast_ttl: int = 255, *, check_unicast_src: bool = False
    ) -> SocketGroup:
        group = self.groups.get(key)
        if group is None:
            config = VrrpSocketConfig(
                ifname=key.ifname,
                family=key.family,
                src_ip=key.src_ip,
                unicast_peers=key.unicast_peers,
                mcast_group=key.group,
                unicast_ttl=unicast_ttl,
                protocol=key.protocol,
            )
            group = SocketGroup(key, self.factory(config), check_unicast_src=check_unicast_src)
            group.attach(self.loop)
            self.groups[key] = group
        return group

    def reopen(self, group: SocketGroup) -> None:
        """The interface was recreated (new ifindex): a fresh socket for the same drivers.

        Raises OSError (the old socket is kept) if the new one cannot be opened yet.
        """
        new = self.factory(group.sock.config)
        group.close()
        group.sock = new
        group.attach(self.loop)
        for driver in group.drivers.values():
            driver.sender = new
        log.info("%s: VRRP socket reopened (interface recreated)", group.key.ifname)

    def register(self, group: SocketGroup, driver: InstanceDriver) -> None:
        other = group.drivers.get(driver.params.vrid)
        if other is not None and other is not driver:
            raise ValueError(
                f"{driver.name}: VRID {driver.params.vrid} already used by {other.name}"
                f" on {group.key.ifname}"
            )
        group.drivers[driver.params.vrid] = driver

    def release(self, group: SocketGroup, driver: InstanceDriver) -> None:
        if group.drivers.get(driver.params.vrid) is driver:
            del group.drivers[driver.params.vrid]
        if not group.drivers:
            group.close()
            self.groups.pop(group.key, None)

    def close(self) -> None:
        for group in self.groups.values():
            group.close()
        self.groups.clear()

    def status(self) -> list[dict[str, Any]]:
        return [g.status() for g in self.groups.values()]
