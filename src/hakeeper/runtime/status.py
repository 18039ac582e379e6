"""The daemon's status: the JSON of the control socket's `status` and of SIGUSR1.

keepalived writes /tmp/keepalived.data on SIGUSR1; hakeeper writes this JSON to the status
file (default /tmp/hakeeper.json), the same document `hakeeper status` prints.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from hakeeper.runtime.daemon_base import DaemonBase
from hakeeper.runtime.metrics import render_status
from hakeeper.runtime.process import write_json_atomic

log = logging.getLogger("hakeeper.daemon")


class StatusMixin(DaemonBase):
    """`status()` and the SIGUSR1 dump."""

    def status(self) -> dict[str, Any]:
        instances = []
        for name, run in sorted(self.instances.items()):
            if run.driver is not None:
                instances.append(run.driver.status())
            else:
                instances.append({"name": name, "state": "NOT_RUNNING", "error": run.error})
        groups = []
        for sg in self.config.sync_groups:
            groups.append(
                {
                    "name": sg.name,
                    "members": list(sg.group),
                    "state": self._group_state.get(sg.name),
                }
            )
        return {
            "pid": os.getpid(),
            "config_file": self.options.config_file,
            "router_id": self.config.global_defs.router_id,
            "uptime": round(time.time() - self.started_wall, 3),
            "instances": instances,
            "sync_groups": groups,
            "scripts": self.tracker.status(),
            "sockets": self.pool.status(),
            "reloads": {
                "ok": self.reloads.ok,
                "failed": self.reloads.failed,
                "last_error": self.reloads.last_error,
                "last_summary": self.reloads.last_summary,
            },
            "loop": self.watchdog.status() if self.watchdog else {},
            "notify": {"ran": self.notify.ran, "failed": self.notify.failed},
            "smtp": ({"sent": self.smtp.sent, "failed": self.smtp.failed} if self.smtp else None),
            "host_ops": self.host.status(),
            "virtual_servers": self.lvs.status() if self.lvs is not None else None,
            "l4_traffic": self._l4_traffic(),
            "l7": self.l7.status() if self.l7 is not None else None,
            "ha_suspend": {" ".join(k[1:]): v for k, v in sorted(self.suspended.items())},
        }

    def _l4_traffic(self) -> list[dict[str, Any]] | None:
        """The userspace L4 data plane's live counters (kept for its schedulers anyway);
        None with a kernel data plane (nftables / IPVS keep theirs in the kernel)."""
        proxy = getattr(getattr(self.lvs, "dp", None), "proxy", None)
        stats = getattr(proxy, "stats", None)
        if stats is None:
            return None
        out = []
        for svc in stats():
            protocol, host, port = svc.key
            shown = f"[{host}]" if ":" in host else host
            out.append(
                {
                    "service": f"{protocol.lower()} {shown}:{port}",
                    "no_backend": svc.no_backend,
                    "backends": [
                        {
                            "server": b.key,
                            "active": b.active,
                            "inactive": b.inactive,
                            "connections": b.connections,
                            "failed": b.failed,
                            "bytes_in": b.bytes_in,
                            "bytes_out": b.bytes_out,
                        }
                        for b in svc.backends
                        if not b.removed
                    ],
                }
            )
        return out

    def metrics_text(self) -> str:
        """The control socket's `metrics` and GET /metrics: Prometheus text format 0.0.4."""
        return render_status(self.status(), now=time.time())

    def _dump_status(self) -> None:
        path = self.options.status_file
        try:
            write_json_atomic(path, json.dumps(self.status(), indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            log.error("cannot write status to %s: %s", path, exc)
            return
        log.info("status written to %s", path)
