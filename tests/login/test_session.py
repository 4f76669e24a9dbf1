"""LoginSession over trio memory streams, with a fake auth step and a scripted backend.

The client side is an in-memory stream (no socket); the backend is a tiny IMAP
server on 127.0.0.1 that records every byte it receives, so the tests can see
exactly what the proxy sent and when.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import partial

import pytest
import trio
import trio.testing

from proxyd.auth.request import (
    AuthReply,
    AuthRequest,
    AuthStatus,
    ConnectionInfo,
    FailCode,
    SaslIO,
    SaslStart,
)
from proxyd.config.settings import Settings
from proxyd.login import tls
from proxyd.login.session import LoginContext, LoginSession
from proxyd.protocols.imap.plugin import IMAP
from tests.helpers.fake_auth import run_exchange

PASSWORD = "s3cr3t-Pa55"


@dataclass
class FakeAuth:
    """Answers every request with ``reply``; remembers the requests."""

    reply: AuthReply
    requests: list[AuthRequest] = field(default_factory=list)

    async def authenticate(self, request: AuthRequest) -> AuthReply:
        self.requests.append(request)
        await trio.lowlevel.checkpoint()
        return self.reply

    async def sasl(self, start: SaslStart, io: SaslIO) -> AuthReply:
        return await run_exchange(start, io, self.authenticate)


@dataclass
class ScriptedBackend:
    """An IMAP backend that logs everyone in and echoes NOOPs; records what it got."""

    port: int = 0
    received: bytearray = field(default_factory=bytearray)
    connections: int = 0
    login_reply: bytes = b"L OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in\r\n"

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        await stream.send_all(b"* OK [CAPABILITY IMAP4rev1 SASL-IR ID AUTH=PLAIN] backend ready\r\n")
        buf = b""
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            self.received += data
            buf += data
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                tag, _, rest = line.partition(b" ")
                verb = rest.split(b" ", 1)[0].upper()
                if verb == b"ID":
                    await stream.send_all(b'* ID ("name" "backend")\r\nI OK ID completed.\r\n')
                elif verb == b"LOGIN":
                    await stream.send_all(self.login_reply)
                elif verb == b"NOOP":
                    await stream.send_all(tag + b" OK NOOP done by backend\r\n")
                elif verb == b"LOGOUT":
                    await stream.send_all(b"* BYE bye\r\n" + tag + b" OK Logout completed.\r\n")
                    return


def _conn() -> ConnectionInfo:
    return ConnectionInfo(
        service="imap", local_ip="127.0.0.1", local_port=143, remote_ip="192.0.2.7", remote_port=50000,
        real_local_ip="127.0.0.1", real_local_port=143, real_remote_ip="192.0.2.7", real_remote_port=50000,
        secured=True, tls=False, session_id="sess1",
    )


def _ctx(auth: FakeAuth, **overrides: object) -> LoginContext:
    settings = Settings(ssl="no", disable_plaintext_auth=False, **overrides)  # type: ignore[arg-type]
    return LoginContext(
        settings=settings, auth=auth, server_tls=None, backend_tls=partial(tls.backend_context, settings)
    )


async def _start_backend(nursery: trio.Nursery, backend: ScriptedBackend) -> None:
    listeners = await nursery.start(partial(trio.serve_tcp, backend.handle, 0, host="127.0.0.1"))
    backend.port = listeners[0].socket.getsockname()[1]


async def _read_until(stream: trio.abc.Stream, marker: bytes, limit: float = 5) -> bytes:
    data = b""
    with trio.fail_after(limit):
        while marker not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    return data


def _ok_reply(port: int, **fields: str) -> AuthReply:
    base = {"proxy": "", "host": "127.0.0.1", "port": str(port), "pass": PASSWORD}
    base.update(fields)
    return AuthReply(status=AuthStatus.OK, user="alice", fields=base)


async def test_login_is_proxied_and_relayed(nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    """LOGIN goes to the backend with ID first; pipelined commands follow only after the login."""
    caplog.set_level(logging.DEBUG)
    backend = ScriptedBackend()
    await _start_backend(nursery, backend)
    auth = FakeAuth(_ok_reply(0))
    client, server = trio.testing.memory_stream_pair()
    auth.reply = _ok_reply(backend.port, destuser="alice@example.com")
    session = LoginSession(_ctx(auth), IMAP, server, _conn(), implicit_tls=False)
    nursery.start_soon(session.run)

    greeting = await _read_until(client, b"\r\n")
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    await client.send_all(f"a1 LOGIN alice {PASSWORD}\r\na2 NOOP\r\n".encode())
    reply = await _read_until(client, b"a2 OK")
    assert b"a1 OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in\r\n" in reply
    assert b"a2 OK NOOP done by backend\r\n" in reply

    sent = bytes(backend.received)
    id_line, login_line = sent.split(b"\r\n")[:2]
    assert id_line.startswith(b'I ID ("x-session-id" "sess1" "x-originating-ip" "192.0.2.7" ')
    assert b'"x-proxy-ttl" "4"' in id_line
    assert login_line == f'L LOGIN "alice@example.com" "{PASSWORD}"'.encode()
    assert sent.index(b"a2 NOOP") > sent.index(b"L LOGIN")

    await client.send_all(b"a3 LOGOUT\r\n")
    assert b"a3 OK Logout completed." in await _read_until(client, b"a3 OK")
    assert auth.requests[0].user == "alice"
    assert auth.requests[0].password is not None
    assert auth.requests[0].password.reveal() == PASSWORD
    assert PASSWORD not in caplog.text
    # Dovecot 2.3: the proxy's prefix names the backend, the IP in <>, no separate Login line
    assert re.search(
        r"proxy\(alice,127\.0\.0\.1:\d+\): Started proxying to <127\.0\.0\.1> "
        r"as user alice@example\.com \(\d+\.\d{3} secs\): user=<alice>",
        caplog.text,
    )
    assert "Login: " not in caplog.text


async def test_failed_auth_never_reaches_the_backend(nursery: trio.Nursery) -> None:
    """A wrong password gets Dovecot's text; nothing pipelined behind it goes anywhere."""
    backend = ScriptedBackend()
    await _start_backend(nursery, backend)
    auth = FakeAuth(AuthReply(status=AuthStatus.FAIL, user="alice", fail_code=FailCode.AUTH_FAILED))
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(LoginSession(_ctx(auth), IMAP, server, _conn(), implicit_tls=False).run)
    await _read_until(client, b"\r\n")
    await client.send_all(b"a1 LOGIN alice wrong\r\na2 SELECT INBOX\r\n")
    reply = await _read_until(client, b"a2 ")
    assert b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n" in reply
    assert b"a2 BAD" in reply  # SELECT is not a pre-login command
    assert backend.connections == 0


async def test_nologin_reason_is_shown(nursery: trio.Nursery) -> None:
    auth = FakeAuth(
        AuthReply(status=AuthStatus.FAIL, user="alice", fail_code=FailCode.LOGIN_DISABLED, reason="Moving you")
    )
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(LoginSession(_ctx(auth), IMAP, server, _conn(), implicit_tls=False).run)
    await _read_until(client, b"\r\n")
    await client.send_all(b"a LOGIN alice pw\r\n")
    assert b"a NO [CONTACTADMIN] Moving you\r\n" in await _read_until(client, b"a NO")


async def test_backend_down_is_a_temporary_failure_and_the_client_stays(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Connection refused is retried, then the client gets [UNAVAILABLE] and may try again."""
    with trio.socket.socket() as probe:  # a port nobody listens on
        await probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    auth = FakeAuth(_ok_reply(dead_port))
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(LoginSession(_ctx(auth), IMAP, server, _conn(), implicit_tls=False).run)
    await _read_until(client, b"\r\n")
    start = trio.current_time()
    await client.send_all(b"a LOGIN alice pw\r\n")
    assert b"a NO [UNAVAILABLE] Account is temporarily unavailable.\r\n" in await _read_until(client, b"a NO")
    assert 2.9 < trio.current_time() - start < 30  # three reconnects, one second apart
    await client.send_all(b"b NOOP\r\n")
    assert b"b OK NOOP completed." in await _read_until(client, b"b OK")


async def test_auth_tempfail_text(nursery: trio.Nursery) -> None:
    auth = FakeAuth(AuthReply(status=AuthStatus.TEMPFAIL, user="alice"))
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(LoginSession(_ctx(auth), IMAP, server, _conn(), implicit_tls=False).run)
    await _read_until(client, b"\r\n")
    await client.send_all(b"a LOGIN alice pw\r\n")
    assert b"a NO [UNAVAILABLE] Temporary authentication failure. [" in await _read_until(client, b"a NO")


async def test_reply_without_proxy_field_is_refused(nursery: trio.Nursery) -> None:
    """proxyd keeps no mail: an OK without ``proxy`` cannot be served and says so."""
    auth = FakeAuth(AuthReply(status=AuthStatus.OK, user="alice", fields={}))
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(LoginSession(_ctx(auth), IMAP, server, _conn(), implicit_tls=False).run)
    await _read_until(client, b"\r\n")
    await client.send_all(b"a LOGIN alice pw\r\n")
    assert b"a NO [SERVERBUG] Account is temporarily unavailable.\r\n" in await _read_until(client, b"a NO")


async def test_absolute_login_timeout(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """180 s after connecting the client is told goodbye, however active it was."""
    auth = FakeAuth(AuthReply(status=AuthStatus.FAIL, user="x"))
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(LoginSession(_ctx(auth), IMAP, server, _conn(), implicit_tls=False).run)
    await _read_until(client, b"\r\n")
    start = trio.current_time()
    for _ in range(5):
        await trio.sleep(30)
        await client.send_all(b"n NOOP\r\n")
        await _read_until(client, b"n OK")
    data = await _read_until(client, b"* BYE", limit=200)
    assert data.endswith(b"* BYE Disconnected for inactivity.\r\n")
    assert trio.current_time() - start == pytest.approx(180, abs=1)


async def test_logout_before_login(nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    auth = FakeAuth(AuthReply(status=AuthStatus.FAIL, user="x"))
    client, server = trio.testing.memory_stream_pair()
    done = trio.Event()

    async def run() -> None:
        await LoginSession(_ctx(auth), IMAP, server, _conn(), implicit_tls=False).run()
        done.set()

    nursery.start_soon(run)
    await _read_until(client, b"\r\n")
    await client.send_all(b"z LOGOUT\r\n")
    assert (await _read_until(client, b"z OK")).endswith(b"* BYE Logging out\r\nz OK Logout completed.\r\n")
    with trio.fail_after(5):
        await done.wait()
    assert "Aborted login by logging out (no auth attempts in 0 secs)" in caplog.text
