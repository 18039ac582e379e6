"""LvsService with a fake data plane: coalesced reconciles, pools, reload, failures, status."""

from __future__ import annotations

import ast
import asyncio
import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest

from hakeeper.conf.model import KeepalivedConfig, LvsMethod, RealServer, VirtualServer
from hakeeper.dataplane.desired import DesiredState, Service, desired_state
from hakeeper.dataplane.lvs import LvsService, UserspaceAdapter, choose_dataplane
from hakeeper.dataplane.reconcile import Plan, plan

A = ipaddress.ip_address
R1, R2 = RealServer(A("198.18.1.1"), 80), RealServer(A("198.18.1.2"), 80, weight=2)


class FakePlane:
    name = "fake"

    def __init__(self, fail: int = 0) -> None:
        self.actual = DesiredState()
        self.applied: list[Plan] = []
        self.fail = fail
        self.started = self.stopped = False
        self.gate: asyncio.Event | None = None

    def supports(self, service: Service) -> str | None:
        return "no TUN here" if service.method == "TUN" else None

    async def start(self) -> None:
        self.started = True

    async def apply(self, desired: DesiredState) -> Plan:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise RuntimeError("kernel said no")
        p = plan(desired, self.actual)
        self.actual = desired
        self.applied.append(p)
        return p

    async def stop(self) -> None:
        self.stopped = True
        self.actual = DesiredState()

    def status(self) -> dict[str, Any]:
        return {"dataplane": self.name}


def _config(*vss: VirtualServer) -> KeepalivedConfig:
    return KeepalivedConfig(virtual_servers=vss)


VS = VirtualServer(address=A("198.18.0.10"), port=80, lvs_sched="rr", real_servers=(R1, R2))
TUN = VirtualServer(
    address=A("198.18.0.10"), port=81, lvs_method=LvsMethod("TUN"), real_servers=(R1,)
)


def test_start_installs_pool_changes_coalesce_and_stop_removes() -> None:
    async def main() -> None:
        fake = FakePlane()
        svc = LvsService(_config(VS, TUN), dataplane=fake, checks=False)
        await svc.start()
        assert fake.started and len(fake.applied) == 1
        assert fake.applied[0].counts()["backends_added"] == 2
        fake.gate = asyncio.Event()
        for w in (5, 6, 7):  # three changes while the plane is busy -> at most two applies
            svc.set_pool(VS.key, [(R1, w)])
        await asyncio.sleep(0)
        fake.gate.set()
        assert await svc.wait_applied()
        assert len(fake.applied) <= 3
        (s,) = fake.actual.services
        assert [(b.key, b.weight) for b in s.backends] == [("198.18.1.1:80", 7)]
        status = svc.status()
        assert status["dataplane"] == "fake"
        by_name = {v["name"]: v for v in status["virtual_servers"]}
        assert by_name["198.18.0.10 81"]["unsupported"] == "no TUN here"
        assert by_name["198.18.0.10 80"]["backends"] == [
            {"server": "198.18.1.1:80", "weight": 7, "method": "NAT"}
        ]
        await svc.stop()
        assert fake.stopped

    asyncio.run(main())


def test_failed_apply_is_counted_and_the_next_one_recovers() -> None:
    async def main() -> None:
        fake = FakePlane(fail=1)
        svc = LvsService(_config(VS), dataplane=fake, checks=False)
        await svc.start()
        assert svc.errors == 1 and "kernel said no" in (svc.last_error or "")
        svc.set_pool(VS.key, [(R2, 1)])
        assert await svc.wait_applied()
        assert svc.reconciles == 1 and fake.actual.services[0].backends[0].key == "198.18.1.2:80"
        await svc.stop()

    asyncio.run(main())


def test_update_reconciles_the_new_config() -> None:
    async def main() -> None:
        fake = FakePlane()
        svc = LvsService(_config(VS), dataplane=fake, checks=False)
        await svc.start()
        vs2 = VirtualServer(address=A("198.18.0.11"), port=80, real_servers=(R1,))
        svc.update(_config(vs2))
        assert await svc.wait_applied()
        counts = fake.applied[-1].counts()
        assert counts["services_added"] == 1 and counts["services_removed"] == 1
        await svc.stop()

    asyncio.run(main())


def test_with_the_checker_engine_pools_come_from_it() -> None:
    async def main() -> None:
        fake = FakePlane()
        svc = LvsService(_config(VS), dataplane=fake, checks=True)
        await svc.start()  # no checkers configured: every real server is up
        assert [b.key for b in fake.actual.services[0].backends] == [
            "198.18.1.1:80",
            "198.18.1.2:80",
        ]
        assert svc.status()["virtual_servers"][0]["quorum_up"] is True
        await svc.stop()

    asyncio.run(main())


def test_choose_dataplane() -> None:
    assert choose_dataplane("userspace") == "userspace"
    assert choose_dataplane("auto") in ("nftables", "userspace")
    with pytest.raises(ValueError, match="unknown data plane"):
        choose_dataplane("xdp")


def test_userspace_adapter_refuses_fwmark_and_serves_loopback() -> None:
    fw = VirtualServer(fwmark=3, real_servers=(R1,))
    adapter = UserspaceAdapter()
    (s,) = desired_state([fw]).services
    assert adapter.supports(s) is not None

    async def main() -> None:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"hello")
            await w.drain()
            w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with socket.socket() as probe:  # a free port for the virtual service
            probe.bind(("127.0.0.1", 0))
            vport = probe.getsockname()[1]
        vs = VirtualServer(
            address=A("127.0.0.1"),
            port=vport,
            lvs_sched="rr",
            real_servers=(RealServer(A("127.0.0.1"), port),),
        )
        svc = LvsService(_config(vs), dataplane=adapter, checks=False)
        await svc.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", vport)
            assert await asyncio.wait_for(reader.read(), 5) == b"hello"
            writer.close()
        finally:
            await svc.stop()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


PURE = ("desired.py", "reconcile.py", "nft_rules.py")
FORBIDDEN = {"socket", "asyncio", "time", "os", "subprocess", "random", "ctypes", "pyroute2"}


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_no_io(name: str) -> None:
    src = Path(__file__).parents[3] / "src" / "hakeeper" / "dataplane" / name
    tree = ast.parse(src.read_text())
    mods: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module.split(".")[0])
    assert not mods & FORBIDDEN


def test_sync_lvs_starts_updates_and_stops_and_status_lines() -> None:
    from hakeeper.dataplane.lvs import format_status, sync_lvs

    async def main() -> None:
        fake = FakePlane()
        assert await sync_lvs(None, _config(), fake) is None
        svc = await sync_lvs(None, _config(VS), fake)
        assert svc is not None and fake.started
        assert await sync_lvs(svc, _config(VS, TUN), fake) is svc
        lines = format_status(svc.status())
        assert lines[0].startswith("LVS data plane: fake")
        assert any("198.18.1.2:80" in line and "UP" in line for line in lines)
        assert any("no TUN here" in line for line in lines)
        assert await sync_lvs(svc, _config(), fake) is None
        assert fake.stopped

    asyncio.run(main())
