"""The VRRP protocol core stays pure: no sockets, clocks, event loops, processes or randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hakeeper.vrrp

VRRP_DIR = Path(hakeeper.vrrp.__file__).parent
PURE = ["packet.py", "machine.py", "track.py", "auth_ah.py", "sim.py"]
FORBIDDEN = {"socket", "asyncio", "time", "os", "random", "subprocess", "select", "threading"}


@pytest.mark.parametrize("name", PURE)
def test_module_imports_nothing_impure(name: str) -> None:
    tree = ast.parse((VRRP_DIR / name).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{name} imports {imported & FORBIDDEN}"


@pytest.mark.parametrize("name", PURE)
def test_module_opens_with_a_docstring_and_stays_small(name: str) -> None:
    source = (VRRP_DIR / name).read_text()
    assert ast.get_docstring(ast.parse(source))
    assert 100 <= len(source.splitlines()) <= 800
