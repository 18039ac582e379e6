"""`hakeeper run -f keepalived.conf --nginx nginx.conf`: VRRP and the L7 proxy in one daemon.

Topology: client (198.18.0.2), the node `lb` (198.18.0.3) and two HTTP backends web1/web2
(198.18.0.11/12) on one switch. The daemon runs in `lb` as a real subprocess: its
instance takes the VIP 198.18.0.100 (tracked by the built-in `hakeeper-proxy` script),
the embedded proxy (2 workers, `listen VIP:80`, open before the VIP is) sends requests to
`upstream web`. Shown here:
HTTP through the VIP reaches the backend via the proxy; SIGHUP with the upstream changed
takes effect while a client opens new connections all along (none refused or failed);
workers killed by SIGKILL are replaced; SIGTERM removes the VIP and leaves no process
(checked by PID).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hakeeper.lab.netns import Lab, wait_until
from hakeeper.runtime.control import ControlError, query

pytestmark = pytest.mark.root

VIP = "198.18.0.100"

_BACKEND = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
name = sys.argv[1].encode()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(name)))
        self.end_headers()
        self.wfile.write(name)
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("0.0.0.0", 80), H).serve_forever()
"""

# new connection per request until the stop file appears (bounded in count and time)
_LOAD = r"""
import http.client, json, os, sys, time
host, stop, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + float(sys.argv[4])
progress = sys.argv[5] if len(sys.argv) > 5 else ""
seen, errors = {}, []
for _ in range(limit):
    if os.path.exists(stop) or time.monotonic() > deadline:
        break
    try:
        c = http.client.HTTPConnection(host, 80, timeout=5)
        c.request("GET", "/")
        r = c.getresponse()
        body = r.read().decode()
        key = body if r.status == 200 else f"HTTP {r.status}"
        seen[key] = seen.get(key, 0) + 1
        c.close()
    except OSError as exc:
        errors.append(type(exc).__name__ + ": " + str(exc))
    if progress:  # what was seen so far, for the test to wait on
        with open(progress + ".tmp", "w") as f:
            json.dump(seen, f)
        os.replace(progress + ".tmp", progress)
print(json.dumps({"seen": seen, "errors": errors}))
"""

KEEPALIVED = f"""
global_defs {{
    router_id lb
}}
vrrp_script chk_proxy {{
    script "hakeeper-proxy"
    interval 0.5
    fall 1
    rise 1
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 81
    priority 150
    advert_int 0.1
    version 3
    virtual_ipaddress {{
        {VIP}/24
    }}
    track_script {{
        chk_proxy
    }}
}}
"""


def nginx_conf(backend: str) -> str:
    return f"""
worker_processes 2;
events {{ worker_connections 1024; }}
http {{
    upstream web {{
        server {backend}:80;
    }}
    server {{
        listen {VIP}:80;
        location / {{
            proxy_pass http://web;
        }}
    }}
}}
"""


class Node:
    def __init__(self, lab: Lab, ns: str, workdir: Path) -> None:
        self.lab, self.ns, self.workdir = lab, ns, workdir
        self.kconf = workdir / "keepalived.conf"
        self.nconf = workdir / "nginx.conf"
        self.sock = str(workdir / "hk.sock")
        self.log = workdir / "hk.log"
        self.kconf.write_text(KEEPALIVED)
        self.nconf.write_text(nginx_conf("198.18.0.11"))
        argv = [
            sys.executable, "-m", "hakeeper", "run", "-n", "-l",
            "-f", str(self.kconf), "--nginx", str(self.nconf),
            "--control", self.sock, "--status-file", str(workdir / "hk.json"),
        ]  # fmt: skip
        with self.log.open("a") as log:
            self.proc = lab.popen(ns, argv, stdout=log, stderr=subprocess.STDOUT)

    def status(self) -> dict[str, Any]:
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited: {self.log.read_text()}")
        data = query(self.sock, "status", timeout=2.0)
        assert isinstance(data, dict)
        return data

    def try_status(self) -> dict[str, Any] | None:
        try:
            return self.status()
        except ControlError:
            return None

    def workers(self) -> list[int]:
        (listener,) = self.status()["l7"]["listeners"]
        return list(listener["workers"])

    def has_vip(self) -> bool:
        return any(a.startswith(VIP + "/") for a in self.lab.addresses(self.ns, "eth0"))


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


@pytest.fixture
def node(workdir: Path) -> Iterator[tuple[Lab, str, Node]]:
    with Lab() as lab:
        sw = lab.add_switch()
        names = {}
        for role, ip in (("client", "2"), ("lb", "3"), ("web1", "11"), ("web2", "12")):
            ns = lab.add_ns(role)
            lab.connect(ns, sw)
            lab.addr(ns, "eth0", f"198.18.0.{ip}/24")
            names[role] = ns
        for web in ("web1", "web2"):
            lab.popen(names[web], [sys.executable, "-c", _BACKEND, web])
            wait_until(
                lambda w=web: ":80 " in lab.run(names[w], ["ss", "-Hltn"]).stdout,
                timeout=10,
                what=f"{web} listening",
            )
        n = Node(lab, names["lb"], workdir)
        try:
            yield lab, names["client"], n
        finally:
            if n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
                n.proc.wait(20)


def _get(lab: Lab, client: str) -> str:
    out = lab.run(
        client,
        [sys.executable, "-c", _LOAD, VIP, "/nonexistent", "1", "5"],
        timeout=15,
    ).stdout
    result = json.loads(out)
    return ",".join(result["seen"]) or "; ".join(result["errors"])


def test_vrrp_and_l7_in_one_daemon(node: tuple[Lab, str, Node]) -> None:
    lab, client, n = node
    wait_until(lambda: n.try_status() is not None, timeout=15, what="control socket")
    wait_until(n.has_vip, timeout=10, what="VIP on lb")
    status = n.status()
    assert status["instances"][0]["state"] == "MASTER"
    assert status["l7"]["serving"] is True
    assert [s["last_status"] for s in status["scripts"] if s["name"] == "chk_proxy"] == [0]
    workers = n.workers()
    assert len(workers) == 2
    assert _get(lab, client) == "web1"

    # SIGHUP with a changed upstream, under a stream of new connections
    stop = n.workdir / "stop-load"
    progress = n.workdir / "load-progress.json"
    load = lab.popen(
        client,
        [sys.executable, "-c", _LOAD, VIP, str(stop), "3000", "40", str(progress)],
        stdout=subprocess.PIPE,
        text=True,
    )

    def seen(name: str) -> int:
        try:
            return int(json.loads(progress.read_text()).get(name, 0))
        except (OSError, ValueError):
            return 0

    # the load is under way before the reload (it is checked below)
    wait_until(lambda: seen("web1") > 0, timeout=20, what="load served by web1")
    n.nconf.write_text(nginx_conf("198.18.0.12"))
    n.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: n.status()["l7"]["reloads"]["ok"] == 1, timeout=15, what="L7 reloaded")
    wait_until(lambda: _get(lab, client) == "web2", timeout=10, what="upstream changed")
    wait_until(lambda: seen("web2") > 0, timeout=20, what="load served by web2 too")
    stop.write_text("")
    out, _ = load.communicate(timeout=30)
    result = json.loads(out)
    assert result["errors"] == [], result
    assert result["seen"].get("web1", 0) > 0 and result["seen"].get("web2", 0) > 0, result
    assert set(result["seen"]) <= {"web1", "web2"}, result
    new_workers = n.workers()
    assert not set(new_workers) & set(workers)
    wait_until(lambda: not any(_alive(p) for p in workers), timeout=35, what="old workers gone")

    # a bad nginx.conf keeps the running one
    n.nconf.write_text("http { bogus_directive; }\n")
    n.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: n.status()["l7"]["reloads"]["failed"] == 1, timeout=15, what="refused")
    assert n.workers() == new_workers
    assert _get(lab, client) == "web2"

    # workers killed: replaced (nginx's master respawns them)
    for pid in new_workers:
        os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: len(n.workers()) == 2 and not set(n.workers()) & set(new_workers),
        timeout=15,
        what="workers replaced",
    )
    wait_until(lambda: _get(lab, client) == "web2", timeout=10, what="serving again")

    # SIGTERM: the VIP goes, every process of ours ends
    last = n.workers()
    daemon_pid = n.status()["pid"]
    n.proc.send_signal(signal.SIGTERM)
    assert n.proc.wait(30) == 0, n.log.read_text()
    assert not n.has_vip()
    assert not _alive(daemon_pid)
    for pid in last + workers + new_workers:
        assert not _alive(pid), pid
