"""Raw IP protocol 112 sockets for VRRP: one sender + one receiver per interface and family.

Owns the wire side of RFC 3768 §7.1 / RFC 5798 §5.1.1-5.1.2: adverts leave with TTL/hop
limit 255 (unicast: `unicast_ttl`, keepalived's default 255), TOS/traffic class 0xC0, from
`mcast_src_ip`/`unicast_src_ip` (default: the interface's primary IPv4 or its IPv6
link-local), to 224.0.0.18 / ff02::12 joined on that interface only, or to each
`unicast_peer`. Receive hands the caller the payload plus source, destination, TTL/hop
limit and ingress ifindex; IPv4 raw sockets deliver the IP header, which is parsed here,
IPv6 gives hop limit and pktinfo as ancillary data. No protocol policy lives here: the
kernel computes no VRRP checksum, the packet codec does (from `source` and each
destination). Peer garbage is counted and dropped; the asyncio reader never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

IPPROTO_VRRP = 112
IPPROTO_AH = 51
VRRP_GROUP4 = "224.0.0.18"
VRRP_GROUP6 = "ff02::12"
VRRP_TOS = 0xC0
VRRP_TTL = 255

# Linux constants Python 3.11 does not export everywhere.
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
SO_ATTACH_FILTER = 26
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
IPV6_FREEBIND = 78
IP_MULTICAST_ALL = 49
IPV6_MULTICAST_ALL = 29
SIOCGIFADDR = 0x8915
MAX_DRAIN = 64  # datagrams read per wake-up, so one busy socket cannot starve the loop
RECV_SIZE = 65535

Callback = Callable[["ReceivedPacket"], None]


@dataclass(frozen=True)
class ReceivedPacket:
    """One datagram as the kernel handed it to us, IP layer already peeled off."""

    family: int  # socket.AF_INET or socket.AF_INET6
    payload: bytes  # VRRP (or AH + VRRP) bytes after the IP header
    src: str
    dst: str
    ttl: int  # IPv4 TTL or IPv6 hop limit
    ifindex: int
    ip_header: bytes = b""  # IPv4 only: the header as received (AH needs it)


@dataclass
class SocketStats:
    """Counters (mutable; read them, don't reset them)."""

    rx: int = 0
    rx_malformed: int = 0
    rx_errors: int = 0
    callback_errors: int = 0
    tx: int = 0
    tx_errors: int = 0


@dataclass(frozen=True)
class VrrpSocketConfig:
    """What one instance's socket needs: interface, family, addresses, TTLs."""

    ifname: str
    family: int = socket.AF_INET
    src_ip: str | None = None  # mcast_src_ip / unicast_src_ip; None = interface default
    unicast_peers: tuple[str, ...] = ()  # non-empty: unicast mode, no multicast join
    mcast_group: str | None = None  # None: 224.0.0.18 / ff02::12
    unicast_ttl: int = VRRP_TTL
    protocol: int = IPPROTO_VRRP  # IPPROTO_AH (51) for VRRPv2 AH authentication
    rcvbuf: int = 0  # 0 = kernel default (keepalived's kernel_rx_buf_size)

    @property
    def group(self) -> str:
        if self.mcast_group:
            return self.mcast_group
        return VRRP_GROUP6 if self.family == socket.AF_INET6 else VRRP_GROUP4


def interface_ipv4(ifname: str) -> str | None:
    """The primary IPv4 address of `ifname` (SIOCGIFADDR) in this thread's namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", ifname.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(res[20:24])


def interface_ipv6_linklocal(ifname: str) -> str | None:
    """The fe80::/10 address of `ifname`, read from this thread's /proc net view."""
    try:
        with open("/proc/thread-self/net/if_inet6", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) >= 6 and parts[5] == ifname and parts[0].startswith("fe8"):
            return str(ipaddress.IPv6Address(bytes.fromhex(parts[0])))
    return None


def _drop_all_filter(sock: socket.socket) -> None:
    """Attach a one-instruction BPF program (`ret #0`): the send socket never queues input."""

    class SockFilter(ctypes.Structure):
        _fields_ = (
            ("code", ctypes.c_uint16),
            ("jt", ctypes.c_uint8),
            ("jf", ctypes.c_uint8),
            ("k", ctypes.c_uint32),
        )

    class SockFprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter)))

    insn = SockFilter(0x06, 0, 0, 0)  # BPF_RET | BPF_K, 0
    prog = SockFprog(1, ctypes.pointer(insn))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(prog))


def build_ipv4_header(
    src: str,
    dst: str,
    payload_len: int,
    *,
    ident: int,
    protocol: int = IPPROTO_VRRP,
    ttl: int = VRRP_TTL,
    tos: int = VRRP_TOS,
) -> bytes:
    """A 20-byte IPv4 header (DF clear, checksum filled) for `send_datagram` / AH's ICV."""
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        tos,
        20 + payload_len,
        ident & 0xFFFF,
        0,
        ttl,
        protocol,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:]


def _checksum(data: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def parse_ipv4(datagram: bytes, ifindex: int) -> ReceivedPacket | None:
    """Split a raw IPv4 datagram into header facts + payload; None if it is not sane IPv4."""
    if len(datagram) < 20:
        return None
    ver_ihl = datagram[0]
    ihl = (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or ihl < 20 or len(datagram) < ihl:
        return None
    total = struct.unpack_from("!H", datagram, 2)[0]
    # Linux hands raw sockets the host-order-corrected total length; trust the shorter one.
    end = min(len(datagram), total) if total >= ihl else len(datagram)
    return ReceivedPacket(
        family=socket.AF_INET,
        payload=bytes(datagram[ihl:end]),
        src=socket.inet_ntoa(datagram[12:16]),
        dst=socket.inet_ntoa(datagram[16:20]),
        ttl=datagram[8],
        ifindex=ifindex,
        ip_header=bytes(datagram[:ihl]),
    )


class VrrpSocket:
    """A VRRP sender/receiver bound to one interface and address family.

    Sockets are created in the calling thread's network namespace. Use `destinations` and
    `source` to build each payload (the checksum may depend on both), then `send_to`.
    """

    def __init__(self, config: VrrpSocketConfig) -> None:
        self.config = config
        self.family = config.family
        self.ifindex = socket.if_nametoindex(config.ifname)
        self.stats = SocketStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        src = config.src_ip
        if src is None:
            if self.family == socket.AF_INET6:
                src = interface_ipv6_linklocal(config.ifname)
            else:
                src = interface_ipv4(config.ifname)
        self.source: str | None = src
        self._tx = self._open_sender()
        self._raw_tx: socket.socket | None = None  # IPv4 IP_HDRINCL sender (send_datagram)
        try:
            self._rx = self._open_receiver()
            if self.family == socket.AF_INET:
                # opened now, not lazily: sockets belong to the namespace they are created in
                self._raw_tx = self._open_hdrincl_sender()
        except BaseException:
            self._tx.close()
            with contextlib.suppress(AttributeError):
                self._rx.close()
            raise

    # -- properties -----------------------------------------------------------------------
    @property
    def unicast(self) -> bool:
        return bool(self.config.unicast_peers)

    @property
    def destinations(self) -> tuple[str, ...]:
        """Where adverts go: every unicast peer, or the multicast group."""
        return self.config.unicast_peers if self.unicast else (self.config.group,)

    def fileno(self) -> int:
        return self._rx.fileno()

    # -- setup ----------------------------------------------------------------------------
    def _base(self) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_RAW, self.config.protocol)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.config.ifname.encode())
        except BaseException:
            sock.close()
            raise
        return sock

    def _open_sender(self) -> socket.socket:
        cfg = self.config
        sock = self._base()
        try:
            _drop_all_filter(sock)
            if self.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, VRRP_TTL)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, cfg.unicast_ttl)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, VRRP_TOS)
                if self.source:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
                    sock.bind((self.source, 0, 0, self.ifindex))
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, VRRP_TOS)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, VRRP_TTL)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, cfg.unicast_ttl)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
                local = socket.inet_aton(self.source or "0.0.0.0")
                mreqn = struct.pack("4s4si", socket.inet_aton("0.0.0.0"), local, self.ifindex)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
                if self.source:
                    sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
                    sock.bind((self.source, 0))
        except BaseException:
            sock.close()
            raise
        return sock

    def _open_hdrincl_sender(self) -> socket.socket:
        sock = self._base()
        try:
            _drop_all_filter(sock)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
            mreqn = struct.pack("4s4si", bytes(4), bytes(4), self.ifindex)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        except BaseException:
            sock.close()
            raise
        return sock

    def _open_receiver(self) -> socket.socket:
        cfg = self.config
        sock = self._base()
        try:
            if cfg.rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, cfg.rcvbuf)
            if self.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
                if not self.unicast:
                    mreq = socket.inet_pton(socket.AF_INET6, cfg.group) + struct.pack(
                        "@I", self.ifindex
                    )
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
                if not self.unicast:
                    mreqn = struct.pack(
                        "4s4si",
                        socket.inet_aton(cfg.group),
                        socket.inet_aton("0.0.0.0"),
                        self.ifindex,
                    )
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        except BaseException:
            sock.close()
            raise
        return sock

    # -- send -----------------------------------------------------------------------------
    def send_to(self, payload: bytes, dst: str) -> bool:
        """Send one VRRP payload to `dst`; False (and counted) if the kernel refused it."""
        addr: tuple[str, int] | tuple[str, int, int, int]
        addr = (dst, 0, 0, self.ifindex) if self.family == socket.AF_INET6 else (dst, 0)
        try:
            self._tx.sendto(payload, addr)
        except OSError as exc:
            self.stats.tx_errors += 1
            log.debug("vrrp send on %s to %s failed: %s", self.config.ifname, dst, exc)
            return False
        self.stats.tx += 1
        return True

    def send_datagram(self, datagram: bytes, dst: str) -> bool:
        """IPv4 only: send a complete IP datagram we built (IP_HDRINCL), e.g. for AH auth.

        The kernel keeps our ID, TTL, TOS and source; it always rewrites the header checksum
        and total length. Goes out of this interface like `send_to`.
        """
        if self.family != socket.AF_INET:
            raise ValueError("send_datagram is IPv4 only")
        if self._raw_tx is None:
            raise RuntimeError("socket closed")
        try:
            self._raw_tx.sendto(datagram, (dst, 0))
        except OSError as exc:
            self.stats.tx_errors += 1
            log.debug("vrrp raw send on %s to %s failed: %s", self.config.ifname, dst, exc)
            return False
        self.stats.tx += 1
        return True

    def send(self, build: Callable[[str | None, str], bytes]) -> int:
        """For each destination, `build(source, dst)` a payload and send it; returns #sent."""
        return sum(self.send_to(build(self.source, dst), dst) for dst in self.destinations)

    # -- receive --------------------------------------------------------------------------
    def recv_nowait(self) -> ReceivedPacket | None:
        """Read one datagram if one is queued (None if none queued or it was malformed)."""
        try:
            return self._recv_one()
        except (BlockingIOError, InterruptedError):
            return None

    def _recv_one(self) -> ReceivedPacket | None:
        """One datagram; None if malformed (counted). Raises BlockingIOError when empty."""
        data, anc, _flags, addr = self._rx.recvmsg(RECV_SIZE, 256)
        pkt = self._decode(data, anc, addr)
        if pkt is None:
            self.stats.rx_malformed += 1
        else:
            self.stats.rx += 1
        return pkt

    def _decode(
        self, data: bytes, anc: list[tuple[int, int, bytes]], addr: object
    ) -> ReceivedPacket | None:
        ifindex = self.ifindex
        if self.family == socket.AF_INET:
            for level, kind, blob in anc:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(blob) >= 12:
                    ifindex = struct.unpack_from("@i", blob, 0)[0]
            return parse_ipv4(data, ifindex)
        dst = ""
        hops = -1
        for level, kind, blob in anc:
            if level != socket.IPPROTO_IPV6:
                continue
            if kind == socket.IPV6_PKTINFO and len(blob) >= 20:
                dst = socket.inet_ntop(socket.AF_INET6, blob[:16])
                ifindex = struct.unpack_from("@I", blob, 16)[0]
            elif kind == socket.IPV6_HOPLIMIT and len(blob) >= 4:
                hops = struct.unpack_from("@i", blob, 0)[0]
        if not isinstance(addr, tuple) or not addr or not dst or hops < 0:
            return None
        src = str(addr[0]).split("%", 1)[0]
        return ReceivedPacket(socket.AF_INET6, bytes(data), src, dst, hops, ifindex)

    # -- asyncio --------------------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop, on_packet: Callback) -> None:
        """Deliver every received packet to `on_packet` from `loop` (add_reader, non-blocking)."""
        self.detach()
        self._loop = loop
        loop.add_reader(self._rx.fileno(), self._on_readable, on_packet)

    def detach(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._rx.fileno())
            self._loop = None

    def _on_readable(self, on_packet: Callback) -> None:
        for _ in range(MAX_DRAIN):
            try:
                pkt = self._recv_one()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ENETDOWN: count and come back on the next wake-up
                self.stats.rx_errors += 1
                log.debug("vrrp recv on %s: %s", self.config.ifname, exc)
                return
            except Exception:  # never let anything escape into the loop
                self.stats.rx_errors += 1
                log.exception("vrrp recv on %s", self.config.ifname)
                return
            if pkt is None:
                continue
            try:
                on_packet(pkt)
            except Exception:
                self.stats.callback_errors += 1
                log.exception("vrrp packet handler failed on %s", self.config.ifname)

    def close(self) -> None:
        self.detach()
        self._tx.close()
        self._rx.close()
        if self._raw_tx is not None:
            self._raw_tx.close()
            self._raw_tx = None

    def __enter__(self) -> VrrpSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
