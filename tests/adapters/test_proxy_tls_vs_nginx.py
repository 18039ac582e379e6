"""Differential test of TLS termination: one nginx.conf served by Debian's nginx and by
hakeeper (in-process engines on their own ports, same certificates and backends).

The config is an operator's usual shape: a port-80 server answering `return 301
https://$host$request_uri`, two TLS servers with their own certificates on one address
(SNI), `$scheme`/`$https`/X-Forwarded-Proto towards a plain backend, a relative redirect
made absolute, and `proxy_pass https://` (SNI, verification, keep-alive) to a TLS
backend. For every request both must give the same status, Location (ports aside), body,
certificate and TLS version, and so the backends must see the same request line and
headers. `hakeeper check --nginx` must fail like `nginx -t` on a certificate-less
`listen ... ssl`, with the same message.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest
from test_proxy_support import (
    Backend,
    BackendConn,
    Seen,
    request,
    run,
    simple_response,
    wait_nginx,
)
from tls_support import TlsBackend, make_pki, read_routes, serving, tls_request
from uvloop_support import free_port

pytestmark = [pytest.mark.interop("nginx")]

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    upstream app {{ server 127.0.0.1:{app}; }}
    upstream secure {{ server 127.0.0.1:{secure}; keepalive 4; }}
    server {{
        listen 127.0.0.1:{plain};
        server_name a.test b.test;
        return 301 https://$host$request_uri;
    }}
    server {{
        listen 127.0.0.1:{tls} ssl;
        server_name a.test;
        ssl_certificate {a_crt};
        ssl_certificate_key {a_key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:1m;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-HTTPS $https;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        location / {{ proxy_pass http://app; }}
        location /s/ {{
            proxy_pass https://secure/up/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_ssl_server_name on;
            proxy_ssl_name backend.test;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
        }}
        location /r {{ return 302 /elsewhere$is_args$args; }}
        location /t {{ return 200 "$scheme $https $host"; }}
    }}
    server {{
        listen 127.0.0.1:{tls} ssl;
        server_name b.test;
        ssl_certificate {b_crt};
        ssl_certificate_key {b_key};
        location / {{ proxy_pass http://app; }}
    }}
}}
"""

# (TLS?, SNI, Host, target)
TABLE: list[tuple[bool, str | None, bytes, bytes]] = [
    (False, None, b"a.test", b"/x?y=1"),
    (False, None, b"B.test:80", b"/"),
    (True, "a.test", b"a.test", b"/"),
    (True, "a.test", b"a.test", b"/deep/path?q=%20x"),
    (True, "a.test", b"a.test", b"/t"),
    (True, "a.test", b"a.test", b"/r?q=1"),
    (True, "a.test", b"a.test", b"/s/x?k=v"),
    (True, "a.test", b"a.test", b"/s/again"),
    (True, "b.test", b"b.test", b"/"),
    (True, None, b"a.test", b"/t"),
    (True, "b.test", b"a.test", b"/t"),  # SNI picks the cert, Host the server
    (True, "other.test", b"other.test", b"/t"),
]

ECHOED = (b"host", b"x-forwarded-proto", b"x-https", b"x-forwarded-for", b"connection")


def _echo(name: bytes):  # type: ignore[no-untyped-def]
    def handler(conn: BackendConn, seen: Seen) -> None:
        lines = [name, seen.method + b" " + seen.target]
        lines += [h + b"=" + (seen.header(h) or b"-") for h in ECHOED]
        conn.send(simple_response(body=b"\n".join(lines)))

    return handler


async def _observe(plain: int, tls: int) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for secure, sni, host, target in TABLE:
        raw = b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
        cert, version = b"", ""
        if secure:
            got = await tls_request(tls, raw, sni)
            resp, cert, version = got.response, got.cert, got.version
        else:
            resp = await request(plain, raw)
        location = resp.header(b"location") or b""
        for port, word in ((tls, b"TLS"), (plain, b"PLAIN")):
            location = location.replace(b"%d" % port, word)
        body = re.sub(rb"nginx/[0-9.]+|hakeeper", b"SERVER", resp.body)  # server tokens
        shown = hashlib.sha256(cert).hexdigest()[:12] if cert else ""
        out.append((sni, host, target, resp.status, location, body, shown, version))
    return out


def _start_nginx(text: str, work: str) -> subprocess.Popen[bytes]:
    path = os.path.join(work, "nginx.conf")
    with open(path, "w") as f:
        f.write(text)
    return subprocess.Popen(
        [NGINX, "-p", work, "-c", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def test_tls_termination_and_https_upstream_as_nginx() -> None:
    work = tempfile.mkdtemp(prefix="hk-tls-vs-nginx-")

    async def main() -> None:
        pki = make_pki(work)
        (a_crt, a_key), (b_crt, b_key) = pki.leaf("a.test"), pki.leaf("b.test")
        app = await Backend(_echo(b"app")).start()
        secure = await TlsBackend(pki.leaf("backend.test"), _echo(b"secure")).start()
        values = {
            "dir": work, "app": app.port, "secure": secure.port, "ca": pki.ca,
            "a_crt": a_crt, "a_key": a_key, "b_crt": b_crt, "b_key": b_key,
        }  # fmt: skip
        n_plain, n_tls, h_plain, h_tls = (free_port() for _ in range(4))
        proc = _start_nginx(CONF.format(plain=n_plain, tls=n_tls, **values), work)
        routes, diags = read_routes(CONF.format(plain=h_plain, tls=h_tls, **values))
        assert not diags.has_errors, [d.format() for d in diags.sorted()]
        try:
            await wait_nginx(proc, n_tls)
            async with serving(routes):
                want = await _observe(n_plain, n_tls)
                nginx_sni = list(secure.sni)
                got = await _observe(h_plain, h_tls)
                hk_sni = secure.sni[len(nginx_sni) :]
            diffs = [(w, g) for w, g in zip(want, got, strict=True) if w != g]
            assert not diffs, "\n".join(f"nginx {w}\nhk    {g}" for w, g in diffs)
            # both sent SNI backend.test once and reused the connection for the second
            assert nginx_sni == hk_sni == ["backend.test"]
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stderr is not None:
                proc.stderr.close()
            await app.stop()
            await secure.stop()

    try:
        run(main(), limit=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _first_error(text: str) -> str:
    """The first error message of `nginx -t` or `hakeeper check --nginx` output."""
    for line in text.splitlines():
        if "[emerg]" in line:
            return line.split("[emerg] ", 1)[1]
        if ": error: " in line:
            return line.split(": error: ", 1)[1]
    return ""


def test_check_nginx_missing_certificate_error_matches_nginx_t() -> None:
    work = tempfile.mkdtemp(prefix="hk-tls-check-")
    try:
        pki = make_pki(work)
        crt, key = pki.leaf("a.test")
        cases = {
            "nocert": "ssl_certificate_key {key};",
            "nokey": "ssl_certificate {crt};",
            "missingkey": "ssl_certificate {crt}; ssl_certificate_key {work}/gone.key;",
            "noclientca": "ssl_certificate {crt}; ssl_certificate_key {key}; ssl_verify_client on;",
            "ok": "ssl_certificate {crt}; ssl_certificate_key {key};",
        }
        for name, lines in cases.items():
            path = os.path.join(work, f"{name}.conf")
            with open(path, "w") as f:
                f.write(
                    f"pid {work}/nginx.pid;\nerror_log {work}/error.log;\nevents {{}}\n"
                    "http {\n    server {\n"
                    f"        listen 127.0.0.1:{free_port()} ssl;\n"
                    f"        {lines.format(crt=crt, key=key, work=work)}\n"
                    "        return 200;\n    }\n}\n"
                )
            ref = subprocess.run(
                [NGINX, "-t", "-p", work, "-c", path, "-e", f"{work}/err.log"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            ours = subprocess.run(
                [sys.executable, "-m", "hakeeper", "check", "--nginx", path],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            assert (ref.returncode == 0) == (ours.returncode == 0), (name, ref.stderr, ours.stdout)
            if name == "missingkey":  # nginx names no line; ours adds file:line:col
                assert f"{path}:7:" in ours.stdout
                assert 'cannot load certificate key "' in _first_error(ours.stdout)
            elif name != "ok":
                assert _first_error(ours.stdout) == _first_error(ref.stderr), (name, ref.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
