"""Reload diff: objects matched by identity key, locations ignored, real servers diffed."""

from __future__ import annotations

from kaconf import build

from hakeeper.conf.diff import diff_configs

BASE = """
vrrp_script chk {
    script /bin/true
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    priority 100
    virtual_ipaddress {
        10.0.0.100
    }
}
vrrp_instance VI_2 {
    interface eth0
    virtual_router_id 52
    virtual_ipaddress {
        10.0.0.101
    }
}
virtual_server 10.0.0.100 80 {
    lvs_sched rr
    real_server 10.0.0.1 80 {
        TCP_CHECK {
        }
    }
    real_server 10.0.0.2 80 {
        TCP_CHECK {
        }
    }
}
virtual_server 10.0.0.100 443 {
    lvs_sched rr
    real_server 10.0.0.1 443 {
        TCP_CHECK {
        }
    }
}
"""


def test_identical_configs_have_no_changes() -> None:
    old, _ = build(BASE)
    new, _ = build(BASE)
    d = diff_configs(old, new)
    assert not d.has_changes
    assert d.summary() == "no changes"
    assert [v.name for v in d.vrrp_instances.unchanged] == ["VI_1", "VI_2"]


def test_moving_blocks_is_not_a_change() -> None:
    old, _ = build(BASE)
    new, _ = build("\n\n# comment\n" + BASE)
    assert not diff_configs(old, new).has_changes


def test_four_way_diff_of_instances_and_servers() -> None:
    old, _ = build(BASE)
    changed = (
        BASE.replace("priority 100", "priority 110")
        .replace(
            "vrrp_instance VI_2 {\n    interface eth0\n    virtual_router_id 52",
            "vrrp_instance VI_3 {\n    interface eth0\n    virtual_router_id 53",
        )
        .replace("real_server 10.0.0.2 80", "real_server 10.0.0.3 80")
    )
    new, _ = build(changed)
    d = diff_configs(old, new)
    assert [v.name for v in d.vrrp_instances.removed] == ["VI_2"]
    assert [v.name for v in d.vrrp_instances.added] == ["VI_3"]
    assert [(a.priority, b.priority) for a, b in d.vrrp_instances.changed] == [(100, 110)]
    assert [vs.port for vs in d.virtual_servers.unchanged] == [443]
    (change,) = d.virtual_server_changes
    assert change.new.port == 80
    assert not change.service_changed
    rs = change.real_servers
    assert [str(r.ip) for r in rs.removed] == ["10.0.0.2"]
    assert [str(r.ip) for r in rs.added] == ["10.0.0.3"]
    assert [str(r.ip) for r in rs.unchanged] == ["10.0.0.1"]
    assert "vrrp_instances: +1 -1 ~1 =0" in d.summary()


def test_virtual_server_identity_includes_protocol() -> None:
    old, _ = build(BASE)
    new, _ = build(
        BASE.replace(
            "virtual_server 10.0.0.100 443 {", "virtual_server 10.0.0.100 443 {\n protocol UDP"
        )
    )
    d = diff_configs(old, new)
    assert [vs.protocol for vs in d.virtual_servers.removed] == ["TCP"]
    assert [vs.protocol for vs in d.virtual_servers.added] == ["UDP"]


def test_script_and_global_changes() -> None:
    old, _ = build(BASE)
    new, _ = build("global_defs {\n router_id x\n}\n" + BASE.replace("/bin/true", "/bin/false"))
    d = diff_configs(old, new)
    assert d.global_defs_changed
    assert [(a.script, b.script) for a, b in d.vrrp_scripts.changed] == [
        ("/bin/true", "/bin/false")
    ]
