"""lab.netns helpers that need no root: names, address guard, waits."""

from __future__ import annotations

import re

import pytest

from hakeeper.lab.netns import check_lab_address, unique_name, wait_until


def test_unique_names() -> None:
    names = {unique_name() for _ in range(50)}
    assert len(names) == 50
    assert all(re.fullmatch(r"hk[0-9a-f]{6}", n) for n in names)


@pytest.mark.parametrize("ok", ["198.18.0.1/24", "198.19.255.1/16", "2001:db8:18::1/64",
                                "fd00::1/64", "127.0.0.2/8"])  # fmt: skip
def test_lab_ranges_accepted(ok: str) -> None:
    check_lab_address(ok)


@pytest.mark.parametrize("bad", ["10.0.0.1/24", "192.168.1.1/24", "198.20.0.1/24", "2a00::1/64"])
def test_real_networks_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="outside the lab ranges"):
        check_lab_address(bad)


def test_wait_until_has_a_deadline() -> None:
    assert wait_until(lambda: 5, timeout=0.1) == 5
    with pytest.raises(TimeoutError, match="never"):
        wait_until(lambda: False, timeout=0.05, what="never")
