"""The keepalived.conf keyword table: every block, keyword, argument type, range and alias.

Data, not code: each block is a `BlockSpec` built from `Kw` entries (see
`hakeeper.conf.schema`). Keywords and ranges follow keepalived.conf(5) of keepalived
2.2/2.4 (global_defs, vrrp_script, vrrp_instance, vrrp_sync_group, track_file,
vrrp_track_process, static_*, virtual_server(_group), real_server and every checker).
Keywords hakeeper does not implement are listed as accepted-and-ignored (a warning) so
a keepalived config never fails on them. Legacy spellings are aliases: lb_algo/lb_kind
(-> lvs_sched/lvs_method), nb_get_retry (-> retry, warned) and ICMP_CHECK (-> PING_CHECK,
warned; keepalived itself rejects it and mis-nests the rest of the block).
"""

from __future__ import annotations

from hakeeper.conf import lines
from hakeeper.conf.schema import (
    BlockSpec,
    Kw,
    Status,
    any_args,
    block,
    bool_opt,
    choice,
    command,
    command_text,
    flag,
    int_arg,
    ip_arg,
    script,
    text,
    timer,
    word,
)

I32 = 2147483647
SCHEDULERS = (
    "rr",
    "wrr",
    "lc",
    "wlc",
    "lblc",
    "lblcr",
    "dh",
    "sh",
    "mh",
    "sed",
    "nq",
    "fo",
    "ovf",
    "twos",
)
SCHED_FLAGS = ("flag-1", "flag-2", "flag-3", "sh-port", "sh-fallback", "mh-port", "mh-fallback")
NOT_IMPLEMENTED = "not implemented by hakeeper"

# ---- global_defs ---------------------------------------------------------------------

GLOBAL_DEFS = block(
    "global_defs",
    Kw("router_id", word),
    Kw("notification_email", items=lines.line_words),
    Kw("notification_email_from", word),
    Kw("smtp_server", lines.smtp_server),
    Kw("smtp_helo_name", word),
    Kw("smtp_connect_timeout", timer(0.001, 3600)),
    Kw("smtp_alert", bool_opt),
    Kw("smtp_alert_vrrp", bool_opt),
    Kw("smtp_alert_checker", bool_opt),
    Kw("vrrp_mcast_group4", ip_arg),
    Kw("vrrp_mcast_group6", ip_arg),
    Kw("vrrp_version", int_arg(2, 3)),
    Kw("vrrp_strict", flag),
    Kw("vrrp_garp_master_delay", timer(0, 255)),
    Kw("vrrp_garp_master_repeat", int_arg(0, 255)),
    Kw("vrrp_garp_master_refresh", timer(0, 86400)),
    Kw("vrrp_garp_master_refresh_repeat", int_arg(1, 255)),
    Kw("vrrp_garp_lower_prio_delay", timer(0, 255)),
    Kw("vrrp_garp_lower_prio_repeat", int_arg(0, 255)),
    Kw("vrrp_garp_interval", timer(0, 1)),
    Kw("vrrp_gna_interval", timer(0, 1)),
    Kw("vrrp_lower_prio_no_advert", bool_opt),
    Kw("vrrp_higher_prio_send_advert", bool_opt),
    Kw("vrrp_check_unicast_src", flag),
    Kw("vrrp_skip_check_adv_addr", flag),
    Kw("vrrp_down_timer_adverts", int_arg(1, 100)),
    Kw("vrrp_startup_delay", timer(0, 3600)),
    Kw("script_user", lines.user_group),
    Kw("enable_script_security", flag),
    Kw("notify_fifo", script),
    Kw("vrrp_notify_fifo", script),
    Kw("lvs_notify_fifo", script),
    Kw("default_interface", word),
    Kw("dynamic_interfaces", any_args),
    Kw("checker_log_all_failures", bool_opt),
    Kw("lvs_flush", flag),
    Kw("lvs_sync_daemon", any_args),
    Kw("lvs_id", status=Status.REJECTED, doc="removed from keepalived; use router_id"),
    Kw(
        "lvs_sync_daemon_interface",
        any_args,
        status=Status.IGNORED,
        doc="obsolete; use lvs_sync_daemon",
    ),
    [
        Kw(n, any_args, status=Status.IGNORED, doc=NOT_IMPLEMENTED)
        for n in [
            "net_namespace",
            "net_namespace_ipvs",
            "namespace_with_ipsets",
            "instance",
            "use_pid_dir",
            "linkbeat_use_polling",
            "child_wait_time",
            "tmp_config_directory",
            "config_save_dir",
            "process_names",
            "process_name",
            "vrrp_process_name",
            "checker_process_name",
            "bfd_process_name",
            "startup_script",
            "startup_script_timeout",
            "shutdown_script",
            "shutdown_script_timeout",
            "no_email_faults",
            "lvs_timeouts",
            "lvs_flush_on_stop",
            "vrrp_garp_extra_if",
            "vrrp_min_garp",
            "nftables",
            "nftables_priority",
            "nftables_counters",
            "nftables_ifindex",
            "nftables_ipvs",
            "nftables_ipvs_priority",
            "nftables_ipvs_start_fwmark",
            "vrrp_iptables",
            "vrrp_ipsets",
            "disable_local_igmp",
            "vrrp_notify_priority_changes",
            "max_auto_priority",
            "min_auto_priority_delay",
            "vrrp_priority",
            "checker_priority",
            "bfd_priority",
            "vrrp_no_swap",
            "checker_no_swap",
            "bfd_no_swap",
            "vrrp_cpu_affinity",
            "checker_cpu_affinity",
            "bfd_cpu_affinity",
            "vrrp_rt_priority",
            "checker_rt_priority",
            "bfd_rt_priority",
            "vrrp_rlimit_rttime",
            "checker_rlimit_rttime",
            "bfd_rlimit_rttime",
            "snmp_socket",
            "enable_snmp_vrrp",
            "enable_snmp_checker",
            "enable_snmp_rfc",
            "enable_snmp_rfcv2",
            "enable_snmp_rfcv3",
            "enable_snmp_keepalived",
            "enable_traps",
            "enable_dbus",
            "dbus_service_name",
            "notify_fifo_script",
            "vrrp_notify_fifo_script",
            "lvs_notify_fifo_script",
            "fifo_write_vrrp_states_on_reload",
            "vrrp_netlink_cmd_rcv_bufs",
            "vrrp_netlink_cmd_rcv_bufs_force",
            "vrrp_netlink_monitor_rcv_bufs",
            "vrrp_netlink_monitor_rcv_bufs_force",
            "lvs_netlink_cmd_rcv_bufs",
            "lvs_netlink_cmd_rcv_bufs_force",
            "lvs_netlink_monitor_rcv_bufs",
            "lvs_netlink_monitor_rcv_bufs_force",
            "process_monitor_rcv_bufs",
            "process_monitor_rcv_bufs_force",
            "vrrp_rx_bufs_policy",
            "vrrp_rx_bufs_multiplier",
            "rs_init_notifies",
            "no_checker_emails",
            "umask",
            "log_unknown_vrids",
            "vmac_prefix",
            "vmac_addr_prefix",
            "random_seed",
            "reload_check_config",
            "include_check",
            "reload_time_file",
            "reload_repeat",
            "reload_file",
            "data_use_instance",
            "state_file_location",
            "stats_file_location",
            "json_file_location",
            "json_version",
        ]
    ],
)

# ---- tracking objects ----------------------------------------------------------------

VRRP_SCRIPT = block(
    "vrrp_script",
    Kw("script", command_text),
    Kw("interval", timer(0.001, 86400)),
    Kw("timeout", timer(0.001, 86400)),
    Kw("weight", lines.weight(-253, 253)),
    Kw("rise", int_arg(1, I32)),
    Kw("fall", int_arg(1, I32)),
    Kw("user", lines.user_group),
    Kw("init_fail", flag),
)

TRACK_FILE_DEF = block(
    "track_file",
    Kw("file", word),
    Kw("weight", lines.weight(-I32, I32)),
    Kw("init_file", lines.init_file),
)

TRACK_PROCESS_DEF = block(
    "vrrp_track_process",
    Kw("process", lines.args_tuple),
    Kw("param_match", choice("initial", "partial")),
    Kw("weight", lines.weight(-254, 254)),
    Kw("quorum", int_arg(0, 65535)),
    Kw("quorum_max", int_arg(0, 65535)),
    Kw("fork_delay", timer(0, 3600)),
    Kw("terminate_delay", timer(0, 3600)),
    Kw("delay", timer(0, 3600)),
    Kw("full_command", flag),
)


def _track_blocks() -> list[Kw]:
    return [
        Kw("track_interface", items=lines.track_ref(-253, 253)),
        Kw("track_script", items=lines.track_ref(-253, 253)),
        Kw("track_file", items=lines.track_ref(-254, 254)),
        Kw("track_process", items=lines.track_ref(-254, 254)),
        Kw("track_bfd", any_args, status=Status.IGNORED, doc="BFD is not implemented"),
    ]


def _notify_keywords() -> list[Kw]:
    return [
        Kw("notify_master", command),
        Kw("notify_backup", command),
        Kw("notify_fault", command),
        Kw("notify_stop", command),
        Kw("notify", command),
        Kw("smtp_alert", bool_opt),
        Kw("notify_deleted", any_args, status=Status.IGNORED, doc=NOT_IMPLEMENTED),
        Kw("notify_priority_changes", any_args, status=Status.IGNORED, doc=NOT_IMPLEMENTED),
    ]


SYNC_GROUP = block(
    "vrrp_sync_group",
    Kw("group", items=lines.line_words),
    _track_blocks(),
    _notify_keywords(),
    Kw("sync_group_tracking_weight", flag),
    Kw(
        "global_tracking",
        flag,
        field="sync_group_tracking_weight",
        warn="'global_tracking' is deprecated; read as sync_group_tracking_weight",
    ),
)

# ---- vrrp_instance -------------------------------------------------------------------

AUTHENTICATION = block(
    "authentication",
    Kw("auth_type", choice("PASS", "AH")),
    Kw("auth_pass", word),
)

VRRP_INSTANCE = block(
    "vrrp_instance",
    Kw("state", choice("MASTER", "BACKUP")),
    Kw("interface", word),
    Kw("virtual_router_id", int_arg(1, 255)),
    Kw("priority", int_arg(1, 255)),
    Kw("advert_int", timer(0.01, 255)),
    Kw("version", int_arg(2, 3)),
    Kw("nopreempt", flag),
    Kw("preempt", flag),
    Kw("preempt_delay", timer(0, 1000)),
    Kw("authentication", block=AUTHENTICATION),
    Kw("mcast_src_ip", ip_arg),
    Kw("unicast_src_ip", ip_arg),
    Kw("mcast_dst_ip", ip_arg),
    Kw("unicast_peer", items=lines.unicast_peer),
    Kw("unicast_ttl", int_arg(1, 255)),
    Kw("use_vmac", lines.words_tuple_opt),
    Kw("dont_track_primary", flag),
    Kw("accept", flag),
    Kw("no_accept", flag),
    Kw("strict_mode", bool_opt),
    Kw("skip_check_adv_addr", bool_opt),
    Kw("promote_secondaries", flag),
    Kw("virtual_ipaddress", items=lines.vip),
    Kw("virtual_ipaddress_excluded", items=lines.vip),
    Kw("virtual_routes", items=lines.ip_route),
    Kw("virtual_rules", items=lines.rule),
    _track_blocks(),
    Kw("garp_master_delay", timer(0, 255)),
    Kw("garp_master_repeat", int_arg(0, 255)),
    Kw("garp_master_refresh", timer(0, 86400)),
    Kw("garp_master_refresh_repeat", int_arg(1, 255)),
    Kw("garp_lower_prio_delay", timer(0, 255)),
    Kw("garp_lower_prio_repeat", int_arg(0, 255)),
    Kw("down_timer_adverts", int_arg(1, 100)),
    Kw("lower_prio_no_advert", bool_opt),
    Kw("higher_prio_send_advert", bool_opt),
    _notify_keywords(),
    [
        Kw(n, any_args, status=Status.IGNORED, doc=NOT_IMPLEMENTED)
        for n in [
            "vrf",
            "use_vmac_addr",
            "vmac_xmit_base",
            "use_ipvlan",
            "track_src_ip",
            "check_unicast_src",
            "unicast_fault_no_peer",
            "old_unicast_checksum",
            "v3_checksum_as_v2",
            "garp_extra_if",
            "debug",
            "notify_master_rx_lower_pri",
            "kernel_rx_buf_size",
            "linkbeat_use_polling",
            "timer_expired_backup",
            "owner_ignore_adverts",
            "no_virtual_ipaddress",
            "auth_hmac",
        ]
    ],
    Kw("native_ipv6", any_args, status=Status.IGNORED, doc="deprecated; IPv6 VIPs select IPv6"),
    Kw(
        "lvs_sync_daemon_interface",
        any_args,
        status=Status.IGNORED,
        doc="obsolete; use lvs_sync_daemon",
    ),
)

STATIC_TOP = [
    Kw("static_ipaddress", items=lines.vip),
    Kw("static_routes", items=lines.ip_route),
    Kw("static_rules", items=lines.rule),
]

# ---- LVS: checkers -------------------------------------------------------------------

_RETRY = Kw("retry", int_arg(0, I32))
_NB_GET_RETRY = Kw(
    "nb_get_retry",
    alias_of="retry",
    warn="'nb_get_retry' is the old name of 'retry'; read as retry",
)


def _timing() -> list[Kw]:
    return [
        Kw("alpha", bool_opt),
        Kw("connect_timeout", timer(0.001, 86400)),
        _RETRY,
        _NB_GET_RETRY,
        Kw("delay_before_retry", timer(0, 86400)),
        Kw("warmup", timer(0, 86400)),
        Kw("delay_loop", timer(0.001, 86400)),
        Kw("log_all_failures", bool_opt),
    ]


def _connection() -> list[Kw]:
    return [
        Kw("connect_ip", ip_arg),
        Kw("connect_port", int_arg(1, 65535)),
        Kw("bindto", ip_arg),
        Kw("bind_if", word),
        Kw("bind_port", int_arg(1, 65535)),
        Kw("fwmark", int_arg(1, 4294967295)),
    ]


URL = block(
    "url",
    Kw("path", text),
    Kw("digest", word),
    Kw("status_code", lines.status_codes),
    Kw("virtualhost", word),
    Kw("regex", text),
    Kw("regex_no_match", flag),
    Kw("regex_options", lines.args_tuple),
    Kw("regex_stack", any_args, status=Status.IGNORED, doc="PCRE JIT stack tuning is not needed"),
    Kw("regex_min_offset", int_arg(0, I32)),
    Kw("regex_max_offset", int_arg(0, I32)),
)


def _http(name: str, *extra: Kw) -> BlockSpec:
    return block(
        name,
        _connection(),
        _timing(),
        Kw("url", block=URL, repeat=True, field="urls"),
        Kw("virtualhost", word),
        Kw("http_protocol", choice("1.0", "1.0C", "1.1")),
        Kw("fast_recovery", bool_opt),
        *extra,
    )


TCP_CHECK = block("TCP_CHECK", _connection(), _timing())
PING_CHECK = block("PING_CHECK", _connection(), _timing())
HTTP_GET = _http("HTTP_GET")
SSL_GET = _http(
    "SSL_GET", Kw("enable_sni", bool_opt), Kw("sni_name", word), Kw("tls_compliant", bool_opt)
)
SMTP_CHECK = block(
    "SMTP_CHECK",
    _connection(),
    _timing(),
    Kw("helo_name", text),
    Kw(
        "host",
        block=block("host", _connection(), _timing()),
        repeat=True,
        field="hosts",
        warn="'host' blocks in SMTP_CHECK are deprecated; each is read as one more SMTP_CHECK "
        "besides the one to the real server itself (as keepalived does)",
    ),
)
DNS_CHECK = block(
    "DNS_CHECK",
    _connection(),
    _timing(),
    Kw("type", choice("A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA", upper=True)),
    Kw("name", word),
)
MISC_CHECK = block(
    "MISC_CHECK",
    _timing(),
    Kw("misc_path", command_text),
    Kw("misc_timeout", timer(0.001, 86400)),
    Kw("misc_dynamic", flag),
    Kw("user", lines.user_group),
)
UDP_CHECK = block(
    "UDP_CHECK",
    _connection(),
    _timing(),
    Kw("payload", lines.hex_payload),
    Kw("require_reply", lines.hex_pattern),
    Kw("min_reply_length", int_arg(0, 65535)),
    Kw("max_reply_length", int_arg(0, 65535)),
)
FILE_CHECK = block(
    "FILE_CHECK",
    Kw("track_file", word),
    Kw("file", word, field="track_file"),
    Kw("dynamic", flag),
    Kw("weight", lines.weight(-I32, I32)),
)
BFD_CHECK = block("BFD_CHECK", Kw("name", word), Kw("bfd_name", word, field="name"))

CHECKER_BLOCKS: dict[str, BlockSpec] = {
    "TCP_CHECK": TCP_CHECK,
    "HTTP_GET": HTTP_GET,
    "SSL_GET": SSL_GET,
    "MISC_CHECK": MISC_CHECK,
    "SMTP_CHECK": SMTP_CHECK,
    "DNS_CHECK": DNS_CHECK,
    "PING_CHECK": PING_CHECK,
    "UDP_CHECK": UDP_CHECK,
    "FILE_CHECK": FILE_CHECK,
    "BFD_CHECK": BFD_CHECK,
}


def _checkers() -> list[Kw]:
    kws = [
        Kw(name, lines.no_args, block=spec, repeat=True, field="checkers", block_optional=True)
        for name, spec in CHECKER_BLOCKS.items()
    ]
    kws.append(
        Kw(
            "ICMP_CHECK",
            alias_of="PING_CHECK",
            warn="'ICMP_CHECK' was removed from keepalived in 0.5.3 (2002) and is rejected there; "
            "read as its replacement 'PING_CHECK'",
        )
    )
    return kws


# ---- LVS: servers --------------------------------------------------------------------


def _inherited() -> list[Kw]:
    """Checker defaults a virtual_server or real_server hands down to its checkers."""
    return [
        Kw("connect_timeout", timer(0.001, 86400)),
        _RETRY,
        _NB_GET_RETRY,
        Kw("delay_before_retry", timer(0, 86400)),
        Kw("warmup", timer(0, 86400)),
        Kw("delay_loop", timer(0.001, 86400)),
        Kw("inhibit_on_failure", bool_opt),
        Kw("virtualhost", word),
        Kw("smtp_alert", bool_opt),
        Kw("snmp_name", any_args, status=Status.IGNORED, doc="SNMP is not implemented"),
    ]


REAL_SERVER = block(
    "real_server",
    Kw("weight", int_arg(0, 65535)),
    Kw("lvs_method", lines.lvs_method),
    Kw("notify_up", command),
    Kw("notify_down", command),
    Kw("uthreshold", int_arg(0, I32)),
    Kw("lthreshold", int_arg(0, I32)),
    Kw("alpha", bool_opt),
    _inherited(),
    _checkers(),
)

VIRTUAL_SERVER = block(
    "virtual_server",
    Kw("lvs_sched", choice(*SCHEDULERS)),
    Kw("lb_algo", alias_of="lvs_sched"),
    [Kw(f, lines.flag_name, field="sched_flags", repeat=True) for f in SCHED_FLAGS],
    Kw("ops", flag),
    Kw("lvs_method", lines.lvs_method),
    Kw("lb_kind", alias_of="lvs_method"),
    Kw("persistence_engine", word),
    Kw("persistence_timeout", lines.persistence_timeout),
    Kw("persistence_granularity", word),
    Kw("protocol", choice("TCP", "UDP", "SCTP", upper=True)),
    Kw("ha_suspend", flag),
    Kw("alpha", flag),
    Kw("omega", flag),
    Kw("quorum", int_arg(1, I32)),
    Kw("hysteresis", int_arg(0, I32)),
    Kw("quorum_up", command),
    Kw("quorum_down", command),
    Kw("ip_family", choice("inet", "inet6")),
    Kw("sorry_server", lines.sorry_server),
    Kw("sorry_server_inhibit", flag),
    Kw("sorry_server_lvs_method", lines.lvs_method),
    _inherited(),
    Kw("real_server", lines.real_server_head, block=REAL_SERVER, repeat=True, field="real_servers"),
)

SSL_BLOCK = block(
    "SSL",
    [
        Kw(n, word, status=Status.IGNORED, doc="SSL_GET uses the system trust store")
        for n in ("password", "ca", "certificate", "key")
    ],
)

TOP = block(
    "the top level",
    Kw("global_defs", block=GLOBAL_DEFS),
    STATIC_TOP,
    Kw("vrrp_script", lines.name_head, block=VRRP_SCRIPT, repeat=True),
    Kw("track_file", lines.name_head, block=TRACK_FILE_DEF, repeat=True),
    Kw("vrrp_track_file", alias_of="track_file"),
    Kw("vrrp_track_process", lines.name_head, block=TRACK_PROCESS_DEF, repeat=True),
    Kw("track_process", alias_of="vrrp_track_process"),
    Kw("vrrp_instance", lines.name_head, block=VRRP_INSTANCE, repeat=True),
    Kw("vrrp_sync_group", lines.name_head, block=SYNC_GROUP, repeat=True),
    Kw("virtual_server_group", lines.name_head, items=lines.vsg_entry, repeat=True),
    Kw("virtual_server", lines.vs_head, block=VIRTUAL_SERVER, repeat=True),
    Kw("SSL", block=SSL_BLOCK),
    [
        Kw(n, any_args, status=Status.IGNORED, doc=NOT_IMPLEMENTED)
        for n in [
            "bfd_instance",
            "linkbeat_interfaces",
            "interface_up_down_delays",
            "track_group",
            "garp_group",
            "net_namespace",
            "net_namespace_ipvs",
            "instance",
            "use_pid_dir",
        ]
    ],
)
