"""The typed, immutable keepalived.conf model with keepalived's defaults filled in.

Field names follow keepalived.conf(5); durations are float seconds. Defaults are the
ones keepalived 2.2/2.4 applies (vrrp_script weight 0, rise/fall 1, interval 1 s;
checker connect_timeout 5 s, retry 1 (DNS 3, MISC 0), delay_before_retry 1 s (HTTP/SSL
3 s, DNS = delay_loop), delay_loop 60 s; no lvs_sched -> wlc). `loc` fields say where an
object was declared; they are excluded from equality so a reload diff only sees
configuration changes, never moved lines.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from hakeeper.conf.diagnostics import Location

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
VRRP_GROUP4 = ipaddress.IPv4Address("224.0.0.18")
VRRP_GROUP6 = ipaddress.IPv6Address("ff02::12")


@dataclass(frozen=True, slots=True)
class Script:
    """A command line to run, optionally as `user`/`group` (notify_*, quorum_up, ...)."""

    command: str
    user: str | None = None
    group: str | None = None


@dataclass(frozen=True, slots=True)
class GlobalDefs:
    router_id: str | None = None
    notification_email: tuple[str, ...] = ()
    notification_email_from: str | None = None
    smtp_server: str | None = None
    smtp_port: int = 25
    smtp_helo_name: str | None = None
    smtp_connect_timeout: float = 30.0
    smtp_alert: bool | None = None
    smtp_alert_vrrp: bool | None = None
    smtp_alert_checker: bool | None = None
    vrrp_mcast_group4: ipaddress.IPv4Address = VRRP_GROUP4
    vrrp_mcast_group6: ipaddress.IPv6Address = VRRP_GROUP6
    vrrp_version: int = 2
    vrrp_strict: bool = False
    vrrp_garp_master_delay: float = 5.0
    vrrp_garp_master_repeat: int = 5
    vrrp_garp_master_refresh: float = 0.0
    vrrp_garp_master_refresh_repeat: int = 1
    vrrp_garp_lower_prio_delay: float | None = None
    vrrp_garp_lower_prio_repeat: int | None = None
    vrrp_garp_interval: float = 0.0
    vrrp_gna_interval: float = 0.0
    vrrp_lower_prio_no_advert: bool = False
    vrrp_higher_prio_send_advert: bool = False
    vrrp_check_unicast_src: bool = False
    vrrp_skip_check_adv_addr: bool = False
    vrrp_down_timer_adverts: int = 3
    vrrp_startup_delay: float = 0.0
    script_user: str | None = None
    script_group: str | None = None
    enable_script_security: bool = False
    notify_fifo: Script | None = None
    vrrp_notify_fifo: Script | None = None
    lvs_notify_fifo: Script | None = None
    default_interface: str | None = None
    dynamic_interfaces: bool = False
    checker_log_all_failures: bool = False
    lvs_flush: bool = False
    lvs_sync_daemon: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VrrpScript:
    name: str
    script: str
    interval: float = 1.0
    timeout: float = 1.0
    weight: int = 0
    reverse: bool = False
    rise: int = 1
    fall: int = 1
    user: str | None = None
    group: str | None = None
    init_fail: bool = False
    loc: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TrackFile:
    name: str
    file: str
    weight: int = 1
    reverse: bool = False
    init_file: int | None = None
    init_overwrite: bool = False
    loc: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TrackProcess:
    name: str
    process: tuple[str, ...]
    param_match: str | None = None
    weight: int = 1
    reverse: bool = False
    quorum: int = 1
    quorum_max: int | None = None
    fork_delay: float = 0.0
    terminate_delay: float = 0.0
    full_command: bool = False
    loc: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TrackRef:
    """One line of a track_script/track_interface/track_file/track_process block.

    `weight` is None when the line gives none (the tracked object's own weight
    applies; for interfaces that means 0 = FAULT when down).
    """

    name: str
    weight: int | None = None
    reverse: bool | None = None
    loc: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class VirtualAddress:
    address: IPInterface
    dev: str | None = None
    brd: str | None = None
    scope: str | None = None
    label: str | None = None
    peer: str | None = None
    use_vmac: bool = False
    no_track: bool = False
    options: tuple[str, ...] = ()
    loc: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A static/virtual route or rule, kept as `ip route`/`ip rule` words."""

    words: tuple[str, ...]
    no_track: bool = False
    track_group: str | None = None
    loc: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class UnicastPeer:
    address: IPAddress
    min_ttl: int | None = None
    max_ttl: int | None = None


@dataclass(frozen=True, slots=True)
class VrrpInstance:
    name: str
    interface: str | None = None
    state: str = "BACKUP"
    state_configured: bool = False
    virtual_router_id: int | None = None
    priority: int = 100
    advert_int: float = 1.0
    version: int = 2
    family: int = 4
    nopreempt: bool = False
    preempt_delay: float = 0.0
    auth_type: str | None = None
    auth_pass: str | None = None
    mcast_src_ip: IPAddress | None = None
    unicast_src_ip: IPAddress | None = None
    mcast_dst_ip: IPAddress | None = None
    unicast_peers: tuple[UnicastPeer, ...] = ()
    unicast_ttl: int = 255
    use_vmac: bool = False
    vmac_name: str | None = None
    dont_track_primary: bool = False
    accept: bool = True
    strict: bool = False
    skip_check_adv_addr: bool = False
    promote_secondaries: bool = False
    virtual_ipaddresses: tuple[VirtualAddress, ...] = ()
    virtual_ipaddress_excluded: tuple[VirtualAddress, ...] = ()
    virtual_routes: tuple[RouteSpec, ...] = ()
    virtual_rules: tuple[RouteSpec, ...] = ()
    track_interfaces: tuple[TrackRef, ...] = ()
    track_scripts: tuple[TrackRef, ...] = ()
    track_files: tuple[TrackRef, ...] = ()
    track_processes: tuple[TrackRef, ...] = ()
    garp_master_delay: float = 5.0
    garp_master_repeat: int = 5
    garp_master_refresh: float = 0.0
    garp_master_refresh_repeat: int = 1
    garp_lower_prio_delay: float = 5.0
    garp_lower_prio_repeat: int = 5
    down_timer_adverts: int = 3
    lower_prio_no_advert: bool = False
    higher_prio_send_advert: bool = False
    notify_master: Script | None = None
    notify_backup: Script | None = None
    notify_fault: Script | None = None
    notify_stop: Script | None = None
    notify: Script | None = None
    smtp_alert: bool | None = None
    sync_group: str | None = None
    loc: Location | None = field(default=None, compare=False, repr=False)
    keyword_locs: Mapping[str, Location] = field(
        default_factory=dict, compare=False, repr=False, hash=False
    )
    """Where each keyword of the block was written (for diagnostics that point at it)."""


@dataclass(frozen=True, slots=True)
class SyncGroup:
    name: str
    group: tuple[str, ...] = ()
    track_interfaces: tuple[TrackRef, ...] = ()
    track_scripts: tuple[TrackRef, ...] = ()
    track_files: tuple[TrackRef, ...] = ()
    track_processes: tuple[TrackRef, ...] = ()
    notify_master: Script | None = None
    notify_backup: Script | None = None
    notify_fault: Script | None = None
    notify_stop: Script | None = None
    notify: Script | None = None
    smtp_alert: bool | None = None
    sync_group_tracking_weight: bool = False
    loc: Location | None = field(default=None, compare=False, repr=False)


# ---- LVS: checkers -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckerCommon:
    """Options every connection-based checker shares (inherited VS -> RS -> checker)."""

    connect_ip: IPAddress | None = None
    connect_port: int | None = None
    bindto: IPAddress | None = None
    bind_if: str | None = None
    bind_port: int | None = None
    fwmark: int | None = None
    connect_timeout: float = 5.0
    retry: int = 1
    delay_before_retry: float = 1.0
    delay_loop: float = 60.0
    warmup: float | None = None
    alpha: bool = False
    log_all_failures: bool = False


@dataclass(frozen=True, slots=True)
class TcpCheck:
    common: CheckerCommon
    kind: str = "TCP_CHECK"
    loc: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class HttpUrl:
    path: str = "/"
    digest: str | None = None
    status_codes: tuple[tuple[int, int], ...] = ((200, 299),)
    virtualhost: str | None = None
    regex: str | None = None
    regex_no_match: bool = False
    regex_options: tuple[str, ...] = ()
    regex_min_offset: int | None = None
    regex_max_offset: int | None = None


@dataclass(frozen=True, slots=True)
class HttpCheck:
    common: CheckerCommon
    ssl: bool = False
    urls: tuple[HttpUrl, ...] = ()
    virtualhost: str | None = None
    http_protocol: str = "1.0"
    fast_recovery: bool = False
    enable_sni: bool = False
    kind: str = "HTTP_GET"
    loc: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class MiscCheck:
    common: CheckerCommon
    misc_path: str = ""
    misc_timeout: float | None = None
    misc_dynamic: bool = False
    user: str | None = None
    group: str | None = None
    kind: str = "MISC_CHECK"
    loc: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SmtpCheck:
    common: CheckerCommon
    helo_name: str | None = None
    kind: str = "SMTP_CHECK"
    loc: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class DnsCheck:
    common: CheckerCommon
    type: str = "SOA"
    name: str = "."
    kind: str = "DNS_CHECK"
    loc: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PingCheck:
    common: CheckerCommon
    kind: str = "PING_CHECK"
    loc: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class UdpCheck:
    common: CheckerCommon
    payload: bytes | None = None
    require_reply: bool = False
    # `require_reply HEX_STR`: the expected bytes and a per-nibble mask (0 where X); a
    # reply matches over the shorter of the two (keepalived.conf(5)).
    reply_data: bytes | None = None
    reply_mask: bytes | None = None
    min_reply_length: int = 0
    max_reply_length: int = 255
    kind: str = "UDP_CHECK"
    loc: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class FileCheck:
    track_file: str
    dynamic: bool = False
    weight: int = 1
    reverse: bool = False
    kind: str = "FILE_CHECK"
    loc: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class BfdCheck:
    name: str
    kind: str = "BFD_CHECK"
    loc: Location | None = field(default=None, compare=False, repr=False)


Checker = (
    TcpCheck
    | HttpCheck
    | MiscCheck
    | SmtpCheck
    | DnsCheck
    | PingCheck
    | UdpCheck
    | FileCheck
    | BfdCheck
)


# ---- LVS: servers --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LvsMethod:
    """NAT | DR | TUN (with optional tunnel type/port/checksum)."""

    method: str = "NAT"
    tunnel_type: str | None = None
    tunnel_port: int | None = None
    tunnel_csum: str | None = None


@dataclass(frozen=True, slots=True)
class RealServer:
    ip: IPAddress
    port: int | None = None
    weight: int = 1
    lvs_method: LvsMethod | None = None
    inhibit_on_failure: bool = False
    notify_up: Script | None = None
    notify_down: Script | None = None
    uthreshold: int | None = None
    lthreshold: int | None = None
    smtp_alert: bool | None = None
    virtualhost: str | None = None
    checkers: tuple[Checker, ...] = ()
    loc: Location | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> tuple[IPAddress, int | None]:
        return (self.ip, self.port)


@dataclass(frozen=True, slots=True)
class SorryServer:
    ip: IPAddress
    port: int | None = None
    inhibit: bool = False
    lvs_method: LvsMethod | None = None


@dataclass(frozen=True, slots=True)
class VirtualServer:
    """One `virtual_server`: exactly one of (address, port) | fwmark | group is set."""

    address: IPAddress | None = None
    port: int | None = None
    fwmark: int | None = None
    group: str | None = None
    protocol: str = "TCP"
    delay_loop: float = 60.0
    lvs_sched: str = "wlc"
    sched_flags: tuple[str, ...] = ()
    lvs_method: LvsMethod = LvsMethod()
    persistence_timeout: int | None = None
    persistence_granularity: str | None = None
    persistence_engine: str | None = None
    ip_family: str | None = None
    quorum: int = 1
    hysteresis: int = 0
    quorum_up: Script | None = None
    quorum_down: Script | None = None
    sorry_server: SorryServer | None = None
    alpha: bool = False
    omega: bool = False
    ha_suspend: bool = False
    ops: bool = False
    virtualhost: str | None = None
    smtp_alert: bool | None = None
    inhibit_on_failure: bool = False
    real_servers: tuple[RealServer, ...] = ()
    loc: Location | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> tuple[str, ...]:
        """Identity across reloads: ip:port/protocol, fwmark N/family, or group NAME/protocol."""
        if self.group is not None:
            return ("group", self.group, self.protocol)
        if self.fwmark is not None:  # keepalived ignores protocol for fwmark services
            return ("fwmark", str(self.fwmark), self.ip_family or "inet")
        return ("addr", str(self.address), str(self.port), self.protocol)

    @property
    def label(self) -> str:
        if self.group is not None:
            return f"group {self.group}"
        if self.fwmark is not None:
            return f"fwmark {self.fwmark}"
        return f"{self.address} {self.port}"


@dataclass(frozen=True, slots=True)
class VsgEntry:
    """One line of a virtual_server_group: an address range with port, or a fwmark."""

    first: IPAddress | None = None
    last: IPAddress | None = None
    port: int | None = None
    fwmark: int | None = None
    family: str | None = None


@dataclass(frozen=True, slots=True)
class VirtualServerGroup:
    name: str
    entries: tuple[VsgEntry, ...] = ()
    loc: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class KeepalivedConfig:
    global_defs: GlobalDefs = GlobalDefs()
    vrrp_scripts: tuple[VrrpScript, ...] = ()
    track_files: tuple[TrackFile, ...] = ()
    track_processes: tuple[TrackProcess, ...] = ()
    vrrp_instances: tuple[VrrpInstance, ...] = ()
    sync_groups: tuple[SyncGroup, ...] = ()
    virtual_server_groups: tuple[VirtualServerGroup, ...] = ()
    virtual_servers: tuple[VirtualServer, ...] = ()
    static_ipaddresses: tuple[VirtualAddress, ...] = ()
    static_routes: tuple[RouteSpec, ...] = ()
    static_rules: tuple[RouteSpec, ...] = ()

    def instance(self, name: str) -> VrrpInstance | None:
        return next((v for v in self.vrrp_instances if v.name == name), None)

    def script(self, name: str) -> VrrpScript | None:
        return next((s for s in self.vrrp_scripts if s.name == name), None)
