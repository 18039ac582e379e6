"""Every nginx directive hakeeper reads has a status (conf/nginx_status.py), the ignored
ones warn once per occurrence, and docs/nginx-directives.md is generated from the tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from hakeeper.cli import main
from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import DIRECTIVES, read_nginx
from hakeeper.conf.nginx_status import (
    STATUS,
    STREAM_STATUS,
    Status,
    is_ignored_warning,
    render_markdown,
    statuses_for,
)
from hakeeper.conf.nginx_stream import STREAM_DIRECTIVES, UNSUPPORTED
from hakeeper.conf.nginx_tls import IGNORED as TLS_IGNORED
from hakeeper.proxy import run

DOC = Path(__file__).resolve().parents[3] / "docs" / "nginx-directives.md"
REGENERATE = "run `python -m hakeeper.conf.nginx_status > docs/nginx-directives.md`"
MSG = "is accepted but has no effect in hakeeper"


def read(text: str) -> Diagnostics:
    diags = Diagnostics()
    read_nginx(parse_nginx_text(text, "nginx.conf", diags), diags)
    return diags


def ignored_lines(diags: Diagnostics) -> list[tuple[int, str]]:
    """(line, directive) of every accepted-but-ignored warning, in order."""
    return [
        (d.loc.line if d.loc else 0, d.message.split('"')[1])
        for d in diags.sorted()
        if is_ignored_warning(d)
    ]


# -- the tables and the doc ------------------------------------------------------------
def test_every_http_directive_has_a_status_and_every_status_a_directive() -> None:
    missing = sorted(set(DIRECTIVES) - set(STATUS))
    unknown = sorted(set(STATUS) - set(DIRECTIVES))
    assert not missing, f"directives without a STATUS entry (conf/nginx_status.py): {missing}"
    assert not unknown, f"STATUS entries naming no directive of conf.nginx: {unknown}"
    assert Status.REFUSED not in {e.status for e in STATUS.values()}  # refused = not in table


def test_every_stream_directive_has_a_status_and_refused_ones_are_the_unsupported() -> None:
    known = set(STREAM_DIRECTIVES) | set(UNSUPPORTED)
    assert not sorted(known - set(STREAM_STATUS)), "stream directives without a status"
    assert not sorted(set(STREAM_STATUS) - known), "STREAM_STATUS names an unknown directive"
    refused = {name for name, e in STREAM_STATUS.items() if e.status is Status.REFUSED}
    assert refused == set(UNSUPPORTED)


def test_table_contexts_select_their_status_table() -> None:
    for table, status in ((DIRECTIVES, STATUS), (STREAM_DIRECTIVES, STREAM_STATUS)):
        for spec in table.values():
            for context in spec.contexts:
                assert statuses_for(context) is status, context


def test_entries_are_consistent() -> None:
    for name, entry in (*STATUS.items(), *STREAM_STATUS.items()):
        assert entry.note, name
        if entry.quiet or entry.warned_elsewhere:
            assert entry.status is Status.IGNORED, name
        assert "|" not in entry.doc and (not entry.doc or entry.doc.startswith("nginx-"))
    # the ssl_* that proxy/tls.py warns about itself are exactly the ones it leaves out
    elsewhere = {n for n, e in STATUS.items() if e.warned_elsewhere}
    assert elsewhere == set(TLS_IGNORED)


def test_doc_links_point_at_existing_sections() -> None:
    docs = DOC.parent
    for entry in (*STATUS.values(), *STREAM_STATUS.values()):
        if not entry.doc:
            continue
        page, _, anchor = entry.doc.partition("#")
        text = (docs / page).read_text()
        headings = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]
        slugs = {
            "".join(c for c in h.lower().replace(" ", "-") if c.isalnum() or c in "-_")
            for h in headings
        }
        assert anchor in slugs, f"{entry.doc}: no such section in docs/{page}"


def test_nginx_directives_md_is_up_to_date() -> None:
    assert DOC.read_text() == render_markdown(), f"docs/nginx-directives.md is stale: {REGENERATE}"


def test_doc_lists_every_directive_once() -> None:
    text = render_markdown()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == len(STATUS) + len(STREAM_STATUS)
    assert "| `gzip` | ignored |" in text and "| `proxy_pass` | partial |" in text
    assert "| `proxy_protocol` | refused |" in text


# -- the warnings ----------------------------------------------------------------------
def test_each_ignored_occurrence_warns_once_at_its_line() -> None:
    diags = read(
        "user www-data;\n"
        "events { worker_connections 768; use epoll; }\n"
        "http {\n"
        "  gzip on; sendfile on; tcp_nopush on; access_log /var/log/a.log;\n"
        "  server { listen 127.0.0.1:8080; gzip_vary on;\n"
        "    location / { return 200; access_log off; gzip off; proxy_buffering on;\n"
        "      if ($arg_x) { rewrite_log on; return 204; } }\n"
        "  }\n"
        "}\n"
    )
    assert not diags.has_errors, [d.format() for d in diags]
    assert ignored_lines(diags) == [
        (1, "user"),
        (2, "worker_connections"),  # `use epoll` is what hakeeper does: no warning
        (4, "gzip"),  # `sendfile on` is what hakeeper does
        (4, "tcp_nopush"),
        (4, "access_log"),
        (5, "gzip_vary"),
        (6, "proxy_buffering"),  # `access_log off` and `gzip off`: no warning
        (7, "rewrite_log"),
    ]
    assert all(d.format().endswith(MSG) for d in diags.warnings)


def test_supported_and_partial_directives_do_not_get_the_warning() -> None:
    diags = read(
        "worker_processes 2; events { }\n"
        "http { upstream u { server 127.0.0.1:9; keepalive 4; }\n"
        "  server { listen 127.0.0.1:8080; keepalive_timeout 10s 5s;\n"
        "    location / { proxy_pass http://u; proxy_read_timeout 5s; } } }\n"
    )
    assert not diags.has_errors and not diags.warnings, [d.format() for d in diags]


def test_stream_ignored_directives_warn_and_refused_ones_still_fail() -> None:
    diags = read(
        "stream {\n"
        "  upstream b { server 127.0.0.1:9001; zone b 64k; }\n"
        "  server { listen 127.0.0.1:9000 udp; proxy_pass b;\n"
        "    proxy_responses 1; proxy_socket_keepalive off; access_log off; }\n"
        "}\n"
    )
    assert not diags.has_errors, [d.format() for d in diags]
    assert ignored_lines(diags) == [(2, "zone"), (4, "proxy_responses")]
    refused = read("stream { server { listen 9000; proxy_pass 127.0.0.1:1; proxy_protocol on; } }")
    assert [d.message for d in refused.errors] == [
        '"proxy_protocol" directive is not supported by hakeeper (stream)'
    ]
    assert not refused.warnings


def test_the_tls_ones_are_left_to_the_tls_warnings() -> None:
    """ssl_stapling & co. are reported by proxy/tls.py when a TLS server uses them (with
    `hakeeper run:` in check --nginx): no second warning from the reader."""
    diags = read("http { ssl_stapling on; ssl_buffer_size 4k; server { listen 8080; } }")
    assert not diags.items


def test_check_nginx_prints_the_warnings_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "gz.conf").write_text("gzip on;\ngzip_types text/css;\n")
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "events { }\nhttp {\n  include gz.conf;\n"
        "  server { listen 127.0.0.1:8080; location / { return 200; } }\n}\n"
    )
    assert main(["check", "--nginx", str(conf)]) == 0
    out = capsys.readouterr().out.splitlines()
    gz = tmp_path / "gz.conf"
    assert out == [
        f'{gz}:1:1: warning: "gzip" {MSG}',
        f'{gz}:2:1: warning: "gzip_types" {MSG}',
        f"hakeeper: the configuration file {conf} syntax is ok",
        f"hakeeper: configuration file {conf} test is successful",
    ]


def test_errors_still_fail_beside_the_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text("events { }\nhttp { gzip on; gzipp on; }\n")
    assert main(["check", "--nginx", str(conf)]) == 1
    out = capsys.readouterr().out
    assert f'{conf}:2:8: warning: "gzip" {MSG}' in out
    assert "unknown directive \"gzipp\" (did you mean 'gzip'?)" in out
    assert f"configuration file {conf} test failed" in out


def test_the_stream_process_loader_leaves_the_warnings_to_the_master(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "events { }\nhttp { gzip on; }\n"
        "stream { upstream b { server 127.0.0.1:9001; zone b 1m; }\n"
        "  server { listen 127.0.0.1:9000; proxy_pass b; } }\n"
    )
    master = Diagnostics()
    run.load(str(conf), master)
    assert not master.has_errors, [d.format() for d in master]
    assert [n for _, n in ignored_lines(master)] == ["gzip", "zone"]
    child = Diagnostics()
    stream = run.read_stream_file(str(conf), child)
    assert len(stream.servers) == 1 and not child.items
