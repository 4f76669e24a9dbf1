"""Property tests: arbitrary bytes never crash the LMTP engines, and replies stay well-formed."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from proxyd.protocols.events import NEED_DATA
from proxyd.protocols.lmtp.address import AddressError, parse_path
from proxyd.protocols.lmtp.client import ClientSettings, Failed, LmtpClient, XclientData
from proxyd.protocols.lmtp.replies import ReplyError, ReplyReader
from proxyd.protocols.lmtp.server import Closed, LmtpServer, MessageData, RcptTo, StartTLS
from tests.protocols.fuzzing import chunked

_REPLY_LINE = re.compile(rb"\A[2345]\d\d[ -][^\r\n]*\Z")
_COMMANDS = st.sampled_from([
    b"LHLO x\r\n", b"MAIL FROM:<a@b>\r\n", b"MAIL FROM:<>\r\n", b"RCPT TO:<u@d>\r\n", b"RCPT TO:<u>\r\n",
    b"DATA\r\n", b"body\r\n", b".\r\n", b"..x\r\n", b"RSET\r\n", b"NOOP\r\n", b"VRFY x\r\n", b"QUIT\r\n",
    b"STARTTLS\r\n", b"XCLIENT ADDR=1.2.3.4 TTL=2\r\n", b"XCLIENT TTL=x\r\n",
])
_INPUT = st.one_of(st.binary(max_size=400), st.lists(_COMMANDS, max_size=25).map(b"".join))


@given(_INPUT, st.lists(st.integers(min_value=0), max_size=6), st.lists(st.booleans(), max_size=10),
       st.booleans())
def test_server_survives_anything(data: bytes, cuts: list[int], accept: list[bool], eof: bool) -> None:
    server = LmtpServer(hostname="h", greeting="ready", trusted=True, tls_available=True,
                        max_message_size=200)
    answers = iter(accept)
    closed = False
    for chunk in [*chunked(data, cuts), *([b""] if eof else [])]:
        server.receive_data(chunk)
        while (event := server.next_event()) is not NEED_DATA:
            assert not closed
            if isinstance(event, RcptTo):
                server.rcpt_reply(b"250 2.1.5 OK\r\n", accepted=next(answers, True))
            elif isinstance(event, MessageData):
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
