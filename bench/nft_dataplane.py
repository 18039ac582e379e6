"""L4 kernel data plane benchmark: hakeeper's nftables ruleset vs a hand-written DNAT ruleset.

Topology (network namespaces, as anchors/measured.md's "L4 veth" rows): client (wrk,
198.18.0.2) -- veth -- LB (198.18.0.1, VIP 198.18.0.10; 198.18.1.254) -- veth -- backend
namespace holding 198.18.1.1-3 with one nginx (1 worker, `return 200` of a 100-byte body,
keepalive_requests 1e6). The LB namespace runs, in turn:

- `hand`: the reference, one rule: `ip daddr VIP tcp dport 80 dnat to numgen inc mod 3 map
  { 0 : 198.18.1.1, 1 : 198.18.1.2, 2 : 198.18.1.3 }` in a nat prerouting chain;
- `hakeeper`: `NftDataplane` with the same virtual server (rr, NAT, three real servers),
  i.e. our table (dispatch verdict map + per-service chain + numgen dnat map);
- `routed` (context only): no NAT, wrk straight to 198.18.1.1 through the LB.

Each with `wrk -t1 -c50 -dN` keep-alive and `Connection: close` (new connection per request,
so every request crosses the DNAT rules); wrk and nginx pinned to CPU 1 (taskset). Rounds
alternate hand/hakeeper to spread the machine's noise. Prints req/s, p50/p99 and
hakeeper/hand ratios; target >= 0.95x.

Usage (root): .venv/bin/python bench/nft_dataplane.py [--duration 10] [--rounds 2] [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from wrktools import parse_wrk, wrk_argv

from hakeeper.conf.model import RealServer, VirtualServer
from hakeeper.dataplane.desired import ServiceCache, desired_state
from hakeeper.dataplane.nft import Nft, NftDataplane
from hakeeper.lab.netns import Lab, entered, wait_until

VIP = "198.18.0.10"
BACKENDS = ("198.18.1.1", "198.18.1.2", "198.18.1.3")
BODY = "x" * 100

NGINX = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 80 reuseport backlog=4096;
    location / {{ return 200 "{body}"; }}
  }}
}}
"""

HAND = f"""
table ip handnat {{
  chain pre {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {VIP} tcp dport 80 dnat to numgen inc mod 3 map {{ 0 : {BACKENDS[0]}, 1 : {BACKENDS[1]}, 2 : {BACKENDS[2]} }}
  }}
}}
"""  # noqa: E501


@dataclass
class Result:
    config: str
    mode: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk(
    lab: Lab, client: str, url: str, duration: int, close: bool
) -> tuple[float, float, float, int]:
    cmd = wrk_argv(duration, 50, close, "1")
    out = lab.run(client, [*cmd, url], timeout=duration + 30).stdout
    return parse_wrk(out)


def build(lab: Lab, workdir: Path) -> tuple[str, str, str]:
    client, lb, web = lab.add_ns("client"), lab.add_ns("lb"), lab.add_ns("web")
    lab.veth(client, "eth0", lb, "eth0")
    lab.veth(lb, "eth1", web, "eth0")
    lab.addr(client, "eth0", "198.18.0.2/24")
    lab.route(client, "198.18.1.0/24", "via", "198.18.0.1")
    lab.addr(lb, "eth0", "198.18.0.1/24")
    lab.addr(lb, "eth0", f"{VIP}/32")
    lab.addr(lb, "eth1", "198.18.1.254/24")
    lab.sysctl(lb, "net.ipv4.ip_forward", "1")
    for a in BACKENDS:
        lab.addr(web, "eth0", f"{a}/24")
    lab.route(web, "default", "via", "198.18.1.254")
    for ns in (client, web):
        lab.sysctl(ns, "net.ipv4.ip_local_port_range", "1024 65000")
        lab.sysctl(ns, "net.ipv4.tcp_tw_reuse", "1")
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX.format(dir=workdir, body=BODY))
    lab.popen(
        web,
        ["taskset", "-c", "1", "nginx", "-c", str(conf), "-e", str(workdir / "e")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: ":80 " in lab.run(web, ["ss", "-Hltn"]).stdout, timeout=10, what="nginx")
    return client, lb, web


def control_plane(lb: str, services: int, reals: int, changes: int) -> dict[str, float]:
    """Install `services` x `reals` through libnftables in the LB namespace, then time single
    pool changes (one backend out, then back): only the touched service is rewritten."""
    base = int(ipaddress.ip_address("198.18.2.0"))
    rs_base = int(ipaddress.ip_address("198.19.0.0"))
    vss = []
    for i in range(services):
        reals_t = tuple(
            RealServer(ipaddress.ip_address(rs_base + i * reals + j), 80) for j in range(reals)
        )
        vss.append(
            VirtualServer(
                address=ipaddress.ip_address(base + i),
                port=80,
                lvs_sched="wrr",
                real_servers=reals_t,
            )
        )
    out: dict[str, float] = {}
    with entered(lb):
        dp = NftDataplane(Nft(), inline=True)
        cache: ServiceCache = {}
        asyncio.run(dp.start())
        t0 = time.perf_counter()
        asyncio.run(dp.apply(desired_state(vss, None, cache)))
        out["install_ms"] = (time.perf_counter() - t0) * 1000
        times = []
        for k in range(changes):
            vs = vss[(k * 7919) % services]
            for pool in ([(r, 1) for r in vs.real_servers[1:]], None):
                pools = {vs.key: pool} if pool is not None else {}
                t0 = time.perf_counter()
                p = asyncio.run(dp.apply(desired_state(vss, pools, cache)))
                times.append((time.perf_counter() - t0) * 1000)
                assert p.counts()["services_unchanged"] == services - 1
        out["change_ms_median"] = statistics.median(times)
        out["change_ms_max"] = max(times)
        out["batch_ms_median_last"] = dp.nft.last_ms
        out["via_library"] = float(dp.nft.via == "libnftables")
        asyncio.run(dp.stop())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--services", type=int, default=1000, help="control-plane test size")
    ap.add_argument("--reals", type=int, default=10)
    ap.add_argument("--no-load", action="store_true", help="control-plane numbers only")
    args = ap.parse_args()
    results: list[Result] = []
    vs = VirtualServer(
        address=ipaddress.ip_address(VIP),
        port=80,
        lvs_sched="rr",
        real_servers=tuple(RealServer(ipaddress.ip_address(a), 80) for a in BACKENDS),
    )
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="hk-nftbench-") as tmp:
        client, lb, _web = build(lab, Path(tmp))
        cp = control_plane(lb, args.services, args.reals, 10)
        print(
            f"control plane ({'libnftables' if cp['via_library'] else 'nft -j'}, "
            f"{args.services} x {args.reals}): install {cp['install_ms']:.0f} ms, "
            f"one pool change {cp['change_ms_median']:.1f} ms median "
            f"(max {cp['change_ms_max']:.1f}), the rest untouched",
            flush=True,
        )
        if args.no_load:
            return 0
        dp = NftDataplane(Nft(netns=lb))
        url_vip = f"http://{VIP}/"

        def run(config: str, url: str, rnd: int) -> None:
            for mode, close in (("keep-alive", False), ("close", True)):
                wrk(lab, client, url, 1, close)  # warm-up
                rps, p50, p99, errors = wrk(lab, client, url, args.duration, close)
                results.append(Result(config, mode, rnd, rps, p50, p99, errors))
                print(
                    f"  round {rnd} {config:9} {mode:10} {rps:9.0f} req/s  p50 {p50:6.2f} ms"
                    f"  p99 {p99:6.2f} ms  errors {errors}",
                    flush=True,
                )

        for rnd in range(1, args.rounds + 1):
            order = ("hand", "hakeeper") if rnd % 2 else ("hakeeper", "hand")
            for config in order:
                if config == "hand":
                    subprocess.run(
                        ["ip", "netns", "exec", lb, "nft", "-f", "-"],
                        input=HAND,
                        text=True,
                        check=True,
                        timeout=10,
                    )
                    run("hand", url_vip, rnd)
                    lab.run(lb, ["nft", "delete", "table", "ip", "handnat"])
                else:
                    t0 = time.perf_counter()
                    asyncio.run(dp.start())
                    asyncio.run(dp.apply(desired_state([vs])))
                    setup_ms = (time.perf_counter() - t0) * 1000
                    print(f"  hakeeper ruleset installed in {setup_ms:.1f} ms (nft -j in netns)")
                    run("hakeeper", url_vip, rnd)
                    asyncio.run(dp.stop())
        run("routed", f"http://{BACKENDS[0]}/", 0)
    print()
    print(
        f"{'config':10} {'mode':10} {'mean req/s':>11} {'median':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7}  ratio(mean)  ratio(median)"
    )
    for mode in ("keep-alive", "close"):
        means: dict[str, float] = {}
        medians: dict[str, float] = {}
        for config in ("hand", "hakeeper", "routed"):
            rs = [r for r in results if r.config == config and r.mode == mode]
            if not rs:
                continue
            means[config] = statistics.mean(r.rps for r in rs)
            medians[config] = statistics.median(r.rps for r in rs)
            ratio = means[config] / means["hand"] if "hand" in means else float("nan")
            ratio_m = medians[config] / medians["hand"] if "hand" in medians else float("nan")
            print(
                f"{config:10} {mode:10} {means[config]:11.0f} {medians[config]:8.0f} "
                f"{statistics.mean(r.p50_ms for r in rs):7.2f} "
                f"{statistics.mean(r.p99_ms for r in rs):7.2f}  {ratio:10.3f}x  {ratio_m:12.3f}x"
            )
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
