"""Reading hosts.allow / hosts.deny into rules, the way libwrap's ``table_match()`` does.

The reference is Debian's tcp-wrappers 7.6.q (libwrap0, which Debian's
Dovecot ``tcpwrap`` links), checked against the installed library in the tests:

* A logical line is read like ``xgets()`` into a 2048-byte buffer: a backslash
  right before a newline joins the next line (both characters disappear, no
  space is added); a NUL byte cuts the rest of its physical line off.
* A logical line that does not end in a newline (the last line of a file
  without one, or a line longer than 2047 bytes) ends the table: libwrap warns
  "missing newline or line too long" and treats the lookup as an error when no
  earlier rule matched.  In hosts.deny that error means *deny*.
* Lines starting with ``#`` and blank lines are skipped; a ``#`` elsewhere is an
  ordinary character.
* ``daemon_list : client_list [: options]`` is split at the first ``:`` that is
  not inside ``[...]``, and the options are everything after the second such
  ``:``, newline included (so ``imap: ALL:`` followed by nothing is an empty
  option field, which libwrap rejects: access denied).
* Lists are split into tokens at commas, blanks, tabs, CR and LF.
* A line without ``:`` is skipped with a warning.

Text is handled as latin-1 so every byte maps to one character and nothing is
ever decoded wrongly; all comparisons later are ASCII-case-insensitive as in C.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Final

#: libwrap's ``BUFLEN``: a logical line holds at most 2047 bytes
BUFLEN: Final = 2048
#: list separators (``sep`` in hosts_access.c)
LIST_SEPARATORS: Final = ", \t\r\n"


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``daemon_list : client_list [: options]`` line."""

    #: line number (of the last physical line, as libwrap counts) for logs
    line: int
    daemons: tuple[str, ...]
    clients: tuple[str, ...]
    #: the raw option text after the second ``:``, or None when there was none
    options: str | None = None


@dataclass(frozen=True, slots=True)
class Table:
    """The usable rules of one access file, and whether it ended in an error.

    ``error`` set means libwrap stopped reading there (or could not open the
    file): a lookup that matches none of ``rules`` is then an error, not a
    miss.  A missing file is an empty table without error.
    """

    path: str
    rules: tuple[Rule, ...] = ()
    error: str | None = None
    warnings: tuple[str, ...] = field(default=())


def split_at(text: str, delimiter: str) -> tuple[str, str] | None:
    """libwrap's IPv6-aware ``split_at()``: split at the first ``delimiter`` outside ``[...]``."""
    depth = 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif depth == 0 and ch == delimiter:
            return text[:i], text[i + 1 :]
    return None


def tokens(text: str) -> tuple[str, ...]:
    """``strtok(list, ", \\t\\r\\n")``: the non-empty tokens of a list."""
    out: list[str] = []
    start = -1
    for i, ch in enumerate(text):
        if ch in LIST_SEPARATORS:
            if start >= 0:
                out.append(text[start:i])
                start = -1
        elif start < 0:
            start = i
    if start >= 0:
        out.append(text[start:])
    return tuple(out)


def _xgets(data: bytes, pos: int, lineno: int) -> tuple[bytes | None, int, int]:
    """One logical line from ``pos``: (line or None at the end, new pos, line count)."""
    out = bytearray()
    room = BUFLEN
    while True:
        if pos >= len(data):
            return (bytes(out) if out else None), pos, lineno
        # fgets(ptr, room): up to room-1 bytes, through the first newline
        end = data.find(b"\n", pos, pos + room - 1)
        chunk = data[pos : end + 1] if end >= 0 else data[pos : pos + room - 1]
        pos += len(chunk)
        chunk = chunk.split(b"\0", 1)[0]  # strlen(): what follows a NUL is overwritten
        if chunk.endswith(b"\n"):
            lineno += 1
            if chunk.endswith(b"\\\n"):
                chunk = chunk[:-2]
            else:
                out += chunk
                return bytes(out), pos, lineno
        out += chunk
        room -= len(chunk)
        if room == 1:
            return bytes(out), pos, lineno


def parse_table(data: bytes, path: str = "") -> Table:
    """Parse the contents of an access file (pure)."""
    rules: list[Rule] = []
    warnings: list[str] = []
    pos = 0
    lineno = 0
    while True:
        raw, pos, lineno = _xgets(data, pos, lineno)
        if raw is None:
            break
        line = raw.decode("latin-1")
        if not line.endswith("\n"):
            error = f"{path}, line {lineno}: missing newline or line too long"
            warnings.append(error)
            return Table(path, tuple(rules), error, tuple(warnings))
        if line.startswith("#") or not line.strip(" \t\r\n"):
            continue
        first = split_at(line, ":")
        if first is None:
            warnings.append(f'{path}, line {lineno}: missing ":" separator')
            continue
        daemons, rest = first
        second = split_at(rest, ":")
        clients, options = second if second is not None else (rest, None)
        rules.append(Rule(lineno, tokens(daemons), tokens(clients), options))
    return Table(path, tuple(rules), None, tuple(warnings))


def load_table(path: str) -> Table:
    """Read and parse ``path``; a missing file is an empty table, an unreadable one an error."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return Table(path)
        error = f"cannot open {path}: {exc.strerror}"
        return Table(path, (), error, (error,))
    return parse_table(data, path)
