"""The proxy-facing adapter: pick/report with the engine's own peer objects and tried list."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address

from hakeeper.balance import make_balancer
from hakeeper.balance.nginx import UpstreamServer
from hakeeper.balance.upstream import UpstreamGroup

S = UpstreamServer


@dataclass(frozen=True)
class ProxyPeer:  # stands in for hakeeper.proxy.config.Peer
    host: str
    port: int


def group(method, weights, **kw):
    entries = [
        (ProxyPeer("127.0.0.1", 8000 + i), S(f"127.0.0.1:{8000 + i}", w, **kw))
        for i, w in enumerate(weights)
    ]
    return UpstreamGroup(method, entries), [e[0] for e in entries]


def test_swrr_through_the_adapter():
    g, peers = group("round_robin", [5, 1, 1])
    seq = []
    for _ in range(7):
        p = g.pick("", [], 0)
        seq.append(peers.index(p))
        g.report(p, True, 0)
    assert seq == [0, 0, 1, 0, 2, 0, 0]
    assert g.count() == 3


def test_retry_order_equals_a_native_request_for_hash_methods():
    for method in ("hash", "hash_consistent", "ip_hash", "round_robin", "least_conn"):
        g, peers = group(method, [1, 2, 1, 1])
        native = make_balancer(
            method, [S(f"127.0.0.1:{8000 + i}", w) for i, w in enumerate([1, 2, 1, 1])]
        )
        key = "198.18.3.4" if method == "ip_hash" else "user-17"
        req = native.begin(key=key, client=ip_address("198.18.3.4"))
        tried = []
        for _ in range(4):
            p = g.pick(key, tried, 0)
            n = req.get(0)
            assert p is not None and n is not None
            assert peers.index(p) == n.index, method
            g.report(p, False, 0)
            req.free(n, 0, failed=True)
            tried.append(p)
        assert g.pick(key, tried, 0) is None


def test_report_failure_feeds_passive_health():
    g, _ = group("round_robin", [1, 1], max_fails=1, fail_timeout=10)
    p = g.pick("", [], 100)
    g.report(p, False, 100)
    rest = []
    for _ in range(4):
        q = g.pick("", [], 101)
        rest.append(q)
        g.report(q, True, 101)
    assert p not in rest
    assert all(state.conns == 0 for _, state in g.state())


def test_backup_retry_through_adapter():
    entries = [
        (ProxyPeer("a", 1), S("a:1")),
        (ProxyPeer("b", 1), S("b:1", backup=True)),
        (ProxyPeer("c", 1), S("c:1", backup=True)),
    ]
    g = UpstreamGroup("round_robin", entries)
    first = g.pick("", [], 0)
    assert first == entries[0][0]
    g.report(first, False, 0)
    second = g.pick("", [first], 0)
    assert second in (entries[1][0], entries[2][0])
    g.report(second, False, 0)
    third = g.pick("", [first, second], 0)
    assert third is not None and third not in (first, second)


def test_only_hash_methods_ask_for_the_client_key():
    for method in ("round_robin", "least_conn", "random", "random_two"):
        assert group(method, [1, 1])[0].uses_key is False, method
    for method in ("ip_hash", "hash", "hash_consistent"):
        assert group(method, [1, 1])[0].uses_key is True, method


def test_reports_on_primary_and_backup_peers_settle_each_list():
    entries = [
        (ProxyPeer("127.0.0.1", 8000), S("127.0.0.1:8000", max_fails=1)),
        (ProxyPeer("127.0.0.1", 8001), S("127.0.0.1:8001", max_fails=1)),
        (ProxyPeer("127.0.0.1", 8002), S("127.0.0.1:8002", backup=True)),
    ]
    g = UpstreamGroup("round_robin", entries)
    a, b, backup = (e[0] for e in entries)
    for peer in (a, b):
        assert g.pick("", (), 100.0) is not None
        g.report(peer, False, 100.0)  # both primaries fail: max_fails reached
    assert g.pick("", (), 100.0) == backup
    g.report(backup, True, 100.0)
    conns = {str(item.port): p.conns for item, p in g.state()}
    assert conns == {"8000": 0, "8001": 0, "8002": 0}
