"""Differential test: the real nginx (Debian 1.22) and our balancers choose the same upstreams.

One nginx process (master_process off, loopback only) serves three tiny backends that answer
with their own port, and a front server that proxies to upstreams using each deterministic
method. Sequential requests make the sequence comparable with our pure balancers fed the
same servers. A dead backend checks the passive-health path (fails, effective weight cut).
"""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from hakeeper.balance import make_balancer
from hakeeper.balance.nginx import UpstreamServer

pytestmark = pytest.mark.interop("nginx")


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nginx")
    p1, p2, p3, dead, dead2, front = _free_ports(6)
    b = [p1, p2, p3]
    srv = [f"127.0.0.1:{p}" for p in b]
    upstreams = {
        "rr": f"server {srv[0]} weight=5; server {srv[1]}; server {srv[2]};",
        "lc": f"least_conn; server {srv[0]} weight=3; server {srv[1]} weight=2; server {srv[2]};",
        "hash": f"hash $arg_k; server {srv[0]} weight=2; server {srv[1]}; server {srv[2]};",
        "chash": (
            f"hash $arg_k consistent; server {srv[0]} weight=2; server {srv[1]}; server {srv[2]};"
        ),
        "iph": f"ip_hash; server {srv[0]}; server {srv[1]} weight=3; server {srv[2]};",
        "dead": (
            f"server 127.0.0.1:{dead} weight=3 max_fails=3 fail_timeout=60; "
            f"server {srv[1]}; server {srv[2]} weight=2;"
        ),
        "backup": (
            f"server 127.0.0.1:{dead} max_fails=2 fail_timeout=60; server {srv[0]} down; "
            f"server {srv[1]} backup; server {srv[2]} weight=2 backup;"
        ),
        "alldead": (f"server 127.0.0.1:{dead} max_fails=1; server 127.0.0.1:{dead2} max_fails=1;"),
    }
    conf = ["worker_processes 1;", "daemon off;", "master_process off;", f"pid {tmp}/nginx.pid;"]
    conf += [f"error_log {tmp}/error.log;", "events { worker_connections 64; }", "http {"]
    conf += ["access_log off;"]
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        conf.append(f"{d}_temp_path {tmp}/{d};")
    for name, body in upstreams.items():
        conf.append(f"upstream {name} {{ {body} }}")
    for p in b:
        conf.append(f'server {{ listen 127.0.0.1:{p}; location / {{ return 200 "{p}"; }} }}')
    locs = " ".join(f"location /{n} {{ proxy_pass http://{n}; }}" for n in upstreams)
    conf.append(f"server {{ listen 127.0.0.1:{front}; {locs} }}")
    conf.append("}")
    (tmp / "nginx.conf").write_text("\n".join(conf) + "\n")
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen(
        [binary, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(tmp / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", front), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    pytest.fail(f"nginx did not start: {err}")
                time.sleep(0.02)
        yield {"front": front, "ports": b, "dead": dead, "tmp": Path(tmp)}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def fetch(front: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", front, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read().decode()
        return body if resp.status == 200 else str(resp.status)
    finally:
        conn.close()


def ours(method, servers, n, key_of=lambda i: b"", client=None):
    bal = make_balancer(method, servers)
    out = []
    for i in range(n):
        req = bal.begin(key=key_of(i), client=client)
        while True:
            p = req.get(0)
            assert p is not None
            if p.name.endswith(":dead"):
                req.free(p, 0, failed=True)
                continue
            req.free(p, 0)
            out.append(p.name.rsplit(":", 1)[1])
            break
    return out


def servers(ports, weights, **extra):
    return [
        UpstreamServer(f"127.0.0.1:{p}", w, **extra) for p, w in zip(ports, weights, strict=True)
    ]


def test_round_robin_sequence_matches_nginx(nginx):
    got = [fetch(nginx["front"], "/rr") for _ in range(21)]
    assert got == ours("round_robin", servers(nginx["ports"], [5, 1, 1]), 21)


def test_least_conn_sequence_matches_nginx(nginx):
    got = [fetch(nginx["front"], "/lc") for _ in range(18)]
    assert got == ours("least_conn", servers(nginx["ports"], [3, 2, 1]), 18)


def test_hash_key_matches_nginx(nginx):
    keys = [f"user{i}".encode() for i in range(40)]
    got = [fetch(nginx["front"], f"/hash?k={k.decode()}") for k in keys]
    assert got == ours("hash", servers(nginx["ports"], [2, 1, 1]), 40, key_of=keys.__getitem__)


def test_consistent_hash_matches_nginx(nginx):
    keys = [f"/obj/{i}".encode() for i in range(60)]
    got = [fetch(nginx["front"], f"/chash?k={k.decode()}") for k in keys]
    want = ours("hash_consistent", servers(nginx["ports"], [2, 1, 1]), 60, key_of=keys.__getitem__)
    assert got == want


def test_ip_hash_matches_nginx(nginx):
    got = {fetch(nginx["front"], "/iph") for _ in range(5)}
    want = ours("ip_hash", servers(nginx["ports"], [1, 3, 1]), 5, client=IPv4Address("127.0.0.1"))
    assert got == set(want) and len(got) == 1


def test_passive_health_with_dead_peer_matches_nginx(nginx):
    got = [fetch(nginx["front"], "/dead") for _ in range(24)]
    p = nginx["ports"]
    model = [
        UpstreamServer("127.0.0.1:dead", 3, max_fails=3, fail_timeout=60),
        UpstreamServer(f"127.0.0.1:{p[1]}", 1),
        UpstreamServer(f"127.0.0.1:{p[2]}", 2),
    ]
    assert got == ours("round_robin", model, 24)


def test_backup_and_down_match_nginx(nginx):
    got = [fetch(nginx["front"], "/backup") for _ in range(12)]
    p = nginx["ports"]
    model = [
        UpstreamServer("127.0.0.1:dead", max_fails=2, fail_timeout=60),
        UpstreamServer(f"127.0.0.1:{p[0]}", down=True),
        UpstreamServer(f"127.0.0.1:{p[1]}", backup=True),
        UpstreamServer(f"127.0.0.1:{p[2]}", 2, backup=True),
    ]
    assert got == ours("round_robin", model, 12)
    assert str(p[0]) not in got


def test_all_failed_stays_failed_like_nginx(nginx):
    """Request 1 fails on both peers; requests 2 and 3 find none live (502, "no live
    upstreams") without trying them: nginx 1.22 does not reset `fails` when all failed."""
    log = nginx["tmp"] / "error.log"

    def counts() -> tuple[int, int]:
        text = log.read_text(errors="replace")
        return text.count("connect() failed"), text.count("no live upstreams")

    observed = []
    for _ in range(3):
        before = counts()
        assert fetch(nginx["front"], "/alldead") == "502"
        after = counts()
        observed.append((after[0] - before[0], after[1] - before[1]))

    model = []
    bal = make_balancer(
        "round_robin", [UpstreamServer("d1", max_fails=1), UpstreamServer("d2", max_fails=1)]
    )
    for _ in range(3):
        req = bal.begin()
        connects = no_live = 0
        while True:
            p = req.get(0)
            if p is None:
                no_live += 1
                break
            connects += 1
            req.free(p, 0, failed=True)
            if req.tries == 0:
                break
        model.append((connects, no_live))
    assert observed == model == [(2, 0), (0, 1), (0, 1)]
