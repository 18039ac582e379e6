"""Built-in lab configs derived from the seed tutorials (000: nginx + keepalived pair, 004).

Owns the text of every file the failover lab writes: each LB node's keepalived.conf (seed
000's master/backup pair: vrrp_script check_run, sync group VG1, PASS auth on VRRPv2,
priorities 100/90 as in shared/anchors/measured.md), the LB nginx.conf (seed 000's
`upstream` + `proxy_pass`, pointed at the three lab web servers), the web servers' nginx.conf
and the nginx check script (seed 004's checkNG.sh idea, but probing this namespace's port 80:
`ps | grep nginx` sees every namespace's nginx, so it cannot tell nodes apart). Addresses are
lab addresses (198.18.0.0/24) and the interface is the lab's `eth0`. Pure text, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

VRID = 51
AUTH_PASS = "1111"  # seed 000


@dataclass(frozen=True)
class VrrpOptions:
    """The knobs the lab scenarios and the benchmark vary (defaults: the seed's)."""

    version: int = 2
    advert_int: float = 1.0
    sync_group: bool = True  # seed 000's vrrp_sync_group VG1 { VI_1 }
    track_interval: float = 1.0  # seed says 5; 1 keeps the lab short (anchors e1..e5 use 1)
    track_fall: int = 2
    track_rise: int = 1
    track_weight: int = 0  # 0: a failing script puts the instance in FAULT (seed 000)
    track: bool = True
    preempt: bool = True  # False: both nodes `state BACKUP` + `nopreempt` (seed 004)

    def fmt_advert(self) -> str:
        if self.advert_int == int(self.advert_int):
            return str(int(self.advert_int))
        return f"{self.advert_int:g}"


def keepalived_conf(
    *,
    router_id: str,
    priority: int,
    master: bool,
    vip: str,
    check_script: str,
    opts: VrrpOptions,
) -> str:
    """keepalived.conf for one LB node, read the same way by keepalived and `hakeeper run`."""
    lines = [
        "! hakeeper lab: derived from seed 000 (nginx + keepalived master/backup)",
        "global_defs {",
        f"    router_id {router_id}",
        "}",
        "",
    ]
    if opts.track:
        lines += [
            "vrrp_script check_run {",
            f'    script "{check_script}"',
            f"    interval {opts.track_interval:g}",
            f"    fall {opts.track_fall}",
            f"    rise {opts.track_rise}",
        ]
        if opts.track_weight:
            lines.append(f"    weight {opts.track_weight}")
        lines += ["}", ""]
    if opts.sync_group:
        lines += ["vrrp_sync_group VG1 {", "    group {", "        VI_1", "    }", "}", ""]
    state = "MASTER" if (master and opts.preempt) else "BACKUP"
    lines += [
        "vrrp_instance VI_1 {",
        f"    state {state}",
        "    interface eth0",
        f"    virtual_router_id {VRID}",
        f"    priority {priority}",
        f"    advert_int {opts.fmt_advert()}",
        f"    version {opts.version}",
    ]
    if not opts.preempt:
        lines.append("    nopreempt")
    if opts.version == 2:
        lines += [
            "    authentication {",
            "        auth_type PASS",
            f"        auth_pass {AUTH_PASS}",
            "    }",
        ]
    if opts.track:
        lines += ["    track_script {", "        check_run", "    }"]
    lines += ["    virtual_ipaddress {", f"        {vip}/24", "    }", "}", ""]
    return "\n".join(lines)


def _nginx_common(workdir: str, name: str) -> str:
    return f"""# hakeeper lab: {name}
user root;
worker_processes 1;
daemon off;
master_process on;
pid {workdir}/{name}.nginx.pid;
error_log {workdir}/{name}.nginx.err warn;
events {{
    worker_connections 512;
}}
"""


def _http_common(workdir: str, name: str) -> str:
    return f"""    access_log off;
    client_body_temp_path {workdir}/{name}.body;
    proxy_temp_path {workdir}/{name}.proxy;
    fastcgi_temp_path {workdir}/{name}.fastcgi;
    uwsgi_temp_path {workdir}/{name}.uwsgi;
    scgi_temp_path {workdir}/{name}.scgi;
    keepalive_timeout 5;
"""


def lb_nginx_conf(*, workdir: str, name: str, web_ips: list[str], port: int = 80) -> str:
    """Seed 000's LB nginx: `upstream esbwebserver` over the web servers, `proxy_pass` to it.

    `proxy_next_upstream` defaults are kept; short connect timeouts keep a dead web server
    from holding a probe. `X-Served-By` tells the client which LB answered.
    """
    servers = "\n".join(f"        server {ip}:{port};" for ip in web_ips)
    return (
        _nginx_common(workdir, name)
        + f"""http {{
{_http_common(workdir, name)}
    upstream esbwebserver {{
{servers}
    }}
    server {{
        listen {port};
        server_name localhost;
        add_header X-Served-By {name} always;
        location / {{
            proxy_pass http://esbwebserver;
            proxy_connect_timeout 1s;
        }}
    }}
}}
"""
    )


def web_nginx_conf(*, workdir: str, name: str, port: int = 80) -> str:
    """A web server that answers every request with its own name (the seed's tomcat stand-in)."""
    return (
        _nginx_common(workdir, name)
        + f"""http {{
{_http_common(workdir, name)}
    server {{
        listen {port};
        location / {{
            default_type text/plain;
            return 200 "{name}\\n";
        }}
    }}
}}
"""
    )


def check_nginx_script(port: int = 80) -> str:
    """vrrp_script body: exit 0 while this namespace's nginx accepts on `port` (bash /dev/tcp).

    A connect to 127.0.0.1 stays inside the node's namespace; `timeout 1` bounds it.
    """
    return f"""#!/bin/bash
# hakeeper lab check (seed 004 checkNG.sh, per namespace): is nginx accepting here?
exec timeout 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}'
"""
