"""Host side effects of VRRP transitions, performed in order off the hot path.

Implements `hakeeper.runtime.driver.HostOps` over the netlink adapter
(`hakeeper.io.netlink.Netlink`, coroutines) and a gratuitous ARP / unsolicited NA sender.
The driver calls these synchronously from its state transition; each call is queued and one
worker task performs the queue strictly in order, so "add VIPs, then GARP" and
"remove VIPs" on the way out keep keepalived's ordering (RFC 5798 §6.4.2: the new master
announces the VIPs only once they are configured). `drain()` lets shutdown wait until the
VIPs really are gone. Failures are logged and counted; the queue never stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from hakeeper.conf.model import VirtualAddress
from hakeeper.io import netlink as nl

log = logging.getLogger("hakeeper.host")

T = TypeVar("T")

# (ifname, vip address as text, prefix, count) -> sends `count` GARPs/NAs for one address
GarpFn = Callable[[str, str, int], Awaitable[None]]


def to_netlink(vip: VirtualAddress, ifname: str) -> nl.VirtualAddress:
    """Model VIP -> the adapter's address spec (dev defaults to the instance interface)."""
    scope: str | int = vip.scope or "global"
    return nl.VirtualAddress(
        address=str(vip.address.ip),
        prefixlen=vip.address.network.prefixlen,
        ifname=vip.dev or ifname,
        broadcast=vip.brd,
        scope=scope,
        label=vip.label,
    )


class NetlinkThread:
    """Runs `hakeeper.io.netlink.Netlink` on a private stdlib loop in a helper thread.

    pyroute2's AsyncIPRoute opens its netlink socket with `create_datagram_endpoint`, which
    uvloop refuses for AF_NETLINK; the daemon's own loop is uvloop, so netlink work is
    shipped to this thread (a few per state change, never per advert) and awaited.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="netlink", daemon=True)
        self._thread.start()
        self.netlink: nl.Netlink | None = None

    async def open(self) -> NetlinkThread:
        self.netlink = await self.call(nl.Netlink().open)
        return self

    async def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        future = asyncio.run_coroutine_threadsafe(fn(*args), self._loop)
        return await asyncio.wrap_future(future)

    async def add_address(self, spec: nl.VirtualAddress) -> bool:
        assert self.netlink is not None
        return await self.call(self.netlink.add_address, spec)

    async def remove_address(self, spec: nl.VirtualAddress) -> bool:
        assert self.netlink is not None
        return await self.call(self.netlink.remove_address, spec)

    async def interfaces(self) -> list[nl.InterfaceInfo]:
        assert self.netlink is not None
        return await self.call(self.netlink.interfaces)

    def close(self) -> None:
        if self.netlink is not None:
            netlink = self.netlink
            self.netlink = None
            with contextlib.suppress(Exception):
                self._loop.call_soon_threadsafe(netlink.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2.0)
        if not self._thread.is_alive():
            self._loop.close()


class Announcers:
    """Gratuitous ARP / unsolicited NA senders, one AF_PACKET socket per interface."""

    def __init__(self) -> None:
        self._by_if: dict[str, Any] = {}
        self.sent = 0

    async def __call__(self, ifname: str, address: str, count: int) -> None:
        from hakeeper.io.arp import NeighbourAnnouncer  # noqa: PLC0415

        announcer = self._by_if.get(ifname)
        if announcer is None:
            announcer = NeighbourAnnouncer(ifname)
            self._by_if[ifname] = announcer
        for _ in range(count):
            if announcer.announce(address):
                self.sent += 1

    def close(self) -> None:
        for announcer in self._by_if.values():
            announcer.close()
        self._by_if.clear()


class NetlinkHost:
    """Ordered queue of address/neighbour operations (one worker task)."""

    def __init__(self, netlink: NetlinkThread | None, garp: GarpFn | None = None) -> None:
        self.netlink = netlink
        self.garp = garp
        self.errors = 0
        self.done = 0
        self._queue: deque[Callable[[], Awaitable[None]]] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    # HostOps -----------------------------------------------------------------------------
    def add_addresses(self, ifname: str, vips: Sequence[VirtualAddress]) -> None:
        specs = [to_netlink(v, ifname) for v in vips]
        self._submit(lambda: self._add(specs))

    def remove_addresses(self, ifname: str, vips: Sequence[VirtualAddress]) -> None:
        specs = [to_netlink(v, ifname) for v in vips]
        self._submit(lambda: self._remove(specs))

    def gratuitous(self, ifname: str, vips: Sequence[VirtualAddress], count: int) -> None:
        if self.garp is None or count <= 0:
            return
        targets = [(v.dev or ifname, str(v.address.ip)) for v in vips]
        self._submit(lambda: self._garp(targets, count))

    def delete_link(self, ifname: str) -> None:
        """Queue the removal of a VMAC interface (after its VIPs are gone)."""
        self._submit(lambda: self._delete_link(ifname))

    # worker ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="host-ops")

    async def drain(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _submit(self, op: Callable[[], Awaitable[None]]) -> None:
        self._queue.append(op)
        self._idle.clear()
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            op = self._queue.popleft()
            try:
                await op()
                self.done += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
                log.exception("host operation failed")

    async def _add(self, specs: list[nl.VirtualAddress]) -> None:
        if self.netlink is None:
            return
        for spec in specs:
            try:
                await self.netlink.add_address(spec)
            except Exception as exc:
                self.errors += 1
                log.error(
                    "cannot add %s/%d on %s: %s", spec.address, spec.prefixlen, spec.ifname, exc
                )

    async def _remove(self, specs: list[nl.VirtualAddress]) -> None:
        if self.netlink is None:
            return
        for spec in specs:
            try:
                await self.netlink.remove_address(spec)
            except Exception as exc:
                self.errors += 1
                log.error(
                    "cannot remove %s/%d on %s: %s", spec.address, spec.prefixlen, spec.ifname, exc
                )

    async def _delete_link(self, ifname: str) -> None:
        if self.netlink is None or self.netlink.netlink is None:
            return
        try:
            await self.netlink.call(self.netlink.netlink.delete_link, ifname)
        except Exception as exc:
            self.errors += 1
            log.error("cannot delete %s: %s", ifname, exc)

    async def _garp(self, targets: list[tuple[str, str]], count: int) -> None:
        assert self.garp is not None
        for ifname, addr in targets:
            try:
                await self.garp(ifname, addr, count)
            except Exception as exc:
                self.errors += 1
                log.error("gratuitous ARP/NA for %s on %s failed: %s", addr, ifname, exc)

    def status(self) -> dict[str, Any]:
        return {"done": self.done, "errors": self.errors, "queued": len(self._queue)}
