"""Dovecot's driver ``args`` files (``dovecot-sql.conf.ext``, ``dovecot-ldap.conf.ext``).

These flat ``key = value`` files are read by Dovecot's ``settings_read()``
(``src/lib-settings/settings.c``), whose rules differ a little from the main
configuration file's, and this reader follows them:

* Leading blanks are dropped; empty lines and lines starting with ``#`` are
  skipped (they do not end a continued line).  ``#`` outside quotes starts a
  comment.
* A line ending in ``\\`` continues on the next line: the part before the
  backslash, blanks trimmed, and one space are prepended to the next line.
* ``key = value``: the key ends at the first blank or ``=``.  A value wrapped in
  matching ``"`` or ``'`` loses them and its backslash escapes.
* ``!include FILE`` / ``!include_try FILE`` (globs, relative to the including
  file) read other files in place.

One deliberate leniency: a line that is not ``key = value`` (Dovecot's
"Expecting '='") continues the previous setting's value, joined with a space.
This makes queries that were wrapped by mail clients or wiki pages, such as
the examples on Dovecot's own Proxying page, load as meant.  Such a line must
not look like ``word = ...`` itself; ``user = '%u'`` on a line of its own is
read as a setting named ``user``.
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass, field

from proxyd.errors import ConfigError, Location

log = logging.getLogger("proxyd.config")

_BLANKS = " \t"


@dataclass(frozen=True, slots=True)
class ArgsSetting:
    """One ``key = value`` with where it was set (the first line of a continued line)."""

    key: str
    value: str = field(repr=False)
    location: Location


def _strip_comment(line: str, location: Location) -> str:
    pos = 0
    while pos < len(line):
        char = line[pos]
        if char in "'\"":
            pos += 1
            while pos < len(line) and line[pos] != char:
                if line[pos] == "\\" and pos + 1 < len(line):
                    pos += 1
                pos += 1
            if pos >= len(line):
                return line
        elif char == "#":
            if pos > 0 and line[pos - 1] not in _BLANKS:
                log.warning(
                    "%s: Ambiguous '#' character in line, treating it as comment. "
                    "Add a space before it to remove this warning.",
                    location,
                )
            return line[:pos]
        pos += 1
    return line


def _unescape(value: str) -> str:
    out: list[str] = []
    pos = 0
    while pos < len(value):
        char = value[pos]
        if char == "\\" and pos + 1 < len(value):
            pos += 1
            char = value[pos]
        out.append(char)
        pos += 1
    return "".join(out)


class _Reader:
    def __init__(self) -> None:
        self.settings: list[ArgsSetting] = []
        self._open: list[str] = []

    def read(self, path: str, where: Location | None, *, optional: bool = False) -> None:
        if path in self._open:
            raise ConfigError(where, f"Recursive include file: {path}")
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as handle:
                text = handle.read()
        except OSError as exc:
            if optional:
                return
            what = "Couldn't open include file" if self._open else "Can't open configuration file"
            raise ConfigError(where, f"{what} {path}: {exc.strerror or exc}") from None
        self._open.append(path)
        try:
            self._parse(text, path)
        finally:
            self._open.pop()

    def _include(self, pattern: str, path: str, location: Location, *, optional: bool) -> None:
        if not pattern.startswith("/"):
            pattern = os.path.join(os.path.dirname(path), pattern)
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches and not optional:
            raise ConfigError(location, f"{pattern}: No matches")
        for match in matches:
            self.read(match, location, optional=optional)

    def _parse(self, text: str, path: str) -> None:
        pending = ""
        pending_line = 0
        for number, raw in enumerate(text.split("\n"), start=1):
            location = Location(path, number)
            line = raw.removesuffix("\r").lstrip(_BLANKS)
            if not line or line.startswith("#"):
                continue
            line = _strip_comment(line, location).rstrip(_BLANKS)
            if line.endswith("\\"):
                if not pending:
                    pending_line = number
                pending += line[:-1].rstrip(_BLANKS) + " "
                continue
            if pending:
                line = (pending + line).lstrip(_BLANKS)
                location = Location(path, pending_line)
                pending = ""
            if line:
                self._line(line, path, location)
        if pending.strip():
            self._line(pending.rstrip(" "), path, Location(path, pending_line))

    def _line(self, line: str, path: str, location: Location) -> None:
        cut = 0
        while cut < len(line) and line[cut] not in _BLANKS and line[cut] != "=":
            cut += 1
        key, rest = line[:cut], line[cut:].lstrip(_BLANKS)
        if key in ("!include", "!include_try"):
            self._include(rest, path, location, optional=key == "!include_try")
            return
        if rest.startswith("=") and key:
            value = rest[1:].lstrip(_BLANKS)
            if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]:
                value = _unescape(value[1:-1])
            self.settings.append(ArgsSetting(key, value, location))
            return
        if self.settings and not line.startswith(("{", "}")) and not line.endswith("{"):
            # a wrapped line: it continues the previous value
            last = self.settings[-1]
            joined = f"{last.value} {line}" if last.value else line
            self.settings[-1] = ArgsSetting(last.key, joined, last.location)
            return
        raise ConfigError(location, "Expecting '='")


def read_args_file(path: str, where: Location | None = None) -> list[ArgsSetting]:
    """Every ``key = value`` of ``path`` (and what it includes), in order.

    ``where`` is the location reported when ``path`` itself cannot be read
    (the passdb's ``args`` line).  Raises ``ConfigError``.
    """
    reader = _Reader()
    reader.read(path, where)
    return reader.settings
