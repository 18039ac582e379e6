"""nginx.conf static-file directives (conf/nginx_static.py): merging, errors, mime.types,
and Debian's stock /etc/nginx/nginx.conf passing `hakeeper check --nginx`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hakeeper.cli import main
from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import NginxConfig, read_nginx
from hakeeper.conf.nginx_static import ErrorPage


def read(text: str) -> tuple[NginxConfig, Diagnostics]:
    diags = Diagnostics()
    return read_nginx(parse_nginx_text(text, "nginx.conf", diags), diags), diags


def test_merge_outside_in() -> None:
    cfg, diags = read(
        "http { root /h; index a.html; default_type text/x; error_page 404 /e.html;"
        " types { text/html html; }"
        " server { root /s; index b.html c.html; try_files $uri =404;"
        "  location /a/ { alias /al/; }"
        "  location /b/ { error_page 500 502 =200 /50x.html; types { } etag off;"
        "   location /b/c/ { index d.html; index e.html; } } } }"
    )
    assert not diags.has_errors, [d.format() for d in diags]
    (server,) = cfg.servers
    assert (server.static.root, server.static.index) == ("/s", ("b.html", "c.html"))
    assert server.static.try_files == ("$uri", "=404")
    a, b, c = server.locations
    assert (a.static.alias, a.static.root, a.static.try_files) == ("/al/", None, ())
    assert a.static.index == ("b.html", "c.html") and a.static.default_type == "text/x"
    assert a.static.error_pages == {404: ErrorPage("/e.html")}
    assert a.static.types == {"html": "text/html"}
    assert b.static.root == "/s" and b.static.types == {} and not b.static.etag
    assert b.static.error_pages == {
        500: ErrorPage("/50x.html", 200),
        502: ErrorPage("/50x.html", 200),
    }
    assert c.static.index == ("d.html", "e.html") and c.static.error_pages == b.static.error_pages


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "location / { root /a; alias /b; }",
            '"alias" directive is duplicate, "root" directive was specified earlier',
        ),
        ("location / { root /a; root /b; }", '"root" directive is duplicate'),
        ("location / { error_page 200 /x; }", 'value "200" must be between 300 and 599'),
        ("location / { error_page 404 =abc /x; }", 'invalid value "=abc"'),
        ("location / { error_page =200 /x; }", 'invalid number of arguments in "error_page"'),
        ("location / { try_files $uri =abc; }", 'invalid code "=abc"'),
        ("location / { try_files $uri; }", 'invalid number of arguments in "try_files"'),
        ("location / { etag maybe; }", 'invalid value "maybe" in "etag" directive'),
        ("alias /x;", '"alias" directive is not allowed here'),
        ("location @n { location /x { } }", "cannot be inside the named location"),
        ("types { text/html; }", 'invalid number of arguments in "types" directive'),
        ("server_name_in_redirect on;", '"server_name_in_redirect on" is not supported'),
    ],
)
def test_errors(text: str, message: str) -> None:
    _, diags = read("http { server { " + text + " } }")
    assert any(message in e.message for e in diags.errors), [d.format() for d in diags]


def test_duplicate_extension_warns_and_the_later_type_wins() -> None:
    cfg, diags = read("http { types { text/a x; text/b X; } server { location / { } } }")
    assert not diags.has_errors
    assert any('duplicate extension "X"' in w.message for w in diags.warnings)
    assert cfg.servers[0].locations[0].static.types == {"x": "text/b"}


STOCK = "/etc/nginx/nginx.conf"


@pytest.mark.skipif(not os.path.exists("/etc/nginx/mime.types"), reason="no Debian nginx")
def test_stock_mime_types_load() -> None:
    with open("/etc/nginx/mime.types") as f:
        text = f.read()
    cfg, diags = read("http { " + text + " server { location / { } } }")
    assert not diags.has_errors and not diags.warnings, [d.format() for d in diags]
    types = cfg.servers[0].locations[0].static.types
    assert types is not None and len(types) > 100
    assert (types["html"], types["css"], types["js"], types["png"]) == (
        "text/html", "text/css", "application/javascript", "image/png",
    )  # fmt: skip


@pytest.mark.skipif(not os.path.exists(STOCK), reason="no Debian nginx")
def test_debian_stock_config_passes_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--nginx", STOCK]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert f"the configuration file {STOCK} syntax is ok" in text
    assert f"configuration file {STOCK} test is successful" in text
    assert ": error: " not in text and "failed" not in text
    # the only warnings: directives accepted without effect (conf/nginx_status.py)
    warnings = [line for line in text.splitlines() if ": warning: " in line]
    assert warnings
    assert all(w.endswith("is accepted but has no effect in hakeeper") for w in warnings)


def test_a_site_like_debians_with_includes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sites").mkdir()
    (tmp_path / "mime.types").write_text("types { text/html html; text/css css; }\n")
    (tmp_path / "sites" / "default").write_text(
        "server { listen 127.0.0.1:8080 default_server; root /var/www/html;"
        " index index.html index.htm index.nginx-debian.html; server_name _;"
        " location / { try_files $uri $uri/ =404; } }\n"
    )
    (tmp_path / "nginx.conf").write_text(
        "events { } http { include mime.types; default_type application/octet-stream;"
        " gzip on; include sites/*; }\n"
    )
    assert main(["check", "--nginx", str(tmp_path / "nginx.conf")]) == 0
    out = capsys.readouterr()
    # the one warning is gzip's (accepted, no effect); the site itself reads clean
    warnings = [line for line in (out.out + out.err).splitlines() if "warning" in line]
    assert len(warnings) == 1, warnings
    assert '"gzip" is accepted but has no effect in hakeeper' in warnings[0]


def test_stock_commented_out_settings_are_accepted() -> None:
    """What Debian's nginx.conf has commented out (gzip_*, hash sizes, ...) reads too."""
    _, diags = read(
        "http { server_names_hash_bucket_size 64; server_name_in_redirect off;"
        " types_hash_max_size 2048; gzip on; gzip_vary on; gzip_proxied any;"
        " gzip_comp_level 6; gzip_buffers 16 8k; gzip_http_version 1.1;"
        " gzip_types text/plain text/css application/json; server { location / { } } }"
    )
    assert not diags.has_errors, [d.format() for d in diags]
    # server_name_in_redirect off is honoured; the other nine warn (conf/nginx_status.py)
    assert len(diags.warnings) == 9
    assert all(d.message.endswith("has no effect in hakeeper") for d in diags.warnings)
