"""The failover lab's network: client, switch, two LB nodes sharing the VIP, three web servers.

Owns building (and, through `Lab`, always tearing down) this topology in uniquely named
namespaces, all on one bridge in the "switch" namespace, 198.18.0.0/24 only:

    client 198.18.0.10 ─┐
    lb1    198.18.0.1  ─┤  (VIP 198.18.0.100 floats between lb1 and lb2; nginx on both,
    lb2    198.18.0.2  ─┼─ br0   proxying to web1..3 as in seed 000)
    web1..3 .11 .12 .13 ┘

The LB nodes get fixed locally administered MACs so gratuitous ARPs can be attributed.
No default route anywhere: nothing can leave the lab. The same layout as
shared/anchors/measured.md (two LB namespaces on one bridge, nginx on each serving the VIP).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hakeeper.lab import configs
from hakeeper.lab.daemons import start_nginx, wait_port
from hakeeper.lab.netns import Lab, VethLink

NET = "198.18.0"
VIP = f"{NET}.100"
CLIENT_IP = f"{NET}.10"
LB_IPS = {"lb1": f"{NET}.1", "lb2": f"{NET}.2"}
LB_MACS = {"lb1": "02:00:c6:12:00:01", "lb2": "02:00:c6:12:00:02"}
WEB_IPS = {f"web{i}": f"{NET}.{10 + i}" for i in (1, 2, 3)}


@dataclass
class Topology:
    """A built lab. `close()` ends every process and deletes every namespace and file."""

    lab: Lab
    workdir: Path
    ns: dict[str, str]  # role -> namespace name
    links: dict[str, VethLink]  # role -> its veth to the switch
    check_script: Path
    nginx: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    keep_files: bool = False

    @property
    def switch(self) -> str:
        return self.ns["switch"]

    def node_of_mac(self, mac: str) -> str:
        for role, m in LB_MACS.items():
            if m == mac.lower():
                return role
        return mac

    def node_of_ip(self, ip: str) -> str:
        for role, addr in LB_IPS.items():
            if addr == ip:
                return role
        return ip

    def lb_nginx_conf(self, role: str) -> Path:
        return self.workdir / f"{role}.nginx.conf"

    def start_lb_nginx(self, role: str) -> None:
        """(Re)start nginx on an LB node and wait until it accepts on port 80."""
        proc = self.nginx.get(role)
        if proc is not None and proc.poll() is None:
            return
        if proc is not None:
            self.lab.stop(proc)
        self.nginx[role] = start_nginx(self.lab, self.ns[role], self.lb_nginx_conf(role))
        wait_port(self.lab, self.ns[role], 80)

    def stop_lb_nginx(self, role: str) -> None:
        """Stop nginx on an LB node (SIGTERM to its process group, by PID)."""
        proc = self.nginx.get(role)
        if proc is not None:
            self.lab.stop(proc, timeout=2.0)

    def cable(self, role: str, *, up: bool) -> None:
        """Plug or pull the node's cable: the switch-side port goes down/up (carrier follows)."""
        link = self.links[role]
        self.lab.link_set(link.peer_ns, link.peer, up=up)

    def has_vip(self, role: str) -> bool:
        return any(a.split("/")[0] == VIP for a in self.lab.addresses(self.ns[role], "eth0"))

    def remove_vip(self, role: str) -> None:
        """Remove a VIP left behind (a killed daemon leaves it, as keepalived does)."""
        if self.has_vip(role):
            self.lab.ip(self.ns[role], "addr", "del", f"{VIP}/24", "dev", "eth0")

    def close(self) -> None:
        try:
            self.lab.close()
        finally:
            if not self.keep_files:
                shutil.rmtree(self.workdir, ignore_errors=True)


def build(*, prefix: str = "hk", keep_files: bool = False) -> Topology:
    """Create namespaces, links, addresses, web servers and LB nginx; wait until they serve.

    On any failure everything created so far is torn down before the error propagates.
    """
    workdir = Path(tempfile.mkdtemp(prefix="hklab-"))
    lab = Lab(prefix)
    topo: Topology | None = None
    try:
        ns: dict[str, str] = {}
        links: dict[str, VethLink] = {}
        sw = lab.add_switch()
        ns["switch"] = sw
        hosts = {"client": CLIENT_IP, **LB_IPS, **WEB_IPS}
        for role, ip in hosts.items():
            ns[role] = lab.add_ns(role)
            links[role] = lab.connect(ns[role], sw, mac=LB_MACS.get(role))
            lab.addr(ns[role], "eth0", f"{ip}/24")
        for role in LB_IPS:
            # answer ARP for the VIP only from the interface that holds it
            lab.sysctl(ns[role], "net.ipv4.conf.all.arp_ignore", "1")
        check = workdir / "check_nginx.sh"
        check.write_text(configs.check_nginx_script())
        check.chmod(0o755)
        topo = Topology(lab, workdir, ns, links, check, keep_files=keep_files)
        for role in WEB_IPS:
            conf = workdir / f"{role}.nginx.conf"
            conf.write_text(configs.web_nginx_conf(workdir=str(workdir), name=role))
            topo.nginx[role] = start_nginx(lab, ns[role], conf)
        for role in LB_IPS:
            topo.lb_nginx_conf(role).write_text(
                configs.lb_nginx_conf(
                    workdir=str(workdir), name=role, web_ips=list(WEB_IPS.values())
                )
            )
            topo.nginx[role] = start_nginx(lab, ns[role], topo.lb_nginx_conf(role))
        for role in (*WEB_IPS, *LB_IPS):
            wait_port(lab, ns[role], 80)
        return topo
    except BaseException:
        if topo is not None:
            topo.close()
        else:
            lab.close()
            shutil.rmtree(workdir, ignore_errors=True)
        raise
