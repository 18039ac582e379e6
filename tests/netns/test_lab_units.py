"""The failover lab's pure parts: outage arithmetic, GARP parsing, timeline figures, configs.

No root needed: these run everywhere. The configs are also checked by `hakeeper check` and,
when installed, by Debian's `keepalived -t` (both daemons must read the lab's files).
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from hakeeper.lab import configs
from hakeeper.lab.probe import (
    AdvertSeen,
    Garp,
    Probe,
    longest_outage_ms,
    outages,
    parse_garp,
    parse_vrrp4,
)
from hakeeper.lab.scenarios import Scenario, fault_timeout, master_down_s
from hakeeper.lab.timeline import Event, Observations, render, summarize

VIP = "198.18.0.100"


def probes(pattern: str, start: float = 10.0, step: float = 0.01) -> list[Probe]:
    """'.' = ok, 'x' = failed, one probe every `step` seconds."""
    return [
        Probe(start + i * step, c == ".", "lb2" if c == "." else "") for i, c in enumerate(pattern)
    ]


def test_outage_is_first_failure_to_next_success() -> None:
    ps = probes("...xxx..x.....")
    runs = outages(ps)
    assert [(round(r.ms), r.failed) for r in runs] == [(30, 3), (10, 1)]
    assert round(longest_outage_ms(ps)) == 30
    assert longest_outage_ms(probes("......")) == 0.0


def test_outage_window_and_open_run() -> None:
    ps = probes("..xx....xxxx")
    assert round(longest_outage_ms(ps, since=10.05)) == 30  # the open run ends at the last probe
    assert round(longest_outage_ms(ps, until=10.05)) == 20
    assert outages(list(reversed(ps))) == outages(ps)  # order of arrival does not matter


def arp(op: int, sha: str, spa: str, tpa: str) -> bytes:
    mac = bytes.fromhex(sha.replace(":", ""))
    eth = b"\xff" * 6 + mac + b"\x08\x06"
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op)
    body += mac + socket.inet_aton(spa) + b"\x00" * 6 + socket.inet_aton(tpa)
    return eth + body + b"\x00" * 18


def test_parse_garp() -> None:
    ip = socket.inet_aton(VIP)
    assert parse_garp(arp(1, "02:00:c6:12:00:02", VIP, VIP), ip) == ("02:00:c6:12:00:02", 1)
    assert parse_garp(arp(2, "02:00:c6:12:00:01", VIP, VIP), ip) == ("02:00:c6:12:00:01", 2)
    assert parse_garp(arp(1, "02:00:c6:12:00:02", "198.18.0.2", VIP), ip) is None  # a request
    assert parse_garp(arp(1, "02:00:c6:12:00:02", "198.18.0.7", "198.18.0.7"), ip) is None
    assert parse_garp(b"\x00" * 10, ip) is None
    assert parse_garp(arp(1, "02:00:c6:12:00:02", VIP, VIP)[:30], ip) is None
    ipv4 = bytearray(arp(1, "02:00:c6:12:00:02", VIP, VIP))
    ipv4[12:14] = b"\x08\x00"
    assert parse_garp(bytes(ipv4), ip) is None


def test_parse_vrrp4() -> None:
    ip = bytes([0x45, 0, 0, 40, 0, 0, 0, 0, 255, 112, 0, 0])
    ip += socket.inet_aton("198.18.0.1") + socket.inet_aton("224.0.0.18")
    vrrp = bytes([0x31, 51, 150, 1, 0, 10, 0, 0]) + socket.inet_aton(VIP)
    frame = b"\x01\x00\x5e\x00\x00\x12" + b"\x02" * 6 + b"\x08\x00" + ip + vrrp
    assert parse_vrrp4(frame) == ("198.18.0.1", 51, 150)
    assert parse_vrrp4(frame[:40]) is None
    tcp = bytearray(frame)
    tcp[14 + 9] = 6
    assert parse_vrrp4(bytes(tcp)) is None
    bad_type = bytearray(frame)
    bad_type[34] = 0x32
    assert parse_vrrp4(bytes(bad_type)) is None


def test_summarize_figures_and_timeline() -> None:
    t0 = 100.0
    ps = probes("." * 10 + "x" * 30 + "." * 60, start=t0 - 0.1 + 0.005)
    obs = Observations(
        t_fault=t0,
        t_return=t0 + 0.8,
        t_end=t0 + 2.0,
        states={"lb1": [(t0 - 5, "MASTER"), (t0 + 1.2, "MASTER")],
                "lb2": [(t0 - 4, "BACKUP"), (t0 + 0.29, "MASTER"), (t0 + 1.21, "BACKUP")]},
        vip={"lb1": [(t0 - 5, True), (t0 + 1.21, True)],
             "lb2": [(t0 + 0.3, True), (t0 + 1.21, False), (t0 + 3.0, True)]},
        garps=[(Garp(t0 + 0.301 + i * 0.001, "02:00:c6:12:00:02", 1), "lb2") for i in range(5)],
        adverts=[(AdvertSeen(t0 - 0.25 + i * 0.1, "198.18.0.1", 51, 100), "lb1") for i in range(3)]
        + [(AdvertSeen(t0 + 0.3, "198.18.0.2", 51, 90), "lb2")],
        probes=ps,
        notes=[(t0, "fault", "fault: test"), (t0 + 0.8, "return", "back")],
    )  # fmt: skip
    r = summarize(obs, scenario="linkdown", kinds=("hakeeper", "keepalived"), version=3,
                  advert_int=0.1, phase_ms=42.0)  # fmt: skip
    assert r.vip_moved_ms == 300.0
    assert r.master_ms == 290.0
    assert r.garp_ms == 301.0
    assert r.vip_after_last_advert_ms == 350.0  # lb1's last advert was at -50 ms
    assert 295 <= r.outage_ms <= 305
    assert r.returned and r.switched_back_ms == 410.0
    assert r.return_outage_ms == 0.0
    texts = [e.text for e in r.events]
    assert "GARP burst from lb2 x5" in texts  # five GARPs are one burst
    assert "lb2 first advert since (priority 90)" in texts
    assert all(e.t_ms <= 2000 for e in r.events)  # nothing after the end (teardown)
    assert [e.t_ms for e in r.events] == sorted(e.t_ms for e in r.events)
    out = render(r)
    assert "client longest outage 300 ms" in out or "client longest outage 29" in out
    assert "VIP back on lb1 after 410 ms" in out
    assert r.events[0] == Event(-50.0, "wire", "lb1 last advert before (prio 100)")
    assert r.to_json()["events"][1]["source"] == "fault"


def test_master_down_interval() -> None:
    v3 = configs.VrrpOptions(version=3, advert_int=0.1)
    assert master_down_s(v3, 90) == pytest.approx(0.3 + 166 / 256 * 0.1)
    assert master_down_s(configs.VrrpOptions(), 90) == pytest.approx(3 + 166 / 256)
    assert fault_timeout(v3) > master_down_s(v3)
    with pytest.raises(ValueError):
        Scenario("x", "explode")


OPTION_SETS = [
    configs.VrrpOptions(),  # seed 000: v2 1 s, PASS, sync group, unweighted track
    configs.VrrpOptions(version=3, advert_int=0.1),
    configs.VrrpOptions(track_weight=-20, sync_group=False),
    configs.VrrpOptions(preempt=False, track=False, sync_group=False),
]


@pytest.mark.parametrize("opts", OPTION_SETS)
def test_lab_configs_are_read_by_hakeeper_check(opts: configs.VrrpOptions, tmp_path: Path) -> None:
    text = configs.keepalived_conf(router_id="lb1", priority=100, master=True, vip=VIP,
                                   check_script="/bin/true", opts=opts)  # fmt: skip
    path = tmp_path / "keepalived.conf"
    path.write_text(text)
    res = subprocess.run([sys.executable, "-m", "hakeeper", "check", "-f", str(path)],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert " 0 error(s)" in res.stdout + res.stderr
    assert ("auth_type PASS" in text) == (opts.version == 2)
    assert ("nopreempt" in text) == (not opts.preempt)
    assert ("weight -20" in text) == (opts.track_weight == -20)
    keepalived = shutil.which("keepalived", path="/usr/sbin:/sbin:/usr/bin")
    if keepalived is not None and os.geteuid() == 0:
        ka = subprocess.run([keepalived, "-t", "-f", str(path)], capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
        # only the seed's own quirks: a one-member sync group (rc 5), scripts without
        # script_security (rc 6); never "cannot run" (4)
        allowed = ("SECURITY VIOLATION - scripts are being executed", "Sync group VG1 has only 1")
        lines = [ln for ln in (ka.stdout + ka.stderr).splitlines() if ln.strip()]
        assert ka.returncode in (0, 5, 6), lines
        assert all(ln.startswith(allowed) for ln in lines), lines


def test_nginx_configs_name_the_servers() -> None:
    lb = configs.lb_nginx_conf(workdir="/tmp/x", name="lb1", web_ips=["198.18.0.11", "198.18.0.12"])
    assert "upstream esbwebserver" in lb and "proxy_pass http://esbwebserver;" in lb
    assert "server 198.18.0.11:80;" in lb and "X-Served-By lb1" in lb
    web = configs.web_nginx_conf(workdir="/tmp/x", name="web2")
    assert 'return 200 "web2\\n";' in web
    assert "/dev/tcp/127.0.0.1/80" in configs.check_nginx_script()
