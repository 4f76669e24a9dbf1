"""POP3 on the shared LoginSession: trio memory streams, a fake auth step, a scripted backend.

These check the plug-in (``proxyd.protocols.pop3.plugin.POP3``) with the protocol-neutral
driver: what the backend receives and when, what the client sees, and the
failure paths, without processes or Dovecot.
"""

from __future__ import annotations

import base64
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
from proxyd.protocols.pop3.plugin import POP3
from proxyd.protocols.registry import BY_NAME
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
class ScriptedPop3Backend:
    """A POP3 backend that takes XCLIENT, USER/PASS and AUTH PLAIN; records what it got."""

    banner: bytes = b"+OK [XCLIENT] backend ready.\r\n"
    pass_reply: bytes = b"+OK Logged in.\r\n"
    port: int = 0
    received: bytearray = field(default_factory=bytearray)
    connections: int = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        await stream.send_all(self.banner)
        buf = b""
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            self.received += data
            buf += data
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                verb = line.split(b" ", 1)[0].upper()
                if verb == b"XCLIENT":
                    await stream.send_all(b"+OK Updated\r\n")
                elif verb == b"USER":
                    await stream.send_all(b"+OK\r\n")
                elif verb in (b"PASS", b"AUTH"):
                    await stream.send_all(self.pass_reply)
                elif verb == b"STAT":
                    await stream.send_all(b"+OK 1 212\r\n")
                elif verb == b"QUIT":
                    await stream.send_all(b"+OK Logging out.\r\n")
                    return


def _conn(*, trusted: bool = False) -> ConnectionInfo:
    return ConnectionInfo(
        service="pop3", local_ip="127.0.0.1", local_port=110, remote_ip="192.0.2.7", remote_port=50000,
        real_local_ip="127.0.0.1", real_local_port=110, real_remote_ip="192.0.2.7", real_remote_port=50000,
        secured=True, tls=False, trusted=trusted, session_id="sess1",
    )  # fmt: skip


def _ctx(auth: FakeAuth, **overrides: object) -> LoginContext:
    settings = Settings(
        ssl="no", disable_plaintext_auth=False, auth_mechanisms=("plain", "login"), **overrides
    )  # type: ignore[arg-type]
    return LoginContext(
        settings=settings,
        auth=auth,
        server_tls=None,
        backend_tls=partial(tls.backend_context, settings),
    )


async def _start_backend(nursery: trio.Nursery, backend: ScriptedPop3Backend) -> None:
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


def _session(auth: FakeAuth, stream: trio.abc.Stream, *, trusted: bool = False) -> LoginSession:
    return LoginSession(_ctx(auth), POP3, stream, _conn(trusted=trusted), implicit_tls=False)


def test_pop3_is_registered() -> None:
    assert BY_NAME["pop3"] is POP3
    assert (POP3.service, POP3.default_port, POP3.default_ssl_port) == ("pop3-login", 110, 995)
    assert POP3.login is not None
    assert POP3.login.goodbye("Disconnected for inactivity.") == b"-ERR Disconnected for inactivity.\r\n"


async def test_user_pass_is_proxied_with_xclient(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """XCLIENT and USER go out together, PASS after USER's +OK, STAT only after the login."""
    caplog.set_level(logging.DEBUG)
    backend = ScriptedPop3Backend()
    await _start_backend(nursery, backend)
    auth = FakeAuth(_ok_reply(backend.port, destuser="alice@example.com", forward_client="webmail"))
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(_session(auth, server).run)

    assert await _read_until(client, b"\r\n") == b"+OK Dovecot ready.\r\n"
    await client.send_all(f"USER alice\r\nPASS {PASSWORD}\r\nSTAT\r\n".encode())
    reply = await _read_until(client, b"+OK 1 212\r\n")
    assert reply == b"+OK\r\n+OK Logged in.\r\n+OK 1 212\r\n"

    lines = bytes(backend.received).split(b"\r\n")
    forward = base64.b64encode(b"client=webmail").decode()
    assert (
        lines[0]
        == f"XCLIENT ADDR=192.0.2.7 PORT=50000 SESSION=sess1 TTL=4 FORWARD={forward}".encode()
    )
    assert lines[1:4] == [b"USER alice@example.com", f"PASS {PASSWORD}".encode(), b"STAT"]

    await client.send_all(b"QUIT\r\n")
    assert await _read_until(client, b"Logging out") == b"+OK Logging out.\r\n"
    assert auth.requests[0].user == "alice"
    assert auth.requests[0].conn.service == "pop3"
    assert PASSWORD not in caplog.text
    assert re.search(r"proxy\(alice,127\.0\.0\.1:\d+\): Started proxying to <127\.0\.0\.1> as user alice@example\.com \(", caplog.text)


async def test_master_user_uses_auth_plain(nursery: trio.Nursery) -> None:
    backend = ScriptedPop3Backend(banner=b"+OK ready\r\n")
    await _start_backend(nursery, backend)
    auth = FakeAuth(_ok_reply(backend.port, master="proxymaster"))
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(_session(auth, server).run)
    await _read_until(client, b"\r\n")
    ir = base64.b64encode(f"\0alice\0{PASSWORD}".encode())
    await client.send_all(b"AUTH PLAIN " + ir + b"\r\n")
    assert await _read_until(client, b"\r\n") == b"+OK Logged in.\r\n"
    expected = base64.b64encode(f"alice\0proxymaster\0{PASSWORD}".encode())
    assert bytes(backend.received) == b"AUTH PLAIN " + expected + b"\r\n"


async def test_backend_error_text_is_passed_on(nursery: trio.Nursery) -> None:
    backend = ScriptedPop3Backend(
        pass_reply=b"-ERR [IN-USE] Mailbox is locked by another POP3 session.\r\n"
    )
    await _start_backend(nursery, backend)
    auth = FakeAuth(_ok_reply(backend.port))
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(_session(auth, server).run)
    await _read_until(client, b"\r\n")
    await client.send_all(b"USER alice\r\nPASS pw\r\n")
    reply = await _read_until(client, b"locked")
    assert reply == b"+OK\r\n-ERR [IN-USE] Mailbox is locked by another POP3 session.\r\n"
    await client.send_all(b"CAPA\r\n")
    assert (await _read_until(client, b".\r\n")).startswith(b"+OK\r\nCAPA\r\n")


async def test_wrong_password_never_reaches_the_backend(nursery: trio.Nursery) -> None:
    backend = ScriptedPop3Backend()
    await _start_backend(nursery, backend)
    auth = FakeAuth(AuthReply(status=AuthStatus.FAIL, user="alice", fail_code=FailCode.AUTH_FAILED))
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(_session(auth, server).run)
    await _read_until(client, b"\r\n")
    await client.send_all(b"USER alice\r\nPASS wrong\r\nSTAT\r\n")
    reply = await _read_until(client, b"Unknown")
    assert reply == b"+OK\r\n-ERR [AUTH] Authentication failed.\r\n-ERR Unknown command.\r\n"
    assert backend.connections == 0


async def test_backend_down_is_a_temporary_failure(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.socket.socket() as probe:  # a port nobody listens on
        await probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    auth = FakeAuth(_ok_reply(dead_port))
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(_session(auth, server).run)
    await _read_until(client, b"\r\n")
    await client.send_all(b"USER alice\r\nPASS pw\r\n")
    reply = await _read_until(client, b"unavailable.\r\n", limit=60)
    assert reply == b"+OK\r\n-ERR [SYS/TEMP] Account is temporarily unavailable.\r\n"


async def test_auth_tempfail_and_nologin_texts(nursery: trio.Nursery) -> None:
    auth = FakeAuth(AuthReply(status=AuthStatus.TEMPFAIL, user="alice"))
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(_session(auth, server).run)
    await _read_until(client, b"\r\n")
    await client.send_all(b"USER alice\r\nPASS pw\r\n")
    assert b"-ERR [SYS/TEMP] Temporary authentication failure. [" in await _read_until(
        client, b"]\r\n"
    )
    auth.reply = AuthReply(
        status=AuthStatus.FAIL, user="alice", fail_code=FailCode.LOGIN_DISABLED, reason="Moving you"
    )
    await client.send_all(b"USER alice\r\nPASS pw\r\n")
    assert await _read_until(client, b"you\r\n") == b"+OK\r\n-ERR [AUTH] Moving you\r\n"


async def test_trusted_xclient_changes_what_auth_and_backend_see(nursery: trio.Nursery) -> None:
    """A trusted proxy in front of us forwards the real client; we pass it on (TTL one lower)."""
    backend = ScriptedPop3Backend()
    await _start_backend(nursery, backend)
    auth = FakeAuth(_ok_reply(0))
    auth.reply = _ok_reply(backend.port)
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(_session(auth, server, trusted=True).run)
    assert await _read_until(client, b"\r\n") == b"+OK [XCLIENT] Dovecot ready.\r\n"
    await client.send_all(b"XCLIENT ADDR=198.51.100.9 PORT=4242 SESSION=upstream1 TTL=3\r\n")
    assert await _read_until(client, b"\r\n") == b"+OK Updated\r\n"
    await client.send_all(b"USER alice\r\nPASS pw\r\n")
    await _read_until(client, b"Logged in.\r\n")
    assert auth.requests[0].conn.remote_ip == "198.51.100.9"
    assert auth.requests[0].conn.remote_port == 4242
    first = bytes(backend.received).split(b"\r\n")[0]
    assert first == b"XCLIENT ADDR=198.51.100.9 PORT=4242 SESSION=upstream1 TTL=2"


async def test_quit_before_login(nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    auth = FakeAuth(AuthReply(status=AuthStatus.FAIL, user="x"))
    client, server = trio.testing.memory_stream_pair()
    done = trio.Event()

    async def run() -> None:
        await _session(auth, server).run()
        done.set()

    nursery.start_soon(run)
    await _read_until(client, b"\r\n")
    await client.send_all(b"QUIT\r\n")
    assert await _read_until(client, b"\r\n") == b"+OK Logging out\r\n"
    with trio.fail_after(5):
        await done.wait()
    assert "Aborted login by logging out (no auth attempts in 0 secs)" in caplog.text


async def test_absolute_login_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    auth = FakeAuth(AuthReply(status=AuthStatus.FAIL, user="x"))
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(_session(auth, server).run)
    await _read_until(client, b"\r\n")
    data = await _read_until(client, b"-ERR", limit=200)
    assert data == b"-ERR Disconnected for inactivity.\r\n"
