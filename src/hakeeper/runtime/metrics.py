"""Prometheus metrics: the daemon's status document rendered as text exposition format 0.0.4.

Pure (no socket, clock or I/O): `render_status(status, now=...)` takes the JSON-able
document of the control socket's `status` (the VRRP daemon's `StatusMixin.status()`, or
`hakeeper run --nginx`'s `runtime.nginx_control.NginxRuntime.status()`) and the wall-clock
time, and returns the text a Prometheus server scrapes from GET /metrics. Nothing is counted
here: every value is one the daemon already keeps, so exposing metrics adds no work to the
VRRP, checker, L4 or L7 hot paths; the cost is paid per scrape.

Format (prometheus.io "Exposition formats", text 0.0.4): one `# HELP` and one `# TYPE` line
per family before its samples, families never interleaved, counter names ending `_total`
(the TYPE line names the family with its `_total`, as 0.0.4 does), label values escaped
(`\\` `\"` `\n`), HELP text escaped (`\\` `\n`), values as Go's ParseFloat reads them
(`NaN`, `+Inf`, `-Inf`). Every metric is listed in docs/metrics.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "hakeeper_"
VRRP_STATES = ("INIT", "BACKUP", "MASTER", "FAULT")
L7_STATES = ("up", "down", "checking")
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_KINDS = ("counter", "gauge", "untyped")

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Sample:
    labels: Labels
    value: float  # an int when the status had one


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    kind: str
    help: str
    samples: tuple[Sample, ...]


def escape_label_value(value: str) -> str:
    if "\\" not in value and "\n" not in value and '"' not in value:
        return value  # the common case, checked in C
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if type(value) is int:
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


class Builder:
    """Collects samples by family; our own misuse (bad name, clashing type or help,
    duplicate label set) raises ValueError."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, dict[Labels, float]]] = {}
        self._label_names: set[str] = set()  # already checked

    def add(
        self,
        name: str,
        kind: str,
        help_text: str,
        value: float | int | bool | None,
        labels: Mapping[str, object] | None = None,
    ) -> None:
        """One sample; a None value (not known) is left out."""
        full = PREFIX + name
        family = self._families.get(full)
        if family is None:
            if not _NAME.match(full) or kind not in _KINDS:
                raise ValueError(f"bad metric {full!r} ({kind})")
            if kind == "counter" and not full.endswith("_total"):
                raise ValueError(f"counter {full!r} must end in _total")
            family = self._families[full] = (kind, help_text, {})
        elif family[0] != kind or family[1] != help_text:
            raise ValueError(f"metric {full!r} declared twice differently")
        if value is None:
            return
        key: Labels = tuple((k, str(v)) for k, v in labels.items()) if labels else ()
        for label, _ in key:
            if label not in self._label_names:
                if not _LABEL.match(label) or label.startswith("__"):
                    raise ValueError(f"bad label name {label!r} on {full}")
                self._label_names.add(label)
        samples = family[2]
        if key in samples:
            raise ValueError(f"duplicate sample {full}{dict(key)}")
        samples[key] = int(value) if type(value) is bool else value

    def families(self) -> list[Family]:
        return [
            Family(name, kind, help_text, tuple(Sample(k, v) for k, v in samples.items()))
            for name, (kind, help_text, samples) in self._families.items()
            if samples
        ]


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for fam in families:
        lines.append(f"# HELP {fam.name} {escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        name = fam.name
        for s in fam.samples:
            if s.labels:
                inner = ",".join([f'{k}="{escape_label_value(v)}"' for k, v in s.labels])
                lines.append(f"{name}{{{inner}}} {format_value(s.value)}")
            else:
                lines.append(f"{name} {format_value(s.value)}")
    return "\n".join(lines) + "\n" if lines else ""


def render_status(status: Mapping[str, Any], *, now: float) -> str:
    """The exposition text of one status document; `now` is wall-clock seconds."""
    return render(status_families(status, now=now))


def status_families(status: Mapping[str, Any], *, now: float) -> list[Family]:
    b = Builder()
    _process(b, status, now)
    _vrrp(b, status)
    _lvs(b, status.get("virtual_servers"), now)
    _l4_traffic(b, status.get("l4_traffic"))
    l7 = status.get("l7")
    if isinstance(l7, Mapping):
        _l7(b, l7)
    return b.families()


def _num(value: Any) -> float | None:
    """A number from the status (bools as 0/1); anything else is 'not known'."""
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, int | float):
        return value
    return None


def _process(b: Builder, st: Mapping[str, Any], now: float) -> None:
    mode = str(st.get("mode", "daemon"))
    b.add("info", "gauge", "Always 1; labels say what this process runs.", 1, {"mode": mode})
    uptime = _num(st.get("uptime"))
    b.add("uptime_seconds", "gauge", "Seconds since this process started.", uptime)
    start = None if uptime is None else round(now - uptime, 3)
    b.add(
        "process_start_time_seconds",
        "gauge",
        "Start time of this process since the Unix epoch in seconds.",
        start,
    )
    reloads = st.get("reloads")
    if isinstance(reloads, Mapping):
        _reloads(b, "keepalived", reloads)
    loop = st.get("loop")
    if isinstance(loop, Mapping) and loop:
        lag = _num(loop.get("max_lag_ms"))
        b.add(
            "loop_lag_max_seconds",
            "gauge",
            "Largest event loop lag the watchdog measured.",
            None if lag is None else lag / 1000,
        )
        b.add(
            "loop_stalls_total",
            "counter",
            "Event loop stalls longer than the watchdog's warning threshold.",
            _num(loop.get("stalls")),
        )
    notify = st.get("notify")
    if isinstance(notify, Mapping):
        b.add("notify_runs_total", "counter", "Notify scripts run.", _num(notify.get("ran")))
        b.add(
            "notify_failures_total",
            "counter",
            "Notify scripts that failed or timed out.",
            _num(notify.get("failed")),
        )
    host = st.get("host_ops")
    if isinstance(host, Mapping):
        b.add(
            "host_operations_total",
            "counter",
            "Address and ARP operations done on the host (VIPs, routes, gratuitous ARP).",
            _num(host.get("done")),
        )
        b.add(
            "host_operation_errors_total",
            "counter",
            "Host operations that failed.",
            _num(host.get("errors")),
        )


def _reloads(b: Builder, config: str, reloads: Mapping[str, Any]) -> None:
    for result in ("ok", "failed"):
        b.add(
            "reloads_total",
            "counter",
            "Configuration reloads (SIGHUP) by configuration file kind and result.",
            _num(reloads.get(result, 0)),
            {"config": config, "result": result},
        )
    b.add(
        "reload_last_success",
        "gauge",
        "1 unless the last reload of this configuration failed (the old one kept running).",
        0 if reloads.get("last_error") else 1,
        {"config": config},
    )


def _vrrp(b: Builder, st: Mapping[str, Any]) -> None:
    for inst in st.get("instances") or ():
        name = str(inst.get("name", "?"))
        lab = {"instance": name}
        state = str(inst.get("state", ""))
        running = state in VRRP_STATES
        b.add(
            "vrrp_instance_running",
            "gauge",
            "1 if the VRRP instance runs, 0 if it could not start (see hakeeper status).",
            running,
            lab,
        )
        b.add(
            "vrrp_instance_info",
            "gauge",
            "Always 1; the VRRP instance's VRID, interface and protocol version.",
            1 if running else None,
            {
                "instance": name,
                "vrid": inst.get("vrid", ""),
                "interface": inst.get("interface") or "",
                "version": inst.get("version", ""),
            },
        )
        for s in VRRP_STATES:
            b.add(
                "vrrp_state",
                "gauge",
                "1 for the VRRP instance's current state, 0 for the others.",
                (s == state) if running else None,
                {"instance": name, "state": s},
            )
        b.add(
            "vrrp_state_code",
            "gauge",
            "The VRRP instance's state as a number: 0 INIT, 1 BACKUP, 2 MASTER, 3 FAULT.",
            VRRP_STATES.index(state) if running else None,
            lab,
        )
        if not running:
            continue
        b.add(
            "vrrp_priority",
            "gauge",
            "Effective priority (configured priority adjusted by tracking).",
            _num(inst.get("effective_priority")),
            lab,
        )
        b.add(
            "vrrp_configured_priority",
            "gauge",
            "Priority as configured.",
            _num(inst.get("priority")),
            lab,
        )
        b.add(
            "vrrp_vips_installed",
            "gauge",
            "1 while this instance has its virtual addresses installed.",
            _num(inst.get("vips_installed")),
            lab,
        )
        b.add(
            "vrrp_seconds_in_state",
            "gauge",
            "Seconds since the last state transition (absent before the first one).",
            _num(inst.get("seconds_in_state")),
            lab,
        )
        c = inst.get("counters") or {}
        for key, metric, text in _VRRP_COUNTERS:
            b.add(metric, "counter", text, _num(c.get(key)), lab)
        for reason, n in sorted((c.get("dropped") or {}).items()):
            b.add(
                "vrrp_packets_dropped_total",
                "counter",
                "Adverts received for this instance and dropped, by reason.",
                _num(n),
                {"instance": name, "reason": str(reason)},
            )
    for sock in st.get("sockets") or ():
        lab = {
            "interface": str(sock.get("interface", "")),
            "family": f"ipv{sock.get('family', '')}",
        }
        for key, metric, text in _SOCKET_COUNTERS:
            b.add(metric, "counter", text, _num(sock.get(key)), lab)
    for group in st.get("sync_groups") or ():
        for s in VRRP_STATES:
            b.add(
                "vrrp_sync_group_state",
                "gauge",
                "1 for the sync group's current state, 0 for the others.",
                s == group.get("state"),
                {"group": str(group.get("name", "?")), "state": s},
            )
    for script in st.get("scripts") or ():
        b.add(
            "vrrp_script_up",
            "gauge",
            "1 if the tracked vrrp_script is GOOD, 0 if BAD (absent while INIT).",
            None if script.get("state") == "INIT" else script.get("state") == "GOOD",
            {"script": str(script.get("name", "?"))},
        )
        b.add(
            "vrrp_script_runs_total",
            "counter",
            "Runs of the tracked vrrp_script.",
            _num(script.get("runs")),
            {"script": str(script.get("name", "?"))},
        )


_VRRP_COUNTERS = (
    ("transitions", "vrrp_transitions_total", "VRRP state transitions."),
    ("adverts_sent", "vrrp_adverts_sent_total", "VRRP adverts sent."),
    ("adverts_received", "vrrp_adverts_received_total", "Valid VRRP adverts received."),
    ("became_master", "vrrp_became_master_total", "Transitions to MASTER."),
    ("released_master", "vrrp_released_master_total", "Transitions out of MASTER."),
    ("priority_zero_sent", "vrrp_priority_zero_sent_total", "Priority 0 adverts sent."),
    (
        "priority_zero_received",
        "vrrp_priority_zero_received_total",
        "Priority 0 adverts received.",
    ),
    ("tx_errors", "vrrp_send_errors_total", "Adverts that could not be sent."),
    ("host_errors", "vrrp_host_errors_total", "VIP / ARP operations of the instance that failed."),
    ("garp_bursts", "vrrp_gratuitous_arp_bursts_total", "Gratuitous ARP / NA bursts sent."),
)

_SOCKET_COUNTERS = (
    ("rx", "vrrp_socket_received_total", "Packets received on the VRRP socket."),
    ("tx", "vrrp_socket_sent_total", "Packets sent on the VRRP socket."),
    ("rx_malformed", "vrrp_socket_malformed_total", "Malformed packets dropped by the socket."),
    ("rx_errors", "vrrp_socket_receive_errors_total", "Receive errors on the VRRP socket."),
    ("tx_errors", "vrrp_socket_send_errors_total", "Send errors on the VRRP socket."),
)


def _lvs(b: Builder, lvs: Any, now: float) -> None:
    if not isinstance(lvs, Mapping):
        return
    b.add(
        "lvs_reconciles_total",
        "counter",
        "Times the L4 data plane was reconciled with the desired state.",
        _num(lvs.get("reconciles")),
    )
    b.add(
        "lvs_errors_total",
        "counter",
        "L4 data plane reconciles that failed.",
        _num(lvs.get("errors")),
    )
    for vs in lvs.get("virtual_servers") or ():
        vname = str(vs.get("name", "?"))
        lab = {"virtual_server": vname}
        b.add(
            "lvs_virtual_server_installed",
            "gauge",
            "1 if the virtual server is installed in the L4 data plane.",
            _num(vs.get("installed")),
            {**lab, "protocol": str(vs.get("protocol", ""))},
        )
        b.add(
            "lvs_virtual_server_backends",
            "gauge",
            "Real servers (or the sorry server) installed for the virtual server.",
            len(vs.get("backends") or ()),
            lab,
        )
        b.add(
            "lvs_virtual_server_quorum_up",
            "gauge",
            "1 while the alive real servers' weights reach the quorum.",
            _num(vs.get("quorum_up")),
            lab,
        )
        b.add(
            "lvs_virtual_server_sorry_active",
            "gauge",
            "1 while the sorry server is in use.",
            _num(vs.get("sorry_active")),
            lab,
        )
        for rs in vs.get("real_servers") or ():
            rlab = {**lab, "real_server": str(rs.get("server", "?"))}
            b.add(
                "lvs_real_server_up",
                "gauge",
                "1 if the real server's checkers say it is alive.",
                _num(rs.get("alive")),
                rlab,
            )
            b.add(
                "lvs_real_server_weight",
                "gauge",
                "The real server's current weight.",
                _num(rs.get("weight")),
                rlab,
            )
            b.add(
                "lvs_real_server_in_pool",
                "gauge",
                "1 if the real server is in the balanced pool.",
                _num(rs.get("in_pool")),
                rlab,
            )
            b.add(
                "lvs_real_server_last_check_ok",
                "gauge",
                "Result of the real server's last completed check (absent before the first).",
                _num(rs.get("last_result")),
                rlab,
            )
            changed = _num(rs.get("changed_at"))
            b.add(
                "lvs_real_server_seconds_since_change",
                "gauge",
                "Seconds since the real server last went up or down (absent before that).",
                None if changed is None else max(0.0, round(now - changed, 3)),
                rlab,
            )


def _l4_traffic(b: Builder, services: Any) -> None:
    """The userspace data plane's per real server counters (absent on nftables / IPVS)."""
    for svc in services or ():
        name = str(svc.get("service", "?"))
        b.add(
            "l4_no_backend_total",
            "counter",
            "Connections or flows refused because no real server was usable.",
            _num(svc.get("no_backend")),
            {"service": name},
        )
        for be in svc.get("backends") or ():
            lab = {"service": name, "real_server": str(be.get("server", "?"))}
            for key, metric, kind, text in _L4_BACKEND:
                b.add(metric, kind, text, _num(be.get(key)), lab)


_L4_BACKEND = (
    ("active", "l4_active_connections", "gauge", "Established connections (IPVS ActiveConn)."),
    (
        "inactive",
        "l4_inactive_connections",
        "gauge",
        "Connecting or half-closed connections and UDP flows (IPVS InActConn).",
    ),
    ("connections", "l4_connections_total", "counter", "Connections or flows scheduled."),
    ("failed", "l4_connect_failures_total", "counter", "Connects that failed."),
    ("bytes_in", "l4_client_bytes_total", "counter", "Bytes from clients to the real server."),
    ("bytes_out", "l4_server_bytes_total", "counter", "Bytes from the real server to clients."),
)


def _l7(b: Builder, l7: Mapping[str, Any]) -> None:
    reloads = l7.get("reloads")
    if isinstance(reloads, Mapping):
        _reloads(b, "nginx", reloads)
    b.add(
        "l7_serving",
        "gauge",
        "1 while every L7 listener is open with a live worker (and stream {} runs).",
        _num(l7.get("serving")),
    )
    for lst in l7.get("listeners") or ():
        lab = {"listen": str(lst.get("listen", "?"))}
        b.add(
            "l7_listener_up",
            "gauge",
            "1 if the listener is open with at least one live worker.",
            not lst.get("error") and bool(lst.get("workers")),
            lab,
        )
        b.add(
            "l7_listener_workers",
            "gauge",
            "Live worker processes serving the listener.",
            len(lst.get("workers") or ()),
            lab,
        )
        b.add(
            "l7_listener_configured_workers",
            "gauge",
            "worker_processes of the listener.",
            _num(lst.get("configured_workers")),
            lab,
        )
    b.add(
        "l7_draining_workers",
        "gauge",
        "Old workers still finishing their requests after a reload.",
        len(l7.get("draining_workers") or ()),
    )
    b.add(
        "l7_worker_exits_total",
        "counter",
        "Workers that exited while they should have served.",
        _num(l7.get("worker_exits")),
    )
    b.add(
        "l7_worker_respawns_total",
        "counter",
        "Times the workers of a listener were replaced after exits.",
        _num(l7.get("respawns")),
    )
    rows = l7.get("health")
    if isinstance(rows, list):
        _l7_health(b, rows)


def _l7_health(b: Builder, rows: list[Any]) -> None:
    """One series per (upstream, server): rows of several checks of one server (different
    `health_check` specs) merge: down beats checking beats up, counters add up."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    rank = {"down": 2, "checking": 1, "up": 0}
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        key = (str(row.get("upstream", "?")), str(row.get("server", "?")))
        state = str(row.get("state", "down"))
        m = merged.setdefault(key, {"state": "up", "checks": 0, "failures": 0, "since": None})
        if rank.get(state, 2) > rank.get(m["state"], 2):
            m["state"] = state if state in rank else "down"
        m["checks"] += int(_num(row.get("checks")) or 0)
        m["failures"] += int(_num(row.get("failures")) or 0)
        since = _num(row.get("since"))
        if since is not None and (m["since"] is None or since < m["since"]):
            m["since"] = since
    for (upstream, server), m in sorted(merged.items()):
        lab = {"upstream": upstream, "server": server}
        b.add(
            "l7_upstream_server_up",
            "gauge",
            "1 if the upstream server's active health check says up.",
            m["state"] == "up",
            lab,
        )
        for s in L7_STATES:
            b.add(
                "l7_upstream_server_state",
                "gauge",
                "1 for the upstream server's health state (up, down, checking), 0 otherwise.",
                m["state"] == s,
                {**lab, "state": s},
            )
        b.add(
            "l7_health_checks_total",
            "counter",
            "Active health check probes of the upstream server.",
            m["checks"],
            lab,
        )
        b.add(
            "l7_health_check_failures_total",
            "counter",
            "Active health check probes of the upstream server that failed.",
            m["failures"],
            lab,
        )
        b.add(
            "l7_upstream_server_seconds_since_change",
            "gauge",
            "Seconds since the upstream server last went up or down (absent before that).",
            m["since"],
            lab,
        )
