"""Nothing a client (or a backend) sends can shape the log: one record is one line.

Arbitrary bytes go through every client-supplied value that reaches a log line
(IMAP LOGIN literals, AUTHENTICATE PLAIN authcid/authzid and mechanism names,
POP3 USER, a trusted peer's ID / XCLIENT session and forward fields, the
reasons and banners a backend sends, the auth process's log prefix).  Each
test checks two things for every record: the message was already escaped
where it was formatted (Dovecot's ``str_sanitize``), so the formatter's last
net had nothing to do; and the formatted record is a single line.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyd.auth.request import (
    AuthReply,
    AuthRequest,
    AuthStatus,
    ConnectionInfo,
    FailCode,
    SaslIO,
    SaslStart,
)
from proxyd.auth.username import UsernameError, normalize_username
from proxyd.config.settings import Settings
from proxyd.log import (
    MAX_LOG_USERNAME_LEN,
    MAX_LOGIN_USER_LEN,
    DovecotFormatter,
    one_line,
    sanitize,
)
from proxyd.login import tls
from proxyd.login.session import LoginContext, LoginSession
from proxyd.protocols.imap.plugin import IMAP
from proxyd.protocols.pop3.plugin import POP3
from proxyd.protocols.spec import ProtocolSpec
from tests.auth.fakes import FakePassdb, make_chain
from tests.auth.util import make_request
from tests.helpers.fake_auth import run_exchange

#: any bytes but the line end (a line-based protocol ends the value there)
line_bytes = st.binary(min_size=1, max_size=120).filter(lambda b: b"\n" not in b)
#: SASL PLAIN identities cannot hold NUL (it separates them)
sasl_identity = st.binary(min_size=1, max_size=120).filter(lambda b: b"\0" not in b)
any_text = st.text(min_size=1, max_size=120)


class _Catcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(DovecotFormatter())
        self.messages: list[str] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.lines.append(self.format(record))


@contextmanager
def catching() -> Iterator[_Catcher]:
    catcher = _Catcher()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(catcher)
    root.setLevel(logging.DEBUG)
    try:
        yield catcher
    finally:
        root.removeHandler(catcher)
        root.setLevel(old_level)


def assert_one_line_each(catcher: _Catcher) -> None:
    assert catcher.messages, "nothing was logged"
    for message, line in zip(catcher.messages, catcher.lines, strict=True):
        assert one_line(message) == message, f"not escaped where it was formatted: {message!r}"
        assert len(line.splitlines()) == 1, line


@dataclass
class _Auth:
    """Fails (or, with ``ok``, accepts) every login; keeps the requests."""

    ok: AuthReply | None = None
    requests: list[AuthRequest] = field(default_factory=list)

    async def authenticate(self, request: AuthRequest) -> AuthReply:
        self.requests.append(request)
        await trio.lowlevel.checkpoint()
        if self.ok is not None:
            return self.ok
        return AuthReply(status=AuthStatus.FAIL, user=request.user, fail_code=FailCode.AUTH_FAILED)

    async def sasl(self, start: SaslStart, io: SaslIO) -> AuthReply:
        return await run_exchange(start, io, self.authenticate)


def _conn(service: str, *, trusted: bool = False) -> ConnectionInfo:
    return ConnectionInfo(
        service=service, local_ip="127.0.0.1", local_port=143, remote_ip="192.0.2.7",
        remote_port=50000, real_local_ip="127.0.0.1", real_local_port=143,
        real_remote_ip="192.0.2.7", real_remote_port=50000, secured=True, tls=False,
        session_id="sess1", trusted=trusted,
    )


def run_session(
    spec: ProtocolSpec,
    client_bytes: bytes,
    auth: _Auth,
    *,
    trusted: bool = False,
    backend: Callable[[trio.SocketStream], Awaitable[None]] | None = None,
) -> None:
    """Serve one connection that sends ``client_bytes`` and hangs up; return when it is over."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            if backend is not None:
                listeners = await nursery.start(partial(trio.serve_tcp, backend, 0, host="127.0.0.1"))
                port = listeners[0].socket.getsockname()[1]
                auth.ok = AuthReply(
                    status=AuthStatus.OK, user="alice",
                    fields={"proxy": "", "host": "127.0.0.1", "port": str(port), "pass": "x"},
                )
            # auth_verbose: the backend's refusal is logged only then (client_proxy_log_failure())
            settings = Settings(
                ssl="no", disable_plaintext_auth=False, login_proxy_max_reconnects=0, auth_verbose=True
            )
            ctx = LoginContext(
                settings=settings, auth=auth, server_tls=None,
                backend_tls=partial(tls.backend_context, settings),
            )
            client, server = trio.testing.memory_stream_pair()
            session = LoginSession(ctx, spec, server, _conn(spec.name, trusted=trusted), implicit_tls=False)
            async with trio.open_nursery() as inner:
                inner.start_soon(session.run)
                # a last LOGOUT / QUIT: the session has handled everything once it hangs up
                await client.send_all(client_bytes + (b"z LOGOUT\r\n" if spec is IMAP else b"QUIT\r\n"))
                with trio.move_on_after(3):
                    while await client.receive_some(65536):
                        pass
                await client.aclose()
            nursery.cancel_scope.cancel()

    trio.run(main)


def expect_user_logged(catcher: _Catcher, auth: _Auth) -> None:
    """When the login reached the auth step, the log shows the escaped name the client sent."""
    if not auth.requests:
        return
    request = auth.requests[0]
    # the auth process's reply names the user, as Dovecot's FAIL user= does: the authcid
    shown = sanitize(request.user, MAX_LOGIN_USER_LEN)
    assert any(f"user=<{shown}>" in line for line in catcher.lines), catcher.lines


def _literal(value: bytes) -> bytes:
    return b"{%d}\r\n" % len(value) + value


FORGED = b"x\r\nNov 22 10:00:01 imap-login: Info: Login: user=<root>"
SHOWN = "x??Nov 22 10:00:01 imap-login: Info: Login: user=<root>"


def _plain(authzid: bytes, authcid: bytes) -> bytes:
    return base64.b64encode(authzid + b"\0" + authcid + b"\0pw")


@pytest.mark.parametrize(
    ("spec", "client_bytes"),
    [
        pytest.param(IMAP, b"a LOGIN " + _literal(FORGED) + b" pw\r\n", id="imap-login-literal"),
        pytest.param(IMAP, b"a AUTHENTICATE PLAIN " + _plain(b"", FORGED) + b"\r\n", id="imap-authcid"),
        pytest.param(IMAP, b"a AUTHENTICATE PLAIN " + _plain(b"bob", FORGED) + b"\r\n", id="imap-authzid"),
        pytest.param(POP3, b"USER " + FORGED.replace(b"\n", b"") + b"\r\nPASS pw\r\n", id="pop3-user"),
        pytest.param(POP3, b"AUTH PLAIN " + _plain(b"", FORGED) + b"\r\n", id="pop3-authcid"),
    ],
)
def test_a_forged_line_stays_inside_its_record(spec: ProtocolSpec, client_bytes: bytes) -> None:
    auth = _Auth()
    with catching() as catcher:
        run_session(spec, client_bytes, auth)
    assert_one_line_each(catcher)
    assert auth.requests, "the login did not reach the auth step"
    shown = SHOWN.replace("??", "?") if spec is POP3 and b"USER" in client_bytes else SHOWN
    assert any(f"user=<{shown}>" in line for line in catcher.lines), catcher.lines


# -- client-facing fields -------------------------------------------------------------


@given(user=st.binary(min_size=1, max_size=120))
def test_imap_login_literal_user(user: bytes) -> None:
    auth = _Auth()
    with catching() as catcher:
        run_session(IMAP, b"a LOGIN " + _literal(user) + b" pw\r\n", auth)
    assert_one_line_each(catcher)
    expect_user_logged(catcher, auth)


@given(authzid=st.one_of(st.just(b""), sasl_identity), authcid=sasl_identity)
def test_imap_authenticate_plain_identities(authzid: bytes, authcid: bytes) -> None:
    auth = _Auth()
    initial = base64.b64encode(authzid + b"\0" + authcid + b"\0pw")
    with catching() as catcher:
        run_session(IMAP, b"a AUTHENTICATE PLAIN " + initial + b"\r\n", auth)
    assert_one_line_each(catcher)
    expect_user_logged(catcher, auth)


@given(mech=line_bytes)
def test_imap_authenticate_mechanism_name(mech: bytes) -> None:
    with catching() as catcher:
        run_session(IMAP, b"a AUTHENTICATE " + mech + b"\r\nb LOGOUT\r\n", _Auth())
    assert_one_line_each(catcher)


@given(user=line_bytes)
def test_pop3_user(user: bytes) -> None:
    auth = _Auth()
    with catching() as catcher:
        run_session(POP3, b"USER " + user + b"\r\nPASS pw\r\n", auth)
    assert_one_line_each(catcher)
    expect_user_logged(catcher, auth)


@given(authzid=st.one_of(st.just(b""), sasl_identity), authcid=sasl_identity)
def test_pop3_auth_plain_identities(authzid: bytes, authcid: bytes) -> None:
    auth = _Auth()
    initial = base64.b64encode(authzid + b"\0" + authcid + b"\0pw")
    with catching() as catcher:
        run_session(POP3, b"AUTH PLAIN " + initial + b"\r\n", auth)
    assert_one_line_each(catcher)
    expect_user_logged(catcher, auth)


@given(session=st.binary(min_size=1, max_size=60), forward=st.binary(max_size=60), user=sasl_identity)
def test_imap_id_of_a_trusted_peer(session: bytes, forward: bytes, user: bytes) -> None:
    """x-session-id (shown as ``session=<>``) and x-forward-* from a trusted proxy in front."""
    auth = _Auth()
    command = (
        b'i ID ("x-session-id" ' + _literal(session) + b' "x-forward-note" ' + _literal(forward) + b")\r\n"
        b"a LOGIN " + _literal(user) + b" pw\r\n"
    )
    with catching() as catcher:
        run_session(IMAP, command, auth, trusted=True)
    assert_one_line_each(catcher)
    expect_user_logged(catcher, auth)


@given(
    session=st.binary(min_size=1, max_size=60).filter(lambda b: not set(b) & set(b" \r\n")),
    forward=st.binary(max_size=60),
)
def test_pop3_xclient_of_a_trusted_peer(session: bytes, forward: bytes) -> None:
    encoded = base64.b64encode(b"note=" + forward.replace(b"\t", b"\x01t"))
    command = b"XCLIENT SESSION=" + session + b" FORWARD=" + encoded + b"\r\nUSER alice\r\nPASS pw\r\n"
    with catching() as catcher:
        run_session(POP3, command, _Auth(), trusted=True)
    assert_one_line_each(catcher)


# -- what a backend sends ---------------------------------------------------------------


def _imap_backend(banner: bytes, reason: bytes) -> Callable[[trio.SocketStream], Awaitable[None]]:
    async def serve(stream: trio.SocketStream) -> None:
        await stream.send_all(banner + b"\r\n")
        buf = b""
        while data := await stream.receive_some(65536):
            buf += data
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                tag, _, rest = line.partition(b" ")
                verb = rest.split(b" ", 1)[0].upper()
                if verb == b"ID":
                    await stream.send_all(tag + b" OK ID completed.\r\n")
                else:
                    await stream.send_all(tag + b" NO " + reason + b"\r\n")

    return serve


def _pop3_backend(reason: bytes) -> Callable[[trio.SocketStream], Awaitable[None]]:
    async def serve(stream: trio.SocketStream) -> None:
        await stream.send_all(b"+OK ready\r\n")
        buf = b""
        while data := await stream.receive_some(65536):
            buf += data
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                reply = b"-ERR " + reason if line.upper().startswith(b"PASS") else b"+OK"
                await stream.send_all(reply + b"\r\n")

    return serve


@settings(max_examples=40)
@given(reason=line_bytes)
def test_imap_backend_login_failure_reason(reason: bytes) -> None:
    with catching() as catcher:
        run_session(
            IMAP, b"a LOGIN alice pw\r\n", _Auth(),
            backend=_imap_backend(b"* OK [CAPABILITY IMAP4rev1 ID] ready", reason),
        )
    assert_one_line_each(catcher)
    assert any(re.search(r"proxy\(alice,127\.0\.0\.1:\d+\): Login failed: ", line) for line in catcher.lines)


@settings(max_examples=40)
@given(banner=line_bytes)
def test_imap_backend_banner(banner: bytes) -> None:
    with catching() as catcher:
        run_session(IMAP, b"a LOGIN alice pw\r\n", _Auth(), backend=_imap_backend(banner, b"no"))
    assert_one_line_each(catcher)


@settings(max_examples=40)
@given(reason=line_bytes)
def test_pop3_backend_login_failure_reason(reason: bytes) -> None:
    with catching() as catcher:
        run_session(POP3, b"USER alice\r\nPASS pw\r\n", _Auth(), backend=_pop3_backend(reason))
    assert_one_line_each(catcher)
    assert any(re.search(r"proxy\(alice,127\.0\.0\.1:\d+\): Login failed: ", line) for line in catcher.lines)


# -- the auth process -------------------------------------------------------------------


@given(user=any_text, session=any_text)
def test_auth_log_prefix(user: str, session: str) -> None:
    """The auth process's ``passdb(user,rip,<session>)`` prefix, verbose and debug."""
    chain = make_chain(FakePassdb({"alice": [("password", "{PLAIN}pw")]}), verbose=True, debug=True)
    request = make_request(user, "wrong", session_id=session)
    with catching() as catcher:
        trio.run(chain.authenticate, request)
    assert_one_line_each(catcher)
    try:
        name = normalize_username(user)
    except UsernameError:
        name = user
    shown = sanitize(name, MAX_LOG_USERNAME_LEN)
    assert any(f"({shown}," in line for line in catcher.lines), catcher.lines


# -- the helper itself ------------------------------------------------------------------


def test_sanitize_is_dovecots_str_sanitize() -> None:
    assert sanitize("alice", 80) == "alice"
    assert sanitize("a\r\nFAKE b", 80) == "a??FAKE b"
    assert sanitize(b"a\x01b\xffc", 64) == "a?b?c"
    assert sanitize("x" * 65, 64) == "x" * 61 + "..."
    assert sanitize("x" * 64, 64) == "x" * 64
    # a multi-byte character is never cut in half
    assert sanitize("é" * 40, 64) == "é" * 30 + "..."
    # DEL is kept, as Dovecot does; the Unicode line breaks are not
    assert sanitize("a\x7fb\u2028c\x85d", 80) == "a\x7fb?c?d"
    # bytes that were not UTF-8 (surrogate escapes) become "?"
    assert sanitize(b"\xc3(".decode("utf-8", "surrogateescape"), 80) == "?("
    assert sanitize("long reason " * 100) == "long reason " * 100


@given(value=st.binary(max_size=300), limit=st.integers(min_value=3, max_value=200))
def test_sanitize_output_is_one_short_line(value: bytes, limit: int) -> None:
    shown = sanitize(value, limit)
    assert one_line(shown) == shown
    assert len(shown.encode()) <= limit
    if len(value) <= limit and value.isascii() and value.decode().isprintable():
        assert shown == value.decode()
