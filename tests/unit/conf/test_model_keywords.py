"""Keyword schema: defaults, inheritance, aliases and errors operators can act on."""

from __future__ import annotations

import ipaddress

from kaconf import build, errors, warnings

from hakeeper.conf.model import DnsCheck, HttpCheck, MiscCheck, SmtpCheck, TcpCheck


def test_unknown_keyword_suggests_keyword_of_that_block() -> None:
    _, diags = build(
        """
        vrrp_instance VI_1 {
            interface eth0
            virtual_router_id 5
            priorty 120
            virtual_ipaddress {
                10.0.0.1
            }
        }
        """
    )
    assert errors(diags) == [
        "5: unknown keyword 'priorty' in vrrp_instance (did you mean 'priority'?)"
    ]


def test_did_you_mean_only_offers_keywords_valid_in_the_block() -> None:
    # 'delay_loop' is valid in virtual_server but not in vrrp_instance
    _, diags = build("vrrp_instance V {\n delay_lop 5\n}\n")
    assert any("unknown keyword 'delay_lop' in vrrp_instance" in m for m in errors(diags))
    assert not any("did you mean 'delay_loop'" in m for m in errors(diags))


def test_out_of_range_and_wrong_type_and_arity_all_reported_in_one_pass() -> None:
    config, diags = build(
        """
        vrrp_instance VI_1 {
            interface eth0
            virtual_router_id 300
            priority high
            advert_int
            state MASTRE
            virtual_ipaddress {
                10.0.0.1/24 dev
            }
        }
        """
    )
    assert errors(diags) == [
        "2: vrrp_instance VI_1 has no virtual_router_id (1..255)",
        "4: 'virtual_router_id' must be in 1..255, got 300",
        "5: 'priority' must be an integer in 1..255, got 'high'",
        "6: 'advert_int' expects one duration in seconds, got 0 argument(s)",
        "7: 'state' must be one of MASTER|BACKUP, got 'MASTRE' (did you mean 'MASTER'?)",
        "9: 'dev' needs a value",
    ]
    # the model is still built, with defaults where values were bad
    (vi,) = config.vrrp_instances
    assert (vi.name, vi.interface, vi.priority, vi.state) == ("VI_1", "eth0", 100, "BACKUP")


def test_errors_carry_file_line_and_column() -> None:
    _, diags = build("global_defs {\n    router_id a b\n}\n")
    (err,) = diags.errors
    assert err.format() == "t.conf:2:17: error: 'router_id' expects one value, got 2 argument(s)"


def test_block_keyword_without_block_and_value_with_block() -> None:
    _, diags = build("vrrp_instance V\nglobal_defs {\n router_id { x }\n}\n")
    msgs = errors(diags)
    assert "1: 'vrrp_instance' needs a { ... } block" in msgs
    assert any("'router_id' does not take a { ... } block" in m for m in msgs)


def test_vrrp_script_defaults() -> None:
    config, diags = build('vrrp_script chk {\n script "/bin/true arg"\n}\n')
    assert not diags.errors
    (s,) = config.vrrp_scripts
    assert (s.script, s.interval, s.timeout, s.weight, s.rise, s.fall, s.reverse) == (
        "/bin/true arg",
        1.0,
        1.0,
        0,
        1,
        1,
        False,
    )


def test_vrrp_script_weight_range_and_reverse() -> None:
    config, diags = build(
        "vrrp_script a {\n script x\n weight -10 reverse\n interval 2\n}\n"
        "vrrp_script b {\n script x\n weight 300\n}\n"
    )
    assert errors(diags) == ["8: 'weight' must be in -253..253, got 300"]
    a = config.script("a")
    assert a is not None
    assert (a.weight, a.reverse, a.interval, a.timeout) == (-10, True, 2.0, 2.0)


LVS = """
virtual_server 10.0.0.10 80 {
    delay_loop 10
    lb_algo wrr
    lb_kind DR
    connect_timeout 7
    real_server 10.0.0.1 80 {
        weight 3
        retry 4
        TCP_CHECK {
            connect_port 8080
        }
        HTTP_GET {
            url {
                path /health
                status_code 200 300-302
            }
        }
        MISC_CHECK {
            misc_path "/bin/check a"
        }
        DNS_CHECK {
            name example.org
        }
        SMTP_CHECK {
            nb_get_retry 2
        }
    }
}
"""


def test_checker_defaults_and_vs_rs_checker_inheritance() -> None:
    config, diags = build(LVS)
    assert not diags.errors, errors(diags)
    (vs,) = config.virtual_servers
    assert (vs.lvs_sched, vs.lvs_method.method, vs.delay_loop) == ("wrr", "DR", 10)
    (rs,) = vs.real_servers
    assert (rs.ip, rs.port, rs.weight) == (ipaddress.ip_address("10.0.0.1"), 80, 3)
    tcp, http, misc, dns, smtp = rs.checkers
    assert isinstance(tcp, TcpCheck)
    assert isinstance(http, HttpCheck)
    assert isinstance(misc, MiscCheck)
    assert isinstance(dns, DnsCheck)
    assert isinstance(smtp, SmtpCheck)
    # connect_timeout from the VS, retry from the RS, delay_loop from the VS
    assert (tcp.common.connect_timeout, tcp.common.retry, tcp.common.delay_loop) == (7, 4, 10)
    assert tcp.common.connect_port == 8080
    assert tcp.common.delay_before_retry == 1.0
    assert http.common.delay_before_retry == 3.0  # HTTP/SSL default
    assert http.urls[0].path == "/health"
    assert http.urls[0].status_codes == ((200, 200), (300, 302))
    assert misc.misc_path == "/bin/check a"
    assert misc.common.retry == 4  # RS setting beats MISC's default of 0
    assert (dns.name, dns.type, dns.common.delay_before_retry) == ("example.org", "SOA", 10)
    assert smtp.common.retry == 2
    assert any("'nb_get_retry' is the old name of 'retry'" in m for m in warnings(diags))


def test_per_type_retry_defaults_without_inheritance() -> None:
    config, _ = build(
        "virtual_server 10.0.0.10 53 {\n lvs_sched rr\n real_server 10.0.0.1 53 {\n"
        "  DNS_CHECK {\n  }\n  MISC_CHECK {\n   misc_path /x\n  }\n  TCP_CHECK {\n  }\n }\n}\n"
    )
    dns, misc, tcp = config.virtual_servers[0].real_servers[0].checkers
    assert (dns.common.retry, misc.common.retry, tcp.common.retry) == (3, 0, 1)  # type: ignore[union-attr]
    assert tcp.common.connect_timeout == 5.0  # type: ignore[union-attr]
    assert tcp.common.delay_loop == 60.0  # type: ignore[union-attr]


def test_missing_lvs_sched_defaults_to_wlc_with_warning() -> None:
    config, diags = build(
        "virtual_server 10.0.0.10 80 {\n real_server 10.0.0.1 80 {\n  TCP_CHECK\n }\n}\n"
    )
    assert config.virtual_servers[0].lvs_sched == "wlc"
    assert "1: virtual_server has no lvs_sched (lb_algo); keepalived defaults to wlc" in warnings(
        diags
    )


def test_virtual_server_fwmark_group_and_group_definition() -> None:
    config, diags = build(
        """
        virtual_server_group G {
            192.168.1.1-3 80
            10.0.0.0/30 443
            fwmark 7 inet
        }
        virtual_server group G {
            lvs_sched rr
            persistence_timeout
            protocol udp
        }
        virtual_server fwmark 5 {
            lvs_sched sh
            sh-port
        }
        """
    )
    assert not diags.errors, errors(diags)
    (group,) = config.virtual_server_groups
    first, cidr, mark = group.entries
    assert (str(first.first), str(first.last), first.port) == ("192.168.1.1", "192.168.1.3", 80)
    assert (str(cidr.first), str(cidr.last), cidr.port) == ("10.0.0.0", "10.0.0.3", 443)
    assert (mark.fwmark, mark.family) == (7, "inet")
    vs_group, vs_mark = config.virtual_servers
    assert (vs_group.group, vs_group.persistence_timeout, vs_group.protocol) == ("G", 360, "UDP")
    assert (vs_mark.fwmark, vs_mark.sched_flags) == (5, ("sh-port",))


def test_ignored_keywords_warn_and_rejected_keywords_error() -> None:
    _, diags = build("global_defs {\n enable_snmp_vrrp\n lvs_id LVS1\n}\n")
    assert warnings(diags) == [
        "2: 'enable_snmp_vrrp' in global_defs is accepted but ignored by hakeeper "
        "(not implemented by hakeeper)"
    ]
    assert errors(diags) == [
        "3: 'lvs_id' in global_defs is not supported by hakeeper "
        "(removed from keepalived; use router_id)"
    ]


def test_vip_options_and_families() -> None:
    config, diags = build(
        """
        vrrp_instance V6 {
            interface eth0
            virtual_router_id 9
            virtual_ipaddress {
                fe80::1/64 dev eth0 scope link
                2001:db8::1/64 label eth0:1 no_track
            }
        }
        """
    )
    (vi,) = config.vrrp_instances
    assert (vi.family, vi.version) == (6, 3)
    a, b = vi.virtual_ipaddresses
    assert (str(a.address), a.dev, a.scope) == ("fe80::1/64", "eth0", "link")
    assert (b.label, b.no_track) == ("eth0:1", True)
    assert any("keepalived always runs VRRPv3 for IPv6" in m for m in warnings(diags))
