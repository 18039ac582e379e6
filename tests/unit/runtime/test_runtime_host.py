"""virtual_routes / virtual_rules word parsing and model -> netlink VIP mapping."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from hakeeper.conf.model import VirtualAddress
from hakeeper.io.netlink import Route, Rule
from hakeeper.runtime.host import parse_route, parse_rule, to_netlink


def test_routes() -> None:
    assert parse_route(["198.18.50.0/24", "via", "198.18.0.254"], "eth0") == Route(
        dst="198.18.50.0/24", via="198.18.0.254"
    )
    assert parse_route(["default", "gw", "198.18.0.1", "table", "100"], "eth0") == Route(
        dst="default", via="198.18.0.1", table=100
    )
    assert parse_route(
        ["src", "198.18.0.100", "to", "198.18.9.1/24", "dev", "eth1", "metric", "5"], "eth0"
    ) == Route(dst="198.18.9.0/24", dev="eth1", src="198.18.0.100", metric=5)
    assert parse_route(["198.18.60.0/24"], "eth0").dev == "eth0"


@pytest.mark.parametrize(
    "words", [["198.18.1.0/24", "blackhole"], ["via"], ["dev", "eth0"], ["x/33"]]
)
def test_unsupported_routes_raise(words: list[str]) -> None:
    with pytest.raises(ValueError):
        parse_route(words, "eth0")


def test_rules() -> None:
    assert parse_rule(["from", "198.18.0.100", "table", "100"]) == Rule(
        table=100, src="198.18.0.100"
    )
    assert parse_rule(["to", "2001:db8::/64", "lookup", "main", "pref", "90"]) == Rule(
        table=254, dst="2001:db8::/64", priority=90, family=socket.AF_INET6
    )
    with pytest.raises(ValueError):
        parse_rule(["from", "198.18.0.1"])


def test_vip_mapping_defaults_to_instance_interface() -> None:
    vip = VirtualAddress(ipaddress.ip_interface("198.18.0.100/24"), label="eth0:1")
    spec = to_netlink(vip, "eth0")
    assert (spec.address, spec.prefixlen, spec.ifname, spec.label) == (
        "198.18.0.100", 24, "eth0", "eth0:1",
    )  # fmt: skip
    other = VirtualAddress(ipaddress.ip_interface("2001:db8::5/64"), dev="eth1", scope="site")
    spec6 = to_netlink(other, "eth0")
    assert (spec6.ifname, spec6.scope, spec6.prefixlen) == ("eth1", "site", 64)
