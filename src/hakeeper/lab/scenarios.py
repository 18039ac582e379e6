"""Failover scenarios run on the lab topology, with hakeeper or keepalived on each LB node.

Owns one scenario run: start lb1's daemon (priority 100, seed 000's MASTER) then lb2's
(priority 90), wait until the client is served through lb1, wait a random phase of the
advert timer, inject the fault, wait for the VIP on lb2 and the client served again, then
bring lb1 back as a rebooted node would come back (cable in, nginx up, leftover VIP gone,
daemon started) and wait for preemption (or, with nopreempt, check that none happens).
Faults follow shared/anchors/measured.md:
- kill:      SIGSTOP+SIGKILL lb1's daemon process group (a crash; its VIP stays behind)
- linkdown:  freeze lb1's daemon, pull its cable (switch port down), kill it (a lost node)
- sigterm:   SIGTERM lb1's daemon (graceful: priority-0 advert, VIP removed)
- trackfail: stop nginx on lb1; the vrrp_script check fails (fall) and lb1 gives up
- return:    lb1 stopped gracefully first; the "fault" is lb1 starting again (preemption)
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from hakeeper.lab import configs
from hakeeper.lab.daemons import AddressWatch, VrrpDaemon
from hakeeper.lab.netns import wait_until
from hakeeper.lab.probe import HttpProber, WireSniffer
from hakeeper.lab.timeline import Observations, RunResult, summarize
from hakeeper.lab.topology import LB_IPS, VIP, Topology

FAULTS = ("kill", "linkdown", "sigterm", "trackfail", "return")
PRIORITIES = {"lb1": 100, "lb2": 90}
DEFAULT_OPTS = configs.VrrpOptions()


@dataclass(frozen=True)
class Scenario:
    """What to run: a fault, the VRRP options, and whether lb1 comes back afterwards."""

    name: str
    fault: str
    opts: configs.VrrpOptions = DEFAULT_OPTS
    bring_back: bool = True

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}, expected one of {FAULTS}")


def _advert(opts: configs.VrrpOptions) -> float:
    return opts.advert_int


def master_down_s(opts: configs.VrrpOptions, priority: int = 90) -> float:
    """RFC 5798 Master_Down_Interval: 3 x advert + Skew_Time ((256 - prio) / 256 x advert)."""
    a = _advert(opts)
    return 3 * a + (256 - priority) / 256 * a


def fault_timeout(opts: configs.VrrpOptions) -> float:
    """Generous deadline for the VIP to move: detection + 2 x Master_Down + 5 s of slack."""
    track = opts.track_interval * (opts.track_fall + 2) if opts.track else 0.0
    return track + 2 * master_down_s(opts) + 5.0


class Runner:
    """Runs scenarios on one topology; daemons are started fresh for every run."""

    def __init__(
        self,
        topo: Topology,
        kinds: tuple[str, str] = ("hakeeper", "hakeeper"),
        *,
        rng: random.Random | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.topo = topo
        self.kinds = kinds
        self.rng = rng or random.Random()
        self.log = log or (lambda _msg: None)
        self._run_no = 0

    # -- helpers ----------------------------------------------------------------------------
    def _conf(self, role: str, opts: configs.VrrpOptions) -> str:
        return configs.keepalived_conf(
            router_id=role,
            priority=PRIORITIES[role],
            master=role == "lb1",
            vip=VIP,
            check_script=str(self.topo.check_script),
            opts=opts,
        )

    def _reset(self) -> None:
        for role in LB_IPS:
            self.topo.cable(role, up=True)
            self.topo.start_lb_nginx(role)
            self.topo.remove_vip(role)

    def _served_by(self, prober: HttpProber, role: str, count: int, timeout: float) -> None:
        def ok() -> bool:
            last = prober.snapshot()[-count:]
            return len(last) == count and all(p.ok and p.served_by == role for p in last)

        wait_until(ok, timeout=timeout, interval=0.02, what=f"client served by {role}")

    # -- one run ----------------------------------------------------------------------------
    def run(self, sc: Scenario) -> RunResult:
        self._run_no += 1
        topo = self.topo
        opts = sc.opts
        self._reset()
        daemons = {
            role: VrrpDaemon(topo.lab, topo.ns[role], f"{role}-{self._run_no}", kind, topo.workdir)
            for role, kind in zip(LB_IPS, self.kinds, strict=True)
        }
        watches = {role: AddressWatch(topo.lab, topo.ns[role], VIP) for role in LB_IPS}
        budget = 4 * fault_timeout(opts) + 30.0
        sniffer = WireSniffer(topo.ns["client"], "eth0", VIP, max_seconds=budget)
        prober = HttpProber(topo.ns["client"], VIP, max_seconds=budget)
        notes: list[tuple[float, str, str]] = []
        t_return = t_fault = -1.0
        phase = 0.0
        try:
            sniffer.start()
            prober.start()
            d1, d2 = daemons["lb1"], daemons["lb2"]
            start_to = master_down_s(opts) + 10.0
            d1.start(self._conf("lb1", opts))
            wait_until(lambda: topo.has_vip("lb1"), timeout=start_to, what="VIP on lb1")
            d2.start(self._conf("lb2", opts))
            d2.wait_state("BACKUP", timeout=start_to)
            self._served_by(prober, "lb1", 10, timeout=start_to)
            if sc.fault == "return":
                d1.stop()
                wait_until(lambda: topo.has_vip("lb2"), timeout=fault_timeout(opts), what="lb2")
                self._served_by(prober, "lb2", 10, timeout=5.0)
            time.sleep(_advert(opts))  # settle, then a random phase of the advert timer
            phase = self.rng.uniform(0.0, _advert(opts))
            time.sleep(phase)
            t_fault = self._inject(sc, d1, notes)
            new = "lb1" if sc.fault == "return" else "lb2"
            if sc.fault != "return" or opts.preempt:
                wait_until(lambda: topo.has_vip(new), timeout=fault_timeout(opts), what="VIP moved")
                self._served_by(prober, new, 5, timeout=5.0)
                time.sleep(min(1.0, 3 * _advert(opts)))
            else:
                d1.wait_state("BACKUP", timeout=start_to)
                time.sleep(master_down_s(opts) + 0.5)  # long enough to see a wrong switch
            if sc.bring_back and sc.fault != "return":
                t_return = self._bring_back(sc, d1, notes)
                if opts.preempt:
                    wait_until(
                        lambda: topo.has_vip("lb1") and not topo.has_vip("lb2"),
                        timeout=fault_timeout(opts) + 5.0,
                        what="switch back to lb1",
                    )
                    self._served_by(prober, "lb1", 5, timeout=5.0)
                else:
                    d1.wait_state("BACKUP", timeout=start_to)
                    time.sleep(master_down_s(opts) + 0.5)
                time.sleep(min(0.5, 2 * _advert(opts)))
        finally:
            t_end = time.monotonic()
            prober.stop()
            sniffer.stop()
            for d in daemons.values():
                d.stop()
            for w in watches.values():
                w.close()
        obs = Observations(
            t_fault=t_fault,
            t_return=t_return,
            t_end=t_end,
            states={role: d.states() for role, d in daemons.items()},
            vip={role: w.events() for role, w in watches.items()},
            garps=[(g, topo.node_of_mac(g.mac)) for g in sniffer.snapshot()],
            adverts=[(a, topo.node_of_ip(a.src)) for a in sniffer.advert_snapshot()],
            probes=prober.snapshot(),
            notes=notes,
        )
        old, new = ("lb2", "lb1") if sc.fault == "return" else ("lb1", "lb2")
        return summarize(
            obs, scenario=sc.name, kinds=self.kinds, version=opts.version,
            advert_int=opts.advert_int, phase_ms=phase * 1000, old=old, new=new,
        )  # fmt: skip

    def _inject(self, sc: Scenario, d1: VrrpDaemon, notes: list[tuple[float, str, str]]) -> float:
        if sc.fault == "linkdown":  # a lost node: frozen first, so it cannot react at all
            d1.signal_group(signal.SIGSTOP)
        t0 = time.monotonic()
        if sc.fault == "kill":
            d1.kill()
            text = f"fault: kill -9 lb1's {d1.kind} (process group frozen, then killed)"
        elif sc.fault == "linkdown":
            self.topo.cable("lb1", up=False)
            d1.kill()
            text = f"fault: lb1 lost ({d1.kind} frozen, cable pulled, then killed)"
        elif sc.fault == "sigterm":
            d1.terminate()
            text = f"fault: SIGTERM to lb1's {d1.kind} (graceful stop)"
        elif sc.fault == "trackfail":
            self.topo.stop_lb_nginx("lb1")
            text = "fault: nginx stopped on lb1 (its vrrp_script check will fail)"
        else:
            d1.start(self._conf("lb1", sc.opts))
            text = f"lb1's {d1.kind} started again (it has the higher priority)"
        notes.append((t0, "fault", text))
        self.log(text)
        return t0

    def _bring_back(
        self, sc: Scenario, d1: VrrpDaemon, notes: list[tuple[float, str, str]]
    ) -> float:
        t = time.monotonic()
        self.topo.cable("lb1", up=True)
        self.topo.start_lb_nginx("lb1")
        if not d1.running:
            d1.stop()
            self.topo.remove_vip("lb1")  # a rebooted node comes back without the VIP
            d1.start(self._conf("lb1", sc.opts))
        notes.append(
            (
                t,
                "return",
                "lb1 back like a rebooted node: cable in, nginx up, "
                "leftover VIP removed, daemon started",
            )
        )
        return t


def lab_scenarios(fault: str, opts: configs.VrrpOptions) -> list[Scenario]:
    """The `hakeeper lab --scenario` choices ("all" = every fault in FAULTS order)."""
    chosen = FAULTS if fault == "all" else (fault,)
    return [Scenario(name=f, fault=f, opts=opts) for f in chosen]


def with_opts(sc: Scenario, **changes: object) -> Scenario:
    return replace(sc, opts=replace(sc.opts, **changes))  # type: ignore[arg-type]
