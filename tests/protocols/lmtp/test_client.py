"""The backend side: handshake (LHLO/EHLO, STARTTLS, XCLIENT), transaction, per-recipient DATA replies."""

from __future__ import annotations

from proxyd.protocols.events import NEED_DATA
from proxyd.protocols.lmtp.client import (
    ClientSettings,
    CommandReply,
    DataReply,
    DotStuffer,
    Failed,
    LmtpClient,
    NeedTLS,
    Ready,
    SendMessage,
    XclientData,
)

CAPS = (
    b"250-backend\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-STARTTLS\r\n"
    b"250-XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT\r\n250 XRCPTFORWARD\r\n"
)
XCLIENT = XclientData(helo="mta.test", addr="192.0.2.7", port=4711, session="S:P1", ttl=4)


def new_client(**kwargs: object) -> LmtpClient:
    options: dict[str, object] = {"lmtp": True, "my_hostname": "proxy.test", "starttls": False,
                                  "trusted": True, "xclient": XCLIENT}
    options.update(kwargs)
    return LmtpClient(ClientSettings(**options))  # type: ignore[arg-type]


def events(client: LmtpClient, data: bytes) -> list[object]:
    client.receive_data(data)
    out = []
    while (event := client.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def test_handshake_with_xclient_then_lhlo_again() -> None:
    client = new_client()
    assert events(client, b"220 backend ready.\r\n") == []
    assert client.data_to_send() == b"LHLO proxy.test\r\n"
    assert events(client, CAPS) == []
    assert client.data_to_send() == (
        b"XCLIENT HELO=mta.test PROTO=LMTP SESSION=S:P1 TTL=4 PORT=4711 ADDR=192.0.2.7\r\n"
    )
    assert events(client, b"220 backend ready.\r\n") == []
    assert client.data_to_send() == b"LHLO proxy.test\r\n"
    assert events(client, CAPS) == [Ready()]


def test_not_trusted_sends_no_xclient_and_smtp_says_ehlo() -> None:
    client = new_client(trusted=False, lmtp=False)
    events(client, b"220 hi\r\n")
    assert client.data_to_send() == b"EHLO proxy.test\r\n"
    assert events(client, CAPS) == [Ready()]


def test_starttls_before_xclient() -> None:
    client = new_client(starttls=True)
    events(client, b"220 hi\r\n" + CAPS)
    assert client.data_to_send() == b"LHLO proxy.test\r\nSTARTTLS\r\n"
    assert events(client, b"220 2.0.0 Begin TLS negotiation now.\r\n") == [NeedTLS()]
    client.tls_started()
    assert client.data_to_send() == b"LHLO proxy.test\r\n"
    events(client, CAPS)
    assert client.data_to_send().startswith(b"XCLIENT ")


def test_backend_refusing_is_a_connect_failure_with_its_reply() -> None:
    client = new_client(lmtp=False)
    events(client, b"220 hi\r\n")
    (failed,) = events(client, b"500 5.5.1 Unknown command\r\n")
    assert isinstance(failed, Failed)
    assert failed.kind == "connect"
    assert failed.reply is not None
    assert failed.reply.code == 500
    client = new_client()
    assert events(client, b"220 hi\r\n250-x") == []
    assert events(client, b"") == [Failed(
        "connection lost", error="Connection lost: Remote disconnected",
        user_error="Lost connection to remote server: Remote closed connection unexpectedly")]
    client = new_client()
    (failed,) = events(client, b"hello\r\n")
    assert isinstance(failed, Failed)
    assert failed.kind == "bad reply"
    assert failed.error.startswith("Invalid command reply: ")


def test_transaction_with_data_dot_stuffing_and_per_recipient_replies() -> None:
    client = new_client(trusted=False)
    events(client, b"220 hi\r\n" + CAPS)
    client.data_to_send()
    client.mail("<s@x>", ("BODY=8BITMIME",))
    client.rcpt("<alice@example.org>")
    client.rcpt("<dave>", ("ORCPT=rfc822;carol@example.org",))
    assert client.data_to_send() == (
        b"MAIL FROM:<s@x> BODY=8BITMIME\r\nRCPT TO:<alice@example.org>\r\n"
        b"RCPT TO:<dave> ORCPT=rfc822;carol@example.org\r\n"
    )
    got = events(client, b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n550 5.1.1 <dave> User doesn't exist: dave\r\n")
    assert [(e.command, e.reply.code) for e in got if isinstance(e, CommandReply)] == [
        ("MAIL", 250), ("RCPT", 250), ("RCPT", 550)]
    client.data(len(b".hidden\r\nbody"), 1)
    assert client.data_to_send() == b"DATA\r\n"
    assert events(client, b"354 OK\r\n") == [SendMessage()]
    client.message_data(b".hidden\r")
    client.message_data(b"\nbody")
    client.message_end()
    assert client.data_to_send() == b"..hidden\r\nbody\r\n.\r\n"
    (reply,) = events(client, b"250 2.0.0 <alice@example.org> id Saved\r\n")
    assert isinstance(reply, DataReply)
    assert reply.index == 0
    assert reply.reply.enhanced == "2.0.0"
    assert reply.reply.text == "<alice@example.org> id Saved"


def test_chunking_backend_gets_bdat_and_smtp_reply_counts_for_all() -> None:
    client = new_client(trusted=False, lmtp=False)
    events(client, b"220 hi\r\n" + CAPS.replace(b"250-PIPELINING", b"250-CHUNKING"))
    client.data_to_send()
    client.data(7, 2)
    assert client.next_event() == SendMessage()
    client.message_data(b"a\r\n.b\r\n")
    client.message_end()
    assert client.data_to_send() == b"BDAT 7 LAST\r\na\r\n.b\r\n"
    got = events(client, b"250 2.0.0 Ok: queued\r\n")
    assert [(e.index, e.reply.code) for e in got if isinstance(e, DataReply)] == [(0, 250), (1, 250)]


def test_refused_data_is_a_command_reply() -> None:
    client = new_client(trusted=False)
    events(client, b"220 hi\r\n" + CAPS)
    client.data(3, 2)
    got = events(client, b"554 5.5.0 No thanks\r\n")
    assert [(e.command, e.reply.code) for e in got if isinstance(e, CommandReply)] == [("DATA", 554)]


def test_dot_stuffer_ends_the_last_line() -> None:
    for message, wire in [(b"", b".\r\n"), (b"a", b"a\r\n.\r\n"), (b".\r\n", b"..\r\n.\r\n"),
                          (b"a\r\n.", b"a\r\n..\r\n.\r\n")]:
        stuffer = DotStuffer()
        assert stuffer.feed(message) + stuffer.end() == wire
