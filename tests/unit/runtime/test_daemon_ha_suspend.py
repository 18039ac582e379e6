"""ha_suspend wired to VRRP: checkers of a virtual server on a VIP run only on the MASTER.

The decision is the pure `services.ha_suspensions`; the wiring is tested with whole daemons
over the fake wire (no root) whose L4 service is a fake recording `set_suspended` calls.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from test_runtime_daemon import A_IP, B_IP, Harness, conf, inst, run_scenario, state, until

from hakeeper.conf.keepalived import load_keepalived
from hakeeper.conf.model import IPAddress, KeepalivedConfig
from hakeeper.runtime import services
from hakeeper.runtime.daemon import Daemon

VIP = ipaddress.ip_address("198.18.0.100")
KEY = ("addr", "198.18.0.100", "80", "TCP")

VS = """
virtual_server 198.18.0.100 80 {
    delay_loop 5
    lb_algo rr
    lb_kind NAT
    protocol TCP
    ha_suspend
    real_server 127.0.0.1 9 {
        TCP_CHECK {
            connect_timeout 1
        }
    }
}
virtual_server 198.18.0.200 80 {
    protocol TCP
    real_server 127.0.0.1 9 {
    }
}
"""


def load(tmp_path: Path, text: str) -> KeepalivedConfig:
    p = tmp_path / "k.conf"
    p.write_text(text)
    cfg, diags = load_keepalived(str(p))
    assert cfg is not None and not diags.has_errors, diags.sorted()
    return cfg


def never_local(_addr: IPAddress) -> bool:
    return False


def test_suspended_unless_an_owning_instance_is_master(tmp_path: Path) -> None:
    cfg = load(tmp_path, conf(inst(prio=100), extra=VS))
    assert services.ha_suspensions(cfg, {VIP: False}, never_local) == {KEY: True}
    assert services.ha_suspensions(cfg, {VIP: True}, never_local) == {KEY: False}
    # the VS without ha_suspend is never listed


def test_address_no_instance_owns_follows_local_presence(tmp_path: Path) -> None:
    cfg = load(tmp_path, conf(extra=VS))
    assert services.ha_suspensions(cfg, {}, never_local) == {KEY: True}
    assert services.ha_suspensions(cfg, {}, lambda a: a == VIP) == {KEY: False}


def test_group_virtual_server_uses_its_ranges(tmp_path: Path) -> None:
    text = conf(
        extra="""
virtual_server_group G {
    198.18.0.90-110 80
}
virtual_server group G {
    protocol TCP
    ha_suspend
    real_server 127.0.0.1 9 {
    }
}
"""
    )
    cfg = load(tmp_path, text)
    key = ("group", "G", "TCP")
    assert services.ha_suspensions(cfg, {VIP: True}, never_local) == {key: False}
    assert services.ha_suspensions(cfg, {VIP: False}, never_local) == {key: True}
    other = ipaddress.ip_address("198.18.1.1")
    assert services.ha_suspensions(cfg, {other: True}, never_local) == {key: True}


def test_is_local_address() -> None:
    assert services.is_local_address(ipaddress.ip_address("127.0.0.1"))
    assert not services.is_local_address(ipaddress.ip_address("198.18.255.254"))


class FakeEngine:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], bool]] = []

    def set_suspended(self, key: tuple[str, ...], suspended: bool) -> None:
        self.calls.append((key, suspended))

    def last(self) -> bool | None:
        return self.calls[-1][1] if self.calls else None


class FakeLvs:
    def __init__(self) -> None:
        self.engine = FakeEngine()

    def status(self) -> dict[str, Any]:
        return {}

    async def stop(self) -> None:
        return None


@pytest.fixture
def fake_lvs(monkeypatch: pytest.MonkeyPatch) -> None:
    async def sync(self: Daemon, cfg: KeepalivedConfig) -> None:
        if self.lvs is None:
            self.lvs = FakeLvs()

    monkeypatch.setattr(Daemon, "_sync_lvs", sync)


def engine_of(d: Daemon) -> FakeEngine:
    assert isinstance(d.lvs, FakeLvs)
    return d.lvs.engine


@pytest.mark.usefixtures("fake_lvs")
def test_checkers_follow_vrrp_state(tmp_path: Path) -> None:
    """B (backup) keeps its checkers suspended; when A stops, B becomes MASTER and resumes."""

    async def body(h: Harness) -> None:
        a = h.start("a", A_IP, conf(inst(prio=150), extra=VS))
        await until(lambda: state(a) == "MASTER", what="A master")
        await until(lambda: a.lvs is not None and engine_of(a).last() is False, what="A resumed")
        b = h.start("b", B_IP, conf(inst(prio=100), extra=VS))
        await until(lambda: state(b) == "BACKUP", what="B backup")
        await until(lambda: b.lvs is not None and engine_of(b).last() is True, what="B suspended")
        assert all(key == KEY for key, _ in engine_of(b).calls)
        assert b.status()["ha_suspend"] == {"198.18.0.100 80 TCP": True}
        a.request("term")
        await until(lambda: state(b) == "MASTER", what="B takes over")
        await until(lambda: engine_of(b).last() is False, what="B resumed")

    run_scenario(tmp_path, body)


@pytest.mark.usefixtures("fake_lvs")
def test_reload_reapplies_suspension(tmp_path: Path) -> None:
    """A reload that moves the VS off the VIP lifts the suspension (nothing owns it)."""

    async def body(h: Harness) -> None:
        a = h.start("a", A_IP, conf(inst(prio=150), extra=VS))
        b = h.start("b", B_IP, conf(inst(prio=100), extra=VS))
        await until(lambda: state(a) == "MASTER" and state(b) == "BACKUP", what="election")
        await until(lambda: b.lvs is not None and engine_of(b).last() is True, what="B suspended")
        h.rewrite("b", conf(inst(prio=100), extra=VS.replace("ha_suspend", "")))
        b.request("hup")
        await until(lambda: b.reloads.ok == 1, what="reload")
        assert b.suspended == {}
        assert engine_of(b).last() is False

    run_scenario(tmp_path, body)
