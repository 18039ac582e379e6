"""`hakeeper lab`: build the failover lab, run scenarios, print timelines (or JSON).

Owns the subcommand's options and its handler: checks prerequisites (root, ip, nginx, and
keepalived when a node runs it), builds the topology, runs each chosen scenario `--runs`
times with the chosen daemon on each node, prints each run's timeline and a summary, and
tears everything down on every exit path (normal end, error, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import sys
from types import FrameType

from hakeeper.lab import configs, topology
from hakeeper.lab.daemons import KEEPALIVED, KINDS, NGINX
from hakeeper.lab.scenarios import FAULTS, Runner, lab_scenarios
from hakeeper.lab.timeline import RunResult, render


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lab",
        help="failover lab: client, two LB nodes sharing a VIP, web servers, in namespaces",
        description=(
            "Build a client, a switch, two LB nodes (nginx + a VRRP daemon each, sharing a VIP) "
            "and three web servers in network namespaces (198.18.0.0/24), probe the VIP every "
            "10 ms, inject a failure, bring the node back, and print the timeline. Needs root."
        ),
    )
    p.add_argument("--node1", choices=KINDS, default="hakeeper", help="daemon on lb1 (prio 100)")
    p.add_argument("--node2", choices=KINDS, default="hakeeper", help="daemon on lb2 (prio 90)")
    p.add_argument("--scenario", choices=(*FAULTS, "all"), default="all")
    p.add_argument("--version", type=int, choices=(2, 3), default=3, help="VRRP version")
    p.add_argument(
        "--advert-int",
        type=float,
        default=None,
        metavar="S",
        help="advert interval (default: 0.1 s for v3, 1 s for v2 as in seed 000)",
    )
    p.add_argument("--runs", type=int, default=1, metavar="N", help="runs per scenario")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--seed", type=int, default=None, help="random seed for the fault phase")
    p.add_argument("--keep-files", action="store_true", help="keep configs and logs")
    p.add_argument("--prefix", default="hk", help=argparse.SUPPRESS)  # namespace names (tests)
    p.set_defaults(handler=run_lab)


def _missing(kinds: tuple[str, str]) -> list[str]:
    out = []
    if os.geteuid() != 0:
        out.append("root (network namespaces): run it with sudo")
    if shutil.which("ip") is None and not os.path.exists("/usr/sbin/ip"):
        out.append("iproute2 `ip`")
    if not os.path.exists(NGINX) and shutil.which(NGINX) is None:
        out.append("nginx (sudo bash scripts/setup installs it)")
    if "keepalived" in kinds and not os.path.exists(KEEPALIVED):
        out.append("keepalived (sudo bash scripts/setup installs it)")
    return out


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    del frame
    raise KeyboardInterrupt(f"signal {signum}")


def summary_lines(results: list[RunResult]) -> list[str]:
    """Median (min-max) per scenario of the outage and VIP-moved figures."""
    lines = ["scenario    runs  client outage ms        VIP moved ms          switched back ms"]
    for name in dict.fromkeys(r.scenario for r in results):
        rs = [r for r in results if r.scenario == name]
        cols = []
        for vals in (
            [r.outage_ms for r in rs],
            [r.vip_moved_ms for r in rs],
            [r.switched_back_ms for r in rs],
        ):
            good = [v for v in vals if v >= 0]
            if not good:
                cols.append("-")
            else:
                cols.append(f"{statistics.median(good):.0f} ({min(good):.0f}-{max(good):.0f})")
        lines.append(f"{name:<11} {len(rs):>4}  {cols[0]:<22}  {cols[1]:<20}  {cols[2]}")
    return lines


def run_lab(args: argparse.Namespace) -> int:
    kinds = (str(args.node1), str(args.node2))
    missing = _missing(kinds)
    if missing:
        print("hakeeper lab: missing " + "; ".join(missing), file=sys.stderr)
        return 2
    if re.fullmatch(r"[a-z][a-z0-9]{0,7}", args.prefix) is None:
        print("hakeeper lab: --prefix must be 1-8 lowercase letters/digits", file=sys.stderr)
        return 2
    if args.runs < 1 or args.runs > 20:
        print("hakeeper lab: --runs must be 1..20", file=sys.stderr)
        return 2
    advert = args.advert_int if args.advert_int is not None else (1.0 if args.version == 2 else 0.1)
    if args.version == 2 and advert != int(advert):
        print("hakeeper lab: VRRPv2 advert_int is whole seconds", file=sys.stderr)
        return 2
    if not 0.05 <= advert <= 10:
        print("hakeeper lab: --advert-int must be 0.05..10 s", file=sys.stderr)
        return 2
    opts = configs.VrrpOptions(version=args.version, advert_int=advert)
    rng = random.Random(args.seed)
    quiet = bool(args.json)

    def say(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    results: list[RunResult] = []
    topo = None
    try:
        say(f"building the lab (namespaces, nginx on lb1/lb2 and web1..3); VIP {topology.VIP}")
        topo = topology.build(prefix=args.prefix, keep_files=args.keep_files)
        names = " ".join(f"{role}={name}" for role, name in topo.ns.items())
        print(f"lab ready: {names}; files in {topo.workdir}", file=sys.stderr, flush=True)
        runner = Runner(topo, kinds, rng=rng)
        for sc in lab_scenarios(args.scenario, opts):
            for _ in range(args.runs):
                result = runner.run(sc)
                results.append(result)
                say(render(result))
        if quiet:
            print(json.dumps([r.to_json() for r in results], indent=2))
        else:
            print("\n".join(summary_lines(results)))
            if args.keep_files:
                print(f"configs and daemon logs kept in {topo.workdir}")
        return 0
    except KeyboardInterrupt:
        print("hakeeper lab: interrupted, tearing down", file=sys.stderr)
        return 130
    except (TimeoutError, RuntimeError, OSError) as exc:
        print(f"hakeeper lab: {exc}", file=sys.stderr)
        if topo is not None:
            print(f"(daemon logs were in {topo.workdir}; use --keep-files to keep them)",
                  file=sys.stderr)  # fmt: skip
        return 1
    finally:
        if topo is not None:
            topo.close()
        signal.signal(signal.SIGTERM, old_term)
