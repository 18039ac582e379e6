"""Failover timelines: what happened after a fault, in ms, and the figures drawn from it.

Owns the `Event` and `RunResult` records, merging the raw observations of one run (daemon
state lines, `ip monitor` VIP adds/deletes, gratuitous ARPs seen by the client, client
probes) into one ordered timeline relative to the fault, computing the figures
shared/anchors/measured.md reports (client outage, VIP on the new master, first GARP from it,
its MASTER log line, switch-back after the node returns), and rendering text or JSON.
Pure: takes recorded data in, returns data/text; no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hakeeper.lab.probe import AdvertSeen, Garp, Probe, outages

GARP_BURST_S = 0.2  # GARPs from one MAC closer than this are one burst


@dataclass(frozen=True)
class Event:
    """One thing that happened, `t_ms` after the fault (negative: before it)."""

    t_ms: float
    source: str
    text: str


@dataclass(frozen=True)
class RunResult:
    """One scenario run. Times are ms after the fault; -1 when it did not happen."""

    scenario: str
    node1: str
    node2: str
    version: int
    advert_int: float
    phase_ms: float
    outage_ms: float
    vip_moved_ms: float
    garp_ms: float
    master_ms: float
    vip_after_last_advert_ms: float  # VIP on the new master after the old's last advert
    returned: bool
    switched_back_ms: float
    return_outage_ms: float
    probes: int
    probes_failed: int
    events: tuple[Event, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Observations:
    """Raw, monotonic-time observations of one run (seconds)."""

    t_fault: float
    t_return: float  # -1 if the node was not brought back
    t_end: float  # observation stops here (daemons are stopped after it)
    states: dict[str, list[tuple[float, str]]]  # node -> (t, state)
    vip: dict[str, list[tuple[float, bool]]]  # node -> (t, present)
    garps: list[tuple[Garp, str]]  # (garp, node it came from)
    adverts: list[tuple[AdvertSeen, str]]  # (VRRP advert seen by the client, node it came from)
    probes: list[Probe]
    notes: list[tuple[float, str, str]]  # (t, source, text): faults, restores


def _ms(t: float, t0: float) -> float:
    return round((t - t0) * 1000.0, 1)


def first(pairs: list[tuple[float, Any]], since: float, want: Any, until: float = 1e18) -> float:
    for t, value in pairs:
        if since <= t < until and value == want:
            return t
    return -1.0


def build_events(obs: Observations, since: float) -> list[Event]:
    """The merged timeline from `since` to the end of the observation, relative to the fault."""
    t0 = obs.t_fault
    out = [e for e in _events(obs, since) if e.t_ms <= _ms(obs.t_end, t0)]
    out.sort(key=lambda e: e.t_ms)
    return out


def _events(obs: Observations, since: float) -> list[Event]:
    t0 = obs.t_fault
    out: list[Event] = []
    for t, source, text in obs.notes:
        out.append(Event(_ms(t, t0), source, text))
    for node, states in obs.states.items():
        for t, state in states:
            if t >= since:
                out.append(Event(_ms(t, t0), node, f"daemon logs {state} state"))
    for node, changes in obs.vip.items():
        for t, present in changes:
            if t >= since:
                out.append(Event(_ms(t, t0), node, "VIP added" if present else "VIP removed"))
    burst_start: dict[str, tuple[float, int]] = {}
    for garp, node in obs.garps:
        if garp.t < since:
            continue
        start = burst_start.get(node)
        if start is not None and garp.t - start[0] < GARP_BURST_S:
            burst_start[node] = (start[0], start[1] + 1)
            continue
        if start is not None:
            out.append(Event(_ms(start[0], t0), "client", f"GARP burst from {node} x{start[1]}"))
        burst_start[node] = (garp.t, 1)
    for node, (t, n) in burst_start.items():
        out.append(Event(_ms(t, t0), "client", f"GARP burst from {node} x{n}"))
    out += _advert_events(obs, since)
    for run in outages(obs.probes, since, obs.t_end):
        out.append(Event(_ms(run.start, t0), "client", "requests to the VIP start failing"))
        served = next((p.served_by for p in obs.probes if p.t >= run.end and p.ok), "")
        out.append(
            Event(
                _ms(run.end, t0),
                "client",
                f"served again{' by ' + served if served else ''}: outage {run.ms:.0f} ms "
                f"({run.failed} failed probes)",
            )
        )
    return out


def _advert_events(obs: Observations, since: float) -> list[Event]:
    """The last advert of each node before `since`, the first one of each node after it,
    every priority-0 advert, and the first advert after any priority change."""
    t0 = obs.t_fault
    out: list[Event] = []
    last_before: dict[str, AdvertSeen] = {}
    seen_after: dict[str, int] = {}
    for adv, node in obs.adverts:
        if adv.t < since:
            last_before[node] = adv
            continue
        prev = seen_after.get(node)
        if prev is None or adv.priority != prev:
            what = "first advert since" if prev is None else "advert, priority now"
            if adv.priority == 0:
                what = "priority-0 advert (resigning)"
            out.append(Event(_ms(adv.t, t0), "wire", f"{node} {what} (priority {adv.priority})"))
        seen_after[node] = adv.priority
    for node, adv in last_before.items():
        out.append(
            Event(_ms(adv.t, t0), "wire", f"{node} last advert before (prio {adv.priority})")
        )
    return out


def last_advert_before(obs: Observations, node: str, t: float) -> float:
    """Time of `node`'s last non-zero-priority advert before `t` (-1 if none)."""
    last = -1.0
    for adv, who in obs.adverts:
        if who == node and adv.t < t and adv.priority > 0:
            last = adv.t
    return last


def summarize(
    obs: Observations,
    *,
    scenario: str,
    kinds: tuple[str, str],
    version: int,
    advert_int: float,
    phase_ms: float,
    old: str = "lb1",
    new: str = "lb2",
) -> RunResult:
    """Figures for one run: the fault moves the VIP from `old` to `new`; return moves it back."""
    t0 = obs.t_fault
    until = obs.t_return if obs.t_return > 0 else 1e18
    fault_probes = [p for p in obs.probes if t0 <= p.t < until]
    out_ms = max((r.ms for r in outages(obs.probes, t0, until)), default=0.0)
    vip_t = first(obs.vip.get(new, []), t0, True, until)
    master_t = first(obs.states.get(new, []), t0, "MASTER", until)
    garp_t = next((g.t for g, node in obs.garps if node == new and t0 <= g.t < until), -1.0)
    last_old = last_advert_before(obs, old, t0)
    after_last = _ms(vip_t, last_old) if vip_t > 0 and last_old > 0 else -1.0
    back_ms = ret_out = -1.0
    returned = obs.t_return > 0
    if returned:
        back_t = first(obs.vip.get(old, []), obs.t_return, True)
        back_ms = _ms(back_t, obs.t_return) if back_t > 0 else -1.0
        ret_out = max((r.ms for r in outages(obs.probes, obs.t_return, obs.t_end)), default=0.0)
    return RunResult(
        scenario=scenario,
        node1=kinds[0],
        node2=kinds[1],
        version=version,
        advert_int=advert_int,
        phase_ms=round(phase_ms, 1),
        outage_ms=round(out_ms, 1),
        vip_moved_ms=_ms(vip_t, t0) if vip_t > 0 else -1.0,
        garp_ms=_ms(garp_t, t0) if garp_t > 0 else -1.0,
        master_ms=_ms(master_t, t0) if master_t > 0 else -1.0,
        vip_after_last_advert_ms=after_last,
        returned=returned,
        switched_back_ms=back_ms,
        return_outage_ms=round(ret_out, 1),
        probes=len(fault_probes),
        probes_failed=sum(not p.ok for p in fault_probes),
        events=tuple(build_events(obs, t0 - 0.001)),
    )


def _fmt(ms: float) -> str:
    return "-" if ms < 0 else f"{ms:.0f} ms"


def render(result: RunResult) -> str:
    """Human-readable timeline and figures of one run."""
    head = (
        f"== scenario {result.scenario}: lb1={result.node1} (priority 100), "
        f"lb2={result.node2} (priority 90), VRRPv{result.version} advert_int "
        f"{result.advert_int:g} s, fault at timer phase {result.phase_ms:.0f} ms"
    )
    lines = [head]
    for e in result.events:
        lines.append(f"  {e.t_ms:+9.1f} ms  {e.source:<7} {e.text}")
    lines.append(
        f"  => client longest outage {result.outage_ms:.0f} ms "
        f"({result.probes_failed}/{result.probes} probes failed); VIP on the other node after "
        f"{_fmt(result.vip_moved_ms)}; its first GARP {_fmt(result.garp_ms)}; "
        f"its MASTER log {_fmt(result.master_ms)}; VIP moved "
        f"{_fmt(result.vip_after_last_advert_ms)} after the old master's last advert"
    )
    if result.returned:
        lines.append(
            f"  => node returned: VIP back on lb1 after {_fmt(result.switched_back_ms)} "
            f"(after its return), client outage then {result.return_outage_ms:.0f} ms"
        )
    return "\n".join(lines)
