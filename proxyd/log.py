"""Logging in Dovecot's shape: ``<time> <process>: <Level>: <message>``.

Loggers are named after Dovecot's processes (``imap-login``, ``auth``,
``master``, ``config``) so an administrator's log filters keep working.
Nothing here ever formats a password: callers pass user names, addresses and
reasons only, and ``proxyd.secret.Secret`` hides itself if one slips through.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Final

_LEVEL_NAMES: Final = {
    logging.DEBUG: "Debug",
    logging.INFO: "Info",
    logging.WARNING: "Warning",
    logging.ERROR: "Error",
    logging.CRITICAL: "Fatal",
}

#: our internal logger names -> the Dovecot process name shown in the log
_PROCESS_NAMES: Final = {"proxyd.auth": "auth", "proxyd.config": "config", "proxyd": "master"}


class DovecotFormatter(logging.Formatter):
    """Formats records as Dovecot does: ``Nov 22 10:00:01 imap-login: Info: Login: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime(record.created))
        process = _PROCESS_NAMES.get(record.name, record.name)
        if process.startswith("proxyd."):
            process = process.removeprefix("proxyd.")
        level = _LEVEL_NAMES.get(record.levelno, record.levelname.title())
        line = f"{stamp} {process}: {level}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(log_path: str = "", debug: bool = False) -> None:
    """Send every proxyd log line to ``log_path`` (appending) or, when empty, to stderr."""
    handler: logging.Handler
    if log_path and log_path not in ("/dev/stderr", "syslog"):
        handler = logging.FileHandler(log_path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(DovecotFormatter())
    # the format uses none of these; computing them costs a stack walk per record
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
