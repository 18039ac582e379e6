"""nginx.conf lexing: `;` statements, blocks, comments, quotes, `$var` and errors."""

from __future__ import annotations

from pathlib import Path

from hakeeper.conf.diagnostics import Diagnostics, Location
from hakeeper.conf.lexer import parse_nginx_file, parse_nginx_text
from hakeeper.conf.tree import Node


def lex(text: str) -> tuple[tuple[Node, ...], Diagnostics]:
    diags = Diagnostics()
    return parse_nginx_text(text, "nginx.conf", diags), diags


def shape(nodes: tuple[Node, ...]) -> list[object]:
    out: list[object] = []
    for n in nodes:
        item = (n.name, *n.arg_texts())
        out.append({item: shape(n.children)} if n.children is not None else item)
    return out


def messages(diags: Diagnostics) -> list[str]:
    return [d.format() for d in diags]


def test_typical_config() -> None:
    text = """
# upstreams
http {
    upstream app {
        least_conn;
        server 127.0.0.1:8081 weight=3 max_fails=2;   # primary
        server 127.0.0.1:8082 backup;
    }
    server {
        listen 127.0.0.1:8080;
        location / { proxy_pass http://app; }
        location ~ \\.php$ { return 404; }
    }
}
"""
    nodes, diags = lex(text)
    assert not diags.items
    assert shape(nodes) == [
        {
            ("http",): [
                {
                    ("upstream", "app"): [
                        ("least_conn",),
                        ("server", "127.0.0.1:8081", "weight=3", "max_fails=2"),
                        ("server", "127.0.0.1:8082", "backup"),
                    ]
                },
                {
                    ("server",): [
                        ("listen", "127.0.0.1:8080"),
                        {("location", "/"): [("proxy_pass", "http://app")]},
                        {("location", "~", "\\.php$"): [("return", "404")]},
                    ]
                },
            ]
        }
    ]
    http = nodes[0]
    assert http.loc == Location("nginx.conf", 3, 1)
    assert http.open_loc == Location("nginx.conf", 3, 6)
    assert http.close_loc == Location("nginx.conf", 14, 1)


def test_quotes_escapes_and_variables() -> None:
    text = (
        "log_format main '$remote_addr \"$request\" ${status}x';\n"
        'return 200 "a;b{c}\\"d\\n";\n'
        "set $x ${host}_y;\n"
        "multi 'line1\nline2' after;\n"
    )
    nodes, diags = lex(text)
    assert not diags.items
    assert shape(nodes) == [
        ("log_format", "main", '$remote_addr "$request" ${status}x'),
        ("return", "200", 'a;b{c}"d\n'),
        ("set", "$x", "${host}_y"),
        ("multi", "line1\nline2", "after"),
    ]
    assert nodes[0].args[1].quoted
    assert not nodes[2].args[1].quoted
    assert nodes[3].args[1].loc == Location("nginx.conf", 5, 8)  # after the quoted newline


def test_hash_inside_a_word_is_not_a_comment() -> None:
    nodes, diags = lex("rewrite ^/a#b /c; # comment\n")
    assert not diags.items
    assert shape(nodes) == [("rewrite", "^/a#b", "/c")]


def test_include_is_left_to_the_reader() -> None:
    nodes, _ = lex("include /etc/nginx/conf.d/*.conf;\n")
    assert shape(nodes) == [("include", "/etc/nginx/conf.d/*.conf")]


def test_missing_semicolon_at_eof() -> None:
    nodes, diags = lex("worker_processes 1;\nevents\n")
    assert messages(diags) == [
        "nginx.conf:2:1: error: unexpected end of file, expecting ';' or '}'"
    ]
    assert shape(nodes) == [("worker_processes", "1"), ("events",)]


def test_missing_semicolon_before_close() -> None:
    nodes, diags = lex("events {\n  worker_connections 10\n}\n")
    assert messages(diags) == ["nginx.conf:2:22: error: missing ';' before '}'"]
    assert shape(nodes) == [{("events",): [("worker_connections", "10")]}]


def test_unclosed_block_at_its_brace() -> None:
    nodes, diags = lex("http {\n  server {\n    listen 80;\n  }\n")
    assert messages(diags) == [
        "nginx.conf:1:6: error: block 'http' opened here is never closed (missing '}')"
    ]
    assert nodes[0].close_loc is None


def test_stray_tokens() -> None:
    _, diags = lex("}\n;\n{ a; }\n")
    assert messages(diags) == [
        "nginx.conf:1:1: error: unexpected '}' with no open block",
        "nginx.conf:2:1: error: unexpected ';'",
        "nginx.conf:3:1: error: unexpected '{' with no keyword before it",
    ]


def test_unterminated_quote_and_junk_after_quote() -> None:
    _, diags = lex('a "b"c;\nd "never closed;\n')
    assert messages(diags) == [
        "nginx.conf:1:6: error: unexpected 'c' after a quoted string",
        'nginx.conf:2:3: error: unterminated quoted string (missing closing ")',
    ]


def test_parse_nginx_file(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text("events { }\n")
    diags = Diagnostics()
    assert shape(parse_nginx_file(str(conf), diags)) == [{("events",): []}]
    assert not diags.items
    missing = parse_nginx_file(str(tmp_path / "nope.conf"), diags)
    assert missing == ()
    assert "cannot read" in diags.errors[0].message
