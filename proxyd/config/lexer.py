"""Dovecot's configuration syntax, one logical line at a time.

``tokenize(text, filename)`` turns the text of one file into tokens that carry
their :class:`~proxyd.errors.Location`.  It knows nothing about includes,
files or variables; :mod:`proxyd.config.parser` does those.

Line rules (Dovecot 2.3 ``src/config/config-parser.c`` ``config_parse_line``):

* Leading and trailing blanks (space, tab) are dropped; a line that is then
  empty or starts with ``#`` is skipped.
* ``#`` starts a comment anywhere outside ``"..."`` / ``'...'`` quotes (a
  backslash inside quotes escapes the next character).  A ``#`` not preceded
  by a blank still starts a comment, with a warning, as in Dovecot.
* A line ending in ``\\`` continues on the next line; the pieces are joined
  with one space.  Deliberate difference: Dovecot silently drops a continued
  line when a comment or blank line follows it; here such a line (or the end
  of the file) ends the continued line, which is then used as written.  The
  token's location is the first physical line of the logical line.
* ``key = value`` (blanks around ``=`` optional).  A value in matching double
  or single quotes loses them and its backslash escapes; ``key = <FILE``
  names a file; an unquoted value containing ``$`` is marked for variable
  expansion (and is not unquoted).
* ``name [label] {`` opens a section (``"quoted label"`` allowed); nothing may
  follow the ``{``.  ``}`` alone closes one.
* ``!include PATH`` / ``!include_try PATH``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from proxyd.errors import ConfigError, Location

log = logging.getLogger("proxyd.config")

_BLANKS = " \t"


class ValueKind(enum.Enum):
    """How a ``key = value`` line gave its value."""

    PLAIN = "plain"
    #: the value was in quotes; quotes and escapes are already removed
    QUOTED = "quoted"
    #: ``key = <FILE``: ``value`` is the file name as written
    FILE = "file"
    #: unquoted and contains ``$``: variables still to be expanded
    VARIABLE = "variable"


@dataclass(frozen=True, slots=True)
class KeyValue:
    """``key = value``."""

    key: str
    #: kept out of ``repr()``: values may be passwords
    value: str = field(repr=False)
    kind: ValueKind
    location: Location


@dataclass(frozen=True, slots=True)
class SectionStart:
    """``name [label] {``; ``label`` is ``""`` when absent."""

    name: str
    label: str
    location: Location


@dataclass(frozen=True, slots=True)
class SectionEnd:
    """``}``."""

    location: Location


@dataclass(frozen=True, slots=True)
class Include:
    """``!include PATTERN`` or (``optional``) ``!include_try PATTERN``."""

    pattern: str
    optional: bool
    location: Location


Token = KeyValue | SectionStart | SectionEnd | Include


def unescape(text: str) -> str:
    """Drop each backslash and keep the character after it (Dovecot's ``str_unescape``)."""
    if "\\" not in text:
        return text
    out: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            char = next(chars, "")
        out.append(char)
    return "".join(out)


def _strip_comment(line: str, location: Location) -> str:
    """Cut ``line`` at the first ``#`` that is outside quotes."""
    i = 0
    length = len(line)
    while i < length:
        char = line[i]
        if char in "\"'":
            i += 1
            while i < length and line[i] != char:
                if line[i] == "\\" and i + 1 < length:
                    i += 1
                i += 1
            if i >= length:
                break
        elif char == "#":
            if line[i - 1] not in _BLANKS:
                log.warning(
                    "%s: Ambiguous '#' character in line, treating it as comment. "
                    "Add a space before it to remove this warning.",
                    location,
                )
            return line[:i]
        i += 1
    return line


def _classify(line: str, location: Location) -> Token:
    """Turn one complete logical line (blanks trimmed, not empty) into a token."""
    end = 0
    while end < len(line) and line[end] not in " \t=":
        end += 1
    key = line[:end]
    rest = line[end:].lstrip(_BLANKS)

    if key in ("!include", "!include_try"):
        return Include(pattern=rest, optional=key == "!include_try", location=location)

    if rest.startswith("="):
        value = rest[1:].lstrip(_BLANKS)
        if value.startswith("<"):
            return KeyValue(key, value[1:].lstrip(_BLANKS), ValueKind.FILE, location)
        if value[:1] not in ("'", '"') and "$" in value:
            return KeyValue(key, value, ValueKind.VARIABLE, location)
        if value and value[0] in ("'", '"') and value[-1] == value[0]:
            return KeyValue(key, unescape(value[1:-1]), ValueKind.QUOTED, location)
        return KeyValue(key, value, ValueKind.PLAIN, location)

    if key == "}" and rest == "":
        return SectionEnd(location)

    label = ""
    if not rest.startswith("{"):
        if rest.startswith('"'):
            close = rest.find('"', 1)
            if close < 0:
                raise ConfigError(location, "Expecting '{'")
            label = unescape(rest[1:close])
            rest = rest[close + 1 :].lstrip(_BLANKS)
        else:
            cut = 0
            while cut < len(rest) and rest[cut] not in _BLANKS:
                cut += 1
            label = rest[:cut]
            rest = rest[cut:].lstrip(_BLANKS)
        if not rest.startswith("{"):
            raise ConfigError(location, "Expecting '{'")
    if rest != "{":
        raise ConfigError(location, "Garbage after '{'")
    return SectionStart(name=key, label=label, location=location)


def tokenize(text: str, filename: str) -> Iterator[Token]:
    """Yield the tokens of one file's text; ``filename`` is used for locations only.

    Raises :class:`ConfigError` (with ``filename:line``) for a malformed line,
    lazily, when the generator reaches it.
    """
    pending: list[str] = []  # pieces of a line continued with a trailing backslash
    pending_start = 0
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    for number, raw in enumerate(lines, start=1):
        location = Location(filename, number)
        raw = raw.removesuffix("\r")
        if "\0" in raw:
            raise ConfigError(location, "NUL character in line")
        line = raw.strip(_BLANKS)
        if line.startswith("#") or line == "":
            if pending:
                yield _classify(" ".join(pending), Location(filename, pending_start))
                pending = []
            continue
        line = _strip_comment(line, location).rstrip(_BLANKS)
        if line.endswith("\\"):
            if not pending:
                pending_start = number
            piece = line[:-1].rstrip(_BLANKS)
            if piece:
                pending.append(piece)
            continue
        if pending:
            if line:
                pending.append(line)
            location = Location(filename, pending_start)
            line = " ".join(pending)
            pending = []
        if line:
            yield _classify(line, location)
    if pending:
        yield _classify(" ".join(pending), Location(filename, pending_start))
