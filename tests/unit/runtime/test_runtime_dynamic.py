"""Interfaces that are missing at start or recreated (keepalived `dynamic_interfaces`).

Fake wire daemons; link events are fed to the daemon the way the tracker's netlink
watcher delivers them. Every wait is a condition with a deadline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_runtime_daemon import A_IP, Harness, conf, inst, run_scenario, state, until

from hakeeper.io.linkwatch import LinkEvent
from hakeeper.io.vrrp_socket import VrrpSocketConfig


def link(name: str, index: int, *, deleted: bool = False) -> LinkEvent:
    return LinkEvent(index, name, not deleted, not deleted, not deleted, "up", deleted=deleted)


def test_instance_starts_when_its_interface_appears(tmp_path: Path) -> None:
    missing = {"eth9"}

    async def body(h: Harness) -> None:
        make = h.wire.factory(A_IP)

        def factory(config: VrrpSocketConfig) -> Any:
            if config.ifname in missing:
                raise OSError(19, "No such device")
            return make(config)

        a = h.start("a", A_IP, conf(inst(prio=150).replace("eth0", "eth9")), factory=factory)
        await until(lambda: "VI_1" in a.instances, what="daemon up")
        assert a.instances["VI_1"].driver is None and a.instances["VI_1"].retry
        a.tracker._on_link_event(link("eth8", 8))  # someone else's interface: nothing
        missing.clear()
        a.tracker._on_link_event(link("eth9", 9))
        await until(lambda: state(a) == "MASTER", timeout=5.0, what="started on the link event")
        assert a.reloads.ok == 0 and not a.instances["VI_1"].retry

    run_scenario(tmp_path, body)


def test_waiting_instance_is_retried_without_a_link_event(tmp_path: Path) -> None:
    """The address may come after the last link event (ip link add; up; ip addr add)."""
    missing = {"eth9"}

    async def body(h: Harness) -> None:
        make = h.wire.factory(A_IP)

        def factory(config: VrrpSocketConfig) -> Any:
            if config.ifname in missing:
                raise OSError(99, "Cannot assign requested address")
            return make(config)

        a = h.start("a", A_IP, conf(inst(prio=150).replace("eth0", "eth9")), factory=factory)
        await until(lambda: "VI_1" in a.instances, what="daemon up")
        missing.clear()
        await until(lambda: state(a) == "MASTER", timeout=3.0, what="periodic retry")

    run_scenario(tmp_path, body)


def test_recreated_interface_gets_a_new_socket(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        a = h.start("a", A_IP, conf(inst(prio=150), inst("VI_2", prio=150, vrid=52)))
        await until(lambda: state(a) == "MASTER" and state(a, "VI_2") == "MASTER")
        old = a.instances["VI_1"].group
        assert old is not None
        old_sock = old.sock
        a.tracker._on_link_event(link("eth0", 1))  # same index: nothing to do
        a.tracker._on_link_event(link("eth0", 1, deleted=True))
        await until(lambda: state(a) == "FAULT", what="deleted interface faults the instance")
        h.wire.ifindex["eth0"] = 5
        a.tracker._on_link_event(link("eth0", 5))
        await until(lambda: old.sock is not old_sock, what="socket reopened")
        assert old_sock.closed and old.sock.ifindex == 5  # type: ignore[attr-defined]
        for name in ("VI_1", "VI_2"):
            driver = a.instances[name].driver
            assert driver is not None and driver.sender is old.sock
        await until(lambda: state(a) == "MASTER", what="back to MASTER")
        sent = old.sock.stats.tx
        await until(lambda: old.sock.stats.tx > sent, what="adverts on the new socket")

    run_scenario(tmp_path, body)
