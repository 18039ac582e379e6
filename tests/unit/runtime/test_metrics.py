"""runtime.metrics: status documents rendered as Prometheus text, checked by a strict parser.

Also the pure parts of the HTTP endpoint (request -> response, address parsing) and
`hakeeper status` on `run --nginx`'s document.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from promtext import FormatError, parse, value

from hakeeper.runtime import metrics as metrics_module
from hakeeper.runtime.commands import _format_status
from hakeeper.runtime.metrics import (
    Builder,
    escape_help,
    escape_label_value,
    format_value,
    render,
    render_status,
)
from hakeeper.runtime.metrics_http import MetricsHttpServer, parse_addr

NOW = 1_700_000_000.0


def daemon_status() -> dict[str, Any]:
    return {
        "pid": 42,
        "uptime": 12.5,
        "instances": [
            {
                "name": "VI_1",
                "state": "MASTER",
                "vrid": 51,
                "version": 3,
                "interface": "eth0",
                "priority": 100,
                "effective_priority": 90,
                "vips_installed": True,
                "seconds_in_state": 3.25,
                "counters": {
                    "adverts_sent": 7,
                    "adverts_received": 2,
                    "dropped": {"BAD_TTL": 3, "AUTH_MISMATCH": 1},
                    "became_master": 1,
                    "released_master": 0,
                    "priority_zero_sent": 0,
                    "priority_zero_received": 0,
                    "transitions": 2,
                    "tx_errors": 0,
                    "host_errors": 0,
                    "garp_bursts": 1,
                },
            },
            {"name": 'odd "name"\\x', "state": "NOT_RUNNING", "error": "no interface"},
        ],
        "sync_groups": [{"name": "G", "members": ["VI_1"], "state": "MASTER"}],
        "scripts": [
            {"name": "chk", "state": "GOOD", "runs": 5},
            {"name": "new", "state": "INIT", "runs": 0},
        ],
        "sockets": [
            {"interface": "eth0", "family": 4, "rx": 9, "tx": 7, "rx_malformed": 1},
        ],
        "reloads": {"ok": 2, "failed": 1, "last_error": "k.conf:3: error"},
        "loop": {"max_lag_ms": 12.5, "stalls": 0},
        "notify": {"ran": 3, "failed": 1},
        "host_ops": {"done": 4, "errors": 0},
        "virtual_servers": {
            "reconciles": 3,
            "errors": 0,
            "virtual_servers": [
                {
                    "name": "127.0.0.1:8080",
                    "protocol": "TCP",
                    "installed": True,
                    "backends": [{"server": "127.0.0.1:9001", "weight": 1}],
                    "quorum_up": True,
                    "sorry_active": False,
                    "real_servers": [
                        {
                            "server": "127.0.0.1:9001",
                            "weight": 1,
                            "alive": True,
                            "in_pool": True,
                            "last_result": True,
                            "changed_at": NOW - 30,
                        },
                        {
                            "server": "127.0.0.1:9002",
                            "weight": 0,
                            "alive": False,
                            "in_pool": False,
                            "last_result": None,
                            "changed_at": None,
                        },
                    ],
                }
            ],
        },
        "l4_traffic": [
            {
                "service": "tcp 127.0.0.1:8080",
                "no_backend": 2,
                "backends": [
                    {"server": "127.0.0.1:9001", "active": 3, "inactive": 1, "connections": 40,
                     "failed": 1, "bytes_in": 100, "bytes_out": 2000},
                ],
            }
        ],
        "l7": nginx_part(),
    }  # fmt: skip


def nginx_part() -> dict[str, Any]:
    return {
        "config_file": "/etc/nginx/nginx.conf",
        "serving": True,
        "listeners": [
            {"listen": "127.0.0.1:8081", "workers": [100, 101], "configured_workers": 2},
            {"listen": "198.18.0.9:80", "workers": [], "error": "cannot bind"},
        ],
        "draining_workers": [99],
        "reloads": {"ok": 1, "failed": 0, "last_error": ""},
        "worker_exits": 0,
        "respawns": 0,
        "health": [
            {"upstream": "app", "server": "127.0.0.1:9001", "state": "up", "checks": 10,
             "failures": 1, "since": None, "last": "200"},
            {"upstream": "app", "server": "127.0.0.1:9002", "state": "checking", "checks": 1,
             "failures": 1, "since": 4.0, "last": "refused"},
            # a second health_check of the same server (another location): merged
            {"upstream": "app", "server": "127.0.0.1:9002", "state": "down", "checks": 2,
             "failures": 2, "since": 2.0, "last": "refused"},
        ],
    }  # fmt: skip


def test_daemon_status_renders_strict_text() -> None:
    fams = parse(render_status(daemon_status(), now=NOW))
    assert fams["hakeeper_vrrp_state"].type == "gauge"
    assert fams["hakeeper_vrrp_transitions_total"].type == "counter"
    assert value(fams, "hakeeper_vrrp_state", instance="VI_1", state="MASTER") == 1
    assert value(fams, "hakeeper_vrrp_state", instance="VI_1", state="BACKUP") == 0
    assert value(fams, "hakeeper_vrrp_state_code", instance="VI_1") == 2
    assert value(fams, "hakeeper_vrrp_priority", instance="VI_1") == 90
    assert value(fams, "hakeeper_vrrp_configured_priority", instance="VI_1") == 100
    assert value(fams, "hakeeper_vrrp_transitions_total", instance="VI_1") == 2
    assert value(fams, "hakeeper_vrrp_adverts_sent_total", instance="VI_1") == 7
    assert value(fams, "hakeeper_vrrp_adverts_received_total", instance="VI_1") == 2
    dropped = "hakeeper_vrrp_packets_dropped_total"
    assert value(fams, dropped, instance="VI_1", reason="BAD_TTL") == 3
    assert value(fams, "hakeeper_vrrp_seconds_in_state", instance="VI_1") == 3.25
    labels = {"instance": "VI_1", "vrid": "51", "interface": "eth0", "version": "3"}
    assert value(fams, "hakeeper_vrrp_instance_info", **labels) == 1
    # an instance that could not start: running 0, no state series
    odd = 'odd "name"\\x'
    assert value(fams, "hakeeper_vrrp_instance_running", instance=odd) == 0
    assert value(fams, "hakeeper_vrrp_state", instance=odd, state="INIT") is None
    assert value(fams, "hakeeper_vrrp_socket_malformed_total", interface="eth0", family="ipv4")
    assert value(fams, "hakeeper_vrrp_sync_group_state", group="G", state="MASTER") == 1
    assert value(fams, "hakeeper_vrrp_script_up", script="chk") == 1
    assert value(fams, "hakeeper_vrrp_script_up", script="new") is None
    # process
    assert value(fams, "hakeeper_uptime_seconds") == 12.5
    assert value(fams, "hakeeper_process_start_time_seconds") == NOW - 12.5
    assert value(fams, "hakeeper_info", mode="daemon") == 1
    assert value(fams, "hakeeper_reloads_total", config="keepalived", result="ok") == 2
    assert value(fams, "hakeeper_reloads_total", config="keepalived", result="failed") == 1
    assert value(fams, "hakeeper_reload_last_success", config="keepalived") == 0
    assert value(fams, "hakeeper_reload_last_success", config="nginx") == 1
    assert value(fams, "hakeeper_loop_lag_max_seconds") == 0.0125


def test_lvs_and_l7_series() -> None:
    fams = parse(render_status(daemon_status(), now=NOW))
    vs = {"virtual_server": "127.0.0.1:8080"}
    up, down = {**vs, "real_server": "127.0.0.1:9001"}, {**vs, "real_server": "127.0.0.1:9002"}
    assert value(fams, "hakeeper_lvs_real_server_up", **up) == 1
    assert value(fams, "hakeeper_lvs_real_server_up", **down) == 0
    assert value(fams, "hakeeper_lvs_real_server_weight", **up) == 1
    assert value(fams, "hakeeper_lvs_real_server_last_check_ok", **up) == 1
    assert value(fams, "hakeeper_lvs_real_server_last_check_ok", **down) is None
    assert value(fams, "hakeeper_lvs_real_server_seconds_since_change", **up) == 30
    assert value(fams, "hakeeper_lvs_virtual_server_backends", **vs) == 1
    assert value(fams, "hakeeper_lvs_virtual_server_installed", **vs, protocol="TCP") == 1
    assert value(fams, "hakeeper_lvs_reconciles_total") == 3
    l4 = {"service": "tcp 127.0.0.1:8080", "real_server": "127.0.0.1:9001"}
    assert value(fams, "hakeeper_l4_active_connections", **l4) == 3
    assert value(fams, "hakeeper_l4_inactive_connections", **l4) == 1
    assert value(fams, "hakeeper_l4_connections_total", **l4) == 40
    assert value(fams, "hakeeper_l4_server_bytes_total", **l4) == 2000
    assert value(fams, "hakeeper_l4_no_backend_total", service="tcp 127.0.0.1:8080") == 2
    # L7
    assert value(fams, "hakeeper_l7_serving") == 1
    assert value(fams, "hakeeper_l7_listener_workers", listen="127.0.0.1:8081") == 2
    assert value(fams, "hakeeper_l7_listener_up", listen="127.0.0.1:8081") == 1
    assert value(fams, "hakeeper_l7_listener_up", listen="198.18.0.9:80") == 0
    assert value(fams, "hakeeper_l7_draining_workers") == 1
    a = {"upstream": "app", "server": "127.0.0.1:9001"}
    b = {"upstream": "app", "server": "127.0.0.1:9002"}
    assert value(fams, "hakeeper_l7_upstream_server_up", **a) == 1
    assert value(fams, "hakeeper_l7_upstream_server_up", **b) == 0
    assert value(fams, "hakeeper_l7_upstream_server_state", **b, state="down") == 1
    assert value(fams, "hakeeper_l7_upstream_server_state", **b, state="checking") == 0
    assert value(fams, "hakeeper_l7_health_checks_total", **b) == 3  # two checks merged
    assert value(fams, "hakeeper_l7_health_check_failures_total", **b) == 3
    assert value(fams, "hakeeper_l7_upstream_server_seconds_since_change", **b) == 2.0
    assert value(fams, "hakeeper_l7_upstream_server_seconds_since_change", **a) is None


def test_every_family_has_help_and_documented() -> None:
    from pathlib import Path

    fams = parse(render_status(daemon_status(), now=NOW))
    doc = (Path(__file__).parents[3] / "docs" / "metrics.md").read_text()
    for name, fam in fams.items():
        assert fam.help, name
        assert f"`{name}`" in doc, f"{name} missing from docs/metrics.md"
    # also the families this status has no sample of: every name the renderer can add
    src = Path(metrics_module.__file__).read_text()
    names = re.findall(r'"([a-z][a-z0-9_]*)",\s*"(?:counter|gauge)"', src)
    names += re.findall(r'"[a-z_]+",\s*"([a-z0-9_]+_total)"', src)
    names = [n for n in names if n not in ("counter", "gauge", "untyped")]
    assert len(names) > 50
    for name in names:
        assert f"`hakeeper_{name}`" in doc, f"hakeeper_{name} missing from docs/metrics.md"


def test_nginx_only_status_and_empty_parts() -> None:
    status = {"mode": "nginx", "pid": 1, "uptime": 1.0, "l7": {**nginx_part(), "health": {
        "error": "TimeoutError"}}}  # fmt: skip
    fams = parse(render_status(status, now=NOW))
    assert value(fams, "hakeeper_info", mode="nginx") == 1
    assert "hakeeper_vrrp_state" not in fams
    assert "hakeeper_l7_upstream_server_up" not in fams
    assert value(fams, "hakeeper_reloads_total", config="nginx", result="ok") == 1
    assert parse(render_status({}, now=NOW))["hakeeper_info"].samples


def test_label_escaping_round_trips() -> None:
    nasty = 'a\\b"c\nd}e,f="g'
    b = Builder()
    b.add("x", "gauge", "help with \\ and\nnewline", 1, {"name": nasty})
    text = render(b.families())
    assert 'name="a\\\\b\\"c\\nd}e,f=\\"g"' in text
    fams = parse(text)
    assert value(fams, "hakeeper_x", name=nasty) == 1
    assert fams["hakeeper_x"].help == "help with \\ and\nnewline"
    assert escape_label_value("\\") == "\\\\" and escape_help('"') == '"'


def test_values() -> None:
    assert format_value(3.0) == "3"
    assert format_value(0.125) == "0.125"
    assert format_value(math.nan) == "NaN"
    assert format_value(math.inf) == "+Inf" and format_value(-math.inf) == "-Inf"
    assert format_value(1e300) == "1e+300"


def test_builder_refuses_our_own_mistakes() -> None:
    b = Builder()
    with pytest.raises(ValueError, match="_total"):
        b.add("events", "counter", "h", 1)
    with pytest.raises(ValueError, match="bad metric"):
        b.add("bad-name", "gauge", "h", 1)
    with pytest.raises(ValueError, match="label name"):
        b.add("g", "gauge", "h", 1, {"bad-label": 1})
    b.add("g2", "gauge", "h", 1, {"a": 1})
    with pytest.raises(ValueError, match="duplicate"):
        b.add("g2", "gauge", "h", 2, {"a": 1})
    with pytest.raises(ValueError, match="differently"):
        b.add("g2", "gauge", "other help", 2, {"a": 2})
    b.add("g3", "gauge", "h", None)  # not known: no sample, no family
    assert [f.name for f in b.families()] == ["hakeeper_g2"]


@pytest.mark.parametrize(
    "text",
    [
        "x 1\n",  # no TYPE
        "# TYPE x gauge\nx 1",  # no final newline
        '# TYPE x gauge\nx{a="1"} 1\nx{a="1"} 2\n',  # duplicate series
        "# TYPE x gauge\n# TYPE y gauge\nx 1\n",  # interleaved
        '# TYPE x gauge\nx{a="\\t"} 1\n',  # bad escape
        "# TYPE x_total counter\nx_total -1\n",  # negative counter
        "# TYPE x gauge\nx 1\n\n",  # blank line
        "# TYPE x gauge\nx one\n",  # bad value
        '# TYPE x gauge\nx{a="1",a="2"} 1\n',  # repeated label
    ],
)
def test_parser_is_strict(text: str) -> None:
    with pytest.raises(FormatError):
        parse(text)


def test_http_responses() -> None:
    server = MetricsHttpServer("127.0.0.1", 0, lambda: "# TYPE x gauge\nx 1\n")
    code, ctype, body, send = server.respond(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n")
    assert (code, send) == (200, True) and ctype.startswith("text/plain; version=0.0.4")
    assert body == b"# TYPE x gauge\nx 1\n"
    assert server.respond(b"HEAD /metrics HTTP/1.0\r\n")[::3] == (200, False)
    assert server.respond(b"GET /nope HTTP/1.1\r\n")[0] == 404
    assert server.respond(b"POST /metrics HTTP/1.1\r\n")[0] == 405
    assert server.respond(b"garbage\r\n")[0] == 400
    assert server.scrapes == 2 and server.bad_requests == 1

    def broken() -> str:
        raise RuntimeError("bug")

    assert MetricsHttpServer("127.0.0.1", 0, broken).respond(b"GET /metrics HTTP/1.1")[0] == 500


def test_parse_addr() -> None:
    assert parse_addr("127.0.0.1:9109") == ("127.0.0.1", 9109)
    assert parse_addr(":9109") == ("127.0.0.1", 9109)
    assert parse_addr("9109") == ("127.0.0.1", 9109)
    assert parse_addr("[::1]:9109") == ("::1", 9109)
    for bad in ("127.0.0.1:", "host:0", "host:70000", "[::1]9109", "x:y"):
        with pytest.raises(ValueError):
            parse_addr(bad)


def test_status_text_of_run_nginx() -> None:
    text = _format_status({"mode": "nginx", "pid": 7, "uptime": 3.0, "l7": nginx_part()})
    assert text.splitlines()[0] == "hakeeper pid 7  uptime 3.0s"
    assert "listen 127.0.0.1:8081: 2 worker(s) (pids 100, 101)" in text
    assert "cannot bind" in text
    assert any("app" in line and "127.0.0.1:9002" in line and "down" in line
               for line in text.splitlines())  # fmt: skip
