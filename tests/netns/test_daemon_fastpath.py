"""The daemon's host stack in a namespace: a takeover's VIP exists when add_addresses
returns and its GARPs are out (the raw rtnetlink + packet socket fast path)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "takeover_vip_latency.py"


@pytest.mark.root
def test_vip_and_garps_are_done_when_the_call_returns() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "-n", "20", "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    rows = {r["mode"]: r for r in json.loads(proc.stdout)}
    fast, queued = rows["fast"], rows["queued"]
    assert fast["vip_present_at_return"] == 20 and fast["fast_adds"] == 20
    assert fast["garps_sent"] == 100 and fast["errors"] == 0
    assert queued["garps_sent"] == 100 and queued["errors"] == 0 and queued["fast_adds"] == 0
    assert fast["median_ms"] < 20.0  # generous: the figure itself belongs to bench/
