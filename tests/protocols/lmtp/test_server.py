"""The MTA-facing LMTP engine: Dovecot's replies, sequencing, pipelining, DATA, XCLIENT."""

from __future__ import annotations

import pytest

from proxyd.protocols.events import NEED_DATA
from proxyd.protocols.lmtp.address import Address
from proxyd.protocols.lmtp.replies import recipient_reply
from proxyd.protocols.lmtp.server import (
    Closed,
    LmtpServer,
    MessageChunk,
    MessageEnd,
    RcptTo,
    StartTLS,
    TransactionReset,
    XclientApplied,
)


def new_server(**kwargs: object) -> LmtpServer:
    options: dict[str, object] = {"hostname": "proxy.test", "greeting": "Dovecot ready.", "trusted": True}
    options.update(kwargs)
    server = LmtpServer(**options)  # type: ignore[arg-type]
    assert server.data_to_send() == b"220 proxy.test Dovecot ready.\r\n"
    return server


def feed(server: LmtpServer, data: bytes) -> tuple[list[object], bytes]:
    server.receive_data(data)
    events = []
    while (event := server.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, (RcptTo, MessageEnd, StartTLS, Closed)):
            break
    return events, server.data_to_send()


def test_lhlo_lists_dovecots_capabilities() -> None:
    server = new_server(tls_available=True)
    events, out = feed(server, b"LHLO mta.test\r\n")
    assert events == []
    assert out == (
        b"250-proxy.test\r\n250-8BITMIME\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n"
        b"250-STARTTLS\r\n250-XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT\r\n250 XRCPTFORWARD\r\n"
    )
    assert server.helo == "mta.test"
    _, out = feed(new_server(trusted=False), b"LHLO mta.test\r\n")
    assert b"XCLIENT" not in out
    assert b"XRCPTFORWARD" not in out
    assert b"STARTTLS" not in out


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"LHLO", b"501 Missing hostname\r\n"),
        (b"EHLO x", b"500 5.5.1 Unknown command\r\n"),
        (b"HELO x", b"500 5.5.1 Unknown command\r\n"),
        (b"", b"500 5.5.1 Unknown command\r\n"),
        (b"NOOP", b"250 2.0.0 OK\r\n"),
        (b"VRFY alice", b"252 2.3.3 Try RCPT instead\r\n"),
        (b"RCPT TO:<alice>", b"503 5.5.0 MAIL needed first\r\n"),
        (b"DATA", b"503 5.5.0 MAIL needed first\r\n"),
        (b"RSET", b"250 2.0.0 OK\r\n"),
        (b"STARTTLS", b"502 5.5.1 TLS support is not enabled.\r\n"),
        (b"STARTTLS x", b"501 5.5.4 Invalid parameters\r\n"),
        (b"BDAT 0 LAST", b"503 5.5.0 MAIL needed first\r\n"),
        (b"BDAT", b"501 5.5.4 Invalid chunk size parameter\r\n"),
        (b"BDAT -1", b"501 5.5.4 Invalid chunk size parameter\r\n"),
        (b"BDAT 18446744073709551616", b"501 5.5.4 Invalid chunk size parameter\r\n"),
        (b"MAIL FROM: <x>", b"501 5.5.4 Invalid FROM: Unexpected whitespace before path\r\n"),
        (b"MAIL FROM:<x> FOO=bar", b"555 5.5.4 Unsupported parameters\r\n"),
        (b"MAIL FROM:x", b"501 5.5.4 Invalid FROM: Missing '<' at beginning of path\r\n"),
        (b"MAIL TO:<x>", b"501 5.5.4 Invalid parameters\r\n"),
    ],
)
def test_commands_answered_by_the_engine(line: bytes, reply: bytes) -> None:
    server = new_server()
    feed(server, b"LHLO x\r\n")
    events, out = feed(server, line + b"\r\n")
    assert events == []
    assert out == reply


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"RCPT TO:<>", b"501 5.5.4 Invalid TO: Null path not allowed\r\n"),
        (b"RCPT TO:<a b>", b"501 5.5.4 Invalid TO: Missing '>' at end of path\r\n"),
        (b"RCPT TO:alice", b"501 5.5.4 Invalid TO: Missing '<' at beginning of path\r\n"),
        (b"RCPT TO:<a> NOTIFY=NEVER", b"555 5.5.4 Unsupported parameters\r\n"),
        (b"DATA", b"503 5.5.0 No valid recipients\r\n"),
        (b"BDAT 0", b"503 5.5.0 No valid recipients\r\n"),
        (b"BDAT 0 LAST", b"503 5.5.0 No valid recipients\r\n"),
        # RFC 2033 4.3: BDAT LAST without a recipient gets no reply at all
        (b"BDAT 3 LAST\r\nx", b""),
        (b"BDAT 3 LAST x\r\nx", b"501 5.5.4 Invalid parameters\r\n"),
        (b"BDAT 3 FIRST\r\nx", b"501 5.5.4 Invalid end marker parameter\r\n"),
        (b"MAIL FROM:<y>", b"503 5.5.0 MAIL already given\r\n"),
        (b"XCLIENT ADDR=1.2.3.4", b"503 5.5.0 XCLIENT not permitted during a mail transaction\r\n"),
    ],
)
def test_in_a_transaction(line: bytes, reply: bytes) -> None:
    server = new_server()
    _, out = feed(server, b"LHLO x\r\nMAIL FROM:<s@x> BODY=8BITMIME\r\n")
    assert out.endswith(b"250 2.1.0 OK\r\n")
    events, out = feed(server, line + b"\r\n")
    assert events == []
    assert out == reply


def test_pipelined_transaction_replies_in_order() -> None:
    server = new_server()
    server.receive_data(
        b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.org> ORCPT=rfc822;a+40b\r\n"
        b"RCPT TO:<nobody@example.org>\r\nDATA\r\n.leading dot\r\nbody\r\n..\r\n.\r\nQUIT\r\n"
    )
    event = server.next_event()
    assert event == RcptTo(Address("alice", "example.org"), ("ORCPT=rfc822;a+40b",))
    # nothing further is parsed before the reply
    assert server.next_event() is NEED_DATA
    server.rcpt_reply(b"250 2.1.5 OK\r\n", accepted=True)
    event = server.next_event()
    assert isinstance(event, RcptTo)
    assert event.address.encode() == "nobody@example.org"
    server.rcpt_reply(recipient_reply(event.address, 550, "5.1.1", "User doesn't exist: nobody@example.org"),
                      accepted=False)
    assert message_of(server) == b"leading dot\r\nbody\r\n.\r\n"
    assert server.next_event() is NEED_DATA
    with pytest.raises(RuntimeError):
        server.data_replies([])
    server.data_replies([b"250 2.0.0 <alice@example.org> S Saved\r\n"])
    assert server.next_event() == Closed("Logged out")
    assert server.data_to_send() == (
        b"250-proxy.test\r\n250-8BITMIME\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n"
        b"250-XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT\r\n250 XRCPTFORWARD\r\n"
        b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n"
        b"550 5.1.1 <nobody@example.org> User doesn't exist: nobody@example.org\r\n"
        b"354 OK\r\n250 2.0.0 <alice@example.org> S Saved\r\n221 2.0.0 Bye\r\n"
    )


def test_empty_message_and_message_in_pieces() -> None:
    server = new_server()
    server.receive_data(b"MAIL FROM:<>\r\nRCPT TO:<a>\r\n")
    assert isinstance(server.next_event(), RcptTo)
    server.rcpt_reply(b"250 2.1.5 OK\r\n", accepted=True)
    server.receive_data(b"DATA\r\n.")
    assert server.next_event() is NEED_DATA
    server.receive_data(b"\r\n")
    assert server.next_event() == MessageEnd()
    server.data_replies([b"250 2.0.0 ok\r\n"])
    server.receive_data(b"MAIL FROM:<>\r\nRCPT TO:<a>\r\n")
    assert isinstance(server.next_event(), RcptTo)
    server.rcpt_reply(b"250 2.1.5 OK\r\n", accepted=True)
    message = b"Subject: x\r\n\r\n" + b"line\r\n" * 50
    server.receive_data(b"DATA\r\n")
    got = b""
    for i in range(0, len(message), 7):
        server.receive_data(message[i : i + 7])
        # handed out as it comes, all but what may be the start of the final dot
        while isinstance(event := server.next_event(), MessageChunk):
            got += event.data
        assert event is NEED_DATA
        assert len(message[: i + 7]) - len(got) <= 6
    server.receive_data(b".\r\n")
    assert got + message_of(server) == message


def message_of(server: LmtpServer) -> bytes:
    """The message pieces up to MessageEnd."""
    data = b""
    while isinstance(event := server.next_event(), MessageChunk):
        data += event.data
    assert event == MessageEnd()
    return data


def accepting_server(**kwargs: object) -> LmtpServer:
    server = new_server(**kwargs)
    server.receive_data(b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<a>\r\n")
    assert isinstance(server.next_event(), RcptTo)
    server.rcpt_reply(b"250 2.1.5 OK\r\n", accepted=True)
    server.data_to_send()
    return server


def test_bdat_chunks_then_last() -> None:
    server = accepting_server()
    server.receive_data(b"BDAT 4\r\nab\r\n")
    assert server.next_event() == MessageChunk(b"ab\r\n")
    assert server.data_to_send() == b"250 2.0.0 Added 4 octets\r\n"
    assert server.next_event() is NEED_DATA
    # octets are taken as they are: no dot-stuffing, CRLF.CRLF is no end, bytes split anywhere
    server.receive_data(b"bdat 8 last\r\n.\r\n.")
    assert server.next_event() == MessageChunk(b".\r\n.")
    assert server.next_event() is NEED_DATA
    server.receive_data(b"\r\nxyNOOP\r\n")
    assert message_of(server) == b"\r\nxy"
    assert server.next_event() is NEED_DATA  # NOOP waits for the replies
    server.data_replies([b"250 2.0.0 <a> S Saved\r\n"])
    assert server.next_event() is NEED_DATA
    assert server.data_to_send() == b"250 2.0.0 <a> S Saved\r\n250 2.0.0 OK\r\n"


def test_bdat_zero_last_ends_the_message_and_data_after_bdat_is_refused() -> None:
    server = accepting_server()
    server.receive_data(b"BDAT 3\r\nabcDATA\r\nBDAT 0 LAST\r\n")
    assert server.next_event() == MessageChunk(b"abc")
    assert message_of(server) == b""
    assert server.data_to_send() == b"250 2.0.0 Added 3 octets\r\n503 5.5.0 Bad sequence of commands\r\n"


def test_a_failed_chunk_fails_the_next_until_rset() -> None:
    server = accepting_server()
    # the refused chunk's octets are read and thrown away
    server.receive_data(b"BDAT 3 LAST x\r\nabcBDAT 2\r\nxyDATA\r\nRSET\r\nBDAT 2\r\nxy")
    assert server.next_event() == TransactionReset()
    assert server.next_event() is NEED_DATA
    assert server.data_to_send() == (
        b"501 5.5.4 Invalid parameters\r\n"
        b"503 5.5.0 Previous data chunk failed, issue RSET first\r\n"
        b"503 5.5.0 Previous data chunk failed, issue RSET first\r\n"
        b"250 2.0.0 OK\r\n503 5.5.0 MAIL needed first\r\n"
    )
    # a size that cannot be read leaves what follows to be read as commands (as lib-smtp does)
    server = accepting_server()
    server.receive_data(b"BDAT x\r\nNOOP\r\n")
    assert server.next_event() is NEED_DATA
    assert server.data_to_send() == b"501 5.5.4 Invalid chunk size parameter\r\n250 2.0.0 OK\r\n"


def test_eof_in_a_chunk_closes() -> None:
    server = accepting_server()
    server.receive_data(b"BDAT 10 LAST\r\nabc")
    assert server.next_event() == MessageChunk(b"abc")
    server.receive_data(b"")
    assert server.next_event() == TransactionReset()
    assert server.next_event() == Closed("Connection closed")
    assert server.dovecot_state == "DATA"


def test_rset_and_lhlo_reset_the_transaction() -> None:
    server = new_server()
    events, _ = feed(server, b"MAIL FROM:<>\r\nRSET\r\n")
    assert events == [TransactionReset()]
    events, _ = feed(server, b"MAIL FROM:<>\r\nLHLO x\r\n")
    assert events == [TransactionReset()]


def test_eof_closes_and_resets() -> None:
    server = new_server()
    server.receive_data(b"MAIL FROM:<>\r\n")
    server.receive_data(b"")
    assert server.next_event() == TransactionReset()
    assert server.next_event() == Closed("Connection closed")
    assert server.next_event() is NEED_DATA


def test_xclient_from_a_trusted_peer() -> None:
    server = new_server()
    events, out = feed(server, b"XCLIENT ADDR=192.0.2.7 PORT=4711 TTL=3 SESSION=abc HELO=mx+2Ex\r\n")
    assert events == [XclientApplied()]
    assert out == b"220 proxy.test Dovecot ready.\r\n"
    data = server.proxy_data
    assert (data.addr, data.port, data.ttl_plus_1, data.session, data.helo) == ("192.0.2.7", 4711, 4, "abc", "mx.x")
    _, out = feed(server, b"XCLIENT ADDR=nonsense\r\n")
    assert out == b"501 5.5.4 Invalid ADDR parameter\r\n"
    assert server.proxy_data.addr == "192.0.2.7"
    _, out = feed(new_server(trusted=False), b"XCLIENT ADDR=192.0.2.7\r\n")
    assert out == b"550 5.7.14 You are not from trusted IP\r\n"


def test_starttls_drops_pipelined_input() -> None:
    server = new_server(tls_available=True)
    events, out = feed(server, b"STARTTLS\r\nMAIL FROM:<>\r\n")
    assert events == [StartTLS()]
    assert out == b"220 2.0.0 Begin TLS negotiation now.\r\n"
    server.tls_started()
    events, out = feed(server, b"STARTTLS\r\n")
    assert out == b"502 5.5.1 TLS is already active.\r\n"


def test_too_long_line() -> None:
    server = new_server()
    server.receive_data(b"NOOP " + b"x" * 10000)
    assert server.next_event() is NEED_DATA
    server.receive_data(b"yyy\r\nNOOP\r\n")
    assert server.next_event() is NEED_DATA
    assert server.data_to_send() == b"500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"


def test_client_workarounds() -> None:
    server = new_server(workarounds=frozenset({"whitespace-before-path", "mailbox-for-path"}))
    events, out = feed(server, b"MAIL FROM: sender@x.test\r\nRCPT TO:  alice@example.org ORCPT=rfc822;a+40b\r\n")
    assert out == b"250 2.1.0 OK\r\n"
    assert events == [RcptTo(Address("alice", "example.org"), ("ORCPT=rfc822;a+40b",))]
    assert server.transaction is not None
    assert server.transaction.sender == Address("sender", "x.test")


def test_xrcptforward_from_a_trusted_peer_only() -> None:
    server = new_server()
    feed(server, b"LHLO x\r\nMAIL FROM:<>\r\n")
    # origin=mx 1 and via=a\tb (tab-escaped), TAB-joined, in xtext
    events, _ = feed(server, b"RCPT TO:<a@b> XRCPTFORWARD=origin+3Dmx+201+09via+3Da+01tb ORCPT=rfc822;a@b\r\n")
    assert events == [RcptTo(Address("a", "b"), ("ORCPT=rfc822;a@b",), (("origin", "mx 1"), ("via", "a\tb")))]
    server.rcpt_reply(b"250 2.1.5 OK\r\n", accepted=True)
    _, out = feed(server, b"RCPT TO:<c@d> XRCPTFORWARD=a+3\r\n")
    assert out == b"250 2.1.5 OK\r\n501 5.5.4 Invalid XRCPTFORWARD= parameter: Invalid character in xtext\r\n"
    server = new_server(trusted=False)
    feed(server, b"LHLO x\r\nMAIL FROM:<>\r\n")
    events, out = feed(server, b"RCPT TO:<a@b> XRCPTFORWARD=origin+3Dmx\r\n")
    assert events == []
    assert out == b"550 5.7.14 Unacceptable XRCPTFORWARD= parameter: You are not from trusted IP\r\n"
