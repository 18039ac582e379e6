"""nginx.conf TLS directives (conf/nginx_tls.py) and their translation (proxy/tls.py):
defaults, merging, nginx -t's errors, `$scheme`/`$https` binding, upstream SNI names.
No sockets: contexts are only built, never connected."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import NginxConfig, read_nginx
from hakeeper.conf.nginx_tls import NGINX_122_PROTOCOLS, ProxySsl
from hakeeper.proxy.from_nginx import listeners
from hakeeper.proxy.routes import compile_template
from hakeeper.proxy.tls import absolute_paths, bind_https, bind_scheme, upstream_tls


def _read(text: str) -> tuple[NginxConfig, Diagnostics]:
    diags = Diagnostics()
    config = read_nginx(parse_nginx_text(text, "nginx.conf", diags), diags)
    return config, diags


def _errors(text: str) -> list[str]:
    _, diags = _read(text)
    return [d.message for d in diags.errors]


def test_defaults_and_http_to_server_merge() -> None:
    config, diags = _read(
        """
        http {
            ssl_certificate /h.crt; ssl_certificate_key /h.key;
            ssl_ciphers ECDHE+AESGCM; ssl_session_tickets off;
            server { listen 443 ssl; server_name a; return 200; }
            server { listen 443 ssl; server_name b; ssl_certificate /b.crt;
                     ssl_certificate /b2.crt; ssl_certificate_key /b.key;
                     ssl_certificate_key /b2.key; ssl_protocols TLSv1.2 TLSv1.3;
                     return 200; }
            server { listen 80; return 200; }
        }
        """
    )
    assert not diags.has_errors, [d.format() for d in diags.sorted()]
    a, b, plain = config.servers
    assert a.listens[0].ssl and a.listens[0].port == 443
    assert a.ssl.certificates == ("/h.crt",) and a.ssl.ciphers == "ECDHE+AESGCM"
    assert a.ssl.protocols == NGINX_122_PROTOCOLS  # no TLSv1.3 by default in 1.22
    assert not a.ssl.session_tickets and not a.ssl.prefer_server_ciphers
    assert b.ssl.certificates == ("/b.crt", "/b2.crt")  # the inner list replaces
    assert [p[:2] for p in b.ssl.pairs()] == [("/b.crt", "/b.key"), ("/b2.crt", "/b2.key")]
    assert b.ssl.protocols == ("TLSv1.2", "TLSv1.3")
    assert not plain.listens[0].ssl


def test_listen_flags_and_deprecated_ssl_on() -> None:
    config, diags = _read(
        """
        http { server { listen 127.0.0.1:8443 ssl http2 default_server reuseport;
                        listen 8080; ssl on; ssl_certificate /c; ssl_certificate_key /k;
                        return 200; } }
        """
    )
    assert not diags.has_errors
    warnings = [d.message for d in diags.warnings]
    assert any("http2" in w for w in warnings)
    assert any('the "ssl" directive is deprecated' in w for w in warnings)
    first, second = config.servers[0].listens
    assert first.ssl and first.default_server and first.reuseport
    assert second.ssl  # `ssl on` applies to every listen of the server


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "http { server { listen 443 ssl; return 200; } }",
            'no "ssl_certificate" is defined for the "listen ... ssl" directive in nginx.conf:1',
        ),
        (
            "http { server { listen 443 ssl; ssl_certificate /c; return 200; } }",
            'no "ssl_certificate_key" is defined for certificate "/c"',
        ),
        ("http { ssl_session_tickets maybe; }", 'it must be "on" or "off"'),
        (
            "http { server { ssl_certificate /c; ssl_certificate_key /k; ssl_verify_client on; } }",
            "no ssl_client_certificate for ssl_verify_client",
        ),
        ("http { ssl_verify_client maybe; }", 'invalid value "maybe"'),
        ("http { ssl_verify_depth x; }", '"ssl_verify_depth" directive invalid number'),
        ("http { ssl_protocols TLSv1.2 TLSv9; }", 'invalid value "TLSv9"'),
        ("http { ssl_session_cache shared:x; }", 'invalid session cache "shared:x"'),
        ("http { ssl_session_timeout soon; }", 'invalid time "soon"'),
        ("http { ssl_certificate $ssl_server_name.crt; }", "with variables"),
        ("http { server { ssl_ciphers; } }", 'invalid number of arguments in "ssl_ciphers"'),
        ("http { server { location / { ssl_ciphers X; } } }", "is not allowed here"),
        (
            "http { server { location / { proxy_pass https://1.2.3.4; proxy_ssl_verify on; } } }",
            "no proxy_ssl_trusted_certificate for proxy_ssl_verify",
        ),
        (
            "http { server { location / { proxy_pass https://1.2.3.4; proxy_ssl_name $host; } } }",
            '"proxy_ssl_name" with variables is not supported',
        ),
    ],
)
def test_errors_in_nginx_words(text: str, message: str) -> None:
    errors = _errors(text)
    assert any(message in e for e in errors), errors


def test_missing_certificate_names_the_default_server_of_the_address() -> None:
    text = (
        "http {\n"
        "  server { listen 443 ssl; ssl_certificate /c; ssl_certificate_key /k; }\n"
        "  server { listen 443 default_server; server_name b; }\n"  # ssl comes from the 1st
        "  server { listen 8443 ssl; ssl_reject_handshake on; }\n"  # allowed without a cert
        "}\n"
    )
    assert _errors(text) == [
        'no "ssl_certificate" is defined for the "listen ... ssl" directive in nginx.conf:3'
    ]


def test_proxy_ssl_settings_merge_outside_in() -> None:
    config, diags = _read(
        """
        http {
            proxy_ssl_server_name on;
            server {
                proxy_ssl_protocols TLSv1.3;
                location / { proxy_pass https://10.0.0.1:8443; proxy_ssl_name api.test; }
                location /x { proxy_pass https://10.0.0.1; proxy_ssl_server_name off; }
            }
        }
        """
    )
    assert not diags.has_errors
    first, second = config.servers[0].locations
    assert first.settings.ssl.server_name and first.settings.ssl.name == "api.test"
    assert first.settings.ssl.protocols == ("TLSv1.3",)
    assert not second.settings.ssl.server_name and second.settings.ssl.name == ""


def test_upstream_sni_name_follows_proxy_ssl_server_name() -> None:
    diags = Diagnostics()
    off = upstream_tls(ProxySsl(), "backend:8443", None, diags)
    on = upstream_tls(ProxySsl(server_name=True), "backend:8443", None, diags)
    named = upstream_tls(ProxySsl(server_name=True, name="api.test"), "backend", None, diags)
    v6 = upstream_tls(ProxySsl(server_name=True), "[::1]:8443", None, diags)
    assert not diags.items
    assert off is not None and off.server_hostname == ""  # nginx default: no SNI
    assert on is not None and on.server_hostname == "backend"  # $proxy_host, no port
    assert named is not None and named.server_hostname == "api.test"
    assert v6 is not None and v6.server_hostname == "::1"
    assert off.context.verify_mode == ssl.CERT_NONE  # proxy_ssl_verify off
    bad = upstream_tls(ProxySsl(ciphers="NOPE"), "b", None, diags)
    assert bad is None
    assert (
        diags.errors[0].message == 'SSL_CTX_set_cipher_list("NOPE") failed (SSL: no cipher match)'
    )


def test_scheme_and_https_are_constants_of_a_listener() -> None:
    template = compile_template("$scheme://$host$request_uri $https")
    assert bind_scheme(template, "https").parts[:2] == (b"https", b"://")
    assert bind_scheme(template, "https").parts[-1] == b"on"
    assert bind_scheme(template, "http").parts[-1] == b""
    assert bind_https("$https-${https}/$https_x", "https") == "on-on/$https_x"
    assert bind_https("$scheme", "https") == "$scheme"


def test_unreadable_certificate_is_reported_by_listeners_at_the_directive() -> None:
    config, diags = _read(
        "http {\n  server {\n    listen 127.0.0.1:9443 ssl;\n"
        "    ssl_certificate /nonexistent/hk.crt;\n    ssl_certificate_key /nonexistent/hk.key;\n"
        "    return 200;\n  }\n}\n"
    )
    assert not diags.has_errors
    assert listeners(config, diags) == []
    (error,) = diags.errors
    assert error.loc is not None and error.loc.line == 4
    assert error.message.startswith('cannot load certificate "/nonexistent/hk.crt"')


def test_relative_files_are_relative_to_the_nginx_conf_directory(tmp_path: Path) -> None:
    """As nginx's conf prefix: `ssl_certificate a.crt` in /etc/nginx/nginx.conf (or in a
    file it includes) is /etc/nginx/a.crt; nested locations stay the same objects."""
    config, diags = _read(
        """
        http { server { listen 443 ssl; ssl_certificate certs/a.crt;
                        ssl_certificate_key /abs/a.key; ssl_dhparam dh.pem;
                        location / { proxy_pass https://10.0.0.1;
                                     proxy_ssl_trusted_certificate ca.pem;
                                     location /in { proxy_pass https://10.0.0.2; } } } }
        """
    )
    assert not diags.has_errors
    fixed = absolute_paths(config, str(tmp_path))
    (server,) = fixed.servers
    assert server.ssl.certificates == (str(tmp_path / "certs/a.crt"),)
    assert server.ssl.keys == ("/abs/a.key",)
    assert server.ssl.dhparam == str(tmp_path / "dh.pem")
    outer, inner = server.locations
    assert outer.settings.ssl.trusted_certificate == str(tmp_path / "ca.pem")
    assert outer.nested == (inner,) and outer.nested[0] is inner


def test_client_verification_must_be_the_same_on_one_address(tmp_path: Path) -> None:
    """The SNI switch lends certificates only (OpenSSL keeps the verify mode of the first
    context), so servers on one TLS address that differ in ssl_verify_client are refused
    rather than served without the client check one of them asked for."""
    ca = tmp_path / "ca.pem"
    ca.write_text("")  # never loaded: the address is refused before
    config, diags = _read(
        f"""
        http {{ ssl_certificate /nonexistent.crt; ssl_certificate_key /nonexistent.key;
            server {{ listen 127.0.0.1:9443 ssl; server_name a; return 200; }}
            server {{ listen 127.0.0.1:9443 ssl; server_name b; ssl_verify_client on;
                     ssl_client_certificate {ca}; return 200; }} }}
        """
    )
    assert not diags.has_errors
    assert listeners(config, diags) == []
    assert any("ssl_verify_client" in d.message for d in diags.errors), diags.errors
