"""Accept_Mode (`accept`/`no_accept`, vrrp_strict): which addresses a MASTER refuses, the nft
batch that enforces it, and the guard's bookkeeping (fake nft; the kernel side is
tests/netns/test_accept_mode.py)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.keepalived import build_model
from hakeeper.conf.lexer import LexOptions, parse_keepalived_text
from hakeeper.conf.model import VrrpInstance
from hakeeper.runtime import accept
from hakeeper.runtime.accept import AcceptGuard, drops_vip_traffic, guarded_addresses, render
from hakeeper.vrrp.machine import State

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def instance(
    extra: str = "", *, prio: int = 100, globals_: str = "", name: str = "VI_1"
) -> VrrpInstance:
    text = (
        f"global_defs {{\n{globals_}\n}}\n"
        f"vrrp_instance {name} {{\n interface eth0\n virtual_router_id 51\n priority {prio}\n"
        f" {extra}\n virtual_ipaddress {{\n  198.18.0.100/24\n  2001:db8::100/64\n }}\n"
        " virtual_ipaddress_excluded {\n  198.18.1.7\n }\n}\n"
    )
    diags = Diagnostics()
    nodes = parse_keepalived_text(text, "t.conf", diags, options=LexOptions(config_id="t"))
    config = build_model(nodes, diags)
    return config.vrrp_instances[0]


ALL = frozenset({V4("198.18.0.100"), V6("2001:db8::100"), V4("198.18.1.7")})


def test_keepalived_defaults_accept_unless_strict() -> None:
    assert instance().accept and not drops_vip_traffic(instance())
    assert drops_vip_traffic(instance("no_accept"))
    strict = instance(globals_="vrrp_strict")
    assert not strict.accept and drops_vip_traffic(strict)
    assert instance("accept", globals_="vrrp_strict").accept
    assert drops_vip_traffic(instance("strict_mode on"))
    # the address owner always accepts, even when no_accept is written
    assert not drops_vip_traffic(instance("no_accept", prio=255))
    assert not drops_vip_traffic(instance(prio=255, globals_="vrrp_strict"))


@pytest.mark.parametrize("state", [State.BACKUP, State.FAULT, State.INIT])
def test_only_a_master_refuses(state: State) -> None:
    inst = instance("no_accept")
    assert guarded_addresses(inst, State.MASTER) == ALL  # VIPs and eVIPs
    assert guarded_addresses(inst, state) == frozenset()
    assert guarded_addresses(instance("accept"), State.MASTER) == frozenset()


def test_render_builds_one_atomic_table_or_deletes_it() -> None:
    table = {"family": "inet", "name": "hakeeper_vrrp"}
    assert render([]) == [{"add": {"table": table}}, {"delete": {"table": table}}]
    batch = render(ALL)
    assert batch[:3] == [
        {"add": {"table": table}},
        {"delete": {"table": table}},
        {"add": {"table": table}},
    ]
    chain = next(c["add"]["chain"] for c in batch if "chain" in c.get("add", {}))
    assert (chain["hook"], chain["prio"], chain["policy"]) == ("input", -1, "accept")
    elements = {
        c["add"]["element"]["name"]: c["add"]["element"]["elem"]
        for c in batch
        if "element" in c.get("add", {})
    }
    assert elements == {"vips4": ["198.18.0.100", "198.18.1.7"], "vips6": ["2001:db8::100"]}
    rules = [c["add"]["rule"]["expr"] for c in batch if "rule" in c.get("add", {})]
    verdicts = [next(k for k in r[-1]) for r in rules]
    assert verdicts == ["drop", "accept", "drop"]  # ND to an IPv6 VIP passes before the drop


@dataclass
class FakeNft:
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    fail: bool = False

    def run(self, cmds: list[dict[str, Any]]) -> None:
        if self.fail:
            raise RuntimeError("nft: Operation not permitted")
        self.batches.append(cmds)


def elems(batch: list[dict[str, Any]]) -> set[str]:
    return {e for c in batch if "element" in c.get("add", {}) for e in c["add"]["element"]["elem"]}


def test_guard_applies_only_changes_and_clears_on_stop() -> None:
    nft = FakeNft()
    guard = AcceptGuard(nft)
    a = instance("no_accept")
    b = instance("no_accept", name="VI_2")
    guard.on_state(a, State.BACKUP)
    assert len(nft.batches) == 1 and elems(nft.batches[0]) == set()  # leftovers cleared once
    guard.on_state(a, State.BACKUP)
    assert len(nft.batches) == 1
    guard.on_state(a, State.MASTER)
    assert elems(nft.batches[-1]) == {"198.18.0.100", "2001:db8::100", "198.18.1.7"}
    guard.on_state(b, State.MASTER)  # same VIPs: no new batch
    assert len(nft.batches) == 2
    guard.on_state(a, State.BACKUP)  # b still MASTER: still dropped
    assert len(nft.batches) == 2 and guard.addresses == ALL
    guard.on_state(b, State.INIT)  # stop at exit: table deleted
    assert nft.batches[-1] == render([]) and guard.addresses == frozenset()


def test_guard_failure_is_counted_not_raised() -> None:
    nft = FakeNft(fail=True)
    guard = AcceptGuard(nft)
    guard.on_state(instance(), State.MASTER)  # nothing to enforce: tried once, not again
    guard.on_state(instance(), State.BACKUP)
    assert guard.errors == 1
    guard.on_state(instance("no_accept"), State.MASTER)
    guard.on_state(instance("no_accept"), State.MASTER)  # still wanted: retried
    assert guard.errors == 3 and "not permitted" in guard.last_error
    nft.fail = False
    guard.on_state(instance("no_accept"), State.MASTER)
    assert guard.batches == 1 and elems(nft.batches[-1])


def test_daemon_hook_leaves_fake_hosts_alone() -> None:
    fake = SimpleNamespace(options=SimpleNamespace(use_netlink=False))
    assert accept.guard_for(fake) is None
    accept.on_state(fake, instance("no_accept"), State.MASTER)  # no nft touched, no error
    real = SimpleNamespace(options=SimpleNamespace(use_netlink=True))
    guard = accept.guard_for(real)
    assert guard is not None and accept.guard_for(real) is guard
