"""`hakeeper check --nginx FILE` against `nginx -t -c FILE` on a table of configs: same verdict.

Each config is written to a temporary directory (with Debian's stream module loaded) and
checked by both; the exit code (0 = ok, 1 = failed) must agree, and for a failed config
one of hakeeper's errors must be on the line nginx names.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hakeeper.cli import main

pytestmark = pytest.mark.interop("nginx")

HEAD = """load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
"""

UP = "upstream u { server 127.0.0.1:9001 weight=5; server 127.0.0.1:9002; }\n"

CASES: dict[str, str] = {
    # valid
    "swrr": "stream {\n" + UP + "server { listen 127.0.0.1:9000; proxy_pass u; }\n}\n",
    "tcp-and-udp-same-port": (
        "stream {\n"
        "server { listen 9053; proxy_pass 127.0.0.1:53; }\n"
        "server { listen 9053 udp reuseport; proxy_pass 127.0.0.1:53; proxy_timeout 2s; }\n}\n"
    ),
    "methods": (
        "stream {\n"
        "upstream h { hash $remote_addr consistent; server 127.0.0.1:1; server 127.0.0.1:2; }\n"
        "upstream r { random two least_conn; server 127.0.0.1:1; server 127.0.0.1:2; }\n"
        "upstream l { least_conn; server 127.0.0.1:1 max_conns=5; "
        "server 127.0.0.1:2 backup; server 127.0.0.1:3 down; }\n"
        "server { listen 9001; proxy_pass h; }\n"
        "server { listen 9002; proxy_pass r; }\n"
        "server { listen 9003; proxy_pass l; }\n}\n"
    ),
    "settings": (
        "stream {\n"
        "proxy_connect_timeout 1s; proxy_timeout 1m; proxy_next_upstream_tries 2;\n"
        + UP
        + "server { listen [::1]:9000; proxy_pass u; proxy_next_upstream off;\n"
        "  proxy_next_upstream_timeout 500ms; proxy_buffer_size 4k; tcp_nodelay on; }\n}\n"
    ),
    "server-params": (
        "stream {\nupstream u { server 127.0.0.1:9001 weight=3 max_fails=0 fail_timeout=1m; }\n"
        "server { listen 9000; proxy_pass u; }\n}\n"
    ),
    "http-and-stream": (
        "http {\n  upstream web { server 127.0.0.1:8080; }\n"
        "  server { listen 8000; location / { proxy_pass http://web; } }\n}\n"
        "stream {\n" + UP + "server { listen 9000; proxy_pass u; }\n}\n"
    ),
    "include": "stream {\ninclude {dir}/conf.d/*.conf;\n}\n",
    # invalid
    "typo": "stream {\n" + UP + "server { listen 9000; proxy_pas u; }\n}\n",
    "ip_hash": (
        "stream {\nupstream u { ip_hash; server 127.0.0.1:1; }\n"
        "server { listen 9000; proxy_pass u; }\n}\n"
    ),
    "no-port-in-server": (
        "stream {\nupstream u { server 127.0.0.1; }\nserver { listen 9000; proxy_pass u; }\n}\n"
    ),
    "no-port-in-proxy-pass": "stream {\nserver { listen 9000; proxy_pass 127.0.0.1; }\n}\n",
    "duplicate-listen": (
        "stream {\nserver { listen 9000; proxy_pass 127.0.0.1:1; }\n"
        "server { listen 9000; proxy_pass 127.0.0.1:2; }\n}\n"
    ),
    "backup-with-hash": (
        "stream {\nupstream u { hash $remote_addr; server 127.0.0.1:1; server 127.0.0.1:2 backup; }"
        "\nserver { listen 9000; proxy_pass u; }\n}\n"
    ),
    "weight-0": (
        "stream {\nupstream u { server 127.0.0.1:1 weight=0; }\n"
        "server { listen 9000; proxy_pass u; }\n}\n"
    ),
    "bad-param": (
        "stream {\nupstream u { server 127.0.0.1:1 drain; }\n"
        "server { listen 9000; proxy_pass u; }\n}\n"
    ),
    "next-upstream-not-flag": (
        "stream {\nserver { listen 9000; proxy_pass 127.0.0.1:1; proxy_next_upstream error; }\n}\n"
    ),
    "bad-time": "stream {\nserver { listen 9000; proxy_pass 127.0.0.1:1; proxy_timeout 5x; }\n}\n",
    "bad-listen-param": "stream {\nserver { listen 9000 bogus; proxy_pass 127.0.0.1:1; }\n}\n",
    "random-three": (
        "stream {\nupstream u { random three; server 127.0.0.1:1; }\n"
        "server { listen 9000; proxy_pass u; }\n}\n"
    ),
    "stream-in-http": "http {\nstream { }\n}\n",
    "empty-upstream": "stream {\nupstream u { }\nserver { listen 9000; proxy_pass u; }\n}\n",
    "duplicate-upstream": ("stream {\n" + UP + UP + "server { listen 9000; proxy_pass u; }\n}\n"),
    "http-directive-in-stream": (
        "stream {\nserver { listen 9000; proxy_pass 127.0.0.1:1; proxy_read_timeout 1s; }\n}\n"
    ),
    "unbalanced": "stream {\nserver { listen 9000; proxy_pass 127.0.0.1:1; }\n",
    "missing-semicolon": "stream {\nserver { listen 9000 proxy_pass 127.0.0.1:1; }\n}\n",
    "no-handler": "stream {\nserver { listen 9000; }\n}\n",
    "bad-port": "stream {\nserver { listen 70000; proxy_pass 127.0.0.1:1; }\n}\n",
}


def _write(work: Path, name: str, body: str) -> Path:
    text = HEAD.format(dir=work) + body.replace("{dir}", str(work))
    (work / "conf.d").mkdir(exist_ok=True)
    (work / "conf.d" / "a.conf").write_text("server { listen 9100; proxy_pass 127.0.0.1:1; }\n")
    path = work / f"{name}.conf"
    path.write_text(text)
    return path


def _nginx_t(work: Path, path: Path) -> tuple[int, int | None]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.run(
        [nginx, "-t", "-p", str(work), "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    m = re.search(r"in " + re.escape(str(path)) + r":(\d+)", proc.stderr)
    return (0 if proc.returncode == 0 else 1), (int(m.group(1)) if m else None)


@pytest.mark.parametrize("name", sorted(CASES))
def test_check_verdict_matches_nginx_t(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, name, CASES[name])
    expected, nginx_line = _nginx_t(tmp_path, path)
    got = main(["check", "--nginx", str(path)])
    out = capsys.readouterr().out
    assert got == expected, f"nginx -t says {expected}, hakeeper says {got}:\n{out}"
    # nginx names the end of file for a missing '}'; hakeeper names the block left open
    if expected and nginx_line is not None and name != "unbalanced":
        errors = [ln for ln in out.splitlines() if ": error: " in ln]
        lines = {int(ln.split(":")[1]) for ln in errors if ln.startswith(str(path))}
        assert nginx_line in lines, f"nginx names line {nginx_line}:\n{out}"


def test_slow_start_is_a_deliberate_difference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """nginx Plus' `slow_start=` is built in here (issue #5); OSS nginx 1.22 rejects it."""
    body = (
        "stream {\nupstream u { server 127.0.0.1:1 slow_start=10s; server 127.0.0.1:2; }\n"
        "server { listen 9000; proxy_pass u; }\n}\n"
    )
    path = _write(tmp_path, "slow-start", body)
    assert _nginx_t(tmp_path, path)[0] == 1
    assert main(["check", "--nginx", str(path)]) == 0
    capsys.readouterr()
