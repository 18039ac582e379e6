"""The lab client: HTTP probes to the VIP every 10 ms and a gratuitous-ARP sniffer.

Owns two threads that run *inside* the client namespace (`netns.entered` moves only the
calling thread, so their sockets live there):
- `HttpProber`: an asyncio loop firing one `GET /` to VIP:80 every `interval` (a new
  connection each, at most `max_inflight` open, each bounded by `timeout`); every probe is
  recorded with its send time, its outcome, and the `X-Served-By` header (which LB answered).
  Bounded by `max_seconds` and `max_probes`.
- `WireSniffer`: AF_PACKET sockets for ARP and IPv4; ARP packets whose sender IP equals
  their target IP and the VIP (RFC 5227 announcements, what both daemons send) are recorded
  with the sender MAC, and VRRP adverts (IP protocol 112) with their source and priority,
  both with their arrival time.
The client's outage is the longest run of consecutive failed probes, from the first failed
probe's send time to the next successful probe's send time (0 when nothing failed), as in
shared/anchors/measured.md ("client probing the VIP every 10 ms").
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass

from hakeeper.lab.netns import entered

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
IPPROTO_VRRP = 112
SO_ATTACH_FILTER = 26
# classic BPF: ldb [23] (IPv4 protocol); jeq #112 ? accept : drop
_VRRP_FILTER = ctypes.create_string_buffer(
    b"".join(
        struct.pack("HBBI", *ins)
        for ins in (
            (0x30, 0, 0, 23),
            (0x15, 0, 1, IPPROTO_VRRP),
            (0x06, 0, 0, 0x40000),
            (0x06, 0, 0, 0),
        )
    )
)
_VRRP_FILTER_PROG = struct.pack("HL", 4, ctypes.addressof(_VRRP_FILTER))


@dataclass(frozen=True)
class Probe:
    """One client request: send time (monotonic s), success, which LB served it."""

    t: float
    ok: bool
    served_by: str = ""
    error: str = ""


@dataclass(frozen=True)
class Outage:
    """A run of failed probes: [start, end) in monotonic seconds, and how many failed."""

    start: float
    end: float
    failed: int

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000.0


def outages(probes: list[Probe], since: float = 0.0, until: float = float("inf")) -> list[Outage]:
    """Runs of consecutive failed probes sent in [since, until), by send time.

    A run still open at the end is closed at the last probe's time.
    """
    runs: list[Outage] = []
    start = -1.0
    failed = 0
    last_t = since
    for p in sorted(probes, key=lambda p: p.t):
        if p.t < since or p.t >= until:
            continue
        last_t = p.t
        if not p.ok:
            if failed == 0:
                start = p.t
            failed += 1
        elif failed:
            runs.append(Outage(start, p.t, failed))
            failed = 0
    if failed:
        runs.append(Outage(start, last_t, failed))
    return runs


def longest_outage_ms(
    probes: list[Probe], since: float = 0.0, until: float = float("inf")
) -> float:
    runs = outages(probes, since, until)
    return max((r.ms for r in runs), default=0.0)


class HttpProber:
    """HTTP GET to `host:port` every `interval` seconds from inside namespace `ns`."""

    def __init__(
        self,
        ns: str,
        host: str,
        port: int = 80,
        *,
        interval: float = 0.01,
        timeout: float = 0.3,
        max_seconds: float = 120.0,
        max_probes: int = 20_000,
        max_inflight: int = 64,
    ) -> None:
        self.ns = ns
        self.host = host
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.max_seconds = max_seconds
        self.max_probes = max_probes
        self.max_inflight = max_inflight
        self.probes: list[Probe] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="lab-prober", daemon=True)
        self._request = (
            f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            "User-Agent: hakeeper-lab\r\n\r\n"
        ).encode()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 2.0)

    def snapshot(self) -> list[Probe]:
        with self._lock:
            return list(self.probes)

    def _main(self) -> None:
        with entered(self.ns):
            asyncio.run(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_seconds
        tasks: set[asyncio.Task[None]] = set()
        next_t = loop.time()
        sent = 0
        while not self._stop.is_set() and loop.time() < deadline and sent < self.max_probes:
            if len(tasks) < self.max_inflight:
                task = asyncio.create_task(self._one(time.monotonic()))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            next_t += self.interval
            delay = next_t - loop.time()
            if delay < 0:  # fell behind (CPU starved): skip ticks instead of bursting
                next_t = loop.time()
                delay = 0
            await asyncio.sleep(delay)
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout + 1.0)

    async def _one(self, t: float) -> None:
        served = ""
        writer = None
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(self._request)
                data = await reader.read(4096)
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            ok = head.startswith("HTTP/1.1 200")
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "x-served-by":
                    served = value.strip()
            err = "" if ok else (head.split("\r\n", 1)[0] or "empty response")
        except TimeoutError:
            ok, err = False, "timeout"
        except OSError as exc:
            ok, err = False, type(exc).__name__
        finally:
            if writer is not None:
                writer.close()
        with self._lock:
            self.probes.append(Probe(t, ok, served, err))


@dataclass(frozen=True)
class Garp:
    """A gratuitous ARP for the watched IP: arrival time and sender MAC."""

    t: float
    mac: str
    op: int


def parse_garp(frame: bytes, ip: bytes) -> tuple[str, int] | None:
    """(sender MAC, op) if `frame` is an Ethernet ARP announcing `ip` (sender == target)."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06":
        return None
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    if htype != 1 or ptype != 0x0800 or hlen != 6 or plen != 4:
        return None
    sha, spa, tpa = frame[22:28], frame[28:32], frame[38:42]
    if spa != ip or tpa != ip:
        return None
    return ":".join(f"{b:02x}" for b in sha), op


@dataclass(frozen=True)
class AdvertSeen:
    """A VRRP advert seen on the wire: arrival time, IPv4 source, VRID, priority."""

    t: float
    src: str
    vrid: int
    priority: int


def parse_vrrp4(frame: bytes) -> tuple[str, int, int] | None:
    """(source IP, VRID, priority) if `frame` is Ethernet + IPv4 + VRRP (v2 or v3)."""
    if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    if frame[14] >> 4 != 4 or ihl < 20 or frame[14 + 9] != IPPROTO_VRRP:
        return None
    vrrp = frame[14 + ihl :]
    if len(vrrp) < 8 or vrrp[0] & 0x0F != 1:  # type 1 = ADVERTISEMENT
        return None
    return socket.inet_ntoa(frame[26:30]), vrrp[1], vrrp[2]


class WireSniffer:
    """Records gratuitous ARPs for `ip` and VRRP adverts seen on `ifname` inside `ns`."""

    def __init__(self, ns: str, ifname: str, ip: str, *, max_seconds: float = 120.0) -> None:
        self.ns = ns
        self.ifname = ifname
        self.ip = socket.inet_aton(ip)
        self.max_seconds = max_seconds
        self.garps: list[Garp] = []
        self.adverts: list[AdvertSeen] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="lab-wire", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(timeout=5.0)
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def snapshot(self) -> list[Garp]:
        with self._lock:
            return list(self.garps)

    def advert_snapshot(self) -> list[AdvertSeen]:
        with self._lock:
            return list(self.adverts)

    def _open(self, proto: int) -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
        if proto == ETH_P_IP:  # keep the client's own HTTP traffic out of this thread
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, _VRRP_FILTER_PROG)
        sock.bind((self.ifname, proto))
        return sock

    def _main(self) -> None:
        try:
            with entered(self.ns):  # the interface name resolves in the namespace too
                arp, ip4 = self._open(ETH_P_ARP), self._open(ETH_P_IP)
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        deadline = time.monotonic() + self.max_seconds
        with contextlib.closing(arp), contextlib.closing(ip4):
            while not self._stop.is_set() and time.monotonic() < deadline:
                ready, _, _ = select.select([arp, ip4], [], [], 0.1)
                for sock in ready:
                    try:
                        frame = sock.recv(2048)
                    except OSError:
                        continue
                    self._record(time.monotonic(), frame, sock is arp)

    def _record(self, now: float, frame: bytes, is_arp: bool) -> None:
        if is_arp:
            got = parse_garp(frame, self.ip)
            if got is not None:
                with self._lock:
                    self.garps.append(Garp(now, got[0], got[1]))
            return
        adv = parse_vrrp4(frame)
        if adv is not None:
            with self._lock:
                self.adverts.append(AdvertSeen(now, adv[0], adv[1], adv[2]))
