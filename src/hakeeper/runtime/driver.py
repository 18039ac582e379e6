"""One VRRP instance on the event loop: the pure machine + a socket + one timer + host ops.

The aioquic pattern (shared/STYLE.md): every input goes to `hakeeper.vrrp.machine` with
`now = loop.time()` (monotonic seconds), the returned actions are performed in order, then
the single `loop.call_at` timer is re-armed from `machine.next_deadline()`. To keep the
per-advert path lean (20 instances at advert_int 0.1 must idle under 3 % of a core) the
timer is re-armed lazily: a later deadline keeps the armed handle (it fires early and
re-arms), only an earlier one cancels it; and encoded advert bytes are cached per
(priority, destination) since nothing else in them changes while the instance runs.

Host side effects go through `HostOps` (VIPs via netlink, GARP/NA) and adverts through an
`AdvertSender` (a shared `hakeeper.io.vrrp_socket.VrrpSocket`); both are injected so unit
tests run the driver against fakes. Failures of host operations are logged and counted,
never raised into the loop. State changes are reported to the daemon through `on_state`
(notify scripts, SMTP, sync groups, status).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hakeeper.conf.model import RouteSpec, VirtualAddress, VrrpInstance
from hakeeper.vrrp import machine as m
from hakeeper.vrrp.auth_ah import AhCounter, AhPacket, decode_ipv4, encode_ipv4
from hakeeper.vrrp.packet import (
    Advert,
    AuthType,
    ChecksumForm,
    DecodeError,
    DropReason,
    IPAddress,
    encode,
)

log = logging.getLogger("hakeeper.vrrp")

EARLY_FIRE_TOLERANCE = 0.002  # loop timers may fire this much before their deadline
RETRY_AFTER_ERROR = 0.1
LOG_EVERY = 10.0  # seconds between two logs of the same machine message


class AdvertSender(Protocol):
    """What the driver needs of a VRRP socket (hakeeper.io.vrrp_socket.VrrpSocket)."""

    @property
    def source(self) -> str | None: ...

    @property
    def destinations(self) -> tuple[str, ...]: ...

    def send_to(self, payload: bytes, dst: str) -> bool: ...

    def send_datagram(self, datagram: bytes, dst: str) -> bool: ...


class HostOps(Protocol):
    """Address and neighbour side effects of one instance (netlink + ARP/NA adapters)."""

    def add_addresses(self, ifname: str, vips: Sequence[VirtualAddress]) -> None: ...

    def remove_addresses(self, ifname: str, vips: Sequence[VirtualAddress]) -> None: ...

    def gratuitous(self, ifname: str, vips: Sequence[VirtualAddress], count: int) -> None: ...

    def add_routes(
        self, ifname: str, routes: Sequence[RouteSpec], rules: Sequence[RouteSpec]
    ) -> None: ...

    def remove_routes(
        self, ifname: str, routes: Sequence[RouteSpec], rules: Sequence[RouteSpec]
    ) -> None: ...


@dataclass(slots=True)
class DriverCounters:
    """Counters kept by the driver on top of the machine's own."""

    decode_errors: dict[str, int] = field(default_factory=dict)
    tx_errors: int = 0
    host_errors: int = 0
    transitions: int = 0
    timer_wakeups: int = 0
    garp_bursts: int = 0


StateCallback = Callable[["InstanceDriver", m.StateChanged], None]


class InstanceDriver:
    """Binds one `VrrpMachine` to `loop`; see the module docstring."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        instance: VrrpInstance,
        params: m.VrrpParams,
        sender: AdvertSender,
        host: HostOps,
        *,
        on_state: StateCallback | None = None,
        checksum: ChecksumForm = ChecksumForm.PSEUDO,
    ) -> None:
        self.loop = loop
        self.instance = instance
        self.params = params
        self.machine = m.VrrpMachine(params)
        self.sender = sender
        self.host = host
        self.on_state = on_state
        self.checksum = checksum
        self.ifname = instance.interface or ""
        self.vips: tuple[VirtualAddress, ...] = (
            instance.virtual_ipaddresses + instance.virtual_ipaddress_excluded
        )
        self.counters = DriverCounters()
        self.last_transition_wall: float | None = None
        self.last_transition_mono: float | None = None
        self.last_reason = ""
        self.vips_installed = False
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None
        self._payloads: dict[tuple[int, str], bytes] = {}
        self._src: IPAddress | None = ipaddress.ip_address(sender.source) if sender.source else None
        self._running = False
        self._log_seen: dict[str, tuple[float, int]] = {}
        self._quiet = False
        # keepalived `auth_type AH` (VRRPv2/IPv4): one sequence counter for both directions
        self._ah: AhCounter | None = None
        self._ah_unicast = bool(instance.unicast_peers)
        self._ah_ttl = instance.unicast_ttl if self._ah_unicast else 255
        self._dst_addrs: dict[str, ipaddress.IPv4Address] = {}
        self._lower_prio_handle: asyncio.TimerHandle | None = None
        ipv4 = isinstance(self._src, ipaddress.IPv4Address)
        if params.auth_type is AuthType.AH and params.version == 2 and ipv4:
            self._ah = AhCounter()

    # ------------------------------------------------------------------ inputs

    @property
    def name(self) -> str:
        return self.params.name

    @property
    def state(self) -> m.State:
        return self.machine.state

    @property
    def running(self) -> bool:
        return self._running

    def start(self, *, resume_master: bool = False) -> None:
        """Start the machine; `resume_master` (a changed MASTER replaced on reload) goes
        straight to MASTER without notifying, as the role did not change for the outside."""
        self._running = True
        now = self.loop.time()
        actions = self.machine.start(now)
        if not resume_master or self.machine.state is not m.State.BACKUP:
            self._apply(actions)
            return
        actions = [a for a in actions if not isinstance(a, m.StateChanged)]
        actions += self.machine.force_master(now, "resumed MASTER after reload")
        self._quiet = True
        try:
            self._apply(actions)
        finally:
            self._quiet = False

    def stop(self) -> None:
        """Shutdown (SIGTERM / removed on reload): master sends priority 0, VIPs removed."""
        if not self._running:
            return
        self._apply(self.machine.shutdown(self.loop.time()))
        self._running = False
        self._cancel_timer()
        self._cancel_lower_prio()

    def hand_over(self, keep: Sequence[VirtualAddress]) -> None:
        """Reload of a changed instance that is MASTER: stop without resigning.

        No priority-0 advert, no STOP notification, and only the VIPs the successor will not
        carry are removed, so the replacement driver can take over without a VIP flap.
        """
        if not self._running:
            return
        self.machine.shutdown(self.loop.time())  # state and timers only; actions dropped
        self._running = False
        self._cancel_timer()
        self._cancel_lower_prio()
        kept = {(v.address, v.dev or self.ifname) for v in keep}
        gone = [v for v in self.vips if (v.address, v.dev or self.ifname) not in kept]
        self._routes(add=False)
        self._host_call(self.host.remove_addresses, gone)
        self.vips_installed = False

    def on_advert(self, advert: Advert) -> None:
        if not self._running:
            return
        machine = self.machine
        was_master = machine.state is m.State.MASTER
        actions = machine.on_advert(self.loop.time(), advert)
        self._apply(actions)
        if (
            was_master
            and 0 < advert.priority < machine.priority
            and machine.state is m.State.MASTER
            and not any(type(a) is m.DroppedAdvert for a in actions)
        ):
            self._lower_prio_garp()

    def _lower_prio_garp(self) -> None:
        """keepalived: a MASTER hearing a lower-priority advert (the other side of a healed
        split) sends `garp_lower_prio_repeat` GARPs now and again `garp_lower_prio_delay`
        seconds later, so neighbours taught the other node's MAC come back."""
        inst = self.instance
        if inst.garp_lower_prio_repeat <= 0:
            return
        self._gratuitous(list(self.vips), inst.garp_lower_prio_repeat)
        if inst.garp_lower_prio_delay > 0 and self._lower_prio_handle is None:
            self._lower_prio_handle = self.loop.call_later(
                inst.garp_lower_prio_delay, self._lower_prio_again
            )

    def _lower_prio_again(self) -> None:
        self._lower_prio_handle = None
        if self._running and self.machine.state is m.State.MASTER:
            self._gratuitous(list(self.vips), self.instance.garp_lower_prio_repeat)

    def _cancel_lower_prio(self) -> None:
        if self._lower_prio_handle is not None:
            self._lower_prio_handle.cancel()
            self._lower_prio_handle = None

    def on_decode_error(self, error: DecodeError) -> None:
        key = error.reason.name
        self.counters.decode_errors[key] = self.counters.decode_errors.get(key, 0) + 1

    def unwrap_ah(self, packet: bytes) -> AhPacket | None:
        """Verify a received IPv4 AH packet (IP header included) for this instance.

        None when dropped: a bad ICV/SPI/header is counted as AUTH_MISMATCH, an old
        sequence number as AH_REPLAY (keepalived's anti-replay), both logged rate-limited.
        """
        counter = self._ah
        if counter is None:
            self.on_decode_error(DecodeError(DropReason.AUTH_MISMATCH, "AH but not configured"))
            return None
        result = decode_ipv4(packet, password=self.params.auth_pass, unicast=self._ah_unicast)
        if isinstance(result, DecodeError):
            self.on_decode_error(result)
            self._log_limited(
                m.LogEvent("warning", f"{self.name}: dropped AH advert: {result.detail}")
            )
            return None
        if not counter.accept(result.seq):
            errors = self.counters.decode_errors
            errors["AH_REPLAY"] = errors.get("AH_REPLAY", 0) + 1
            self._log_limited(
                m.LogEvent(
                    "warning",
                    f"{self.name}: AH sequence number {result.seq} from {result.src} already"
                    f" seen (local {counter.seq}); advert dropped",
                )
            )
            return None
        return result

    def set_priority(self, priority: int) -> None:
        if self._running:
            self._apply(self.machine.set_effective_priority(self.loop.time(), priority))
        else:
            self.machine.priority = priority if not self.params.owner else 255

    def set_fault(self, faulted: bool, source: str) -> None:
        self._apply(self.machine.set_fault(self.loop.time(), faulted, source))

    def force_master(self, reason: str) -> None:
        if self._running:
            self._apply(self.machine.force_master(self.loop.time(), reason))

    def force_backup(self, reason: str) -> None:
        if self._running:
            self._apply(self.machine.force_backup(self.loop.time(), reason))

    # ------------------------------------------------------------------ actions

    def apply(self, actions: list[m.Action]) -> None:
        """Perform actions the machine returned to someone else (sync group reconcile)."""
        self._apply(actions)

    def _apply(self, actions: list[m.Action]) -> None:
        if len(actions) > 1 and any(type(a) is m.AddVips for a in actions):
            actions = self._vips_first(actions)
        for action in actions:
            if type(action) is m.SendAdvert:
                self._send(action.advert)
            else:
                self._perform(action)
        if self._running:
            self._arm()

    def _vips_first(self, actions: list[m.Action]) -> list[m.Action]:
        """Becoming MASTER: VIPs and the GARP burst before anything else (the first advert,
        the state log, notify callbacks), so neighbours point at this node before a
        preempted master hears the advert and yields (RFC 5798 §6.4.2 lists the advert
        first; the VIP is usable only once both are out, and the old master drops its VIP
        at the advert). Timed at debug level: the takeover's critical path."""
        first = [a for a in actions if type(a) is m.AddVips or type(a) is m.SendGratuitous]
        if not first:
            return actions
        start = time.perf_counter()
        for action in first:
            self._perform(action)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: VIPs + GARP in %.0f us", self.name, (time.perf_counter() - start) * 1e6)
        return [a for a in actions if not (type(a) is m.AddVips or type(a) is m.SendGratuitous)]

    def _perform(self, action: m.Action) -> None:
        if isinstance(action, m.AddVips):
            self._host_call(self.host.add_addresses, self.vips)
            self.vips_installed = True
            self._routes(add=True)
        elif isinstance(action, m.RemoveVips):
            self._routes(add=False)
            self._host_call(self.host.remove_addresses, self.vips)
            self.vips_installed = False
        elif isinstance(action, m.SendGratuitous):
            ips = set(action.vips)
            vips = [v for v in self.vips if v.address.ip in ips] or list(self.vips)
            self._gratuitous(vips, action.count)
        elif isinstance(action, m.StateChanged):
            self._state_changed(action)
        elif isinstance(action, m.LogEvent):
            self._log_limited(action)

    def _gratuitous(self, vips: Sequence[VirtualAddress], count: int) -> None:
        self.counters.garp_bursts += 1
        try:
            self.host.gratuitous(self.ifname, vips, count)
        except Exception:
            self.counters.host_errors += 1
            log.exception("%s: gratuitous ARP/NA failed", self.name)

    def _routes(self, *, add: bool) -> None:
        inst = self.instance
        if not (inst.virtual_routes or inst.virtual_rules):
            return
        fn = self.host.add_routes if add else self.host.remove_routes
        try:
            fn(self.ifname, inst.virtual_routes, inst.virtual_rules)
        except Exception:
            self.counters.host_errors += 1
            log.exception("%s: virtual routes/rules failed", self.name)

    def _log_limited(self, event: m.LogEvent) -> None:
        """Machine log events (mismatches repeat with every advert): once per message per
        LOG_EVERY seconds, with the number of repeats suppressed in between."""
        level = logging.getLevelName(event.level.upper())
        if not isinstance(level, int):
            level = logging.INFO
        if level < logging.INFO and not log.isEnabledFor(level):
            return
        now = self.loop.time()
        last, suppressed = self._log_seen.get(event.message, (-1e9, 0))
        if now - last < LOG_EVERY:
            self._log_seen[event.message] = (last, suppressed + 1)
            return
        if len(self._log_seen) > 256:
            self._log_seen.clear()
        self._log_seen[event.message] = (now, 0)
        if suppressed:
            log.log(level, "%s (repeated %d times)", event.message, suppressed)
        else:
            log.log(level, "%s", event.message)

    def _host_call(
        self, fn: Callable[[str, Sequence[VirtualAddress]], None], vips: Sequence[VirtualAddress]
    ) -> None:
        if not vips:
            return
        try:
            fn(self.ifname, vips)
        except Exception:
            self.counters.host_errors += 1
            log.exception("%s: address change on %s failed", self.name, self.ifname)

    def _state_changed(self, change: m.StateChanged) -> None:
        if change.old is m.State.INIT and change.new is not m.State.MASTER:
            # keepalived "removing VIPs" at start: a daemon killed while MASTER left them
            self._routes(add=False)
            self._host_call(self.host.remove_addresses, self.vips)
        self.counters.transitions += 1
        self.last_transition_wall = time.time()
        self.last_transition_mono = self.loop.time()
        self.last_reason = change.reason
        log.info(
            "VRRP_Instance(%s) Entering %s STATE (%s)", self.name, change.new.value, change.reason
        )
        if self.on_state is not None and not self._quiet:
            try:
                self.on_state(self, change)
            except Exception:
                log.exception("%s: state callback failed", self.name)

    def _send(self, advert: Advert) -> None:
        sender = self.sender
        payloads = self._payloads
        ah = self._ah
        for dst in sender.destinations:
            key = (advert.priority, dst)
            payload = payloads.get(key)
            if payload is None:
                payload = self._encode(advert, dst)
                if payload is None:
                    continue
                payloads[key] = payload
            if not (self._send_ah(ah, payload, dst) if ah else sender.send_to(payload, dst)):
                self.counters.tx_errors += 1

    def _send_ah(self, ah: AhCounter, vrrp: bytes, dst: str) -> bool:
        """Wrap in IP + AH (a new sequence number and IP ID each time) and send raw."""
        addr = self._dst_addrs.get(dst)
        if addr is None:
            addr = self._dst_addrs[dst] = ipaddress.IPv4Address(dst)
        src = self._src
        assert isinstance(src, ipaddress.IPv4Address)
        seq, ip_id = ah.next()
        datagram = encode_ipv4(
            vrrp,
            src=src,
            dst=addr,
            password=self.params.auth_pass,
            seq=seq,
            ip_id=ip_id,
            ttl=self._ah_ttl,
            unicast=self._ah_unicast,
        )
        return self.sender.send_datagram(datagram, dst)

    def _encode(self, advert: Advert, dst: str) -> bytes | None:
        try:
            return encode(
                advert, src=self._src, dst=ipaddress.ip_address(dst), checksum=self.checksum
            )
        except ValueError as exc:
            self.counters.tx_errors += 1
            log.error("%s: cannot encode advert: %s", self.name, exc)
            return None

    # ------------------------------------------------------------------ the timer

    def _arm(self) -> None:
        deadline = self.machine.next_deadline()
        if deadline is None:
            self._cancel_timer()
            return
        armed = self._armed_at
        if armed is not None and armed <= deadline:
            return  # fires early, re-arms then
        self._cancel_timer()
        self._armed_at = deadline
        self._handle = self.loop.call_at(deadline, self._fire)

    def _cancel_timer(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_at = None

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = None
        if not self._running:
            return
        self.counters.timer_wakeups += 1
        now = self.loop.time()
        deadline = self.machine.next_deadline()
        try:
            if deadline is not None and deadline - now <= EARLY_FIRE_TOLERANCE:
                self._apply(self.machine.on_timer(max(now, deadline)))
            else:
                self._arm()
        except Exception:  # a bug must not silently stop this instance's timers
            self.counters.host_errors += 1
            log.exception("%s: timer handling failed; retrying shortly", self.name)
            self._cancel_timer()
            self._armed_at = now + RETRY_AFTER_ERROR
            self._handle = self.loop.call_at(self._armed_at, self._fire)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        mach = self.machine
        c = mach.counters
        inst = self.instance
        now = self.loop.time()
        since = (
            round(now - self.last_transition_mono, 3)
            if self.last_transition_mono is not None
            else None
        )
        return {
            "name": self.name,
            "state": mach.state.value,
            "vrid": self.params.vrid,
            "version": self.params.version,
            "interface": self.ifname,
            "priority": self.params.priority,
            "effective_priority": mach.priority,
            "advert_int": self.params.advert_int,
            "preempt": self.params.preempt,
            "source": str(self._src) if self._src is not None else None,
            "vips": [_vip_text(v) for v in inst.virtual_ipaddresses],
            "vips_excluded": [_vip_text(v) for v in inst.virtual_ipaddress_excluded],
            "vips_installed": self.vips_installed,
            "master": str(mach.master_ip) if mach.master_ip is not None else None,
            "master_priority": mach.master_priority,
            "faults": sorted(mach.faults),
            "last_transition": (
                _iso(self.last_transition_wall) if self.last_transition_wall else None
            ),
            "seconds_in_state": since,
            "last_reason": self.last_reason,
            "counters": {
                "adverts_sent": c.adverts_sent,
                "adverts_received": c.adverts_received,
                "dropped": {**dict(c.dropped), **self.counters.decode_errors},
                "became_master": c.became_master,
                "released_master": c.released_master,
                "priority_zero_sent": c.priority_zero_sent,
                "priority_zero_received": c.priority_zero_received,
                "transitions": self.counters.transitions,
                "tx_errors": self.counters.tx_errors,
                "host_errors": self.counters.host_errors,
                "garp_bursts": self.counters.garp_bursts,
            },
        }


def _vip_text(v: VirtualAddress) -> str:
    text = str(v.address)
    if v.dev:
        text += f" dev {v.dev}"
    return text


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"
