"""The seed tutorials' and keepalived's sample configs build a model with keepalived's meaning."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from hakeeper.conf.keepalived import load_keepalived
from hakeeper.conf.model import PingCheck, TcpCheck

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SEEDS = sorted((FIXTURES / "seeds").glob("*.keepalived.conf"))
SAMPLES = sorted((FIXTURES / "keepalived-samples").glob("keepalived.conf.*"))
# keepalived itself reports errors in these two (old sync-group form, malformed prefixes)
UPSTREAM_INVALID = {"keepalived.conf.vrrp.lvs_syncd", "keepalived.conf.vrrp.rules"}


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.name)
def test_seed_configs_have_no_errors(path: Path) -> None:
    config, diags = load_keepalived(str(path), config_id="test")
    assert config is not None
    assert [d.format() for d in diags.errors] == []


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_samples_match_keepalived_verdict(path: Path) -> None:
    config, diags = load_keepalived(str(path), config_id="test")
    assert config is not None
    assert diags.has_errors == (path.name in UPSTREAM_INVALID), [d.format() for d in diags]


def test_master_seed_model() -> None:
    config, _ = load_keepalived(str(FIXTURES / "seeds" / "000_3_master.keepalived.conf"))
    assert config is not None
    assert config.global_defs.router_id == "LVS_DEVEL"
    (vi,) = config.vrrp_instances
    assert (vi.name, vi.state, vi.interface, vi.virtual_router_id) == ("VI_1", "MASTER", "eth0", 51)
    assert vi.mcast_src_ip == ipaddress.ip_address("192.168.1.157")
    assert (vi.priority, vi.advert_int, vi.auth_type, vi.auth_pass) == (100, 1.0, "PASS", "1111")
    assert [str(a.address) for a in vi.virtual_ipaddresses] == ["192.168.1.110/32"]
    assert [t.name for t in vi.track_scripts] == ["check_run"]
    assert vi.sync_group == "VG1"
    (script,) = config.vrrp_scripts
    assert script.script == "/root/bin/nginx_check.sh"  # its line is indented with U+00A0
    assert (script.interval, script.timeout, script.weight, script.rise, script.fall) == (
        5,
        5,
        0,
        1,
        1,
    )


def test_lvs_dr_seed_reads_lb_aliases_and_checker_fields() -> None:
    config, _ = load_keepalived(str(FIXTURES / "seeds" / "002_1_lvs01.keepalived.conf"))
    assert config is not None
    (vs,) = config.virtual_servers
    assert (vs.lvs_sched, vs.lvs_method.method, vs.persistence_timeout, vs.delay_loop) == (
        "wrr",
        "DR",
        50,
        6,
    )
    assert len(vs.real_servers) == 2
    check = vs.real_servers[0].checkers[0]
    assert isinstance(check, TcpCheck)
    c = check.common
    assert (c.connect_timeout, c.retry, c.delay_before_retry, c.connect_port) == (10, 3, 3, 81)
    assert c.delay_loop == 6  # inherited from the virtual_server


def test_icmp_check_is_ping_check_with_warning() -> None:
    config, diags = load_keepalived(str(FIXTURES / "seeds" / "003_1_director.keepalived.conf"))
    assert config is not None
    (vs,) = config.virtual_servers
    assert len(vs.real_servers) == 3  # no nesting shift: every real server survives
    assert all(isinstance(rs.checkers[0], PingCheck) for rs in vs.real_servers)
    assert sum("ICMP_CHECK" in d.message and "PING_CHECK" in d.message for d in diags.warnings) == 3
