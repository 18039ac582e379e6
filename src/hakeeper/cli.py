"""The `hakeeper` command line: one subcommand per job, keepalived's option spellings too.

Subcommands register themselves in `build_parser`; each handler takes the parsed
namespace and returns the process exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from hakeeper import __version__

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hakeeper",
        description="VRRP failover, L4 and L7 load balancing: keepalived + nginx, in Python.",
    )
    parser.add_argument("--version", "-v", action="version", version=f"hakeeper {__version__}")
    from hakeeper.conf.commands import add_config_test_option  # noqa: PLC0415

    add_config_test_option(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_subcommands(sub)
    return parser


def _add_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Each feature module adds its subcommand here (kept in one place for --help order)."""
    from hakeeper.runtime.commands import register as register_runtime  # noqa: PLC0415

    register_runtime(sub)
    from hakeeper.conf.commands import register as register_conf  # noqa: PLC0415

    register_conf(sub)
    from hakeeper.lab.commands import register as register_lab  # noqa: PLC0415

    register_lab(sub)
    from hakeeper.check.genhash import register as register_genhash  # noqa: PLC0415

    register_genhash(sub)
    del sub


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    return handler(args)
