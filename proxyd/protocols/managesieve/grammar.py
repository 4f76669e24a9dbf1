"""ManageSieve syntax as Pigeonhole's ``managesieve-parser`` reads it and ``managesieve-quote`` writes it.

A command line is a word (the command name) and arguments: atoms, quoted
strings (``"..."`` with ``\\"`` and ``\\\\`` escapes, at most 1024 octets in
RFC 5804, no CR/LF/NUL, valid UTF-8) and literals (``{n}`` or ``{n+}`` followed
by CRLF and ``n`` octets).  :func:`parse_line` reads one whole line from a
buffer and says how much of it was consumed, or that it needs more input; it
is pure, so a line split over any number of reads parses the same.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

#: Pigeonhole's ``MAX_MANAGESIEVE_LINE``
MAX_LINE: Final = 8192

#: IS_ATOM_SPECIAL: never in an atom (besides CTL and 8-bit bytes)
_ATOM_SPECIALS: Final = frozenset(b'(){ %*"\\]')
_QUOTED_SPECIALS: Final = frozenset(b'"\\')


class ArgType(enum.Enum):
    ATOM = "atom"
    STRING = "string"  # quoted string or literal


@dataclass(frozen=True, slots=True)
class Arg:
    type: ArgType
    value: bytes

    def __repr__(self) -> str:
        # arguments may carry SASL responses: never show their bytes
        return f"Arg({self.type.value}, <{len(self.value)} bytes>)"


class ParseError(Exception):
    """A line the parser refuses; ``text`` is Pigeonhole's, ``fatal`` ends the session (BYE)."""

    def __init__(self, text: str, *, fatal: bool = False, consumed: int = 0) -> None:
        super().__init__(text)
        self.text = text
        self.fatal = fatal
        #: bytes of the buffer that belong to the bad line and were read already
        self.consumed = consumed


def _atom_byte(byte: int) -> None:
    if byte in _ATOM_SPECIALS or byte < 0x20 or byte == 0x7F:
        raise ParseError("Invalid characters in atom")
    if byte & 0x80:
        raise ParseError("8bit data in atom")


def read_word(data: bytes) -> tuple[bytes, int] | None:
    """The command name at the start of ``data`` and the bytes it took (with one SP), or None for more.

    Pigeonhole's ``managesieve_parser_read_word()``: the word ends at SP, CR or LF.
    """
    for i, byte in enumerate(data):
        if byte == 0x20:
            return data[:i], i + 1
        if byte in (0x0D, 0x0A):
            return data[:i], i
    return None


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def parse_line(data: bytes, *, max_line: int = MAX_LINE) -> tuple[list[Arg], int] | None:
    """Parse arguments up to and including the line end.

    Returns the arguments and the number of bytes consumed, or None when the
    line is not complete yet.  Raises :class:`ParseError` for bad syntax.
    """
    args: list[Arg] = []
    i = 0
    size = len(data)
    while True:
        if i > max_line:
            raise ParseError("MANAGESIEVE command line too large", consumed=i)
        while i < size and data[i] == 0x20:
            i += 1
        if i >= size:
            return None
        byte = data[i]
        if byte == 0x0D:
            if i + 1 >= size:
                return None
            if data[i + 1] != 0x0A:
                raise ParseError("Invalid characters in atom", consumed=i)
            return args, i + 2
        if byte == 0x0A:
            return args, i + 1
        if byte == 0x22:
            end = _quoted_end(data, i + 1)
            if end is None:
                return None
            raw = data[i + 1 : end]
            if not _valid_utf8(raw):
                raise ParseError("Invalid UTF-8 character in quoted-string.", consumed=end + 1)
            args.append(Arg(ArgType.STRING, _unescape(raw)))
            i = end + 1
        elif byte == 0x7B:
            literal = _literal(data, i, max_line)
            if literal is None:
                return None
            value, i = literal
            args.append(Arg(ArgType.STRING, value))
        else:
            start = i
            while i < size and data[i] not in (0x20, 0x0D, 0x0A, 0x29):
                try:
                    _atom_byte(data[i])
                except ParseError as exc:
                    exc.consumed = i
                    raise
                i += 1
            if i >= size:
                return None
            if data[i] == 0x29:
                raise ParseError("Invalid characters in atom", consumed=i)
            args.append(Arg(ArgType.ATOM, data[start:i]))
        if i < size and data[i] not in (0x20, 0x0D, 0x0A):
            raise ParseError("Missing space after argument", consumed=i)


def _quoted_end(data: bytes, start: int) -> int | None:
    """Index of the closing quote; None for more input."""
    i = start
    while i < len(data):
        byte = data[i]
        if byte == 0x22:
            return i
        if byte == 0:
            raise ParseError("NULs not allowed in strings", consumed=i)
        if byte == 0x5C:
            if i + 1 >= len(data):
                return None
            if data[i + 1] not in _QUOTED_SPECIALS:
                raise ParseError(
                    "Escaped quoted-string character is not a QUOTED-SPECIAL.", consumed=i
                )
            i += 2
            continue
        if byte < 0x80 and byte in (0x0D, 0x0A):
            raise ParseError("String contains invalid character.", consumed=i)
        i += 1
    return None


def _unescape(raw: bytes) -> bytes:
    if b"\\" not in raw:
        return raw
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C:
            i += 1
        out.append(raw[i])
        i += 1
    return bytes(out)


def _literal(data: bytes, start: int, max_line: int) -> tuple[bytes, int] | None:
    """``{n}``/``{n+}`` CRLF and its n octets at ``start``: (value, end) or None for more."""
    i = start + 1
    size_value = 0
    nonsync = False
    while True:
        if i >= len(data):
            return None
        byte = data[i]
        if byte == 0x7D:
            break
        if nonsync:
            raise ParseError("Expecting '}' after '+'", consumed=i)
        if byte == 0x2B:
            nonsync = True
        elif 0x30 <= byte <= 0x39:
            size_value = size_value * 10 + byte - 0x30
            if size_value > 2**64 - 1:
                raise ParseError("Literal size too large", consumed=i)
        else:
            raise ParseError("Invalid literal size", consumed=i)
        i += 1
    i += 1
    if i >= max_line or size_value > max_line - i:
        raise ParseError("Literal size too large", fatal=True, consumed=i)
    if i >= len(data):
        return None
    if data[i] == 0x0D:
        i += 1
        if i >= len(data):
            return None
    if data[i] != 0x0A:
        raise ParseError("Missing LF after literal size", consumed=i)
    i += 1
    if len(data) - i < size_value:
        return None
    value = data[i : i + size_value]
    if not _valid_utf8(value):
        raise ParseError("Invalid UTF-8 character in literal string.", consumed=i + size_value)
    return value, i + size_value


def quote(text: str | bytes) -> bytes:
    """Pigeonhole's ``managesieve_quote_append_string()`` (no LWSP compression).

    A quoted string, or a literal when the text has a line break.
    """
    data = text.encode() if isinstance(text, str) else text
    if b"\r" in data or b"\n" in data:
        return b"{%d}\r\n" % len(data) + data
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
