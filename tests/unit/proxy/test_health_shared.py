"""The master-side checker's bookkeeping, without probes that answer: slot table, the worker's
view of it, reload reconciliation (kept / added / removed / persistent) and the stream
`health_check` / `match` reader. No sleeping: states are set by hand, time is a stub."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from hakeeper.balance.nginx import UpstreamServer
from hakeeper.balance.upstream import UpstreamGroup
from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.lexer import parse_nginx_text
from hakeeper.conf.nginx import read_nginx
from hakeeper.conf.nginx_health import HealthCheck, StreamHealthCheck, StreamMatch, unescape
from hakeeper.conf.nginx_stream import StreamConfig
from hakeeper.proxy.health import CheckTarget, GroupBinding, HealthHub, PeerHealth, initial_health
from hakeeper.proxy.health_shared import CHECKING, DOWN, UNKNOWN, UP, HealthTable, WorkerHealth

# -- HealthTable --------------------------------------------------------------------------


def test_table_keeps_slots_of_kept_keys_and_quarantines_freed_ones_for_one_round() -> None:
    t = HealthTable(capacity=4)
    first = t.assign(["a", "b", "c"])
    assert sorted(first.values()) == [0, 1, 2]
    second = t.assign(["a", "c", "d"])  # b freed: not reused at once
    assert second["a"] == first["a"] and second["c"] == first["c"]
    assert second["d"] == 3
    third = t.assign(["a", "c", "d", "e"])  # b's slot is free again now
    assert third["e"] == first["b"]
    with pytest.raises(RuntimeError):
        t.assign(["a", "c", "d", "e", "f"])
    t.close()


def test_table_bumps_the_generation_only_on_a_change() -> None:
    t = HealthTable(capacity=8)
    slots = t.assign(["x"])
    g0 = t.generation()
    t.set(slots["x"], UP)
    g1 = t.generation()
    t.set(slots["x"], UP)
    assert g1 == g0 + 1 and t.generation() == g1 and t.get(slots["x"]) == UP
    t.close()


def test_table_is_shared_with_a_forked_child() -> None:
    t = HealthTable(capacity=8)
    slot = t.assign(["k"])["k"]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: write, as the master's checker would after the fork
        code = 1
        try:
            os.close(r)
            t.set(slot, DOWN)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert t.get(slot) == DOWN
    t.close()


# -- WorkerHealth ---------------------------------------------------------------------------


class StubLoop:
    def __init__(self) -> None:
        self.now = 100.0

    def time(self) -> float:
        return self.now


def group(names: list[str], slow_start: float = 0.0) -> UpstreamGroup[str]:
    entries = [(n, UpstreamServer(name=n, server=n, slow_start=slow_start)) for n in names]
    return UpstreamGroup("round_robin", entries)


def test_worker_applies_changes_ramps_only_after_down() -> None:
    t = HealthTable(capacity=8)
    slots = t.assign(["ka", "kb"])
    t.set(slots["ka"], UP)
    t.set(slots["kb"], CHECKING)  # mandatory, not checked yet
    g = group(["a", "b"], slow_start=10.0)
    loop = StubLoop()
    w = WorkerHealth(t, [(g, "a", "ka"), (g, "b", "kb"), (g, "a", "not-in-table")], loop)  # type: ignore[arg-type]
    assert len(w.followed) == 2
    assert w.sync() == 1  # b is out from the first look
    assert g.balancer.peer("b").down and not g.balancer.peer("a").down
    assert w.sync() == 0  # nothing moved: the generation says so
    t.set(slots["kb"], UP)  # first pass of a mandatory check: no slow start
    assert w.sync() == 1
    assert g.balancer.weight_now("b", loop.now) == 1.0
    t.set(slots["kb"], DOWN)
    w.sync()
    loop.now += 1.0
    t.set(slots["kb"], UP)  # back from down: slow start
    w.sync()
    assert 0.0 <= g.balancer.weight_now("b", loop.now) < 0.1
    t.close()


def test_unknown_state_is_ignored() -> None:
    t = HealthTable(capacity=2)
    t.assign(["k"])
    g = group(["a"])
    w = WorkerHealth(t, [(g, "a", "k")], StubLoop())  # type: ignore[arg-type]
    t.bump()
    assert t.get(0) == UNKNOWN
    assert w.sync() == 0 and not g.balancer.peer("a").down
    t.close()


# -- reconciliation ---------------------------------------------------------------------


def test_initial_states() -> None:
    plain, mandatory = HealthCheck(), HealthCheck(mandatory=True)
    persistent = HealthCheck(mandatory=True, persistent=True)
    assert initial_health(plain, None).state == UP
    assert initial_health(mandatory, None).state == CHECKING
    assert initial_health(mandatory, True).state == CHECKING
    assert initial_health(persistent, True).state == UP
    assert initial_health(persistent, False).state == CHECKING
    ph = PeerHealth(2, 1, True)
    assert ph.on_result(True, "ok", 1.0) is True  # mandatory: first pass brings it up


def hub_round(work: Any) -> Any:
    async def main() -> Any:
        loop = asyncio.get_running_loop()
        hub = HealthHub(loop, table=HealthTable(capacity=16))
        try:
            return work(hub)
        finally:
            await hub.aclose()

    return asyncio.run(main())


def target(server: str, check: HealthCheck) -> CheckTarget:
    # port 9 on 127.0.0.1: probes fail, but none finishes before the assertions
    return CheckTarget("app", server, "127.0.0.1", 9, check.spec)


def test_reload_keeps_unchanged_checks_and_starts_new_ones_as_nginx_plus() -> None:
    def work(hub: HealthHub) -> None:
        check = HealthCheck(fails=3)
        a, b = target("a:1", check), target("b:1", check)
        hub.update([a, b])
        hub.checks[b.key].health.on_result(False, "x", 1.0)
        hub.checks[b.key].health.on_result(False, "x", 1.0)
        hub.checks[b.key].health.on_result(False, "x", 1.0)
        hub._publish(hub.checks[b.key], ramp=False)
        task_a = hub.checks[a.key].task
        assert hub.table is not None
        slot_b = hub.checks[b.key].slot
        assert hub.table.get(slot_b) == DOWN
        # reload: same checks (the file position differs: same key), plus a new server
        moved = HealthCheck(fails=3, loc=None)
        c = target("c:1", moved)
        hub.update([target("a:1", moved), target("b:1", moved), c])
        assert hub.checks[a.key].task is task_a  # not restarted
        assert not hub.up(b.key) and hub.table.get(slot_b) == DOWN
        assert hub.up(c.key) and hub.table.get(hub.checks[c.key].slot) == UP
        # the check changes: b starts afresh (up, no mandatory)
        hub.update([target("a:1", HealthCheck(fails=2)), target("b:1", HealthCheck(fails=2))])
        assert len(hub.checks) == 2
        assert all(c.health.up for c in hub.checks.values())
        assert task_a is not None and task_a.cancelling()

    hub_round(work)


def test_persistent_keeps_up_across_a_changed_check() -> None:
    def work(hub: HealthHub) -> None:
        old = HealthCheck(mandatory=True, persistent=True)
        hub.update([target("a:1", old), target("b:1", old)])
        hub.checks[target("a:1", old).key].health.on_result(True, "ok", 1.0)  # a up
        new = HealthCheck(mandatory=True, persistent=True, interval=1.0)
        hub.update([target("a:1", new), target("b:1", new)])
        assert hub.up(target("a:1", new).key)
        assert not hub.up(target("b:1", new).key)  # still checking

    hub_round(work)


# -- the stream reader ----------------------------------------------------------------------


def stream(text: str) -> tuple[StreamConfig, list[str]]:
    d = Diagnostics()
    config = read_nginx(parse_nginx_text(text, "s.conf", d), d)
    return config.stream, [x.format() for x in d.sorted()]


BASE = """
stream {{
    health_check_timeout 2s;
    match m {{ send "PING\\r\\n\\x00"; expect ~* "^\\+pong"; }}
    match lit {{ expect "OK"; }}
    upstream u {{ server 127.0.0.1:1; server 127.0.0.1:2; }}
    server {{ listen 127.0.0.1:3; proxy_pass u; {check} }}
}}
"""


def test_stream_health_check_is_read_with_its_match_and_timeout() -> None:
    s, errors = stream(BASE.format(check="health_check interval=1s fails=2 passes=3 port=9 "
                                         "match=m mandatory persistent;"))  # fmt: skip
    assert errors == []
    hc = s.servers[0].health_check
    assert hc is not None
    assert (hc.interval, hc.fails, hc.passes, hc.port, hc.timeout) == (1.0, 2, 3, 9, 2.0)
    assert hc.mandatory and hc.persistent and not hc.udp
    assert hc.match is not None and hc.match.send == b"PING\r\n\x00"
    assert hc.match.test(b"+PONG\r\n") and not hc.match.test(b"-ERR")
    assert hc.spec == StreamHealthCheck(1.0, 0.0, 2, 3, 9, False, True, True,
                                        StreamMatch("m", b"PING\r\n\x00", b"", "^\\+pong", True),
                                        2.0)  # fmt: skip


def test_stream_literal_expect_and_default() -> None:
    s, errors = stream(BASE.format(check="health_check match=lit;"))
    assert errors == []
    hc = s.servers[0].health_check
    assert hc is not None and hc.match is not None
    assert hc.match.test(b"200 OK\r\n") and not hc.match.test(b"ok")
    s, errors = stream(BASE.format(check="health_check;"))
    hc = s.servers[0].health_check
    assert hc is not None and hc.match is None and hc.interval == 5.0 and hc.fails == 1


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ("health_check match=nope;", 'match "nope" not found'),
        ("health_check uri=/x;", 'invalid parameter "uri=/x"'),
        ("health_check fails=0;", 'invalid parameter "fails=0"'),
        ("health_check udp match=lit;", 'needs "send" for a udp health check'),
        ("health_check; health_check;", '"health_check" directive is duplicate'),
        ("health_check interval=x;", 'invalid time "x"'),
    ],
)
def test_stream_health_check_errors(check: str, message: str) -> None:
    _, errors = stream(BASE.format(check=check))
    assert any(message in e and e.startswith("s.conf:7:") for e in errors), errors


def test_stream_health_check_needs_an_upstream_and_match_is_checked() -> None:
    _, errors = stream("stream { server { listen 3; proxy_pass 127.0.0.1:1; health_check; } }")
    assert any('"health_check" needs an upstream' in e for e in errors), errors
    _, errors = stream('stream { match m { sendd "x"; expect ~ "("; } }')
    assert any('unknown directive "sendd" in "match"' in e for e in errors), errors
    assert any('invalid regex "("' in e for e in errors), errors


def test_unescape_hex() -> None:
    assert unescape("a\\x41\\x00\\xff\\x4") == b"aA\x00\xff\\x4"


def test_binding_keeps_a_server_out_while_any_of_its_checks_fails() -> None:
    def work(hub: HealthHub) -> None:
        g = group(["0:s", "1:t"])
        one, two = HealthCheck(uri="/one"), HealthCheck(uri="/two")
        k1, k2 = target("s", one).key, target("s", two).key
        binding = GroupBinding(hub)
        binding.bind(g, "0:s", k1)
        binding.bind(g, "0:s", k2)
        hub.on_change = binding.on_change
        hub.update([target("s", one), target("s", two)])
        binding.apply_all()
        assert not g.balancer.peer("0:s").down
        hub.checks[k2].health.on_result(False, "x", 1.0)
        hub._publish(hub.checks[k2], ramp=False)
        assert g.balancer.peer("0:s").down  # one check of two fails: out
        hub.checks[k2].health.on_result(True, "ok", 2.0)
        hub._publish(hub.checks[k2], ramp=True)
        assert not g.balancer.peer("0:s").down

    hub_round(work)
