"""keepalived 2.2.7 and hakeeper through the same failover-lab scenarios, side by side.

One lab topology (client, switch, lb1/lb2 with nginx, three web servers; see
hakeeper.lab.topology) serves the whole session. Each scenario is run `-n` times per
implementation, alternating keepalived and hakeeper run by run, with both LB nodes running
the same implementation (lb1 priority 100, lb2 priority 90, as in
shared/anchors/measured.md) and the fault at a random phase of the advert timer.
Scenarios (names from measured.md):

  a2_v2_linkdown   VRRPv2 1 s, lb1 lost (cable pulled + daemon killed)
  b_v2_sigterm     VRRPv2 1 s, graceful stop of lb1's daemon (priority 0)
  c2_v3_linkdown   VRRPv3 0.1 s, lb1 lost
  c3_v3_sigterm    VRRPv3 0.1 s, graceful stop
  e2_v2_track      VRRPv2 1 s, vrrp_script interval 1 fall 2 weight -20, nginx stopped on lb1
  d1_preempt       VRRPv2 1 s, lb1 (stopped) starts again and preempts; time from its start
  d2_nopreempt     VRRPv2 1 s, nopreempt on both: lb1 starts again and must NOT take over

Printed per scenario and implementation: median (min-max) of the client's longest outage
and of the time from the fault to the VIP on the other node, and the hakeeper/keepalived
ratio of the medians. Targets: hakeeper's medians no worse than keepalived's in the same
session; link loss within Master_Down_Interval + 50 ms.

Usage (root): .venv/bin/python bench/failover_vs_keepalived.py [-n 3] [--only a2_v2_linkdown ...]
              [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hakeeper.lab import topology
from hakeeper.lab.configs import VrrpOptions
from hakeeper.lab.scenarios import Runner, Scenario, master_down_s
from hakeeper.lab.timeline import RunResult, render

V2 = VrrpOptions(version=2, advert_int=1.0, sync_group=False, track=False)
V3 = VrrpOptions(version=3, advert_int=0.1, sync_group=False, track=False)
SCENARIOS = [
    Scenario("a2_v2_linkdown", "linkdown", V2, bring_back=False),
    Scenario("b_v2_sigterm", "sigterm", V2, bring_back=False),
    Scenario("c2_v3_linkdown", "linkdown", V3, bring_back=False),
    Scenario("c3_v3_sigterm", "sigterm", V3, bring_back=False),
    Scenario(
        "e2_v2_track", "trackfail",
        VrrpOptions(version=2, advert_int=1.0, sync_group=False, track=True, track_interval=1,
                    track_fall=2, track_rise=1, track_weight=-20),
        bring_back=False,
    ),
    Scenario("d1_preempt", "return", V2, bring_back=False),
    Scenario("d2_nopreempt", "return", VrrpOptions(version=2, advert_int=1.0, sync_group=False,
                                                   track=False, preempt=False), bring_back=False),
]  # fmt: skip
KEEPALIVED_REF = {  # shared/anchors/measured.md medians: (client outage, VIP on new master)
    "a2_v2_linkdown": (2868, 2874),
    "b_v2_sigterm": (650, 649),
    "c2_v3_linkdown": (290, 298),
    "c3_v3_sigterm": (70, 66),
    "e2_v2_track": (4531, 4533),
    "d1_preempt": (0, 3821),
    "d2_nopreempt": (0, -1),
}
KINDS = ("keepalived", "hakeeper")


def stat(values: list[float]) -> str:
    good = [v for v in values if v >= 0]
    if not good:
        return "-"
    return f"{statistics.median(good):.0f} ({min(good):.0f}–{max(good):.0f})"


def median(values: list[float]) -> float:
    good = [v for v in values if v >= 0]
    return statistics.median(good) if good else -1.0


def ratio(hk: float, ka: float) -> str:
    if hk < 0 or ka < 0:
        return "-"
    if ka == 0:
        return "=" if hk == 0 else "inf"
    return f"{hk / ka:.2f}"


def table(results: dict[str, dict[str, list[RunResult]]]) -> list[str]:
    rows = [
        "| scenario | n | keepalived outage ms | hakeeper outage ms | ratio"
        " | keepalived VIP moved ms | hakeeper VIP moved ms | ratio"
        " | ka / hk VIP after old's last advert ms | measured.md ka (outage / VIP) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_kind in results.items():
        ka, hk = by_kind["keepalived"], by_kind["hakeeper"]
        ka_out, hk_out = [r.outage_ms for r in ka], [r.outage_ms for r in hk]
        ka_vip, hk_vip = [r.vip_moved_ms for r in ka], [r.vip_moved_ms for r in hk]
        ref = KEEPALIVED_REF.get(name, (-1, -1))
        ref_vip = ref[1] if ref[1] >= 0 else "-"
        after = [stat([r.vip_after_last_advert_ms for r in rs]) for rs in (ka, hk)]
        rows.append(
            f"| {name} | {len(ka)}/{len(hk)} | {stat(ka_out)} | {stat(hk_out)} | "
            f"{ratio(median(hk_out), median(ka_out))} | {stat(ka_vip)} | {stat(hk_vip)} | "
            f"{ratio(median(hk_vip), median(ka_vip))} | {after[0]} / {after[1]} | "
            f"{ref[0]} / {ref_vip} |"
        )
    return rows


def verdicts(results: dict[str, dict[str, list[RunResult]]]) -> list[str]:
    out = []
    for sc in SCENARIOS:
        if sc.name not in results:
            continue
        ka, hk = results[sc.name]["keepalived"], results[sc.name]["hakeeper"]
        metrics = [("outage", "outage_ms"), ("VIP moved", "vip_moved_ms")]
        if sc.fault == "linkdown":  # fault->VIP depends on the timer phase; this does not
            metrics.append(("VIP after the old master's last advert", "vip_after_last_advert_ms"))
        for what, get in metrics:
            m_ka = median([getattr(r, get) for r in ka])
            m_hk = median([getattr(r, get) for r in hk])
            if m_hk < 0 and m_ka < 0:
                continue
            ok = m_hk <= m_ka or m_hk - m_ka <= 10  # within one probe interval
            out.append(f"{sc.name} {what}: hakeeper {m_hk:.0f} vs keepalived {m_ka:.0f} ms "
                       f"-> {'OK' if ok else 'WORSE'}")  # fmt: skip
        if sc.fault == "linkdown":
            # the backup's timer runs from the last advert it heard, not from the fault
            bound = master_down_s(sc.opts, 90) * 1000 + 50
            worst = max(r.vip_after_last_advert_ms for r in hk)
            out.append(
                f"{sc.name}: hakeeper VIP after the last advert max {worst:.0f} ms vs "
                f"Master_Down+50 = {bound:.0f} ms -> {'OK' if 0 <= worst <= bound else 'OVER'}"
            )
        if sc.name == "d2_nopreempt":
            moved = {k: sum(r.vip_moved_ms >= 0 for r in results[sc.name][k]) for k in KINDS}
            out.append(f"d2_nopreempt: switched back keepalived {moved['keepalived']}, "
                       f"hakeeper {moved['hakeeper']} (want 0)")  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3, help="runs per scenario and implementation")
    ap.add_argument("--only", nargs="*", default=None, help="scenario names")
    ap.add_argument("--json-out", default=None, help="write every run (with timelines) here")
    ap.add_argument("--verbose", action="store_true", help="print each run's timeline")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    if not 1 <= args.n <= 20:
        ap.error("-n must be 1..20")
    chosen = [s for s in SCENARIOS if args.only is None or s.name in args.only]
    rng = random.Random(args.seed)
    results: dict[str, dict[str, list[RunResult]]] = {}
    t_start = time.monotonic()
    topo = topology.build()
    try:
        runners = {k: Runner(topo, (k, k), rng=rng) for k in KINDS}
        for sc in chosen:
            results[sc.name] = {k: [] for k in KINDS}
            for i in range(args.n):
                for kind in KINDS if i % 2 == 0 else tuple(reversed(KINDS)):
                    r = runners[kind].run(sc)
                    results[sc.name][kind].append(r)
                    print(
                        f"{sc.name:<15} {kind:<10} outage {r.outage_ms:7.0f} ms  VIP moved "
                        f"{r.vip_moved_ms:7.0f} ms  after last advert "
                        f"{r.vip_after_last_advert_ms:7.0f} ms",
                        flush=True,
                    )
                    if args.verbose:
                        print(render(r), flush=True)
    finally:
        topo.close()
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')} UTC, n={args.n}, "
          f"{time.monotonic() - t_start:.0f} s\n")  # fmt: skip
    print("\n".join(table(results)))
    print()
    print("\n".join(verdicts(results)))
    if args.json_out:
        data = {
            n: {k: [r.to_json() for r in rs] for k, rs in by.items()} for n, by in results.items()
        }
        Path(args.json_out).write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
