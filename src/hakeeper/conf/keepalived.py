"""keepalived.conf reader: walks the syntax tree with the keyword table and builds the model.

`build_model` applies `hakeeper.conf.keywords.TOP` to the lexer's tree, then turns each
block's converted values into frozen model objects, filling in keepalived's defaults
and its inheritance (global_defs -> vrrp_instance for GARP/strict/version;
virtual_server -> real_server -> checker for connect_timeout, retry,
delay_before_retry, warmup, delay_loop, alpha, virtualhost). Cross-object checks and
keepalived's silent normalisations are in `hakeeper.conf.validate`, run at the end.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

from hakeeper.conf import validate
from hakeeper.conf.blocks import gc_paused
from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.keywords import TOP
from hakeeper.conf.model import (
    BfdCheck,
    Checker,
    CheckerCommon,
    DnsCheck,
    FileCheck,
    GlobalDefs,
    HttpCheck,
    HttpUrl,
    KeepalivedConfig,
    LvsMethod,
    MiscCheck,
    PingCheck,
    RealServer,
    SmtpCheck,
    SorryServer,
    SyncGroup,
    TcpCheck,
    TrackFile,
    TrackProcess,
    UdpCheck,
    VirtualServer,
    VirtualServerGroup,
    VrrpInstance,
    VrrpScript,
)
from hakeeper.conf.schema import Raw, walk
from hakeeper.conf.tree import Node

__all__ = ["build_model", "load_keepalived"]


def load_keepalived(
    path: str, *, config_id: str | None = None
) -> tuple[KeepalivedConfig | None, Diagnostics]:
    """Read, expand and build `path`; None only when the file cannot be read at all.

    `config_id` selects `@ID` lines like keepalived's `-i` (default: short hostname).
    """
    from hakeeper.conf.files import default_config_id  # noqa: PLC0415 (the I/O door)
    from hakeeper.conf.lexer import LexOptions, parse_keepalived_file  # noqa: PLC0415

    diags = Diagnostics()
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        diags.error(None, f"cannot read {path}: {exc.strerror or exc}")
        return None, diags
    options = LexOptions(config_id=config_id if config_id is not None else default_config_id())
    # One GC pause for both steps: the tree is freed (by reference counting) before
    # the collector sees it, and only the model is aged into the oldest generation.
    with gc_paused():
        nodes = parse_keepalived_file(path, diags, options=options)
        config = build_model(nodes, diags)
        del nodes
    return config, diags


def build_model(nodes: tuple[Node, ...], diags: Diagnostics) -> KeepalivedConfig:
    """Build the model from a parsed tree, reporting every problem; never raises."""
    # A big config allocates ~10^5 small objects next to a ~10^6-object tree; the cyclic
    # collector would re-traverse that tree again and again (measured: build time x3 on
    # 2,000 virtual servers). Nothing here creates reference cycles: pause it.
    with gc_paused():
        return _build(nodes, diags)


def _build(nodes: tuple[Node, ...], diags: Diagnostics) -> KeepalivedConfig:
    top = walk(TOP, nodes, diags)
    global_defs = _global_defs(top.get("global_defs"))
    scripts = _unique(
        [s for r in top.list("vrrp_script") if (s := _vrrp_script(r, diags)) is not None],
        "vrrp_script",
        diags,
    )
    config = KeepalivedConfig(
        global_defs=global_defs,
        vrrp_scripts=scripts,
        track_files=_unique([_track_file(r) for r in top.list("track_file")], "track_file", diags),
        track_processes=_unique(
            [_track_process(r) for r in top.list("vrrp_track_process")], "vrrp_track_process", diags
        ),
        vrrp_instances=_unique(
            [_instance(r, global_defs, diags) for r in top.list("vrrp_instance")],
            "vrrp_instance",
            diags,
        ),
        sync_groups=_unique(
            [_sync_group(r) for r in top.list("vrrp_sync_group")], "vrrp_sync_group", diags
        ),
        virtual_server_groups=_unique(
            [
                VirtualServerGroup(r.head, r.get("items", ()), loc=r.loc)
                for r in top.list("virtual_server_group")
            ],
            "virtual_server_group",
            diags,
        ),
        virtual_servers=tuple(_virtual_server(r, diags) for r in top.list("virtual_server")),
        static_ipaddresses=top.get("static_ipaddress", ()),
        static_routes=top.get("static_routes", ()),
        static_rules=top.get("static_rules", ()),
    )
    return validate.check_config(config, diags)


def _unique(objs: list[Any], what: str, diags: Diagnostics) -> tuple[Any, ...]:
    """keepalived keeps the first of two same-named objects and skips the later one."""
    seen: dict[str, Any] = {}
    for obj in objs:
        if obj.name in seen:
            first = seen[obj.name].loc
            where = f" (first at line {first.line})" if first is not None else ""
            diags.error(obj.loc, f"{what} '{obj.name}' defined twice{where}; the second is ignored")
            continue
        seen[obj.name] = obj
    return tuple(seen.values())


# ---- global and VRRP ------------------------------------------------------------------


def _global_defs(raw: Raw | None) -> GlobalDefs:
    if raw is None:
        return GlobalDefs()
    v = raw.values
    simple = {
        k: v[k]
        for k in [
            "router_id",
            "notification_email_from",
            "smtp_helo_name",
            "smtp_connect_timeout",
            "smtp_alert",
            "smtp_alert_vrrp",
            "smtp_alert_checker",
            "vrrp_mcast_group4",
            "vrrp_mcast_group6",
            "vrrp_version",
            "vrrp_strict",
            "vrrp_garp_master_delay",
            "vrrp_garp_master_repeat",
            "vrrp_garp_master_refresh",
            "vrrp_garp_master_refresh_repeat",
            "vrrp_garp_lower_prio_delay",
            "vrrp_garp_lower_prio_repeat",
            "vrrp_garp_interval",
            "vrrp_gna_interval",
            "vrrp_lower_prio_no_advert",
            "vrrp_higher_prio_send_advert",
            "vrrp_check_unicast_src",
            "vrrp_skip_check_adv_addr",
            "vrrp_down_timer_adverts",
            "vrrp_startup_delay",
            "enable_script_security",
            "notify_fifo",
            "vrrp_notify_fifo",
            "lvs_notify_fifo",
            "default_interface",
            "checker_log_all_failures",
            "lvs_flush",
        ]
        if k in v
    }
    for key, family in (("vrrp_mcast_group4", 4), ("vrrp_mcast_group6", 6)):
        if key in simple and simple[key].version != family:
            simple.pop(key)
    user = v.get("script_user", (None, None))
    smtp = v.get("smtp_server", (None, 25))
    return GlobalDefs(
        **simple,
        notification_email=tuple(a for line in v.get("notification_email", ()) for a in line),
        smtp_server=smtp[0],
        smtp_port=smtp[1],
        script_user=user[0],
        script_group=user[1],
        dynamic_interfaces="dynamic_interfaces" in v,
        lvs_sync_daemon=v.get("lvs_sync_daemon", ()),
    )


def _vrrp_script(raw: Raw, diags: Diagnostics) -> VrrpScript | None:
    v = raw.values
    if not v.get("script", "").strip():
        # keepalived notices at the end of the block ("No script set ... - removing").
        node = raw.node
        where = node.close_loc if node is not None and node.close_loc is not None else raw.loc
        diags.warning(where, f"vrrp_script {raw.head} has no 'script COMMAND'; removed")
        return None
    interval = v.get("interval", 1.0)
    weight, reverse = v.get("weight", (0, False))
    user = v.get("user", (None, None))
    return VrrpScript(
        name=raw.head,
        script=v.get("script", ""),
        interval=interval,
        timeout=v.get("timeout", interval),
        weight=weight,
        reverse=reverse,
        rise=v.get("rise", 1),
        fall=v.get("fall", 1),
        user=user[0],
        group=user[1],
        init_fail=v.get("init_fail", False),
        loc=raw.loc,
    )


def _track_file(raw: Raw) -> TrackFile:
    weight, reverse = raw.get("weight", (1, False))
    init = raw.get("init_file")
    return TrackFile(
        name=raw.head,
        file=raw.get("file", ""),
        weight=weight,
        reverse=reverse,
        init_file=init[0] if init else None,
        init_overwrite=bool(init and init[1]),
        loc=raw.loc,
    )


def _track_process(raw: Raw) -> TrackProcess:
    weight, reverse = raw.get("weight", (1, False))
    delay = raw.get("delay", 0.0)
    return TrackProcess(
        name=raw.head,
        process=raw.get("process", ()),
        param_match=raw.get("param_match"),
        weight=weight,
        reverse=reverse,
        quorum=raw.get("quorum", 1),
        quorum_max=raw.get("quorum_max"),
        fork_delay=raw.get("fork_delay", delay),
        terminate_delay=raw.get("terminate_delay", delay),
        full_command=raw.get("full_command", False),
        loc=raw.loc,
    )


def _instance(raw: Raw, g: GlobalDefs, diags: Diagnostics) -> VrrpInstance:
    v = raw.values
    auth = v.get("authentication")
    vips = v.get("virtual_ipaddress", ())
    priority = v.get("priority", 100)
    state = v.get("state")
    strict = v.get("strict_mode", g.vrrp_strict)
    if "accept" in v and "no_accept" in v:
        diags.warning(
            raw.locs["no_accept"], "both 'accept' and 'no_accept' given; the last one wins"
        )
        accept = raw.locs["accept"] > raw.locs["no_accept"]
    elif "accept" in v or "no_accept" in v:
        accept = "accept" in v
    else:
        accept = not strict or priority == 255
    # nopreempt and preempt: the later keyword wins (keepalived sets/clears one flag)
    nopreempt = "nopreempt" in v and (
        "preempt" not in v or raw.locs["nopreempt"] > raw.locs["preempt"]
    )
    families = {a.address.version for a in vips}
    src = v.get("mcast_src_ip") if "mcast_src_ip" in v else v.get("unicast_src_ip")
    family = 6 if 6 in families or (not families and src is not None and src.version == 6) else 4
    vmac = v.get("use_vmac")
    return VrrpInstance(
        name=raw.head,
        interface=v.get("interface"),
        state=state or ("MASTER" if priority == 255 else "BACKUP"),
        state_configured=state is not None,
        virtual_router_id=v.get("virtual_router_id"),
        priority=priority,
        advert_int=v.get("advert_int", 1.0),
        version=v.get("version", g.vrrp_version),
        family=family,
        nopreempt=nopreempt,
        preempt_delay=v.get("preempt_delay", 0.0),
        auth_type=auth.get("auth_type") if auth else None,
        auth_pass=auth.get("auth_pass") if auth else None,
        mcast_src_ip=v.get("mcast_src_ip"),
        unicast_src_ip=v.get("unicast_src_ip"),
        mcast_dst_ip=v.get("mcast_dst_ip"),
        unicast_peers=v.get("unicast_peer", ()),
        unicast_ttl=v.get("unicast_ttl", 255),
        use_vmac=vmac is not None,
        vmac_name=vmac[0] if vmac else None,
        dont_track_primary=v.get("dont_track_primary", False),
        accept=accept,
        strict=strict,
        skip_check_adv_addr=v.get("skip_check_adv_addr", g.vrrp_skip_check_adv_addr),
        promote_secondaries=v.get("promote_secondaries", False),
        virtual_ipaddresses=vips,
        virtual_ipaddress_excluded=v.get("virtual_ipaddress_excluded", ()),
        virtual_routes=v.get("virtual_routes", ()),
        virtual_rules=v.get("virtual_rules", ()),
        track_interfaces=v.get("track_interface", ()),
        track_scripts=v.get("track_script", ()),
        track_files=v.get("track_file", ()),
        track_processes=v.get("track_process", ()),
        garp_master_delay=v.get("garp_master_delay", g.vrrp_garp_master_delay),
        garp_master_repeat=v.get("garp_master_repeat", g.vrrp_garp_master_repeat),
        garp_master_refresh=v.get("garp_master_refresh", g.vrrp_garp_master_refresh),
        garp_master_refresh_repeat=v.get(
            "garp_master_refresh_repeat", g.vrrp_garp_master_refresh_repeat
        ),
        garp_lower_prio_delay=v.get(
            "garp_lower_prio_delay",
            g.vrrp_garp_lower_prio_delay
            if g.vrrp_garp_lower_prio_delay is not None
            else v.get("garp_master_delay", g.vrrp_garp_master_delay),
        ),
        garp_lower_prio_repeat=v.get(
            "garp_lower_prio_repeat",
            g.vrrp_garp_lower_prio_repeat
            if g.vrrp_garp_lower_prio_repeat is not None
            else v.get("garp_master_repeat", g.vrrp_garp_master_repeat),
        ),
        down_timer_adverts=v.get("down_timer_adverts", g.vrrp_down_timer_adverts),
        lower_prio_no_advert=v.get("lower_prio_no_advert", g.vrrp_lower_prio_no_advert),
        higher_prio_send_advert=v.get("higher_prio_send_advert", g.vrrp_higher_prio_send_advert),
        notify_master=v.get("notify_master"),
        notify_backup=v.get("notify_backup"),
        notify_fault=v.get("notify_fault"),
        notify_stop=v.get("notify_stop"),
        notify=v.get("notify"),
        smtp_alert=v.get("smtp_alert"),
        loc=raw.loc,
        keyword_locs={**raw.locs, **auth.locs} if auth else raw.locs,
    )


def _sync_group(raw: Raw) -> SyncGroup:
    v = raw.values
    members = tuple(name for line in v.get("group", ()) for name in line)
    return SyncGroup(
        name=raw.head,
        group=members,
        track_interfaces=v.get("track_interface", ()),
        track_scripts=v.get("track_script", ()),
        track_files=v.get("track_file", ()),
        track_processes=v.get("track_process", ()),
        notify_master=v.get("notify_master"),
        notify_backup=v.get("notify_backup"),
        notify_fault=v.get("notify_fault"),
        notify_stop=v.get("notify_stop"),
        notify=v.get("notify"),
        smtp_alert=v.get("smtp_alert"),
        sync_group_tracking_weight=v.get("sync_group_tracking_weight", False),
        loc=raw.loc,
    )


# ---- LVS ------------------------------------------------------------------------------

_INHERITED = ("connect_timeout", "retry", "delay_before_retry", "warmup", "delay_loop", "alpha")
_INHERITED_SET = frozenset(_INHERITED)


def _virtual_server(raw: Raw, diags: Diagnostics) -> VirtualServer:
    v = raw.values
    head = raw.head
    if head[0] == "fwmark" and "protocol" in v:
        diags.warning(
            raw.locs["protocol"],
            "protocol is ignored for a fwmark virtual server (the mark selects)",
        )
    if "lvs_sched" not in v:
        diags.warning(
            raw.loc, "virtual_server has no lvs_sched (lb_algo); keepalived defaults to wlc"
        )
    sorry: SorryServer | None = v.get("sorry_server")
    if sorry is not None:
        sorry = SorryServer(
            sorry.ip,
            sorry.port,
            v.get("sorry_server_inhibit", False),
            v.get("sorry_server_lvs_method"),
        )
    vs_defaults = {k: v[k] for k in _INHERITED if k in v}
    vs_defaults.setdefault("delay_loop", 60.0)
    vs_virtualhost = v.get("virtualhost")
    vs_inhibit = v.get("inhibit_on_failure", False)
    reals = tuple(
        _real_server(r, vs_defaults, vs_virtualhost, vs_inhibit, diags)
        for r in raw.list("real_servers")
    )
    return VirtualServer(
        address=head[1] if head[0] == "addr" else None,
        port=head[2] if head[0] == "addr" else None,
        fwmark=head[1] if head[0] == "fwmark" else None,
        group=head[1] if head[0] == "group" else None,
        protocol=v.get("protocol", "TCP"),
        delay_loop=vs_defaults["delay_loop"],
        lvs_sched=v.get("lvs_sched", "wlc"),
        sched_flags=tuple(dict.fromkeys(raw.list("sched_flags"))),
        lvs_method=v.get("lvs_method", LvsMethod()),
        persistence_timeout=v.get("persistence_timeout"),
        persistence_granularity=v.get("persistence_granularity"),
        persistence_engine=v.get("persistence_engine"),
        ip_family=v.get("ip_family"),
        quorum=v.get("quorum", 1),
        hysteresis=v.get("hysteresis", 0),
        quorum_up=v.get("quorum_up"),
        quorum_down=v.get("quorum_down"),
        sorry_server=sorry,
        alpha=v.get("alpha", False),
        omega=v.get("omega", False),
        ha_suspend=v.get("ha_suspend", False),
        ops=v.get("ops", False),
        virtualhost=vs_virtualhost,
        smtp_alert=v.get("smtp_alert"),
        inhibit_on_failure=vs_inhibit,
        real_servers=reals,
        loc=raw.loc,
    )


def _real_server(
    raw: Raw,
    vs_defaults: dict[str, Any],
    vs_virtualhost: str | None,
    vs_inhibit: bool,
    diags: Diagnostics,
) -> RealServer:
    v = raw.values
    ip, port = raw.head
    own = _INHERITED_SET.intersection(v)
    defaults = {**vs_defaults, **{k: v[k] for k in own}} if own else vs_defaults
    virtualhost = v.get("virtualhost", vs_virtualhost)
    checkers: list[Checker] = []
    for c in raw.list("checkers"):
        got = _checker(c, ip, port, defaults, virtualhost, diags)
        if got is not None:
            checkers.append(got)
        for host in c.list("hosts") if c.kind == "SMTP_CHECK" else ():
            merged = {**{k: c.values[k] for k in _INHERITED if k in c.values}}
            host.kind = "SMTP_CHECK"
            host.values = {**merged, **host.values}
            checkers.append(SmtpCheck(_common(host, defaults), c.get("helo_name"), loc=host.loc))
    return RealServer(
        ip=ip,
        port=port,
        weight=v.get("weight", 1),
        lvs_method=v.get("lvs_method"),
        inhibit_on_failure=v.get("inhibit_on_failure", vs_inhibit),
        notify_up=v.get("notify_up"),
        notify_down=v.get("notify_down"),
        uthreshold=v.get("uthreshold"),
        lthreshold=v.get("lthreshold"),
        smtp_alert=v.get("smtp_alert"),
        virtualhost=virtualhost,
        checkers=tuple(checkers),
        loc=raw.loc,
    )


_RETRY_DEFAULT = {"DNS_CHECK": 3, "MISC_CHECK": 0}


_COMMON_KEYS = (
    "connect_ip",
    "connect_port",
    "bindto",
    "bind_if",
    "bind_port",
    "fwmark",
    "connect_timeout",
    "retry",
    "delay_before_retry",
    "delay_loop",
    "warmup",
    "alpha",
    "log_all_failures",
)


def _common(raw: Raw, defaults: dict[str, Any]) -> CheckerCommon:
    v = raw.values
    m = {**defaults, **v} if v else defaults
    values = tuple(map(m.get, _COMMON_KEYS))
    try:
        return _common_of(raw.kind, *values)
    except TypeError:  # an unhashable value: build it uncached
        return _common_of.__wrapped__(raw.kind, *values)


@functools.lru_cache(maxsize=1024, typed=True)
def _common_of(  # noqa: PLR0917
    kind: str,
    connect_ip: Any,
    connect_port: Any,
    bindto: Any,
    bind_if: Any,
    bind_port: Any,
    fwmark: Any,
    connect_timeout: Any,
    retry: Any,
    delay_before_retry: Any,
    delay_loop: Any,
    warmup: Any,
    alpha: Any,
    log_all_failures: Any,
) -> CheckerCommon:
    """One CheckerCommon per distinct setting: big configs repeat the same few (and the
    objects are immutable, so sharing them is invisible)."""
    if delay_loop is None:
        delay_loop = 60.0
    if delay_before_retry is None:
        if kind in ("HTTP_GET", "SSL_GET"):
            delay_before_retry = 3.0
        elif kind == "DNS_CHECK":
            delay_before_retry = delay_loop
        else:
            delay_before_retry = 1.0
    return CheckerCommon(
        connect_ip=connect_ip,
        connect_port=connect_port,
        bindto=bindto,
        bind_if=bind_if,
        bind_port=bind_port,
        fwmark=fwmark,
        connect_timeout=5.0 if connect_timeout is None else connect_timeout,
        retry=_RETRY_DEFAULT.get(kind, 1) if retry is None else retry,
        delay_before_retry=delay_before_retry,
        delay_loop=delay_loop,
        warmup=warmup,
        alpha=False if alpha is None else alpha,
        log_all_failures=False if log_all_failures is None else log_all_failures,
    )


def _checker(  # noqa: PLR0917
    raw: Raw,
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    port: int | None,
    defaults: dict[str, Any],
    virtualhost: str | None,
    diags: Diagnostics,
) -> Checker | None:
    v = raw.values
    kind = raw.kind
    loc = raw.loc
    if kind == "FILE_CHECK":
        if "track_file" not in v:
            diags.error(loc, "FILE_CHECK needs 'track_file NAME'")
            return None
        weight, reverse = v.get("weight", (1, False))
        return FileCheck(v["track_file"], v.get("dynamic", False), weight, reverse, loc=loc)
    if kind == "BFD_CHECK":
        if "name" not in v:
            diags.error(loc, "BFD_CHECK needs 'name BFD_INSTANCE'")
            return None
        return BfdCheck(v["name"], loc=loc)
    common = _common(raw, defaults)
    needs_port = kind in ("TCP_CHECK", "HTTP_GET", "SSL_GET", "SMTP_CHECK", "UDP_CHECK")
    if needs_port and common.connect_port is None and not port:
        diags.error(
            loc,
            f"{kind} on real_server {ip} has no port: give the real_server a port or connect_port",
        )
    if kind == "TCP_CHECK":
        return TcpCheck(common, loc=loc)
    if kind == "PING_CHECK":
        return PingCheck(common, loc=loc)
    if kind in ("HTTP_GET", "SSL_GET"):
        urls = tuple(_url(u) for u in raw.list("urls"))
        if not urls:
            diags.error(loc, f"{kind} needs at least one url {{ path ... }} block")
        return HttpCheck(
            common,
            ssl=kind == "SSL_GET",
            urls=urls,
            virtualhost=v.get("virtualhost", virtualhost),
            http_protocol=v.get("http_protocol", "1.0"),
            fast_recovery=v.get("fast_recovery", False),
            enable_sni=v.get("enable_sni", False),
            kind=kind,
            loc=loc,
        )
    if kind == "MISC_CHECK":
        if "misc_path" not in v:
            diags.error(loc, "MISC_CHECK needs 'misc_path COMMAND'")
        user = v.get("user", (None, None))
        return MiscCheck(
            common,
            misc_path=v.get("misc_path", ""),
            misc_timeout=v.get("misc_timeout"),
            misc_dynamic=v.get("misc_dynamic", False),
            user=user[0],
            group=user[1],
            loc=loc,
        )
    if kind == "SMTP_CHECK":
        return SmtpCheck(common, helo_name=v.get("helo_name"), loc=loc)
    if kind == "DNS_CHECK":
        return DnsCheck(common, type=v.get("type", "SOA"), name=v.get("name", "."), loc=loc)
    reply = v.get("require_reply")
    lengths = (v.get("min_reply_length", 0), v.get("max_reply_length", 255))
    if lengths[0] > lengths[1]:
        diags.error(loc, f"UDP_CHECK min_reply_length {lengths[0]} > max_reply_length {lengths[1]}")
    return UdpCheck(
        common,
        payload=v.get("payload"),
        require_reply=reply is not None,
        reply_data=reply[0] if reply else None,
        reply_mask=reply[1] if reply else None,
        min_reply_length=lengths[0],
        max_reply_length=lengths[1],
        loc=loc,
    )


def _url(raw: Raw) -> HttpUrl:
    v = raw.values
    return HttpUrl(
        path=v.get("path", "/"),
        digest=v.get("digest"),
        status_codes=v.get("status_code", ((200, 299),)),
        virtualhost=v.get("virtualhost"),
        regex=v.get("regex"),
        regex_no_match=v.get("regex_no_match", False),
        regex_options=v.get("regex_options", ()),
        regex_min_offset=v.get("regex_min_offset"),
        regex_max_offset=v.get("regex_max_offset"),
    )
