"""NftDataplane's bookkeeping against a fake `Nft` (batches recorded, failures injected)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import Any

import pytest

from hakeeper.conf.model import LvsMethod, RealServer, VirtualServer
from hakeeper.dataplane.desired import desired_state
from hakeeper.dataplane.nft import NftDataplane, NftError

A = ipaddress.ip_address
VS = VirtualServer(
    address=A("198.18.0.10"),
    port=80,
    lvs_sched="rr",
    real_servers=tuple(RealServer(A(f"198.18.1.{i}"), 80) for i in (1, 2, 3)),
)
VS81 = VirtualServer(
    address=A("198.18.0.10"), port=81, lvs_sched="wlc", real_servers=VS.real_servers
)
TUN = VirtualServer(
    address=A("198.18.0.10"), port=82, lvs_method=LvsMethod("TUN"), real_servers=VS.real_servers
)


class FakeNft:
    netns = None
    via = "fake"
    last_ms = 0.5

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail_next = False

    def run(self, cmds: list[dict[str, Any]]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise NftError("Error: Could not process rule: No such file or directory")
        self.batches.append(list(cmds))

    def delete_table(self, family: str) -> None:
        self.batches.append([{"delete": {"table": {"family": family}}}])


def _apply(dp: NftDataplane, *vss: VirtualServer, pools: Any = None) -> Any:
    return asyncio.run(dp.apply(desired_state(list(vss), pools)))


def test_only_touched_services_are_in_the_batch() -> None:
    fake = FakeNft()
    dp = NftDataplane(fake)  # type: ignore[arg-type]
    asyncio.run(dp.start())
    _apply(dp, VS, VS81, TUN)
    assert "vs_198_18_0_10_81_tcp" in json.dumps(fake.batches[-1])
    assert dp.status()["unsupported"] == {"addr/198.18.0.10/82/TCP": dp.unsupported[TUN.key]}
    assert "wrr" in dp.status()["notes"]["addr/198.18.0.10/81/TCP"][0]
    p = _apply(dp, VS, VS81, TUN, pools={VS.key: [(VS.real_servers[0], 1)]})
    batch = json.dumps(fake.batches[-1])
    assert "vs_198_18_0_10_80_tcp" in batch and "vs_198_18_0_10_81_tcp" not in batch
    assert p.counts()["services_unchanged"] == 1
    n = len(fake.batches)
    assert not _apply(dp, VS, VS81, TUN, pools={VS.key: [(VS.real_servers[0], 1)]})
    assert len(fake.batches) == n + 1 and fake.batches[-1] == []  # nothing to do, no commands


def test_a_failed_batch_is_counted_and_the_next_apply_rebuilds() -> None:
    fake = FakeNft()
    dp = NftDataplane(fake)  # type: ignore[arg-type]
    asyncio.run(dp.start())
    _apply(dp, VS)
    fake.fail_next = True
    with pytest.raises(NftError):
        _apply(dp, VS, VS81)
    assert dp.failures == 1 and "No such file" in (dp.status()["last_error"] or "")
    p = _apply(dp, VS, VS81)
    assert p.counts()["services_added"] == 2  # from scratch: the table was recreated
    asyncio.run(dp.stop())
    assert dp.actual.services == ()
