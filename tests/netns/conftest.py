"""Namespace fixtures: a `lab` (namespaces deleted at teardown), a two-node `pair` on a bridge
and a private `workdir` for the daemons' files.

Every test here needs root; mark them `@pytest.mark.root` (the shared conftest skips them
on a laptop and fails them under CI=true).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hakeeper.lab.netns import Lab


@dataclass(frozen=True)
class Pair:
    """Two hosts `a` (198.18.0.1/24) and `b` (198.18.0.2/24) on eth0, bridged in `switch`."""

    lab: Lab
    a: str
    b: str
    switch: str
    a_ip: str = "198.18.0.1"
    b_ip: str = "198.18.0.2"
    a6: str = "2001:db8:18::1"
    b6: str = "2001:db8:18::2"


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as the_lab:
        yield the_lab


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A private directory (not tmp_path: concurrent pytest sessions on this machine prune
    each other's basetemp, which would pull config files from under running daemons);
    kept when HK_KEEP_LOGS is set."""
    path = Path(tempfile.mkdtemp(prefix="hkwork-"))
    try:
        yield path
    finally:
        if os.environ.get("HK_KEEP_LOGS"):
            print(f"logs kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pair(lab: Lab) -> Pair:
    sw = lab.add_switch()
    a = lab.add_ns("a")
    b = lab.add_ns("b")
    lab.connect(a, sw)
    lab.connect(b, sw)
    p = Pair(lab, a, b, sw)
    lab.addr(a, "eth0", f"{p.a_ip}/24")
    lab.addr(b, "eth0", f"{p.b_ip}/24")
    lab.addr(a, "eth0", f"{p.a6}/64")
    lab.addr(b, "eth0", f"{p.b6}/64")
    return p
