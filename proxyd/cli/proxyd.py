"""``proxyd [-c FILE] [-n]``: run the proxy in the foreground, or print the effective settings."""

from __future__ import annotations

import argparse
import sys

import trio

from proxyd.config.dump import dump_non_default
from proxyd.config.load import load_settings
from proxyd.errors import ConfigError
from proxyd.log import setup_logging

DEFAULT_CONFIG = "/etc/proxyd/proxyd.conf"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="proxyd", description="Trio IMAP/POP3 login proxy")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="configuration file")
    parser.add_argument(
        "-n", "--dump", action="store_true", help="print the non-default settings and exit (like doveconf -n)"
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.dump:
        sys.stdout.write(dump_non_default(settings))
        return 0
    try:
        setup_logging(settings.log_path, debug=settings.auth_debug)
    except OSError as exc:
        print(f"{args.config}: cannot open log_path {settings.log_path}: {exc.strerror}", file=sys.stderr)
        return 2
    from proxyd.app import run

    try:
        trio.run(run, settings)
    except OSError as exc:
        print(f"Fatal: {exc}", file=sys.stderr)
        return 1
    return 0
