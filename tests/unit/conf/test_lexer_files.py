"""The filesystem adapter of the lexer: what it refuses to read, and MemoryFiles globbing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.files import MemoryFiles, OsFiles, default_config_id
from hakeeper.conf.lexer import parse_keepalived_file


def test_os_files_reads_regular_files_with_undecodable_bytes(tmp_path: Path) -> None:
    conf = tmp_path / "k.conf"
    conf.write_bytes(b"router_id \xff\xfe\n")
    text = OsFiles().read_text(str(conf))
    assert text == "router_id \udcff\udcfe\n"


@pytest.mark.parametrize("kind", ["directory", "fifo", "executable"])
def test_os_files_refuses_what_keepalived_refuses(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "x.conf"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # opening must not block
    else:
        path.write_text("a\n")
        path.chmod(0o755)
    with pytest.raises(OSError):
        OsFiles().read_text(str(path))


def test_include_of_a_fifo_is_reported_not_hung(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.conf")
    conf = tmp_path / "k.conf"
    conf.write_text("include pipe.conf\nafter\n")
    diags = Diagnostics()
    nodes = parse_keepalived_file(str(conf), diags)
    assert [n.name for n in nodes] == ["after"]
    assert "not a regular file" in diags.warnings[0].message


def test_os_files_glob_skips_directories(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("")
    (tmp_path / "d.conf").mkdir()
    assert OsFiles().glob(str(tmp_path / "*.conf")) == [str(tmp_path / "a.conf")]


def test_memory_files() -> None:
    files = MemoryFiles({"/etc/k/a.conf": "a", "b.conf": "b"}, cwd="/etc/k")
    assert files.read_text("/etc/k/b.conf") == "b"
    assert files.read_text("a.conf") == "a"
    assert files.glob("/etc/k/*.conf") == ["/etc/k/a.conf", "/etc/k/b.conf"]
    assert files.glob("*.conf") == ["a.conf", "b.conf"]
    with pytest.raises(FileNotFoundError):
        files.read_text("nope.conf")


def test_default_config_id_is_the_short_hostname() -> None:
    assert default_config_id()
    assert "." not in default_config_id()
