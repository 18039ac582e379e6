"""Seed 003 in namespaces: three web servers checked with ICMP_CHECK (read as PING_CHECK) from
an LB node; one server's "cable is pulled" (link down) -> removed from the pool, plugged back
-> re-added, with keepalived's log lines ("ICMP check failed to ...", "Removing service ...").

The seed's config is kept except for lab addresses and test-sized timers (the seed relies on
the 60 s defaults): VIP 198.18.1.11:80, servers 198.18.0.11-13:80 on the LB's segment.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import pytest

from hakeeper.check.engine import CheckerEngine, pools_by_label
from hakeeper.conf.keepalived import load_keepalived
from hakeeper.lab.netns import Lab, entered

pytestmark = pytest.mark.root

SEED_003 = """
# Configuration File for keepalived (seed 003, lab addresses)
virtual_server 198.18.1.11 80 {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    delay_loop 0.3
%s
}
"""
REAL = """    real_server 198.18.0.%d 80 {
        weight 1
        ICMP_CHECK {
            connect_timeout 0.4
            retry 0
            warmup 0
        }
    }"""


def test_seed_003_cable_pulled_and_plugged_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hakeeper.check")
    conf = tmp_path / "keepalived.conf"
    conf.write_text(SEED_003 % "\n".join(REAL % i for i in (11, 12, 13)))
    cfg, diags = load_keepalived(str(conf), config_id="lb")
    assert cfg is not None, diags
    assert any("ICMP_CHECK" in d.message for d in diags.items)  # read as PING_CHECK, warned
    vs_key = "|".join(cfg.virtual_servers[0].key)
    timeline: list[tuple[float, list[tuple[str, int]]]] = []

    with Lab() as lab:
        sw = lab.add_switch()
        lb = lab.add_ns("lb")
        lab.connect(lb, sw)
        lab.addr(lb, "eth0", "198.18.0.1/24")
        webs = {}
        for i in (11, 12, 13):
            ns = lab.add_ns(f"web{i}")
            lab.connect(ns, sw)
            lab.addr(ns, "eth0", f"198.18.0.{i}/24")
            webs[i] = ns

        def pools(engine: CheckerEngine) -> list[tuple[str, int]]:
            return pools_by_label(engine.pools())[vs_key]

        async def scenario() -> None:
            t0 = time.monotonic()
            engine = CheckerEngine(
                cfg.virtual_servers,
                on_pool_change=lambda k, p: timeline.append(
                    (time.monotonic() - t0, pools_by_label({k: p})[vs_key])
                ),
            )
            engine.start()
            try:
                await until(lambda: engine.probes_started >= 3, 5, "first pings")
                await until(lambda: all(r.last_result for r in
                                        engine.status()[0].real_servers), 5, "all up")  # fmt: skip
                assert len(pools(engine)) == 3
                lab.link_set(webs[13], "eth0", up=False)  # the cable is pulled
                t_pull = time.monotonic()
                await until(lambda: len(pools(engine)) == 2, 5, "198.18.0.13 removed")
                removed_after = time.monotonic() - t_pull
                assert "198.18.0.13:80" not in dict(pools(engine))
                lab.link_set(webs[13], "eth0", up=True)  # plugged back
                await until(lambda: len(pools(engine)) == 3, 10, "198.18.0.13 re-added")
                # delay_loop 0.3 + connect_timeout 0.4, plus slack for a loaded machine
                assert removed_after < 0.3 + 0.4 + 1.0, removed_after
            finally:
                await engine.stop()

        errors: list[BaseException] = []

        def run_in_lb() -> None:
            try:
                with entered(lb):  # every probe socket is opened by this thread, in `lb`
                    asyncio.run(asyncio.wait_for(scenario(), 40))
            except BaseException as exc:  # re-raised in the test thread
                errors.append(exc)

        thread = threading.Thread(target=run_in_lb)
        thread.start()
        thread.join(60)
        assert not thread.is_alive()
        if errors:
            raise errors[0]

    lines = [r.getMessage() for r in caplog.records if r.name == "hakeeper.check"]
    for line in lines:
        print(line)
    assert any(ln.startswith("ICMP check failed to 198.18.0.13.") for ln in lines)
    assert "Removing service [198.18.0.13:80] from VS [198.18.1.11:80]" in lines
    assert "ICMP check succeed to 198.18.0.13." in lines
    assert "Adding service [198.18.0.13:80] to VS [198.18.1.11:80]" in lines
    sizes = [len(p) for _t, p in timeline]
    assert sizes[:3] == [3, 2, 3]


async def until(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
