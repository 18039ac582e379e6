"""docs/keywords.md is generated from the keyword table and must not go stale."""

from __future__ import annotations

from pathlib import Path

from hakeeper.conf.keyword_docs import render_keywords_markdown
from hakeeper.conf.keywords import CHECKER_BLOCKS, TOP

DOC = Path(__file__).resolve().parents[3] / "docs" / "keywords.md"


def test_keywords_md_is_up_to_date() -> None:
    assert DOC.read_text() == render_keywords_markdown(), (
        "docs/keywords.md is stale: run `python -m hakeeper.conf.keyword_docs > docs/keywords.md`"
    )


def test_every_block_and_checker_of_the_issue_is_in_the_table() -> None:
    top = set(TOP.keywords)
    for name in (
        "global_defs",
        "static_ipaddress",
        "static_routes",
        "static_rules",
        "vrrp_script",
        "vrrp_track_file",
        "track_process",
        "vrrp_instance",
        "vrrp_sync_group",
        "virtual_server",
        "virtual_server_group",
    ):
        assert name in top
    assert set(CHECKER_BLOCKS) == {
        "TCP_CHECK",
        "HTTP_GET",
        "SSL_GET",
        "MISC_CHECK",
        "SMTP_CHECK",
        "DNS_CHECK",
        "PING_CHECK",
        "UDP_CHECK",
        "FILE_CHECK",
        "BFD_CHECK",
    }
    text = DOC.read_text()
    for status in ("| supported |", "| accepted-and-ignored-with-warning |", "| rejected |"):
        assert status in text
