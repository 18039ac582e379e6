"""Gaps the differential test against keepalived 2.2.7 found, closed: each as keepalived does."""

from __future__ import annotations

from kaconf import build, warnings

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.model import SmtpCheck


def _instance(body: str) -> str:
    return (
        "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 51\n priority 100\n"
        f"{body} virtual_ipaddress {{\n  192.168.1.110\n }}\n}}\n"
    )


def test_vrrp_script_without_script_is_reported_at_its_closing_brace() -> None:
    config, diags = build(
        "vrrp_script chk {\n interval 1\n}\n" + _instance(" track_script {\n  chk\n }\n")
    )
    assert config.vrrp_scripts == ()
    assert config.vrrp_instances[0].track_scripts == ()
    assert warnings(diags) == [
        "3: vrrp_script chk has no 'script COMMAND'; removed",
        "9: vrrp_instance VI_1 tracks unknown vrrp_script 'chk'; keepalived ignores it",
    ]


def test_deprecated_route_words_are_warned_where_they_stand() -> None:
    config, diags = build(
        _instance(
            " virtual_routes {\n  10.1.0.0/24 via 10.0.0.1 or 10.0.0.2\n"
            "  0.0.0.0/0 gw 10.0.0.1 table 100\n  10.2.0.0/24 via 10.0.0.1 dev eth0\n }\n"
        )
    )
    assert len(config.vrrp_instances[0].virtual_routes) == 3
    routes = [m for m in warnings(diags) if "route" in m]
    assert routes == [
        "6: 'or' in a route is deprecated; use 'nexthop'",
        "7: 'gw' in a route is deprecated; use 'via'",
    ]
    _, diags = build("static_routes {\n 10.3.0.0/24 gw 10.0.0.1 dev eth0\n}\n")
    assert warnings(diags) == ["2: 'gw' in a route is deprecated; use 'via'"]


def test_state_master_with_ah_is_reported() -> None:
    auth = " authentication {\n  auth_type AH\n  auth_pass secret\n }\n"
    config, diags = build(_instance(" state MASTER\n" + auth))
    vi = config.vrrp_instances[0]
    assert (vi.state, vi.auth_type) == ("MASTER", "AH")  # keepalived would start BACKUP
    assert [m for m in warnings(diags) if "AH" in m] == [
        "5: vrrp_instance VI_1: state MASTER is incompatible with AH authentication: "
        "keepalived starts this instance as BACKUP (hakeeper keeps state MASTER)"
    ]
    config, diags = build(_instance(" state BACKUP\n" + auth))
    assert config.vrrp_instances[0].state == "BACKUP"
    assert not any("AH" in m for m in warnings(diags))


def test_smtp_check_with_hosts_checks_the_real_server_too() -> None:
    config, diags = build(
        "virtual_server 10.0.0.1 25 {\n lb_algo rr\n real_server 10.0.1.1 25 {\n"
        "  SMTP_CHECK {\n   connect_timeout 7\n   helo_name me\n"
        "   host {\n    connect_ip 10.0.2.1\n   }\n   host {\n    connect_ip 10.0.2.2\n"
        "    connect_port 2525\n   }\n  }\n }\n}\n"
    )
    checkers = config.virtual_servers[0].real_servers[0].checkers
    assert all(isinstance(c, SmtpCheck) for c in checkers)
    # first the block itself (to the real server's own address and port), then each host
    assert [str(c.common.connect_ip) for c in checkers] == ["None", "10.0.2.1", "10.0.2.2"]
    assert [c.common.connect_port for c in checkers] == [None, None, 2525]
    # hosts inherit the block's timing (keepalived 2.2.7 would leave them at 0)
    assert {c.common.connect_timeout for c in checkers} == {7.0}
    assert sum("'host' blocks in SMTP_CHECK are deprecated" in m for m in warnings(diags)) == 2


def test_nginx_reads_no_break_spaces_as_blanks_with_one_warning() -> None:
    diags = Diagnostics()
    nodes = parse_nginx_text(
        "upstream\xa0app {\n\xa0\xa0server 10.0.0.1:80;\n\xa0 server 10.0.0.2:80;\n}\n",
        "n.conf",
        diags,
    )
    assert [n.name for n in nodes] == ["upstream"]
    assert nodes[0].arg_texts() == ("app",)
    children = nodes[0].children or ()
    assert [c.arg_texts() for c in children] == [("10.0.0.1:80",), ("10.0.0.2:80",)]
    assert [(d.severity, str(d.loc)) for d in diags] == [("warning", "n.conf:1:9")]
    assert "on 3 line(s)" in diags.items[0].message


def test_script_lines_get_keepalived_escapes_and_argv() -> None:
    import shlex

    from hakeeper.conf.lexwords import keepalived_split, script_command

    # keepalived: C escapes in the config line, then its own quote/escape argv split
    assert keepalived_split('a "b c" d\\te\'f g\' ""') == ["a", "b c", "d\tef g", ""]
    assert keepalived_split('x "open') is None
    assert script_command("/bin/check arg") == "/bin/check arg"
    assert script_command('/bin/check "a b"') == '/bin/check "a b"'
    assert shlex.split(script_command("/bin/echo a\\tb") or "") == ["/bin/echo", "a", "b"]
    # an escape surviving the first pass is applied by the second, inside the word
    assert shlex.split(script_command("/bin/x a\\\\tb") or "") == ["/bin/x", "a\tb"]
    assert script_command("/bin/x \\x41\\101") == "/bin/x AA"
    config, diags = build(
        'vrrp_script chk {\n script "/bin/check \\x41 \\"a b\\""\n}\n'
        + _instance(' notify_master "/bin/n\\tMASTER" root\n track_script {\n  chk\n }\n')
        + "virtual_server 10.0.0.1 80 {\n lb_algo rr\n real_server 10.0.1.1 80 {\n"
        '  MISC_CHECK {\n   misc_path "/bin/m \\x42"\n  }\n }\n}\n'
    )
    assert not diags.errors
    assert shlex.split(config.vrrp_scripts[0].script) == ["/bin/check", "A", "a b"]
    notify = config.vrrp_instances[0].notify_master
    assert notify is not None and notify.user == "root"
    assert shlex.split(notify.command) == ["/bin/n", "MASTER"]
    misc = config.virtual_servers[0].real_servers[0].checkers[0]
    assert getattr(misc, "misc_path", None) == "/bin/m B"
