"""The IMAP grammar: Dovecot's parser rules for tags, atoms, quoted strings, literals, and quoting."""

from __future__ import annotations

import pytest

from proxyd.protocols.buffer import InputBuffer
from proxyd.protocols.imap.grammar import (
    Arg,
    ArgType,
    ImapParseError,
    ImapParser,
    ParseErrorKind,
    quote_astring,
    quote_nstring,
    quote_quoted,
    unescape_quoted,
)


class Harness:
    """A parser over a buffer, fed like Dovecot's reads; continuations are recorded."""

    def __init__(self, max_inbuf: int = 1026, max_line: int = 8192) -> None:
        self.buffer = InputBuffer(max_inbuf)
        self.continuations = 0
        self.parser = ImapParser(self.buffer, self._continue, max_line_size=max_line)

    def _continue(self) -> None:
        self.continuations += 1

    def feed(self, data: bytes) -> None:
        pending = bytearray(data)
        self.buffer.fill_from(pending)
        assert not pending, "test input does not fit the buffer"

    def args(self, data: bytes = b"") -> tuple[Arg, ...] | None:
        self.feed(data)
        return self.parser.read_args()


def values(args: tuple[Arg, ...] | None) -> list[tuple[ArgType, bytes]]:
    assert args is not None
    return [(arg.type, arg.value) for arg in args]


def test_atoms_nil_and_quoted_strings():
    h = Harness()
    assert values(h.args(b'user nil "pa ss" "a\\"b\\\\c"\r\n')) == [
        (ArgType.ATOM, b"user"),
        (ArgType.NIL, b"nil"),
        (ArgType.STRING, b"pa ss"),
        (ArgType.STRING, b'a"b\\c'),
    ]
    # the CRLF is left for the caller to skip, as in Dovecot
    assert h.buffer.peek() == b"\r\n"


def test_nil_is_still_an_astring():
    h = Harness()
    args = h.args(b'NIL "x"\r\n')
    assert args is not None
    assert args[0].astring() == b"NIL"
    assert args[0].string() is None  # but not a string


def test_empty_line_has_no_arguments():
    assert values(Harness().args(b"\r\n")) == []
    assert values(Harness().args(b"\n")) == []


def test_quoted_string_split_across_reads():
    h = Harness()
    assert h.args(b'"ab') is None
    assert h.args(b"c\\") is None  # an escape at the end waits for the escaped byte
    assert values(h.args(b'"d"\r\n')) == [(ArgType.STRING, b'abc"d')]


def test_quoted_string_keeps_8bit_like_dovecot():
    assert values(Harness().args('"ä"\r\n'.encode())) == [(ArgType.STRING, "ä".encode())]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'"a\0b"\r\n', "NULs not allowed in strings"),
        (b'"ab\r\n', "Missing '\"'"),
        (b'"a\\\rb"\r\n', "Missing '\"'"),  # CR cannot be escaped
        (b"\xc3\xa4\r\n", "8bit data in atom"),
        (b"a\tb\r\n", "Invalid characters in atom"),
        (b"a{b\r\n", "Invalid characters in atom"),
        (b"a)\r\n", "Unexpected ')'"),
        (b")\r\n", "Unexpected ')'"),
        (b"(a\r\n", "Missing ')'"),
        (b"a\rb\r\n", "CR sent without LF"),  # CR ends the atom, then needs its LF
        (b"\rb\r\n", "CR sent without LF"),
        (b"~{3}\r\n", "literal8 not allowed here"),
        (b"{3x}\r\n", "Invalid literal size"),
        (b"{3+3}\r\n", "Expecting '}' after '+'"),
    ],
)
def test_syntax_errors_carry_dovecots_text(line, message):
    with pytest.raises(ImapParseError) as caught:
        Harness().args(line)
    assert caught.value.message == message
    assert caught.value.kind is ParseErrorKind.BAD_SYNTAX
    assert not caught.value.fatal


def test_lists_are_validated_but_returned_empty():
    h = Harness()
    assert values(h.args(b'(a "b" (c)) x\r\n')) == [(ArgType.LIST, b""), (ArgType.ATOM, b"x")]


def test_tilde_atom():
    assert values(Harness().args(b"~a\r\n")) == [(ArgType.ATOM, b"~a")]


def test_synchronizing_literal_sends_continuation():
    h = Harness()
    assert h.args(b"{3}\r\n") is None
    assert h.continuations == 1
    assert values(h.args(b"a\0c x\r\n")) == [(ArgType.STRING, b"a\0c"), (ArgType.ATOM, b"x")]


def test_literal_nul_is_cut_when_used_as_a_string():
    h = Harness()
    args = h.args(b"{3+}\r\na\0c\r\n")
    assert args is not None
    assert args[0].string() == b"a"
    assert args[0].astring() == b"a"


def test_nonsync_literal_sends_nothing():
    h = Harness()
    assert values(h.args(b"{2+}\r\nab\r\n")) == [(ArgType.STRING, b"ab")]
    assert h.continuations == 0


def test_literal_byte_by_byte():
    h = Harness()
    data = b'{5}\r\nhe"lo "q"\r\n'
    for byte in data[:-1]:
        assert h.args(bytes([byte])) is None
    assert values(h.args(data[-1:])) == [(ArgType.STRING, b'he"lo'), (ArgType.STRING, b"q")]
    assert h.continuations == 1


def test_literal_bare_lf_after_size():
    assert values(Harness().args(b"{1}\nx\r\n")) == [(ArgType.STRING, b"x")]


def test_literal_needs_lf_after_size():
    with pytest.raises(ImapParseError, match="Missing LF after literal size"):
        Harness().args(b"{1}x\r\n")


def test_literal_larger_than_line_is_fatal():
    h = Harness()
    with pytest.raises(ImapParseError) as caught:
        h.args(b"{8192}\r\n")
    assert caught.value.fatal
    assert caught.value.message == "Literal size too large"


def test_literal_size_counts_what_the_line_used_so_far():
    # "abcd " and "{8181}" are 11 bytes of the line: 8192 - 11 = 8181 is the most
    assert Harness().args(b"abcd {8181}\r\n") is None
    with pytest.raises(ImapParseError, match="Literal size too large"):
        Harness().args(b"abcd {8182}\r\n")


def test_literal_size_overflow():
    with pytest.raises(ImapParseError) as caught:
        Harness().args(b"{18446744073709551616}\r\n")
    assert caught.value.fatal


def test_line_too_long():
    h = Harness(max_line=20)
    with pytest.raises(ImapParseError) as caught:
        h.args(b"aaaa bbbb cccc dddd eeee ffff\r\n")
    assert caught.value.kind is ParseErrorKind.LINE_TOO_LONG
    assert caught.value.message == "IMAP command line too large"


def test_parser_consumes_finished_arguments():
    """Only the argument being read stays in the buffer (why 1026 bytes are enough)."""
    h = Harness()
    assert h.args(b'"abc" def') is None
    assert h.buffer.peek() == b"def"


@pytest.mark.parametrize(
    ("data", "result"),
    [
        (b"a1", (0, None)),
        (b"a1 NOOP\r\n", (1, "a1")),
        (b"a1\r\n", (1, "a1")),
        (b" NOOP\r\n", (-1, None)),
        (b"a+b NOOP\r\n", (-1, None)),
        (b"a*b NOOP\r\n", (-1, None)),
        (b"a]b NOOP\r\n", (-1, None)),
        (b"a\x7fb NOOP\r\n", (1, "a\x7fb")),
        (b"\xc3\xa4 NOOP\r\n", (-1, None)),
    ],
)
def test_tag_rules(data, result):
    h = Harness()
    h.feed(data)
    assert h.parser.read_tag() == result


def test_command_name_allows_plus():
    h = Harness()
    h.feed(b"X+Y\r\n")
    assert h.parser.read_command_name() == (1, "X+Y")


def test_tag_consumes_the_space_only():
    h = Harness()
    h.feed(b"a1 NOOP\r\n")
    h.parser.read_tag()
    assert h.buffer.peek() == b"NOOP\r\n"
    h.parser.read_command_name()
    assert h.buffer.peek() == b"\r\n"


def test_buffer_fill_respects_the_cap():
    buffer = InputBuffer(4)
    pending = bytearray(b"abcdef")
    assert buffer.fill_from(pending) == 4
    assert buffer.full
    assert pending == b"ef"
    assert buffer.fill_from(pending) == 0
    buffer.skip(3)
    assert buffer.fill_from(pending) == 2
    assert buffer.peek() == b"def"


def test_unescape():
    assert unescape_quoted(b"a\\b\\\\c\\") == b"ab\\c"
    assert unescape_quoted(b"a\0b") == b"a"


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("bob", b'"bob"'),
        ("", b'""'),
        ('p"w\\', b'"p\\"w\\\\"'),
        ('""""', b'"\\"\\"\\"\\""'),
        ('"""""', b'{5}\r\n"""""'),  # the fifth quoted-special switches to a literal
        ("pässword", b"{9}\r\np\xc3\xa4ssword"),
        ("a\r\nb", b"{4}\r\na\r\nb"),
        ("NIL", b'"NIL"'),
    ],
)
def test_quote_astring_like_imap_append_string(value, encoded):
    assert quote_astring(value) == encoded


def test_quote_nstring():
    assert quote_nstring(None) == b"NIL"
    assert quote_nstring("x") == b'"x"'


def test_quote_quoted_drops_what_cannot_be_quoted():
    assert quote_quoted('a\r\nä"b') == b'"a\\"b"'


def test_arg_repr_hides_bytes():
    assert "secret" not in repr(Arg(ArgType.STRING, b"secret"))
