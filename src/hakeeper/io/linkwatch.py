"""Link state events from rtnetlink (RTMGRP_LINK) on a non-blocking socket read by asyncio.

Owns the kernel side of keepalived's `track_interface` and of the instance interface's own
fault detection: RTM_NEWLINK / RTM_DELLINK messages are decoded here (nlmsghdr, ifinfomsg,
IFLA_IFNAME / IFLA_OPERSTATE / IFLA_CARRIER, rtnetlink(7)) into `LinkEvent`s with the
admin flag (IFF_UP), the operational flag (IFF_RUNNING) and the carrier (IFF_LOWER_UP).
By default only changes of those facts are reported. `request_dump()` asks the kernel for
every link (a snapshot that arrives as ordinary events); a receive-queue overrun (ENOBUFS)
triggers one automatically so no transition is lost for good. Malformed messages are
counted and skipped; the reader never raises into the loop. No tracking policy here.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
IFLA_IFNAME = 3
IFLA_OPERSTATE = 16
IFLA_CARRIER = 33
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFF_LOWER_UP = 0x10000
OPERSTATES = ("unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up")
_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")
MAX_DRAIN = 64


@dataclass(frozen=True)
class LinkEvent:
    """One interface's state after a kernel notification."""

    ifindex: int
    ifname: str
    up: bool  # IFF_UP: administratively up
    running: bool  # IFF_RUNNING: operationally up (what keepalived tracks)
    carrier: bool  # IFF_LOWER_UP
    operstate: str
    deleted: bool = False

    @property
    def usable(self) -> bool:
        """Up and running: what `track_interface` treats as OK."""
        return self.up and self.running and not self.deleted


@dataclass
class WatchStats:
    messages: int = 0
    events: int = 0
    malformed: int = 0
    overruns: int = 0
    callback_errors: int = 0


def _align(n: int) -> int:
    return (n + 3) & ~3


def parse_messages(data: bytes) -> Iterator[LinkEvent | None]:
    """Decode a netlink datagram; yields an event per link message, None per malformed one."""
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > len(data):
            yield None
            return
        body = data[off + _NLMSGHDR.size : off + length]
        off += _align(length)
        if mtype in (RTM_NEWLINK, RTM_DELLINK):
            yield _parse_link(body, deleted=mtype == RTM_DELLINK)
        elif mtype == NLMSG_DONE:
            return


def _parse_link(body: bytes, *, deleted: bool) -> LinkEvent | None:
    if len(body) < _IFINFOMSG.size:
        return None
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(body, 0)
    name = ""
    operstate = "unknown"
    carrier = bool(flags & IFF_LOWER_UP)
    off = _IFINFOMSG.size
    while off + _RTATTR.size <= len(body):
        alen, atype = _RTATTR.unpack_from(body, off)
        if alen < _RTATTR.size or off + alen > len(body):
            return None
        value = body[off + _RTATTR.size : off + alen]
        atype &= 0x3FFF  # strip NLA_F_NESTED / NLA_F_NET_BYTEORDER
        if atype == IFLA_IFNAME:
            name = value.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif atype == IFLA_OPERSTATE and value:
            operstate = OPERSTATES[value[0]] if value[0] < len(OPERSTATES) else str(value[0])
        elif atype == IFLA_CARRIER and value:
            carrier = bool(value[0])
        off += _align(alen)
    if not name:
        return None
    return LinkEvent(
        ifindex=index,
        ifname=name,
        up=bool(flags & IFF_UP),
        running=bool(flags & IFF_RUNNING),
        carrier=carrier,
        operstate=operstate,
        deleted=deleted,
    )


class LinkWatcher:
    """Subscribe to link notifications in the calling thread's network namespace."""

    def __init__(self, *, only_changes: bool = True, rcvbuf: int = 1 << 20) -> None:
        self.only_changes = only_changes
        self.stats = WatchStats()
        self.state: dict[int, LinkEvent] = {}  # last known state per ifindex
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seq = 0
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self._sock.bind((0, RTMGRP_LINK))
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def request_dump(self) -> None:
        """Ask for every link; the answers arrive through the normal event path."""
        self._seq += 1
        msg = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        hdr = _NLMSGHDR.pack(
            _NLMSGHDR.size + len(msg), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0
        )
        try:
            self._sock.send(hdr + msg)
        except OSError as exc:  # EBUSY/ENOBUFS: the next overrun or event will retry
            log.debug("link dump request failed: %s", exc)

    def poll(self) -> list[LinkEvent]:
        """Read what is queued now (non-blocking) and return the reportable events."""
        out: list[LinkEvent] = []
        for _ in range(MAX_DRAIN):
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.stats.overruns += 1
                    self.request_dump()
                    continue
                raise
            for event in parse_messages(data):
                self.stats.messages += 1
                if event is None:
                    self.stats.malformed += 1
                    continue
                if self._record(event):
                    out.append(event)
        return out

    def _record(self, event: LinkEvent) -> bool:
        before = self.state.get(event.ifindex)
        if event.deleted:
            self.state.pop(event.ifindex, None)
        else:
            self.state[event.ifindex] = event
        if not self.only_changes or before is None:
            return True
        return (before.ifname, before.up, before.running, before.carrier, False) != (
            event.ifname,
            event.up,
            event.running,
            event.carrier,
            event.deleted,
        )

    def attach(
        self, loop: asyncio.AbstractEventLoop, on_event: Callable[[LinkEvent], None]
    ) -> None:
        """Call `on_event` from `loop` for every reported link event."""
        self.detach()
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._on_readable, on_event)

    def detach(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
            self._loop = None

    def _on_readable(self, on_event: Callable[[LinkEvent], None]) -> None:
        try:
            events = self.poll()
        except Exception:
            log.exception("link watcher read failed")
            return
        for event in events:
            self.stats.events += 1
            try:
                on_event(event)
            except Exception:
                self.stats.callback_errors += 1
                log.exception("link event handler failed for %s", event.ifname)

    def close(self) -> None:
        self.detach()
        self._sock.close()

    def __enter__(self) -> LinkWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
