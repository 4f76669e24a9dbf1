"""The LMTP proxy's session driver in-process, against real Dovecot LMTP backends.

The MTA is Python's ``smtplib.LMTP`` (in a thread); the passdb is a small map
of recipients to fields (the auth process and the config are tested end to
end in tests/e2e/test_lmtp.py).  What is checked: a message with recipients
on two backends lands in both mailboxes, replies after DATA are one per
recipient, an unknown recipient is refused while the others are delivered,
a backend that is down gives Dovecot's ``451 4.4.0`` at RCPT.
"""

from __future__ import annotations

import dataclasses
import smtplib
import socket
import ssl
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from proxyd.auth.request import AuthReply, AuthRequest, AuthStatus, FailCode
from proxyd.lmtp.session import LmtpContext, LmtpSession
from proxyd.lmtp.spool import TempDir
from proxyd.login.server import connection_info
from tests.fixtures.dovecot import DovecotFactory, LmtpBackend, lmtp_config
from tests.fixtures.net import (
    BACKEND_A_ADDRESS,
    PROXYD_ADDRESS,
    free_port,
    free_ports,
    port_accepts,
    wait_until,
)

MESSAGE = b"From: mta@example.net\r\nSubject: lmtp test %d\r\n\r\n.a line with a dot\r\nbye\r\n"


class MapAuth:
    """Recipient -> passdb fields; None: unknown user."""

    def __init__(self, users: Mapping[str, Mapping[str, str] | None]) -> None:
        self.users = users
        self.asked: list[AuthRequest] = []

    async def lookup(self, request: AuthRequest) -> AuthReply:
        await trio.lowlevel.checkpoint()
        self.asked.append(request)
        fields = self.users.get(request.user)
        if fields is None:
            return AuthReply(status=AuthStatus.FAIL, user=request.user, fail_code=FailCode.AUTH_FAILED)
        return AuthReply(status=AuthStatus.OK, user=request.user, fields=dict(fields))


def _no_tls(verify: bool) -> ssl.SSLContext:
    raise AssertionError("no TLS in these tests")


async def serve(auth: MapAuth, trusted: bool = False,
                task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED, **options: Any) -> None:
    from proxyd.config.settings import Settings

    port = free_port(PROXYD_ADDRESS)
    listeners = await trio.open_tcp_listeners(port, host=PROXYD_ADDRESS)
    ctx = LmtpContext(hostname="proxy.test", greeting="Dovecot ready.", recipient_delimiter="+", add_received_header=True,
                      auth=auth, server_tls=None, backend_tls=_no_tls, **options)
    settings = Settings()

    async def handle(stream: trio.SocketStream) -> None:
        info = dataclasses.replace(connection_info(stream, "lmtp", settings, tls=False), trusted=trusted)
        await LmtpSession(ctx, stream, info).run()

    task_status.started(port)
    await trio.serve_listeners(handle, listeners)


def send(port: int, recipients: list[str], body: bytes) -> tuple[dict[str, tuple[int, bytes]], list[tuple[int, bytes]]]:
    """Deliver with smtplib.LMTP; (refused recipients, every reply after DATA)."""
    client = smtplib.LMTP(PROXYD_ADDRESS, port, source_address=("127.0.0.21", 0), timeout=15)
    try:
        client.ehlo_or_helo_if_needed()
        client.mail("mta@example.net")
        refused = {}
        for rcpt in recipients:
            code, text = client.rcpt(rcpt)
            if code != 250:
                refused[rcpt] = (code, text)
        client.putcmd("data")
        code, _ = client.getreply()
        assert code == 354
        client.send(body.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        replies = [client.getreply() for _ in range(len(recipients) - len(refused))]
        client.quit()
        return refused, replies
    finally:
        client.close()


def fields(backend: LmtpBackend, **extra: str) -> dict[str, str]:
    return {"proxy": "", "host": backend.address, "port": str(backend.lmtp_port), **extra}


async def test_two_backends_unknown_recipient_and_backend_down(
    lmtp_backend_a: LmtpBackend, lmtp_backend_b: LmtpBackend
) -> None:
    down = socket.socket()
    down.bind(("127.0.0.9", 0))
    down_port = down.getsockname()[1]
    down.close()
    auth = MapAuth({
        "alice@example.org": fields(lmtp_backend_a),
        "bob@example.org": fields(lmtp_backend_b),
        "carol@example.org": fields(lmtp_backend_a, destuser="dave@example.org"),
        "nobody@example.org": None,
        "lost@example.org": {"proxy": "", "host": "127.0.0.9", "port": str(down_port)},
    })
    before_a = len(lmtp_backend_a.messages("alice"))
    before_b = len(lmtp_backend_b.messages("bob"))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve, auth)
        body = MESSAGE % 1
        refused, replies = await trio.to_thread.run_sync(partial(
            send, port,
            ["alice+box@example.org", "nobody@example.org", "bob@example.org", "lost@example.org",
             "carol@example.org"],
            body,
        ))
        nursery.cancel_scope.cancel()
    assert refused["nobody@example.org"] == (550, b"5.1.1 <nobody@example.org> User doesn't exist: nobody@example.org")
    code, text = refused["lost@example.org"]
    assert code == 451
    assert text.startswith(b"4.4.0 Proxy failed (connect, session=")
    assert len(replies) == 3
    for (code, text), rcpt in zip(replies, ["alice+box@example.org", "bob@example.org", "carol@example.org"],
                                  strict=True):
        assert code == 250
        assert text.startswith(b"2.0.0 <" + rcpt.encode() + b"> ")
        assert text.endswith(b" Saved")
    # the detail is not part of the user name looked up
    assert next(r.user for r in auth.asked) == "alice@example.org"
    (got_a,) = lmtp_backend_a.messages("alice")[before_a:]
    (got_b,) = lmtp_backend_b.messages("bob")[before_b:]
    assert got_a.endswith((body.replace(b"\r\n", b"\n"), body))
    assert b"a line with a dot" in got_b
    assert b"\n.a line with a dot" in got_b.replace(b"\r\n", b"\n")
    assert any(b"lmtp test 1" in m for m in lmtp_backend_a.messages("dave"))
    # XCLIENT told the backend who the MTA is
    lmtp_backend_a.dovecot.wait_for_log(r"lmtp\(\d+\): Info: Disconnect from 127\.0\.0\.21")


@pytest.mark.parametrize("ttl", [0])
async def test_ttl_zero_is_a_loop(lmtp_backend_a: LmtpBackend, ttl: int) -> None:
    auth = MapAuth({"alice@example.org": fields(lmtp_backend_a)})

    def talk(port: int) -> tuple[int, bytes]:
        with smtplib.LMTP(PROXYD_ADDRESS, port) as client:
            client.ehlo_or_helo_if_needed()
            assert client.docmd(f"XCLIENT TTL={ttl}")[0] == 220
            client.ehlo("again")
            client.mail("")
            return client.rcpt("alice@example.org")

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve, auth, True)
        reply = await trio.to_thread.run_sync(talk, port)
        nursery.cancel_scope.cancel()
    assert reply == (554, b"5.4.6 <alice@example.org> Proxying appears to be looping (TTL=0)")


async def test_forward_fields_go_to_the_backend_in_xrcptforward(dovecot_factory: DovecotFactory) -> None:
    """The passdb's forward_* fields reach the backend's auth lookup (Dovecot's XRCPTFORWARD)."""
    (port,) = free_ports(BACKEND_A_ADDRESS, 1)
    dovecot = dovecot_factory.start(
        "lmtp-forward", BACKEND_A_ADDRESS, extra_config=lmtp_config(BACKEND_A_ADDRESS, port) + "auth_debug = yes\n"
    )
    wait_until(lambda: port_accepts(BACKEND_A_ADDRESS, port), timeout=30, what="the LMTP backend")
    auth = MapAuth({"alice@example.org": {**fields(LmtpBackend(dovecot, port)), "forward_origin": "mx 1"}})
    async with trio.open_nursery() as nursery:
        proxy_port = await nursery.start(serve, auth)
        refused, replies = await trio.to_thread.run_sync(partial(send, proxy_port, ["alice@example.org"], MESSAGE % 2))
        nursery.cancel_scope.cancel()
    assert refused == {}
    assert replies[0][0] == 250
    dovecot.wait_for_log(r"auth: Debug: master in: USER\t\d+\talice@example\.org\t.*\tforward_fields=origin=mx 1")


def rcpt_only(port: int, rcpt: str) -> tuple[int, bytes]:
    with smtplib.LMTP(PROXYD_ADDRESS, port, timeout=15) as client:
        client.ehlo_or_helo_if_needed()
        client.mail("mta@example.net")
        return client.rcpt(rcpt)


class ScriptedBackend:
    """A small LMTP server beside the real ones, for what Dovecot backends do not do: it offers
    no CHUNKING (so the message goes in DATA, dot-stuffed), answers RCPT for ``busy`` with
    ``421``, and hangs up after DATA when a recipient is ``die``."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def serve(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._session, listeners)

    async def _session(self, stream: trio.SocketStream) -> None:
        buffer = bytearray()

        async def line() -> bytes:
            while b"\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    raise EOFError
                buffer.extend(data)
            end = buffer.index(b"\r\n")
            text = bytes(buffer[:end])
            del buffer[: end + 2]
            return text

        await stream.send_all(b"220 scripted ready\r\n")
        rcpts: list[bytes] = []
        try:
            while True:
                command = await line()
                verb = command[:4].upper()
                if verb == b"LHLO":
                    await stream.send_all(b"250-scripted\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n")
                elif verb == b"MAIL":
                    await stream.send_all(b"250 2.1.0 OK\r\n")
                elif verb == b"RCPT":
                    if b"busy" in command:
                        await stream.send_all(b"421 4.3.2 Shutting down\r\n")
                    else:
                        rcpts.append(command)
                        await stream.send_all(b"250 2.1.5 OK\r\n")
                elif verb == b"DATA":
                    await stream.send_all(b"354 go\r\n")
                    while not buffer.endswith(b"\r\n.\r\n") and b"\r\n.\r\n" not in buffer:
                        data = await stream.receive_some(65536)
                        if not data:
                            raise EOFError
                        buffer.extend(data)
                    end = buffer.index(b"\r\n.\r\n") if not buffer.startswith(b".\r\n") else -2
                    self.messages.append(bytes(buffer[: end + 2]))
                    del buffer[: end + 5]
                    if any(b"die" in rcpt for rcpt in rcpts):
                        return
                    await stream.send_all(b"250 2.0.0 Saved\r\n" * len(rcpts))
                elif verb == b"QUIT":
                    await stream.send_all(b"221 bye\r\n")
                    return
        except (EOFError, trio.BrokenResourceError):
            return


async def test_data_to_a_backend_without_chunking_421_and_a_backend_hanging_up(tmp_path: Path) -> None:
    """A 300 KB message (so it waits in a file) goes dot-stuffed in DATA; a 421 to RCPT is
    Dovecot's connection-lost failure; with lmtp_verbose_replies the MTA reads why."""
    backend = ScriptedBackend()
    async with trio.open_nursery() as nursery:
        backend_port = await nursery.start(backend.serve)
        route = {"proxy": "", "host": "127.0.0.1", "port": str(backend_port)}
        auth = MapAuth({"plain@example.org": route, "busy@example.org": route, "die@example.org": route})
        temp_dir = TempDir.open(str(tmp_path))
        port = await nursery.start(partial(serve, auth, verbose_replies=True, temp_dir=temp_dir))
        body = b"Subject: scripted\r\n\r\n" + b".a dotted line\r\n..two\r\nplain\r\n" * 10000
        refused, replies = await trio.to_thread.run_sync(partial(send, port, ["plain@example.org"], body))
        assert list(tmp_path.iterdir()) == []  # the spool file was unlinked at once
        busy = await trio.to_thread.run_sync(rcpt_only, port, "busy@example.org")
        refused_2, replies_2 = await trio.to_thread.run_sync(partial(send, port, ["die@example.org"], MESSAGE % 3))
        nursery.cancel_scope.cancel()
    assert refused == {}
    assert [code for code, _ in replies] == [250]
    code, text = busy
    assert code == 451
    assert text.startswith(b"4.4.0 Proxy failed: 421 4.3.2 Shutting down (session="), text
    wire = backend.messages[0]
    # the backend got the message dot-stuffed, after the Received: header
    assert wire.endswith(body.replace(b"\r\n.", b"\r\n.."))
    assert wire.startswith(b"Received: from ")
    assert refused_2 == {}
    ((code, text),) = replies_2
    assert code == 451
    assert text.startswith(b"4.4.0 Proxy failed: Connection lost: Remote disconnected (session="), text


async def test_a_trusted_peers_xrcptforward_reaches_the_passdb_lookup(lmtp_backend_a: LmtpBackend) -> None:
    auth = MapAuth({"alice@example.org": fields(lmtp_backend_a)})

    def talk(port: int) -> tuple[int, bytes]:
        with smtplib.LMTP(PROXYD_ADDRESS, port, timeout=15) as client:
            client.ehlo_or_helo_if_needed()
            assert client.has_extn("xrcptforward")
            client.mail("")
            return client.rcpt("alice@example.org", ["XRCPTFORWARD=origin+3Dmx+201"])

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve, auth, True)
        reply = await trio.to_thread.run_sync(talk, port)
        nursery.cancel_scope.cancel()
    assert reply == (250, b"2.1.5 OK")
    assert auth.asked[-1].conn.forward_fields == {"origin": "mx 1"}
