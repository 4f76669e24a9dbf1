"""IMAP syntax as Dovecot's pre-login parser reads and writes it.

Theory of operation
-------------------
Dovecot's ``imap-login`` reads client input into an input stream whose buffer
holds at most ``LOGIN_MAX_INBUF_SIZE`` (1026) *unconsumed* bytes, and its
``imap-parser`` consumes the buffer argument by argument: a finished argument is
copied out and skipped, so only the argument being read has to fit in the
buffer.  Whether a client gets ``* BYE Input buffer full, aborting`` therefore
depends on exactly which bytes the parser has consumed, and this module mirrors
that consumption step by step:

* :class:`InputBuffer` is the stream buffer (bytes received and not consumed);
* :class:`ImapParser` is a resumable argument parser over it.  It is fed
  nothing: it looks at the buffer, consumes what it has fully parsed, and
  returns ``None`` when it needs more input, so literals ``{n}`` / ``{n+}`` and
  quoted strings may arrive split across any number of reads (the buffer is the
  "commit/rollback" store: unconsumed bytes are simply looked at again);
* :meth:`ImapParser.read_tag` / :meth:`ImapParser.read_command_name` read the
  first two words (Dovecot's ``imap_parser_read_tag()`` rules);
* the ``quote_*`` functions build strings the way Dovecot's ``imap-quote.c``
  does when it writes commands to a backend.

Parse errors are raised as :class:`ImapParseError`, which carries the exact text
Dovecot puts after ``<tag> BAD`` (or ``* BYE`` when ``fatal``).

List contents are validated but not kept: no pre-login command takes a nested
list, so a list argument is returned as ``Arg(ArgType.LIST)`` without items.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from proxyd.protocols.buffer import InputBuffer

#: Dovecot's ``IMAP_TAG_MAX_LEN`` (``LOGIN_MAX_MASTER_PREFIX_LEN`` - 2).
TAG_MAX_LEN: Final = 126
#: Dovecot's ``IMAP_LOGIN_MAX_LINE_LENGTH``.
MAX_LINE_LENGTH: Final = 8192
#: RFC 7888 LITERAL-: the largest non-synchronizing literal (``imap_literal_minus``)
LITERAL_MINUS_MAX: Final = 4096
#: Dovecot's ``IMAP_ID_KEY_MAX_LEN``.
ID_KEY_MAX_LEN: Final = 30

_SP: Final = 0x20
_CR: Final = 0x0D
_LF: Final = 0x0A
_DQUOTE: Final = 0x22
_BACKSLASH: Final = 0x5C
_LPAREN: Final = 0x28
_RPAREN: Final = 0x29
_LBRACE: Final = 0x7B
_RBRACE: Final = 0x7D
_PLUS: Final = 0x2B
_TILDE: Final = 0x7E
_UOFF_MAX: Final = 2**64 - 1

#: atom-specials, list-wildcards, quoted-specials and resp-specials: never in a tag or command name.
_NOT_IN_WORD: Final = frozenset(b'(){%*"\\]')


class ParseErrorKind(enum.Enum):
    """Dovecot's ``imap_parser_error`` classes that change what the client sees."""

    BAD_SYNTAX = "bad_syntax"  # -> "<tag> BAD <msg>", rest of the line skipped
    LINE_TOO_LONG = "line_too_long"  # -> "<tag> BAD IMAP command line too large"
    LITERAL_TOO_BIG = "literal_too_big"  # -> "* BYE <msg>" and disconnect


class ImapParseError(Exception):
    """A client command that Dovecot's parser rejects; ``message`` is the reply text."""

    def __init__(self, kind: ParseErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def fatal(self) -> bool:
        """True when Dovecot answers ``* BYE <message>`` and disconnects."""
        return self.kind is ParseErrorKind.LITERAL_TOO_BIG


class ArgType(enum.Enum):
    """Argument types as the pre-login commands distinguish them."""

    ATOM = "atom"
    NIL = "nil"  # an atom spelled NIL (any case); still an astring
    STRING = "string"  # quoted string or literal
    LIST = "list"


def _c_string(value: bytes) -> bytes:
    """Dovecot hands arguments on as C strings: everything from the first NUL is lost."""
    index = value.find(b"\0")
    return value if index < 0 else value[:index]


@dataclass(frozen=True, slots=True)
class Arg:
    """One parsed argument. ``value`` holds the raw bytes (literals may contain NUL)."""

    type: ArgType
    value: bytes = b""

    def __repr__(self) -> str:
        # Arguments can be passwords; never show their bytes.
        return f"Arg({self.type.name}, <{len(self.value)} bytes>)"

    def astring(self) -> bytes | None:
        """``imap_arg_get_astring()``: atom, NIL, quoted or literal; None otherwise."""
        if self.type is ArgType.LIST:
            return None
        return _c_string(self.value)

    def string(self) -> bytes | None:
        """``imap_arg_get_string()``: quoted or literal only."""
        if self.type is not ArgType.STRING:
            return None
        return _c_string(self.value)


def unescape_quoted(raw: bytes) -> bytes:
    """Dovecot's ``str_unescape()`` on the inside of a quoted string (cut at NUL first)."""
    raw = _c_string(raw)
    if b"\\" not in raw:
        return raw
    out = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        if byte == _BACKSLASH:
            i += 1
            if i == len(raw):
                break
            byte = raw[i]
        out.append(byte)
        i += 1
    return bytes(out)


class _Cur(enum.Enum):
    NONE = 0
    ATOM = 1
    STRING = 2
    LITERAL = 3
    LITERAL_DATA = 4


class ImapParser:
    """Resumable argument parser over an :class:`InputBuffer`, after Dovecot's ``imap-parser.c``.

    ``send_continuation`` is called when a synchronizing literal ``{n}`` has been
    accepted (Dovecot then writes ``+ OK``).  Call :meth:`reset` before each
    new command (or, for the ID command, before each argument).
    """

    def __init__(
        self,
        buffer: InputBuffer,
        send_continuation: Callable[[], None],
        *,
        max_line_size: int = MAX_LINE_LENGTH,
        literal_minus: bool = False,
    ) -> None:
        self._buf = buffer
        self._send_continuation = send_continuation
        self._max_line_size = max_line_size
        # imap_literal_minus: a non-synchronizing literal may carry at most 4096 bytes
        self._literal_minus = literal_minus
        self._inside_list = False
        self._stop_at_list = False
        self.reset()

    def reset(self) -> None:
        """Forget the current line (``imap_parser_reset()``)."""
        self._line_size = 0
        self._root: list[Arg] = []
        self._depth = 0
        self._cur = _Cur.NONE
        self._cur_pos = 0
        self._literal_size = 0
        self._literal_nonsync = False
        self._literal_skip_crlf = False
        self._eol = False
        self._error: ImapParseError | None = None

    @property
    def line_size(self) -> int:
        """Bytes of the current line consumed so far."""
        return self._line_size

    # -- first two words -------------------------------------------------

    def read_tag(self) -> tuple[int, str | None]:
        """Read the tag: ``(1, tag)``, ``(0, None)`` for more data, ``(-1, None)`` if invalid."""
        return self._read_word(parsing_tag=True)

    def read_command_name(self) -> tuple[int, str | None]:
        """Read the command name; same results as :meth:`read_tag` (``+`` is allowed here)."""
        return self._read_word(parsing_tag=False)

    def _read_word(self, *, parsing_tag: bool) -> tuple[int, str | None]:
        data = self._buf.peek()
        for i, byte in enumerate(data):
            if byte in (_SP, _CR, _LF):
                consumed = i + 1 if byte == _SP else i
                self._line_size += consumed
                self._buf.skip(consumed)
                if i == 0:
                    return -1, None
                return 1, data[:i].decode("ascii")
            if byte in _NOT_IN_WORD or (byte == _PLUS and parsing_tag):
                return -1, None
            if byte < 0x20 or byte >= 0x80:
                return -1, None
        return 0, None

    # -- arguments -------------------------------------------------------

    def read_args(
        self, count: int = 0, *, inside_list: bool = False, stop_at_list: bool = False
    ) -> tuple[Arg, ...] | None:
        """Parse arguments up to the end of the line (``count == 0``) or until ``count`` are read.

        Returns the arguments, or None when more input is needed.  The line's
        CRLF is *not* consumed (the caller skips the line, as Dovecot does).
        Raises :class:`ImapParseError` after consuming what Dovecot consumes.
        """
        self._inside_list = inside_list
        self._stop_at_list = stop_at_list
        while not self._eol and (count == 0 or self._unfinished() or len(self._root) < count):
            if not self._read_arg():
                break
            if self._line_size > self._max_line_size:
                self._error = ImapParseError(
                    ParseErrorKind.LINE_TOO_LONG, "IMAP command line too large"
                )
                break
        if self._error is not None:
            self._consume_cur()
            raise self._error
        if (not self._unfinished() and count > 0 and len(self._root) >= count) or self._eol:
            return self._finish_line()
        return None

    def _unfinished(self) -> bool:
        return self._cur is not _Cur.NONE or (self._depth > 0 and not self._stop_at_list)

    def _consume_cur(self) -> None:
        self._line_size += self._cur_pos
        self._buf.skip(self._cur_pos)
        self._cur_pos = 0

    def _finish_line(self) -> tuple[Arg, ...]:
        self._consume_cur()
        if self._depth > 0 and not self._stop_at_list:
            raise ImapParseError(ParseErrorKind.BAD_SYNTAX, "Missing ')'")
        return tuple(self._root)

    def _fail(self, message: str, kind: ParseErrorKind = ParseErrorKind.BAD_SYNTAX) -> bool:
        self._error = ImapParseError(kind, message)
        return False

    def _save(self, arg_type: ArgType, value: bytes) -> None:
        self._cur = _Cur.NONE
        if self._depth > 0:
            return  # inside a list: validated, not kept
        if arg_type is ArgType.ATOM and value.upper() == b"NIL":
            arg_type = ArgType.NIL
        self._root.append(Arg(arg_type, value))

    def _valid_atom_char(self, byte: int) -> bool:
        if byte in (_LPAREN, _RPAREN, _LBRACE, _DQUOTE) or byte <= 0x20 or byte == 0x7F:
            return self._fail("Invalid characters in atom")
        if byte & 0x80:
            return self._fail("8bit data in atom")
        return True

    def _open_list(self) -> None:
        if self._depth == 0:
            self._root.append(Arg(ArgType.LIST))
        self._depth += 1
        self._cur = _Cur.NONE

    def _close_list(self) -> bool:
        if self._depth == 0:
            if self._inside_list:
                self._eol = True
                self._cur = _Cur.NONE
                return True
            return self._fail("Unexpected ')'")
        self._depth -= 1
        self._cur = _Cur.NONE
        return True

    def _read_arg(self) -> bool:
        """Parse one argument (or one list element); False when stuck or failed."""
        data = self._buf.peek()
        if not data:
            return False
        while self._cur is _Cur.NONE:
            # Consume what was parsed so far and the spaces after it.
            i = self._cur_pos
            while i < len(data) and data[i] == _SP:
                i += 1
            self._line_size += i
            self._buf.skip(i)
            self._cur_pos = 0
            data = data[i:]
            if not data:
                return False
            first = data[0]
            if first == _CR:
                if len(data) == 1:
                    return False  # wait for the LF
                if data[1] != _LF:
                    return self._fail("CR sent without LF")
                first = _LF
            if first == _LF:
                if self._inside_list:
                    return self._fail("Missing ')'")
                self._eol = True
                return False
            if first == _DQUOTE:
                self._cur = _Cur.STRING
            elif first == _TILDE:
                if len(data) == 1:
                    return False
                if data[1] == _LBRACE:
                    return self._fail("literal8 not allowed here")
                self._cur = _Cur.ATOM
            elif first == _LBRACE:
                self._cur = _Cur.LITERAL
                self._literal_size = 0
                self._literal_nonsync = False
            elif first == _LPAREN:
                self._open_list()
                if self._stop_at_list:
                    self._buf.skip(1)
                    return False
            elif first == _RPAREN:
                if not self._close_list():
                    return False
                if self._depth == 0:
                    self._cur_pos += 1
                    return True
            else:
                if not self._valid_atom_char(first):
                    return False
                self._cur = _Cur.ATOM
            self._cur_pos += 1

        if self._cur is _Cur.ATOM:
            return self._read_atom(data)
        if self._cur is _Cur.STRING:
            return self._read_string(data)
        if self._cur is _Cur.LITERAL:
            if not self._read_literal(data):
                return False
            data = self._buf.peek()
        return self._read_literal_data(data)

    def _read_atom(self, data: bytes) -> bool:
        i = self._cur_pos
        while i < len(data):
            byte = data[i]
            if byte in (_SP, _CR, _LF):
                self._save(ArgType.ATOM, data[:i])
                break
            if byte == _RPAREN:
                if self._depth > 0 or self._inside_list:
                    self._save(ArgType.ATOM, data[:i])
                    break
                return self._fail("Unexpected ')'")
            if not self._valid_atom_char(byte):
                return False
            i += 1
        self._cur_pos = i
        return self._cur is _Cur.NONE

    def _read_string(self, data: bytes) -> bool:
        i = self._cur_pos
        while i < len(data):
            byte = data[i]
            if byte == _DQUOTE:
                self._save(ArgType.STRING, unescape_quoted(data[1:i]))
                i += 1
                break
            if byte == 0:
                return self._fail("NULs not allowed in strings")
            if byte == _BACKSLASH:
                if i + 1 == len(data):
                    break  # the escaped byte has not arrived yet
                i += 1
            # Checked after skipping an escape, so CR/LF cannot be escaped.
            if data[i] in (_CR, _LF):
                return self._fail("Missing '\"'")
            i += 1
        self._cur_pos = i
        return self._cur is _Cur.NONE

    def _read_literal(self, data: bytes) -> bool:
        i = self._cur_pos
        while i < len(data):
            byte = data[i]
            if byte == _RBRACE:
                self._line_size += i + 1
                self._buf.skip(i + 1)
                return self._literal_end()
            if self._literal_nonsync:
                return self._fail("Expecting '}' after '+'")
            if byte == _PLUS:
                self._literal_nonsync = True
                i += 1
                continue
            if not 0x30 <= byte <= 0x39:
                return self._fail("Invalid literal size")
            digit = byte - 0x30
            if self._literal_size >= _UOFF_MAX // 10 and (
                self._literal_size > _UOFF_MAX // 10 or digit > _UOFF_MAX % 10
            ):
                return self._fail("Literal size too large", ParseErrorKind.LITERAL_TOO_BIG)
            self._literal_size = self._literal_size * 10 + digit
            i += 1
        self._cur_pos = i
        return False

    def _literal_end(self) -> bool:
        if self._literal_minus and self._literal_nonsync and self._literal_size > LITERAL_MINUS_MAX:
            return self._fail(
                "Non-synchronizing literal size too large", ParseErrorKind.LITERAL_TOO_BIG
            )
        if (
            self._line_size >= self._max_line_size
            or self._literal_size > self._max_line_size - self._line_size
        ):
            return self._fail("Literal size too large", ParseErrorKind.LITERAL_TOO_BIG)
        if not self._literal_nonsync:
            self._send_continuation()
        self._cur = _Cur.LITERAL_DATA
        self._literal_skip_crlf = True
        self._cur_pos = 0
        return True

    def _read_literal_data(self, data: bytes) -> bool:
        if self._literal_skip_crlf:
            if not data:
                return False
            if data[0] == _CR:
                self._line_size += 1
                self._buf.skip(1)
                data = data[1:]
                if not data:
                    return False
            if data[0] != _LF:
                return self._fail("Missing LF after literal size")
            self._line_size += 1
            self._buf.skip(1)
            data = data[1:]
            self._literal_skip_crlf = False
        if len(data) < self._literal_size:
            return False
        self._save(ArgType.STRING, data[: self._literal_size])
        self._cur_pos = self._literal_size
        return True


# -- writing -------------------------------------------------------------

#: Dovecot switches from a quoted string to a literal after this many escapes.
_QUOTED_MAX_ESCAPES: Final = 4
#: bytes a quoted string cannot carry (a literal is sent instead)
_NOT_QUOTABLE: Final = re.compile(rb"[\r\n\x00\x80-\xff]")
#: a string that goes between quotes unchanged (nothing to escape, nothing unquotable)
_PLAIN_QUOTABLE: Final = re.compile(rb'[^\r\n\x00\x80-\xff"\\]*')


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def quote_string(value: str | bytes) -> bytes:
    """Dovecot's ``imap_append_string()``: a quoted string, or a literal ``{n}\\r\\n<data>``.

    A literal is used for CR, LF, NUL, 8-bit bytes, or more than four ``"``/``\\``.
    (Dovecot sends the literal without waiting for the server's ``+``; so do we.)
    """
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if _PLAIN_QUOTABLE.fullmatch(raw):  # the common case: quoted as it is
        return b'"' + raw + b'"'
    if _NOT_QUOTABLE.search(raw) or raw.count(b'"') + raw.count(b"\\") > _QUOTED_MAX_ESCAPES:
        return _literal(raw)
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def quote_astring(value: str | bytes) -> bytes:
    """Encode a backend LOGIN argument exactly as Dovecot's ``imap_append_string()`` does."""
    return quote_string(value)


def quote_nstring(value: str | bytes | None) -> bytes:
    """Dovecot's ``imap_append_nstring()``: ``NIL`` for None, else :func:`quote_string`."""
    if value is None:
        return b"NIL"
    return quote_string(value)


def quote_quoted(value: str | bytes) -> bytes:
    """Dovecot's ``imap_append_quoted()``: always quoted; CR, LF and 8-bit bytes are dropped."""
    out = bytearray(b'"')
    for byte in _c_string(_as_bytes(value)):
        if byte in (_CR, _LF) or byte >= 0x80:
            continue
        if byte in (_DQUOTE, _BACKSLASH):
            out.append(_BACKSLASH)
        out.append(byte)
    out.append(_DQUOTE)
    return bytes(out)


def _literal(raw: bytes) -> bytes:
    return b"{%d}\r\n" % len(raw) + raw
