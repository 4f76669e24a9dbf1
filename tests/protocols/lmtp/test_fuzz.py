"""Property tests: arbitrary bytes never crash the LMTP engines, and replies stay well-formed."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from proxyd.protocols.events import NEED_DATA
from proxyd.protocols.lmtp.address import AddressError, parse_path
from proxyd.protocols.lmtp.client import ClientSettings, DotStuffer, Failed, LmtpClient, XclientData
from proxyd.protocols.lmtp.replies import ReplyError, ReplyReader
from proxyd.protocols.lmtp.server import (
    Closed,
    LmtpServer,
    MessageChunk,
    MessageEnd,
    RcptTo,
    StartTLS,
    TransactionReset,
)
from tests.protocols.fuzzing import chunked

_REPLY_LINE = re.compile(rb"\A[2345]\d\d[ -][^\r\n]*\Z")
_COMMANDS = st.sampled_from([
    b"LHLO x\r\n", b"MAIL FROM:<a@b>\r\n", b"MAIL FROM:<>\r\n", b"RCPT TO:<u@d>\r\n", b"RCPT TO:<u>\r\n",
    b"DATA\r\n", b"body\r\n", b".\r\n", b"..x\r\n", b"RSET\r\n", b"NOOP\r\n", b"VRFY x\r\n", b"QUIT\r\n",
    b"STARTTLS\r\n", b"XCLIENT ADDR=1.2.3.4 TTL=2\r\n", b"XCLIENT TTL=x\r\n",
    b"BDAT 3\r\nabc", b"BDAT 0 LAST\r\n", b"BDAT 5 LAST\r\n.\r\n", b"BDAT 2 x\r\n", b"BDAT\r\n",
    b"bdat 4 last\r\nDATA",
])
_INPUT = st.one_of(st.binary(max_size=400), st.lists(_COMMANDS, max_size=25).map(b"".join))


@given(_INPUT, st.lists(st.integers(min_value=0), max_size=6), st.lists(st.booleans(), max_size=10),
       st.booleans())
def test_server_survives_anything(data: bytes, cuts: list[int], accept: list[bool], eof: bool) -> None:
    server = LmtpServer(hostname="h", greeting="ready", trusted=True, tls_available=True)
    answers = iter(accept)
    closed = False
    for chunk in [*chunked(data, cuts), *([b""] if eof else [])]:
        server.receive_data(chunk)
        while (event := server.next_event()) is not NEED_DATA:
            assert not closed
            if isinstance(event, RcptTo):
                server.rcpt_reply(b"250 2.1.5 OK\r\n", accepted=next(answers, True))
            elif isinstance(event, MessageEnd):
                assert server.transaction is not None
                server.data_replies([b"250 2.0.0 ok\r\n"] * server.transaction.accepted)
            elif isinstance(event, StartTLS):
                server.tls_started()
            elif isinstance(event, Closed):
                closed = True
    out = server.data_to_send()
    for line in out.split(b"\r\n")[:-1]:
        assert _REPLY_LINE.match(line), line
    assert out.endswith(b"\r\n")


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=6))
def test_client_survives_any_backend(data: bytes, cuts: list[int]) -> None:
    client = LmtpClient(ClientSettings(lmtp=True, my_hostname="p", starttls=False, trusted=True,
                                       xclient=XclientData("h", "1.2.3.4", 1, "s", 4)))
    for chunk in [*chunked(b"220 x\r\n" + data, cuts), b""]:
        client.receive_data(chunk)
        while (event := client.next_event()) is not NEED_DATA:
            if isinstance(event, Failed):
                assert event.kind in ("connect", "connection lost", "bad reply")


@given(st.text(max_size=80))
def test_path_parser_raises_only_address_errors(text: str) -> None:
    try:
        address, _rest = parse_path(text, allow_null=True)
    except AddressError:
        return
    # what we parse, we can write back and read again
    assert parse_path(address.path(), allow_null=True)[0] == address


@given(st.binary(max_size=300))
def test_reply_reader(data: bytes) -> None:
    reader = ReplyReader()
    reader.feed(data)
    try:
        while reader.next_reply() is not None:
            pass
    except ReplyError:
        pass


def _stuffed(message: bytes, line_end: bytes = b"\r\n") -> bytes:
    """A message as an MTA sends it after DATA (RFC 5321 4.5.2; Dovecot also takes LF line ends)."""
    if message and not message.endswith(b"\n"):
        message += line_end
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\n.", b"\n..") + b"." + line_end


_MESSAGE = st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"\r\n.", b"..", b"x\r\n.\r\n", b"\n.\n"]),
                    max_size=40).map(b"".join)


def _drive(server: LmtpServer, pieces: list[bytes]) -> tuple[bytes, int]:
    """Feed the pieces; (the message's octets handed out, how many messages ended)."""
    got, ends = b"", 0
    for piece in pieces:
        server.receive_data(piece)
        while (event := server.next_event()) is not NEED_DATA:
            if isinstance(event, MessageChunk):
                got += event.data
            elif isinstance(event, MessageEnd):
                ends += 1
                assert server.transaction is not None
                server.data_replies([b"250 2.0.0 ok\r\n"] * server.transaction.accepted)
            elif isinstance(event, RcptTo):
                server.rcpt_reply(b"250 2.1.5 OK\r\n", accepted=True)
    return got, ends


@given(_MESSAGE, st.lists(st.integers(min_value=0), max_size=8), st.sampled_from([b"\r\n", b"\n"]))
def test_data_hands_out_the_message_however_it_is_cut(message: bytes, cuts: list[int], line_end: bytes) -> None:
    """DATA's unstuffing over pieces gives what the whole would (the last line's end is the MTA's)."""
    server = LmtpServer(hostname="h", greeting="ready", trusted=False)
    wire = b"MAIL FROM:<>\r\nRCPT TO:<a>\r\nDATA\r\n" + _stuffed(message, line_end) + b"NOOP\r\n"
    got, ends = _drive(server, chunked(wire, cuts))
    assert ends == 1
    expected = message if not message or message.endswith(b"\n") else message + line_end
    assert got == expected
    assert server.data_to_send().endswith(b"250 2.0.0 ok\r\n250 2.0.0 OK\r\n")


@given(st.lists(st.binary(max_size=30), min_size=1, max_size=5), st.lists(st.integers(min_value=0), max_size=8))
def test_bdat_chunks_are_taken_as_sent(chunks: list[bytes], cuts: list[int]) -> None:
    server = LmtpServer(hostname="h", greeting="ready", trusted=False)
    wire = b"MAIL FROM:<>\r\nRCPT TO:<a>\r\n"
    for i, chunk in enumerate(chunks):
        wire += f"BDAT {len(chunk)}{' LAST' if i == len(chunks) - 1 else ''}\r\n".encode() + chunk
    got, ends = _drive(server, chunked(wire + b"NOOP\r\n", cuts))
    assert (got, ends) == (b"".join(chunks), 1)
    out = server.data_to_send()
    assert out.count(b"Added") == len(chunks) - 1
    assert out.endswith(b"250 2.0.0 ok\r\n250 2.0.0 OK\r\n")


@given(st.text(alphabet="0123456789 LASTlastx-", max_size=25), st.binary(max_size=20))
def test_any_bdat_line_is_answered_or_reads_its_chunk(args: str, rest: bytes) -> None:
    """A BDAT line gets one reply (or, LAST without recipients, none) and never loses the session."""
    server = LmtpServer(hostname="h", greeting="ready", trusted=False)
    server.receive_data(b"MAIL FROM:<>\r\n" + f"BDAT {args}\r\n".encode() + rest)
    events = []
    while (event := server.next_event()) is not NEED_DATA:
        events.append(event)
        if not isinstance(event, (MessageChunk, TransactionReset)):
            break  # what ``rest`` asked for (QUIT, RCPT, ...)
    out = server.data_to_send()
    assert out.startswith(b"220 h ready\r\n250 2.1.0 OK\r\n")
    for line in out.split(b"\r\n")[:-1]:
        assert _REPLY_LINE.match(line), line


@given(_MESSAGE, st.lists(st.integers(min_value=0), max_size=8))
def test_dot_stuffing_in_pieces_is_dot_stuffing(message: bytes, cuts: list[int]) -> None:
    stuffer = DotStuffer()
    wire = b"".join(stuffer.feed(piece) for piece in chunked(message, cuts)) + stuffer.end()
    assert wire == _stuffed(message)
