"""Differential test: hakeeper's keepalived.conf reader against Debian's keepalived 2.2.7.

For every keepalived sample and every seed keepalived.conf fixture, keepalived's own
verdict (`keepalived -t`) and its dump of the parsed config (`-d`, see keepalived_ref.py)
are compared with `load_keepalived` on:

* valid: keepalived -t exits 0 (host-only noise such as missing script files aside)
  versus hakeeper reporting no error;
* vrrp_instances, vips, virtual_servers, real_servers, checkers: counts;
* uncovered_lines: lines keepalived complains about where hakeeper says nothing at all.

Every disagreement must be listed, with its reason, in one of two tables:

* DELIBERATE: hakeeper differs on purpose; each reason is also in docs/differences.md.
  Strict: if a listed difference goes away, the test fails until the entry is removed.
* PENDING: a gap reported to the owner of the reader; tolerated until fixed (the test
  accepts either the recorded disagreement or agreement), so fixing it needs no edit
  here, but it should then be deleted from the table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from keepalived_ref import (
    Counts,
    RefHost,
    RefVerdict,
    find_keepalived,
    parse_check_dump,
    parse_test_output,
    parse_vrrp_dump,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SAMPLES = sorted((FIXTURES / "keepalived-samples").glob("keepalived.conf.*"))
SEEDS = sorted((FIXTURES / "seeds").glob("*.keepalived.conf"))
DIFFERENCES_DOC = ROOT / "docs" / "differences.md"

NO_ID = "hk-no-such-id"  # a config id matching no `@ID` line, passed to both sides

ANY = "any"  # not compared for that case (see the reason); the field may also agree
ANY_PAIR = (ANY, ANY)


@dataclass(frozen=True)
class Case:
    path: Path
    config_id: str = NO_ID
    dump: bool = True  # False when the config would make keepalived switch namespaces

    @property
    def id(self) -> str:
        return self.path.name if self.config_id == NO_ID else f"{self.path.name}@{self.config_id}"


CASES = (
    [Case(p) for p in SAMPLES]
    + [
        # `@high net_namespace high`: keepalived would enter namespace "high"; verdict only.
        Case(FIXTURES / "keepalived-samples" / "keepalived.conf.conditional_conf", "high", False),
        Case(FIXTURES / "keepalived-samples" / "keepalived.conf.conditional_conf", "low", False),
    ]
    + [Case(p) for p in SEEDS]
)

Diff = dict[str, tuple[object, object]]  # field -> (keepalived, hakeeper)

_NBSP = "nbsp-is-whitespace"
_ICMP = "icmp-check-is-ping-check"
_SEVERITY = "warnings-keepalived-counts-as-errors"

# case id -> (reason key in docs/differences.md, expected differences)
DELIBERATE: dict[str, tuple[str, Diff]] = {
    "000_3_master.keepalived.conf": (
        _NBSP,
        {"valid": (False, True), "vrrp_instances": (0, 1), "vips": (0, 1), "uncovered": ANY_PAIR},
    ),
    "000_4_backup.keepalived.conf": (
        _NBSP,
        {"valid": (False, True), "vrrp_instances": (0, 1), "vips": (0, 1), "uncovered": ANY_PAIR},
    ),
    "000_5_master-annotated.keepalived.conf": (
        _NBSP,
        {"valid": (False, True), "vrrp_instances": (0, 1), "vips": (0, 1), "uncovered": ANY_PAIR},
    ),
    "000_6_backup-annotated.keepalived.conf": (
        _NBSP,
        {"valid": (False, True), "vrrp_instances": (0, 1), "vips": (0, 1), "uncovered": ANY_PAIR},
    ),
    "003_1_director.keepalived.conf": (_ICMP, {"valid": (False, True), "checkers": (0, 3)}),
    "keepalived.conf.SSL_GET": (_SEVERITY, {"valid": (False, True)}),
    "keepalived.conf.fwmark": (_SEVERITY, {"valid": (False, True)}),
    "keepalived.conf.track_interface": (
        _SEVERITY,
        {"valid": (False, True), "uncovered": ((31,), ())},
    ),
    "keepalived.conf.vrrp.static_ipaddress": (
        _SEVERITY,
        {"valid": (False, True), "uncovered": ((25,), ())},
    ),
    "keepalived.conf.vrrp.routes": (
        _SEVERITY,
        {"valid": (False, True), "uncovered": ((29, 31), ())},
    ),
    "keepalived.conf.conditional_conf": (_SEVERITY, {"valid": (False, True)}),
}

# case id -> (what the reader's owner was told, tolerated differences)
PENDING: dict[str, tuple[str, Diff]] = {}


# -- reference runs (one namespace for the whole module) ------------------------------


@dataclass(frozen=True)
class Observed:
    valid: bool
    counts: Counts | None
    message_lines: tuple[int, ...]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RefHost]:
    keepalived = find_keepalived()
    assert keepalived is not None  # the interop marker guarantees it
    with RefHost(keepalived, tmp_path_factory.mktemp("keepalived-ref")) as host:
        if host.shim is None:
            pytest.fail(f"could not build tests/interop/fake_ipvs.c: {host.shim_error}")
        yield host


def _keepalived_view(host: RefHost, case: Case) -> Observed:
    verdict: RefVerdict = host.config_test(case.path, case.config_id)
    counts = None
    if case.dump:
        text = case.path.read_text(encoding="utf-8", errors="replace")
        vi, vips = (
            parse_vrrp_dump(host.dump(case.path, case.config_id, "vrrp"))
            if "vrrp_instance" in text
            else (0, 0)
        )
        vs, rs, ck = (
            parse_check_dump(host.dump(case.path, case.config_id, "check"))
            if "virtual_server" in text
            else (0, 0, 0)
        )
        counts = Counts(vi, vips, vs, rs, ck)
    lines = tuple(sorted({m.line for m in verdict.config_messages if m.line is not None}))
    return Observed(verdict.valid, counts, lines)


def _our_view(case: Case) -> tuple[Observed, set[int]]:
    from hakeeper.conf.keepalived import load_keepalived

    config, diags = load_keepalived(str(case.path), config_id=case.config_id)
    assert config is not None
    counts = Counts(
        vrrp_instances=len(config.vrrp_instances),
        vips=sum(len(vi.virtual_ipaddresses) for vi in config.vrrp_instances),
        virtual_servers=len(config.virtual_servers),
        real_servers=sum(len(vs.real_servers) for vs in config.virtual_servers),
        checkers=sum(len(rs.checkers) for vs in config.virtual_servers for rs in vs.real_servers),
    )
    said = {d.loc.line for d in diags if d.loc is not None and Path(d.loc.file) == case.path}
    return Observed(not diags.has_errors, counts, ()), said


def _differences(ref: Observed, ours: Observed, said: set[int]) -> Diff:
    diff: Diff = {}
    if ref.valid != ours.valid:
        diff["valid"] = (ref.valid, ours.valid)
    if ref.counts is not None and ours.counts is not None:
        for name in Counts.__dataclass_fields__:
            a, b = getattr(ref.counts, name), getattr(ours.counts, name)
            if a != b:
                diff[name] = (a, b)
    uncovered = tuple(n for n in ref.message_lines if n not in said)
    if uncovered:
        diff["uncovered"] = (uncovered, ())
    return diff


def _matches(expected: Diff, actual: Diff) -> bool:
    """`actual` has exactly the expected differences; an ANY_PAIR entry may also be absent."""
    required = {k for k, v in expected.items() if v != ANY_PAIR}
    if not required <= actual.keys() <= expected.keys():
        return False
    return all(expected[k] == ANY_PAIR or expected[k] == actual[k] for k in actual)


# -- the differential test -----------------------------------------------------------


@pytest.mark.root
@pytest.mark.interop("keepalived", "gcc")
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_agrees_with_keepalived(reference: RefHost, case: Case) -> None:
    ref = _keepalived_view(reference, case)
    ours, said = _our_view(case)
    actual = _differences(ref, ours, said)
    deliberate = DELIBERATE.get(case.id, ("", {}))[1]
    pending = PENDING.get(case.id, ("", {}))[1]
    # Remove the tolerated (pending) differences that still show; what is left must be
    # exactly the deliberate ones.
    remaining = {k: v for k, v in actual.items() if not (k in pending and pending[k] == v)}
    if "uncovered" in pending and "uncovered" in remaining:
        # a partially fixed pending item: the still-uncovered lines must be a subset
        left = set(remaining["uncovered"][0]) - set(pending["uncovered"][0])  # type: ignore[arg-type]
        if not left:
            del remaining["uncovered"]
    assert _matches(deliberate, remaining), (
        f"{case.id}: keepalived vs hakeeper differ in {remaining}, expected only the"
        f" deliberate {deliberate}; fix the reader or update the tables"
    )


def test_every_deliberate_difference_is_documented() -> None:
    doc = DIFFERENCES_DOC.read_text(encoding="utf-8")
    for case_id, (reason, _) in DELIBERATE.items():
        assert f"`{reason}`" in doc, f"{case_id}: reason {reason!r} missing in {DIFFERENCES_DOC}"
        assert case_id in doc, f"{case_id} is not listed in {DIFFERENCES_DOC}"


def test_tables_name_existing_cases() -> None:
    ids = {c.id for c in CASES} | {c.path.name for c in CASES}
    assert set(DELIBERATE) <= ids
    assert set(PENDING) <= ids


# -- the harness's own parsers, on canned keepalived output (no root needed) ----------


def test_parse_test_output_strips_files_and_dedups() -> None:
    out = (
        "(Line 3) Unknown keyword 'x'\n"
        "(/etc/k.conf: Line 3) Unknown keyword 'x'\n"
        "(/etc/k.conf: Line 9) No script set for vrrp_script chk - removing\n"
        "Disabling track script chk since not found/accessible\n"
    )
    msgs = parse_test_output(out)
    assert [(m.line, m.text) for m in msgs] == [
        (3, "Unknown keyword 'x'"),
        (9, "No script set for vrrp_script chk - removing"),
        (None, "Disabling track script chk since not found/accessible"),
    ]
    assert [m.is_environment for m in msgs] == [False, False, True]
    assert RefVerdict(5, msgs).valid is False
    assert RefVerdict(5, msgs[2:]).valid is True


_TS = "Mon Nov 23 11:20:50 2026: "

_VRRP_DUMP = "\n".join(
    _TS + line
    for line in (
        "------< Global definitions >------",
        " Router ID = r1",
        "------< VRRP Topology >------",
        " VRRP Instance = VI_1",
        "   Virtual IP (2):",
        "     192.0.2.1 dev eth0 scope global",
        "     192.0.2.2 dev eth0 scope global",
        " VRRP Instance = VI_2",
        "   Virtual IP (1):",
        "     192.0.2.3 dev eth0 scope global",
        "------< Interfaces >------",
        " Name = eth0",
        "VRRP sockpool: [ifindex(  3)]",
    )
)

_CHECK_DUMP = "\n".join(
    _TS + line
    for line in (
        "Disabling misc script '/nonexistent.sh' since not found/accessible",
        "------< LVS Topology >------",
        " System is compiled with LVS v1.2.1",
        " ------< Virtual server >------",
        " VS VIP = 192.0.2.10, VPORT = 80",
        "   ------< Real server >------",
        "   RIP = 198.51.100.1, RPORT = 80, WEIGHT = 1",
        "Startup complete",  # the parent's line, interleaved in the child's dump
        "   ------< Real server >------",
        "   RIP = 198.51.100.2, RPORT = 80, WEIGHT = 1",
        " VS FWMARK = 1",
        "   ------< Real server >------",
        "------< Health checkers >------",
        " [192.0.2.10]:tcp:80 -> [198.51.100.1]:tcp:80",
        "   Keepalive method = TCP_CHECK",
        " [192.0.2.10]:tcp:80 -> [198.51.100.2]:tcp:80",
        "   Keepalive method = HTTP_GET, http protocol 1.0",
        "Activating healthchecker for service [198.51.100.1]:tcp:80",
    )
)


def test_parse_vrrp_dump_counts_instances_and_vips() -> None:
    assert parse_vrrp_dump(_VRRP_DUMP) == (2, 3)
    assert parse_vrrp_dump(_TS + "Warning - keepalived has no configuration to run") == (0, 0)


def test_parse_check_dump_counts_servers_and_checkers() -> None:
    # 2 virtual servers, 3 real servers, 2 dumped checkers + 1 MISC_CHECK dropped for a
    # missing script
    assert parse_check_dump(_CHECK_DUMP) == (2, 3, 3)
