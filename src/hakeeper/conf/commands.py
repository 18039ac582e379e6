"""`hakeeper check` and `hakeeper dump`: validate a keepalived.conf, print the normalised model.

`check -f FILE [--strict] [-i ID]` prints every diagnostic, sorted, one per line as
`file:line:col: error|warning: message`, then a summary line; it exits 0 when there is
no error (no warning either with --strict) and 1 otherwise. keepalived's spellings are
accepted: `hakeeper -t -f FILE`, `hakeeper --config-test -f FILE` and `check -t`.
`dump -f FILE [--json]` prints the model (JSON or readable text) on stdout and the
diagnostics on stderr; it exits 1 when the config has errors.
`check --nginx FILE` (and `hakeeper -t --nginx FILE`) checks an nginx.conf like `nginx -t`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from hakeeper.conf.diagnostics import Diagnostics
from hakeeper.conf.dump import dump_json, dump_text
from hakeeper.conf.keepalived import load_keepalived

__all__ = ["add_config_test_option", "cmd_check", "cmd_dump", "register"]

DEFAULT_CONFIG = "/etc/keepalived/keepalived.conf"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = sub.add_parser(
        "check",
        help="validate a keepalived.conf and report every problem",
        description="Validate a keepalived.conf: all errors and warnings in one pass.",
    )
    _file_options(check)
    check.add_argument("--strict", action="store_true", help="treat warnings as errors")
    _nginx_option(check)
    check.add_argument(
        "-t", "--config-test", action="store_true", help="accepted for keepalived compatibility"
    )
    check.set_defaults(handler=cmd_check)

    dump = sub.add_parser(
        "dump",
        help="print the normalised keepalived model",
        description="Print the model hakeeper builds from a keepalived.conf, defaults filled in.",
    )
    _file_options(dump)
    dump.add_argument("--json", action="store_true", help="print JSON instead of text")
    dump.set_defaults(handler=cmd_dump)


def _file_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--use-file",
        dest="file",
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"keepalived.conf to read (default {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "-i",
        "--config-id",
        dest="config_id",
        default=None,
        metavar="ID",
        help="select @ID lines (default: short host name)",
    )


class _ConfigTest(argparse.Action):
    """Top-level `-t`/`--config-test`: run `check` like keepalived's config test."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        del parser, values, option_string
        namespace.handler = cmd_check
        namespace.strict = False


def add_config_test_option(parser: argparse.ArgumentParser) -> None:
    """keepalived's `keepalived -t -f FILE [-i ID]` spelling at the top level."""
    parser.add_argument(
        "-t", "--config-test", nargs=0, action=_ConfigTest, help="check the config (see `check`)"
    )
    _file_options(parser)
    _nginx_option(parser)


def _nginx_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nginx",
        metavar="FILE",
        default=None,
        help="check this nginx.conf instead, like `nginx -t -c FILE`",
    )


def cmd_check(args: argparse.Namespace) -> int:
    if getattr(args, "nginx", None):
        return cmd_check_nginx(args.nginx)
    path: str = args.file
    _, diags = load_keepalived(path, config_id=args.config_id)
    for diag in diags.sorted():
        print(diag.format())
    strict = bool(getattr(args, "strict", False))
    failed = diags.has_errors or (strict and bool(diags.warnings))
    print(_summary(path, diags, failed, strict))
    return 1 if failed else 0


def cmd_check_nginx(path: str) -> int:
    """`nginx -t -c FILE`: every error with file:line:col, then nginx's verdict lines.

    What `hakeeper run --nginx` could not serve as nginx would (valid nginx, not yet
    implemented) is printed as warnings; only errors fail the test, like nginx.
    """
    from hakeeper.proxy.from_nginx import listeners  # noqa: PLC0415
    from hakeeper.proxy.run import read_file  # noqa: PLC0415 (keeps `check -f` light)
    from hakeeper.proxy.stream import stream_services  # noqa: PLC0415

    diags = Diagnostics()
    config = read_file(path, diags)
    if not diags.has_errors:
        serve = Diagnostics()
        listeners(config, serve)
        stream_services(config.stream, serve)
        for d in serve:
            diags.warning(d.loc, f"hakeeper run: {d.message}")
    for diag in diags.sorted():
        print(diag.format())
    if diags.has_errors:
        print(f"hakeeper: configuration file {path} test failed")
        return 1
    print(f"hakeeper: the configuration file {path} syntax is ok")
    print(f"hakeeper: configuration file {path} test is successful")
    return 0


def _summary(path: str, diags: Diagnostics, failed: bool, strict: bool) -> str:
    errors, warnings = len(diags.errors), len(diags.warnings)
    verdict = "FAILED" if failed else "OK"
    extra = " (--strict: warnings are fatal)" if strict and warnings and not errors else ""
    return f"{path}: {errors} error(s), {warnings} warning(s): {verdict}{extra}"


def cmd_dump(args: argparse.Namespace) -> int:
    config, diags = load_keepalived(args.file, config_id=args.config_id)
    for diag in diags.sorted():
        print(diag.format(), file=sys.stderr)
    if config is None:
        return 1
    sys.stdout.write(dump_json(config) if args.json else dump_text(config))
    return 1 if diags.has_errors else 0
