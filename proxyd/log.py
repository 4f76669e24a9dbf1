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

A client's lines (a login, a disconnect: a few per session) take :func:`emit_line`: the
same text to the same destinations, without a ``LogRecord`` and a round through the
handlers, with the line's prefix made once per logger and level and the timestamp once
per second; where the destinations are not the ones ``setup_logging`` installed (syslog,
a test's capture) it hands the line to the logger as before.  Each line is one
``write(2)`` to the descriptor every process inherited (:class:`LineFile`), so lines of
processes sharing it never mix.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import re
import sys
import time
from dataclasses import dataclass, field
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


#: Dovecot's default ``login_log_format``
DEFAULT_LOGIN_FORMAT: Final = "%$: %s"


def login_line(template: str, message: str, fields: str) -> str:
    """Dovecot's ``login_log_format``: ``%$`` is the message, ``%s`` the log fields, ``%%`` a ``%``."""
    if template == DEFAULT_LOGIN_FORMAT:
        return f"{message}: {fields}"
    out: list[str] = []
    pos = 0
    while (pct := template.find("%", pos)) != -1:
        out.append(template[pos:pct])
        key = template[pct + 1 : pct + 2]
        out.append({"$": message, "s": fields, "%": "%"}.get(key, "%" + key))
        pos = pct + 2
    out.append(template[pos:])
    return "".join(out)


def check_login_format(template: str) -> str:
    """``login_log_format`` may use ``%$``, ``%s`` and ``%%``; returns ``template`` or raises ValueError."""
    pos = 0
    while (pct := template.find("%", pos)) != -1:
        key = template[pct + 1 : pct + 2]
        if key not in ("$", "s", "%"):
            raise ValueError(f"login_log_format: unknown variable %{key} (only %$, %s and %%)")
        pos = pct + 2
    return template


#: Dovecot's default ``log_timestamp``
DEFAULT_TIMESTAMP: Final = "%b %d %H:%M:%S "
#: ``syslog_facility`` names (syslog_facility_find)
SYSLOG_FACILITIES: Final = {
    "auth": logging.handlers.SysLogHandler.LOG_AUTH,
    "authpriv": logging.handlers.SysLogHandler.LOG_AUTHPRIV,
    "cron": logging.handlers.SysLogHandler.LOG_CRON,
    "daemon": logging.handlers.SysLogHandler.LOG_DAEMON,
    "ftp": logging.handlers.SysLogHandler.LOG_FTP,
    "kern": logging.handlers.SysLogHandler.LOG_KERN,
    "lpr": logging.handlers.SysLogHandler.LOG_LPR,
    "mail": logging.handlers.SysLogHandler.LOG_MAIL,
    "news": logging.handlers.SysLogHandler.LOG_NEWS,
    "syslog": logging.handlers.SysLogHandler.LOG_SYSLOG,
    "user": logging.handlers.SysLogHandler.LOG_USER,
    "uucp": logging.handlers.SysLogHandler.LOG_UUCP,
    **{f"local{n}": logging.handlers.SysLogHandler.LOG_LOCAL0 + n for n in range(8)},
}
#: where syslog(3) sends its messages
SYSLOG_SOCKET: Final = "/dev/log"
#: the syslog ident (Dovecot's instance_name)
SYSLOG_IDENT: Final = "proxyd"


def _process(name: str) -> str:
    """The process name a logger's lines show."""
    process = _PROCESS_NAMES.get(name, name)
    return process.removeprefix("proxyd.") if process.startswith("proxyd.") else process


class DovecotFormatter(logging.Formatter):
    """Formats records as Dovecot does: ``Nov 22 10:00:01 imap-login: Info: Login: ...``.

    ``timestamp`` is ``log_timestamp``: a strftime format in which ``%{usecs}``
    stands for the microseconds; ``None`` leaves the time out (syslog adds its own).
    """

    def __init__(self, timestamp: str | None = DEFAULT_TIMESTAMP) -> None:
        super().__init__()
        self.before_usecs: str | None = None
        self.after_usecs = ""
        if timestamp is not None:
            self.before_usecs, _, self.after_usecs = timestamp.partition("%{usecs}")
            self.usecs = "%{usecs}" in timestamp
        #: the second last formatted and its two strftime() parts: every line of a
        #: busy second shares them (localtime() and strftime() once, not per line)
        self._stamp_second: int | None = None
        self._stamp_parts = ("", "")

    def stamp(self, created: float) -> str:
        """The ``log_timestamp`` text for the time ``created`` ("" without a timestamp)."""
        if self.before_usecs is None:
            return ""
        second = int(created)
        if second != self._stamp_second:
            when = time.localtime(second)
            after = time.strftime(self.after_usecs, when) if self.usecs else ""
            self._stamp_parts = (time.strftime(self.before_usecs, when), after)
            self._stamp_second = second
        before, after = self._stamp_parts
        if self.usecs:
            return f"{before}{int((created % 1) * 1_000_000):06d}{after}"
        return before

    def format(self, record: logging.LogRecord) -> str:
        level = _LEVEL_NAMES.get(record.levelno, record.levelname.title())
        # a value some caller forgot to sanitize still cannot start a line of its own
        line = f"{self.stamp(record.created)}{_process(record.name)}: {level}: {one_line(record.getMessage())}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class LineFile(logging.Handler):
    """A log destination that is a descriptor: stderr, or a file opened for appending
    (``O_APPEND``, shared by every process forked after it was opened).

    Each line is one ``write(2)``, as with ``StreamHandler``/``FileHandler``; ``add()``
    takes a line already formatted (the lean path of :func:`emit_line`, no record).
    """

    def __init__(self, fd: int, *, owned: bool) -> None:
        super().__init__()
        self.fd = fd
        #: closed by close(): a file this handler opened, not stderr
        self.owned = owned

    @classmethod
    def open(cls, path: str) -> LineFile:
        """``path`` opened for appending, created if missing (as ``FileHandler`` opens it)."""
        return cls(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666), owned=True)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write(self.format(record))
        except Exception:
            self.handleError(record)

    def add(self, line: str) -> None:
        """Write ``line`` (without its line end)."""
        try:
            self._write(line)
        except OSError as exc:
            # what a handler does with a failed write: say so on stderr, go on
            if logging.raiseExceptions and self.fd != 2:
                sys.stderr.write(f"--- Logging error ---\nwrite to fd {self.fd} failed: {exc}\n")

    def _write(self, line: str) -> None:
        view = memoryview((line + "\n").encode("utf-8", "backslashreplace"))
        while view:
            view = view[os.write(self.fd, view) :]

    def close(self) -> None:
        if self.owned and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        super().close()


class _Levels(logging.Filter):
    """Lets through records whose level is in one of the ``[low, high)`` ranges."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        super().__init__()
        self.ranges = ranges

    def filter(self, record: logging.LogRecord) -> bool:
        return any(low <= record.levelno < high for low, high in self.ranges)


def _handler(path: str, timestamp: str, facility: int) -> logging.Handler:
    handler: logging.Handler
    if path == "syslog":
        # connected now: the chrooted children keep using the socket
        handler = logging.handlers.SysLogHandler(SYSLOG_SOCKET, facility)
        handler.ident = f"{SYSLOG_IDENT}: "
        handler.setFormatter(DovecotFormatter(None))
        return handler
    if path in ("", "/dev/stderr"):
        try:
            handler = LineFile(sys.stderr.fileno(), owned=False)
        except (AttributeError, ValueError, io.UnsupportedOperation):  # a stderr with no descriptor
            handler = logging.StreamHandler(sys.stderr)
    else:
        handler = LineFile.open(path)
    handler.setFormatter(DovecotFormatter(timestamp))
    return handler


def lean_log_records() -> None:
    """Log records without what no proxyd line shows: the caller's file and line (a walk
    up the stack per record), thread, process and task names (the logging HOWTO's
    "Optimization" knobs).  The daemon's processes only: a test's log capture keeps them."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def setup_logging(
    log_path: str = "",
    debug: bool = False,
    *,
    info_log_path: str = "",
    debug_log_path: str = "",
    timestamp: str = DEFAULT_TIMESTAMP,
    syslog_facility: str = "mail",
) -> None:
    """Send proxyd's log lines where Dovecot's settings say (``master_service_init_log``).

    Warnings and errors go to ``log_path`` (a file, appended to; empty: stderr;
    ``syslog``: the system log with ``syslog_facility``); informational lines to
    ``info_log_path`` when set, else with the errors; debug lines to
    ``debug_log_path`` when set, else with the informational ones.
    """
    info_path = info_log_path or log_path
    debug_path = debug_log_path or info_path
    facility = SYSLOG_FACILITIES.get(syslog_facility, SYSLOG_FACILITIES["mail"])
    ranges: dict[str, list[tuple[int, int]]] = {}
    ranges.setdefault(log_path, []).append((logging.WARNING, logging.CRITICAL + 1))
    ranges.setdefault(info_path, []).append((logging.INFO, logging.WARNING))
    ranges.setdefault(debug_path, []).append((logging.DEBUG, logging.INFO))
    handlers: list[logging.Handler] = []
    for path, levels in ranges.items():
        handler = _handler(path, timestamp, facility)
        if len(ranges) > 1:
            handler.addFilter(_Levels(levels))
        handlers.append(handler)
    # the format uses none of these; computing them costs a stack walk per record
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    global _lean
    _lean = _LeanPath.of(handlers, ranges)


@dataclass(slots=True)
class _LeanPath:
    """How :func:`emit_line` writes a line without a ``LogRecord``: the handlers
    ``setup_logging`` gave the root logger, and for each level the destinations (with
    their formatters) that take it."""

    handlers: list[logging.Handler]
    routes: dict[int, tuple[tuple[LineFile, DovecotFormatter], ...]]
    #: "imap-login: Info: " by (logger name, level)
    prefixes: dict[tuple[str, int], str] = field(default_factory=dict)

    @classmethod
    def of(cls, handlers: list[logging.Handler], ranges: dict[str, list[tuple[int, int]]]) -> _LeanPath | None:
        """None unless every handler is a LineFile with a DovecotFormatter (syslog and a
        stderr without a descriptor keep the stdlib path)."""
        files: list[tuple[LineFile, DovecotFormatter, list[tuple[int, int]]]] = []
        for handler, levels in zip(handlers, ranges.values(), strict=True):
            if not isinstance(handler, LineFile) or not isinstance(handler.formatter, DovecotFormatter):
                return None
            files.append((handler, handler.formatter, levels))
        routes = {
            level: tuple((h, f) for h, f, levels in files if any(low <= level < high for low, high in levels))
            for level in _LEVEL_NAMES
        }
        return cls(list(handlers), routes)

    def prefix(self, name: str, level: int) -> str:
        text = self.prefixes[(name, level)] = f"{_process(name)}: {_LEVEL_NAMES[level]}: "
        return text


#: set by setup_logging when the lean path can stand for the stdlib one
_lean: _LeanPath | None = None


def emit_line(logger: logging.Logger, level: int, line: str) -> None:
    """``logger.log(level, "%s", line)`` for a line the caller made (``isEnabledFor``
    checked): the same text in the same place, without a ``LogRecord``, a handler
    round and a ``localtime()``, where the process logs through the handlers
    ``setup_logging`` installed (anything else, a test's capture too, gets the record)."""
    lean = _lean
    root = logging.root
    if (
        lean is None
        or lean.handlers != root.handlers
        or logger.handlers
        or logger.filters
        or root.filters
        or logger.parent is not root
        or not logger.propagate
        or (routes := lean.routes.get(level)) is None
    ):
        logger.log(level, "%s", line)
        return
    prefix = lean.prefixes.get((logger.name, level)) or lean.prefix(logger.name, level)
    # a value some caller forgot to sanitize still cannot start a line of its own
    body = prefix + (line if line.isprintable() else _UNSAFE.sub("?", line))
    now = time.time()
    for handler, formatter in routes:
        handler.add(formatter.stamp(now) + body)
