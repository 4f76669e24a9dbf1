"""Logging in Dovecot's shape: ``<time> <process>: <Level>: <message>``.

Loggers are named after Dovecot's processes (``imap-login``, ``auth``,
``master``, ``config``) so an administrator's log filters keep working.
Nothing here ever formats a password: callers pass user names, addresses and
reasons only, and ``proxyd.secret.Secret`` hides itself if one slips through.

Nothing a client sends can shape the log: every client-supplied value (user
names, mechanisms, IDs, reasons a backend sent) goes through :func:`sanitize`,
Dovecot's ``str_sanitize()``, where it is formatted into a message; and
:class:`DovecotFormatter` applies the same character rule to the whole message
as a last net, so one record is always one line.
"""

from __future__ import annotations

import logging
import re
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


#: Dovecot's MAX_LOG_USERNAME_LEN (the auth process's log prefix)
MAX_LOG_USERNAME_LEN: Final = 64
#: how much of a user name login processes log (``str_sanitize(virtual_user, 80)``)
MAX_LOGIN_USER_LEN: Final = 80
#: MAX_MECH_NAME
MAX_MECH_NAME_LEN: Final = 64
#: how much of a line from a backend goes into a log line
MAX_REMOTE_LINE_LEN: Final = 160

# C0 controls, DEL is kept as in Dovecot; beyond Dovecot, the three Unicode line
# breaks (NEL, LINE/PARAGRAPH SEPARATOR) that str.splitlines() and some log
# viewers break at, and lone surrogates (bytes that were not UTF-8).
_UNSAFE: Final = re.compile("[\x00-\x1f\x85\u2028\u2029\ud800-\udfff]")


def sanitize(value: str | bytes, max_bytes: int | None = None) -> str:
    """Dovecot's ``str_sanitize()``: a client-supplied value made safe for one log line.

    Control characters (below 0x20) and bytes that are not UTF-8 become ``?``
    (so do NEL, U+2028 and U+2029); a value longer than ``max_bytes`` UTF-8
    bytes is cut at a character boundary and ends in ``...`` (no cut without
    ``max_bytes``).
    """
    if isinstance(value, str):
        if value.isascii() and value.isprintable() and (max_bytes is None or len(value) <= max_bytes):
            return value  # the common case: nothing to do
        data = _encode(value)
    else:
        data = value
    if max_bytes is None:
        max_bytes = len(data)
    text = _UNSAFE.sub("?", data[:max_bytes].decode("utf-8", "surrogateescape"))
    if len(data) <= max_bytes:
        return text
    if max_bytes < 3:
        return "..."
    # a character cut at max_bytes is not shown (Dovecot stops before it)
    encoded = text.encode("utf-8", "surrogateescape")
    while len(encoded) > max_bytes - 3:
        text = text[:-1]
        encoded = text.encode("utf-8", "surrogateescape")
    return text + "..."


def _encode(value: str) -> bytes:
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that did not come from a byte
        return value.encode("utf-8", "surrogatepass")


def one_line(message: str) -> str:
    """``message`` with every character :func:`sanitize` replaces turned into ``?`` (no cut)."""
    return message if message.isprintable() else _UNSAFE.sub("?", message)


class DovecotFormatter(logging.Formatter):
    """Formats records as Dovecot does: ``Nov 22 10:00:01 imap-login: Info: Login: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime(record.created))
        process = _PROCESS_NAMES.get(record.name, record.name)
        if process.startswith("proxyd."):
            process = process.removeprefix("proxyd.")
        level = _LEVEL_NAMES.get(record.levelno, record.levelname.title())
        # a value some caller forgot to sanitize still cannot start a line of its own
        line = f"{stamp} {process}: {level}: {one_line(record.getMessage())}"
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
