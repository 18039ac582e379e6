"""The traps keepalived accepts silently: reproduced in the model and reported as warnings."""

from __future__ import annotations

from kaconf import build, errors, warnings


def _instance(body: str, name: str = "VI_1", vrid: int = 51, iface: str = "eth0") -> str:
    return (
        f"vrrp_instance {name} {{\n interface {iface}\n virtual_router_id {vrid}\n{body}"
        " virtual_ipaddress {\n  192.168.1.110\n }\n}\n"
    )


def test_nopreempt_with_state_master_is_cleared_and_said() -> None:
    config, diags = build(_instance(" state MASTER\n nopreempt\n priority 100\n"))
    assert config.vrrp_instances[0].nopreempt is False
    assert any(
        "nopreempt needs 'state BACKUP'" in m and "WILL preempt" in m for m in warnings(diags)
    )


def test_nopreempt_at_priority_255_is_cleared() -> None:
    config, diags = build(_instance(" priority 255\n nopreempt\n"))
    assert config.vrrp_instances[0].nopreempt is False
    assert config.vrrp_instances[0].state == "MASTER"  # no state + 255 = owner starts MASTER
    assert any("nopreempt is ignored at priority 255" in m for m in warnings(diags))


def test_nopreempt_with_state_backup_is_kept_quietly() -> None:
    config, diags = build(_instance(" state BACKUP\n nopreempt\n priority 90\n"))
    assert config.vrrp_instances[0].nopreempt is True
    assert not any("nopreempt" in m for m in warnings(diags))


def test_weighted_track_script_in_sync_group_is_dropped() -> None:
    text = (
        "vrrp_script chk {\n script /bin/true\n weight 2\n}\n"
        "vrrp_script flat {\n script /bin/true\n}\n"
        "vrrp_sync_group VG1 {\n group {\n  VI_1\n  VI_2\n }\n}\n"
        + _instance(" track_script {\n  chk\n  flat\n }\n")
        + _instance(" track_script {\n  flat weight 5\n }\n", name="VI_2", vrid=52)
    )
    config, diags = build(text)
    vi1, vi2 = config.vrrp_instances
    assert [t.name for t in vi1.track_scripts] == ["flat"]
    assert vi2.track_scripts == ()
    dropped = [m for m in warnings(diags) if "DROPS track_script" in m]
    assert len(dropped) == 2
    assert "'chk' because it has weight 2" in dropped[0]
    assert (vi1.sync_group, vi2.sync_group) == ("VG1", "VG1")


def test_sync_group_tracking_weight_keeps_weighted_scripts() -> None:
    text = (
        "vrrp_script chk {\n script /bin/true\n weight 2\n}\n"
        "vrrp_sync_group VG1 {\n group {\n  VI_1 VI_2\n }\n sync_group_tracking_weight\n}\n"
        + _instance(" track_script {\n  chk\n }\n")
        + _instance("", name="VI_2", vrid=52)
    )
    config, diags = build(text)
    assert [t.name for t in config.vrrp_instances[0].track_scripts] == ["chk"]
    assert not any("DROPS" in m for m in warnings(diags))


def test_long_auth_pass_is_truncated_to_8() -> None:
    config, diags = build(
        _instance(" authentication {\n  auth_type PASS\n  auth_pass 0123456789ab\n }\n")
    )
    assert config.vrrp_instances[0].auth_pass == "01234567"
    assert any("longer than 8 characters" in m and "'01234567'" in m for m in warnings(diags))


def test_fractional_advert_int_rounded_under_v2_kept_under_v3() -> None:
    config, diags = build(
        _instance(" advert_int 1.6\n")
        + _instance(" advert_int 0.25\n version 3\n", name="VI_2", vrid=52)
    )
    v2, v3 = config.vrrp_instances
    assert (v2.advert_int, v3.advert_int) == (2.0, 0.25)
    assert any("advert_int 1.6" in m and "rounds it to 2" in m for m in warnings(diags))


def test_v3_advert_int_above_maximum_is_an_error() -> None:
    _, diags = build(_instance(" advert_int 50\n version 3\n"))
    assert any("above the VRRPv3 maximum of 40.95" in m for m in errors(diags))


def test_auth_ignored_under_v3() -> None:
    config, diags = build(
        _instance(" version 3\n authentication {\n  auth_type PASS\n  auth_pass x\n }\n")
    )
    assert config.vrrp_instances[0].auth_type is None
    assert any("authentication is ignored under VRRPv3" in m for m in warnings(diags))


def test_duplicate_vrid_on_one_interface_same_family() -> None:
    _, diags = build(_instance("") + _instance("", name="VI_2"))
    assert any(
        "VI_2 uses virtual_router_id 51 on eth0 (IPv4) like vrrp_instance VI_1" in m
        for m in errors(diags)
    )


def test_same_vrid_on_other_interface_is_fine() -> None:
    _, diags = build(_instance("") + _instance("", name="VI_2", iface="eth1"))
    assert not diags.errors


def test_vip_outside_static_subnet_of_interface() -> None:
    text = "static_ipaddress {\n 10.1.0.5/24 dev eth0\n}\n" + _instance("")
    _, diags = build(text)
    assert any(
        "VIP 192.168.1.110 is outside the known subnet(s) 10.1.0.0/24 of eth0" in m
        for m in warnings(diags)
    )


def test_vip_outside_advert_source_subnet() -> None:
    body = " mcast_src_ip 10.9.9.9\n virtual_ipaddress {\n  192.168.1.110/24\n }\n"
    text = f"vrrp_instance V {{\n interface eth0\n virtual_router_id 3\n{body}}}\n"
    _, diags = build(text)
    assert any("outside the subnet of the advert source 10.9.9.9" in m for m in warnings(diags))


def test_real_server_without_checker() -> None:
    _, diags = build(
        "virtual_server 10.0.0.1 80 {\n lvs_sched rr\n"
        " real_server 10.0.0.2 80 {\n  weight 1\n }\n}\n"
    )
    assert any("real_server 10.0.0.2" in m and "no health checker" in m for m in warnings(diags))


def test_unicast_peer_with_multicast_settings_and_strict() -> None:
    body = " unicast_peer {\n  10.0.0.2\n }\n mcast_dst_ip 224.0.0.99\n strict_mode\n"
    _, diags = build(_instance(body))
    assert any("mcast_dst_ip is ignored because unicast_peer is set" in m for m in warnings(diags))
    assert any("forbids unicast_peer" in m for m in errors(diags))


def test_unknown_track_script_and_sync_member() -> None:
    text = "vrrp_sync_group G {\n group {\n  VI_1\n  VI_9\n }\n}\n" + _instance(
        " track_script {\n  nosuch\n }\n"
    )
    config, diags = build(text)
    msgs = warnings(diags)
    assert any("tracks unknown vrrp_script 'nosuch'" in m for m in msgs)
    assert config.vrrp_instances[0].track_scripts == ()
    assert any("member 'VI_9' is not a vrrp_instance" in m for m in msgs)


def test_duplicate_names_keep_the_first() -> None:
    config, diags = build(_instance(" priority 10\n") + _instance(" priority 20\n", vrid=60))
    assert [v.priority for v in config.vrrp_instances] == [10]
    assert any("vrrp_instance 'VI_1' defined twice" in m for m in errors(diags))


def test_rule_without_preference_and_fwmark_protocol() -> None:
    config, diags = build(
        "static_rules {\n from 10.0.0.0/24 table 1\n from 10.1.0.0/24 table 2 preference 100\n}\n"
        "virtual_server fwmark 3 {\n lvs_sched rr\n protocol UDP\n}\n"
    )
    msgs = warnings(diags)
    assert sum("rule has no preference" in m for m in msgs) == 1
    assert any(m.startswith("7: protocol is ignored for a fwmark virtual server") for m in msgs)
    assert config.virtual_servers[0].key == ("fwmark", "3", "inet")


def test_tracker_definitions_without_target_are_removed() -> None:
    config, diags = build(
        "vrrp_script s {\n interval 2\n}\ntrack_file f {\n weight 1\n}\n"
        "vrrp_track_process p {\n quorum 1\n}\n"
    )
    assert warnings(diags) == [
        "3: vrrp_script s has no 'script COMMAND'; removed",  # at its '}', like keepalived
        "4: track_file f has no 'file PATH'; removed",
        "7: vrrp_track_process p has no 'process NAME'; removed",
    ]
    assert (config.vrrp_scripts, config.track_files, config.track_processes) == ((), (), ())


def test_notification_email_accepts_several_per_line() -> None:
    config, diags = build("global_defs {\n notification_email {\n  a@x b@x\n  c@x\n }\n}\n")
    assert not diags.errors
    assert config.global_defs.notification_email == ("a@x", "b@x", "c@x")


def test_sync_group_level_track_refs_are_checked() -> None:
    text = (
        "vrrp_script ok {\n script /bin/true\n}\n"
        "vrrp_sync_group G {\n group {\n  VI_1\n }\n track_script {\n  ok weight 5\n  gone\n }\n}\n"
        + _instance("")
    )
    config, diags = build(text)
    (group,) = config.sync_groups
    assert [(t.name, t.weight) for t in group.track_scripts] == [
        ("ok", 5)
    ]  # group level keeps weights
    assert any("vrrp_sync_group G tracks unknown vrrp_script 'gone'" in m for m in warnings(diags))
