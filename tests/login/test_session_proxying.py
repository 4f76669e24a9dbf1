"""LoginSession's proxy behaviour: referrals, loops, OAuth2 failures, disconnect pacing, kicks.

Clients are trio memory streams; backends are the scripted IMAP server of
test_session.py on 127.0.0.1.  Timing-sensitive tests use the autojump clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import re
import socket
from functools import partial

import pytest
import trio
import trio.testing

from proxyd.auth.request import AuthReply, AuthStatus, FailCode
from proxyd.login.session import LoginSession
from proxyd.protocols.imap.plugin import IMAP
from proxyd.protocols.pop3.plugin import POP3
from proxyd.proxied.proxystate import ProxyState
from tests.login.test_session import (
    PASSWORD,
    FakeAuth,
    ScriptedBackend,
    _conn,
    _ctx,
    _ok_reply,
    _read_until,
    _start_backend,
)


def nologin(**fields: str) -> AuthReply:
    return AuthReply(
        status=AuthStatus.FAIL,
        user="alice",
        fields={"nologin": "", **fields},
        fail_code=FailCode.LOGIN_DISABLED,
        reason=fields.get("reason"),
    )


async def start(
    nursery: trio.Nursery, auth: FakeAuth, spec=IMAP, **kwargs
) -> trio.testing.MemoryStream:  # type: ignore[no-untyped-def]
    client, server = trio.testing.memory_stream_pair()
    ctx = _ctx(auth, auth_mechanisms=("plain", "login", "xoauth2", "oauthbearer"))
    session = LoginSession(ctx, spec, server, _conn(), implicit_tls=False, **kwargs)
    nursery.start_soon(session.run)
    await _read_until(client, b"\r\n")
    return client  # type: ignore[return-value]


# -- referrals ----------------------------------------------------------------------------


async def test_nologin_with_host_is_an_imap_referral(nursery: trio.Nursery) -> None:
    auth = FakeAuth(nologin(host="imap2.example.org", port="1143", destuser="alice@example.org"))
    client = await start(nursery, auth)
    await client.send_all(b"a1 AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n")
    reply = await _read_until(client, b"a1 ")
    assert reply == (
        b"a1 NO [REFERRAL imap://alice%40example.org;AUTH=PLAIN@imap2.example.org:1143/]"
        b" Try this server instead.\r\n"
    )


async def test_referral_reason_and_default_port(nursery: trio.Nursery) -> None:
    auth = FakeAuth(nologin(host="192.0.2.5", reason="Your mail moved"))
    client = await start(nursery, auth)
    await client.send_all(b"b LOGIN alice pw\r\n")
    assert await _read_until(client, b"b NO") == (
        b"b NO [REFERRAL imap://alice;AUTH=PLAIN@192.0.2.5/] Your mail moved\r\n"
    )


async def test_pop3_has_no_referrals(nursery: trio.Nursery) -> None:
    auth = FakeAuth(nologin(host="192.0.2.5"))
    client = await start(nursery, auth, POP3)
    await client.send_all(b"USER alice\r\nPASS pw\r\n")
    assert (await _read_until(client, b"-ERR")).endswith(b"-ERR Try this server instead.\r\n")


# -- loops and TTL ----------------------------------------------------------------------------


async def test_proxying_to_our_own_address_and_port_is_a_loop(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    backend = ScriptedBackend()
    await _start_backend(nursery, backend)
    # _conn(): the client connected to 127.0.0.1:143
    auth = FakeAuth(_ok_reply(143))
    client = await start(nursery, auth)
    await client.send_all(b"a LOGIN alice pw\r\n")
    assert await _read_until(client, b"a NO") == (
        b"a NO [UNAVAILABLE] Account is temporarily unavailable.\r\n"
    )
    assert "proxy(alice): Proxying loops to itself" in caplog.text
    # another user name (destuser) is no loop: Dovecot compares the user too
    auth.reply = _ok_reply(backend.port, destuser="bob")
    await client.send_all(b"b LOGIN alice pw\r\n")
    assert b"b OK" in await _read_until(client, b"b OK")


# -- OAuth2 ---------------------------------------------------------------------------------------


async def test_failed_xoauth2_gets_the_json_challenge_first(nursery: trio.Nursery) -> None:
    auth = FakeAuth(AuthReply(status=AuthStatus.FAIL, user="alice", fail_code=FailCode.AUTH_FAILED))
    client = await start(nursery, auth)
    ir = b"dXNlcj1hbGljZQFhdXRoPUJlYXJlciBiYWQBAQ=="  # user=alice^Aauth=Bearer bad^A^A
    await client.send_all(b"x AUTHENTICATE XOAUTH2 " + ir + b"\r\n")
    challenge = await _read_until(client, b"\r\n")
    # {"status":"401","schemes":"bearer","scope":"mail"}
    assert (
        challenge == b"+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=\r\n"
    )
    await client.send_all(b"AQ==\r\n")
    assert (
        await _read_until(client, b"x NO")
        == b"x NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    )
    assert auth.requests[0].user == "alice"
    assert auth.requests[0].password is not None
    assert auth.requests[0].password.reveal() == "bad"


async def test_xoauth2_token_is_forwarded_with_proxy_mech(nursery: trio.Nursery) -> None:
    """``pass=%{password} proxy_mech=%m``: the bearer token reaches the backend as XOAUTH2."""
    backend = ScriptedBackend()
    await _start_backend(nursery, backend)
    auth = FakeAuth(_ok_reply(0))
    auth.reply = _ok_reply(backend.port, **{"pass": "tok123", "proxy_mech": "XOAUTH2"})
    client = await start(nursery, auth)
    await client.send_all(
        b"x AUTHENTICATE XOAUTH2 dXNlcj1hbGljZQFhdXRoPUJlYXJlciB0b2sxMjMBAQ==\r\n"
    )
    await trio.sleep(0.2)
    assert (
        b"L AUTHENTICATE XOAUTH2 dXNlcj1hbGljZQFhdXRoPUJlYXJlciB0b2sxMjMBAQ==\r\n"
        in backend.received
    )


# -- disconnect pacing and kicks -------------------------------------------------------------------


class DroppingBackend(ScriptedBackend):
    """Logs everyone in, then closes all connections when ``drop`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        await stream.send_all(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
        data = b""
        while b"L LOGIN" not in data:
            data += await stream.receive_some(65536)
        await stream.send_all(b"L OK Logged in\r\n")
        await self.drop.wait()
        await stream.aclose()


async def test_dead_backend_disconnects_are_spread(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    backend = DroppingBackend()
    await _start_backend(nursery, backend)
    auth = FakeAuth(_ok_reply(backend.port))
    state = ProxyState(max_disconnect_delay=2, rng=random.Random(0))
    clients = []
    for n in range(6):
        client = await start(nursery, auth, proxy_state=state)
        await client.send_all(f"a{n} LOGIN alice {PASSWORD}\r\n".encode())
        await _read_until(client, f"a{n} OK".encode())
        clients.append(client)
    closed_at: dict[int, float] = {}

    async def watch(n: int, client: trio.testing.MemoryStream) -> None:  # type: ignore[name-defined]
        while await client.receive_some(100):
            pass
        closed_at[n] = trio.current_time()

    dropped = trio.current_time()
    async with trio.open_nursery() as watchers:
        for n, client in enumerate(clients):
            watchers.start_soon(watch, n, client)
        backend.drop.set()
    delays = sorted(at - dropped for at in closed_at.values())
    # 6 sessions over 2 s: 3 per second at once, the others on the 100 ms grid up to 2 s
    assert delays[:3] == pytest.approx([0, 0, 0], abs=0.05)
    assert all(0.5 < d <= 2.1 for d in delays[3:])
    assert caplog.text.count("- disconnecting client in ") == 3


async def _logged_in(
    nursery: trio.Nursery, auth: FakeAuth, state: ProxyState, count: int
) -> tuple[list[LoginSession], list[trio.abc.Stream]]:
    """``count`` sessions sharing ``state``, each logged in and proxied; and their clients."""
    sessions: list[LoginSession] = []
    clients: list[trio.abc.Stream] = []
    for n in range(count):
        client, server = trio.testing.memory_stream_pair()
        session = LoginSession(_ctx(auth), IMAP, server, _conn(), implicit_tls=False, proxy_state=state)
        nursery.start_soon(session.run)
        await _read_until(client, b"\r\n")
        await client.send_all(f"a{n} LOGIN alice {PASSWORD}\r\n".encode())
        await _read_until(client, f"a{n} OK".encode())
        sessions.append(session)
        clients.append(client)
    return sessions, clients


async def test_kick_during_the_disconnect_delay_closes_at_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The backend went away and the client is being held: a kick now ends the wait."""
    backend = DroppingBackend()
    await _start_backend(nursery, backend)
    auth = FakeAuth(_ok_reply(backend.port))
    state = ProxyState(max_disconnect_delay=100, rng=random.Random(0))
    sessions, clients = await _logged_in(nursery, auth, state, 4)
    backend.drop.set()
    await trio.sleep(1)  # the first has gone, the others wait for their slots (up to 100 s)
    held = state.record("127.0.0.1", backend.port).num_delayed_client_disconnects
    assert held == 3
    start = trio.current_time()
    for session in sessions:
        session.destroy("Kicked by admin")
    for client in clients[1:]:
        with trio.fail_after(5):
            while await client.receive_some(100):
                pass
    assert trio.current_time() - start < 1
    assert state.record("127.0.0.1", backend.port).num_delayed_client_disconnects == 0


async def test_kicked_session_closes_without_a_message(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    backend = ScriptedBackend()
    await _start_backend(nursery, backend)
    client, server = trio.testing.memory_stream_pair()
    session = LoginSession(
        _ctx(FakeAuth(_ok_reply(backend.port))), IMAP, server, _conn(), implicit_tls=False
    )
    nursery.start_soon(session.run)
    await _read_until(client, b"\r\n")
    await client.send_all(f"a LOGIN alice {PASSWORD}\r\n".encode())
    await _read_until(client, b"a OK")
    session.destroy("Kicked by admin")
    with trio.fail_after(5):
        assert await client.receive_some(100) == b""
    assert re.search(r"proxy\(alice,127\.0\.0\.1:\d+\): Disconnected by proxy: Kicked by admin: user=<alice>", caplog.text)


async def test_kicks_are_delayed_like_backend_disconnects(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A kicked relay (it runs in the session's own scope) logs, holds the client for its
    disconnect delay, dropping what it sends, then closes it; the backend goes at once."""
    caplog.set_level(logging.INFO)
    backend = DroppingBackend()
    await _start_backend(nursery, backend)
    auth = FakeAuth(_ok_reply(backend.port))
    state = ProxyState(max_disconnect_delay=10, rng=random.Random(0))
    sessions, clients = await _logged_in(nursery, auth, state, 5)
    kicked = trio.current_time()
    for session in sessions:
        session.destroy("Kicked by admin")
    closed_at: list[float] = []
    for client in clients:
        with trio.fail_after(15):
            with contextlib.suppress(trio.BrokenResourceError):
                await client.send_all(b"b NOOP\r\n")  # dropped while held
            while await client.receive_some(100):
                raise AssertionError("a kicked client gets nothing")
        closed_at.append(trio.current_time() - kicked)
    lines = [line for line in caplog.text.splitlines() if "Disconnected by proxy: Kicked by admin" in line]
    assert len(lines) == 5
    held = [line for line in lines if " - disconnecting client in " in line]
    assert len(held) == 4  # spread over the delay: the first goes at once
    assert max(closed_at) > 9
    assert state.record("127.0.0.1", backend.port).num_delayed_client_disconnects == 0
    assert all(s.relayed is not None and s.relayed.kicked for s in sessions)


async def test_kick_while_logging_in_to_the_backend(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A pending proxy (backend slow to answer) is kicked too, without a goodbye line."""
    caplog.set_level(logging.INFO)
    silent = trio.Event()

    async def never_greets(stream: trio.SocketStream) -> None:
        await silent.wait()

    listeners = await nursery.start(partial(trio.serve_tcp, never_greets, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    client, server = trio.testing.memory_stream_pair()
    session = LoginSession(
        _ctx(FakeAuth(_ok_reply(port))), IMAP, server, _conn(), implicit_tls=False
    )
    nursery.start_soon(session.run)
    await _read_until(client, b"\r\n")
    await client.send_all(b"a LOGIN alice pw\r\n")
    while not session.proxy_pending:
        await trio.sleep(0.01)
    assert session.backend_address == f"127.0.0.1:{port}"
    session.destroy("Kicked by admin")
    with trio.fail_after(5):
        assert await client.receive_some(100) == b""
    silent.set()
    assert "Disconnected by proxy: Kicked by admin (" in caplog.text


async def test_source_ip_is_used_for_the_backend_connection(nursery: trio.Nursery) -> None:
    peers: list[str] = []

    class Recording(ScriptedBackend):
        async def handle(self, stream: trio.SocketStream) -> None:
            peers.append(stream.socket.getpeername()[0])
            await super().handle(stream)

    backend = Recording()
    await _start_backend(nursery, backend)
    state = ProxyState(source_ips=("127.0.0.61", "127.0.0.62"), rng=random.Random(0))
    auth = FakeAuth(_ok_reply(backend.port))
    for n in range(3):
        client = await start(nursery, auth, proxy_state=state)
        await client.send_all(f"a{n} LOGIN alice pw\r\n".encode())
        await _read_until(client, f"a{n} OK".encode())
    auth.reply = _ok_reply(backend.port, source_ip="127.0.0.63")
    client = await start(nursery, auth, proxy_state=state)
    await client.send_all(b"z LOGIN alice pw\r\n")
    await _read_until(client, b"z OK")
    assert set(peers[:3]) == {"127.0.0.61", "127.0.0.62"}
    assert peers[0] != peers[1]
    assert peers[0] == peers[2]
    assert peers[3] == "127.0.0.63"


async def test_an_unexpected_backend_line_is_logged_and_ignored(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """A tagged line the login dialogue did not ask for: Dovecot logs it as an error
    ("Unexpected input, ignoring") and the login goes on."""
    backend = ScriptedBackend(login_reply=b"X OK stray\r\nL OK [CAPABILITY IMAP4rev1] Logged in\r\n")
    await _start_backend(nursery, backend)
    auth = FakeAuth(_ok_reply(backend.port))
    client = await start(nursery, auth)
    await client.send_all(b"a LOGIN alice pw\r\n")
    assert b"a OK" in await _read_until(client, b"a OK")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"proxy(alice,127.0.0.1:{backend.port}): Unexpected input, ignoring: X OK stray"]


@pytest.mark.parametrize("verbose", [True, False])
async def test_an_attempt_the_engine_refuses_is_logged_with_auth_verbose(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, verbose: bool
) -> None:
    """Dovecot: ``if (auth_verbose) e_info("Login failed: Plaintext authentication disabled")``."""
    caplog.set_level(logging.INFO)
    client, server = trio.testing.memory_stream_pair()
    ctx = _ctx(FakeAuth(_ok_reply(0)), auth_verbose=verbose)
    ctx = dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings, disable_plaintext_auth=True))
    conn = dataclasses.replace(_conn(), secured=False)
    nursery.start_soon(LoginSession(ctx, IMAP, server, conn, implicit_tls=False).run)
    await _read_until(client, b"\r\n")
    await client.send_all(b"a LOGIN alice pw\r\n")
    await _read_until(client, b"a NO")
    await trio.testing.wait_all_tasks_blocked()
    logged = [r.getMessage() for r in caplog.records if "Plaintext authentication disabled" in r.getMessage()]
    if verbose:
        assert len(logged) == 1
        assert logged[0].startswith("Login failed: Plaintext authentication disabled: user=<")
    else:
        assert logged == []


# -- the proxy's log lines (Dovecot 2.3.19's login_proxy_failed() and friends) --------------------


def _closed_port() -> int:
    """A local port nobody listens on (connect: refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_refused_backend_logs_dovecots_connect_error(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Retried as Dovecot does, then one error line with the reconnects and the local address;
    each retry is a debug line with Dovecot's "- reconnecting (attempt #N)"."""
    caplog.set_level(logging.DEBUG)
    port = _closed_port()
    client, server = trio.testing.memory_stream_pair()
    ctx = _ctx(FakeAuth(_ok_reply(port)), login_proxy_max_reconnects=2)
    nursery.start_soon(LoginSession(ctx, IMAP, server, _conn(), implicit_tls=False).run)
    await _read_until(client, b"\r\n")
    await client.send_all(b"a LOGIN alice pw\r\n")
    assert await _read_until(client, b"a NO") == b"a NO [UNAVAILABLE] Account is temporarily unavailable.\r\n"
    prefix = rf"proxy\(alice,127\.0\.0\.1:{port}\): connect\(127\.0\.0\.1, {port}\) failed: Connection refused"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert re.match(prefix + r" \(after 2 secs, 2 reconnects, local=127\.0\.0\.1:\d+\): user=<alice>", errors[0])
    retries = [r.getMessage() for r in caplog.records if "reconnecting" in r.getMessage()]
    assert [re.sub(r"local=[\d.:]+", "local=L", line) for line in retries] == [
        f"proxy(alice,127.0.0.1:{port}): connect(127.0.0.1, {port}) failed: Connection refused "
        f"(after 0 secs, local=L) - reconnecting (attempt #1)",
        f"proxy(alice,127.0.0.1:{port}): connect(127.0.0.1, {port}) failed: Connection refused "
        f"(after 1 secs, 1 reconnects, local=L) - reconnecting (attempt #2)",
    ]
    assert "Login: " not in caplog.text
    assert "Started proxying" not in caplog.text


@pytest.mark.parametrize("verbose", [True, False])
async def test_a_backend_refusing_the_user_is_logged_only_with_auth_verbose(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, verbose: bool
) -> None:
    """client_proxy_log_failure(): ``Login failed[ as user D]: LINE``, an info line, auth_verbose only."""
    caplog.set_level(logging.INFO)
    backend = ScriptedBackend(login_reply=b"L NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
    await _start_backend(nursery, backend)
    client, server = trio.testing.memory_stream_pair()
    ctx = _ctx(FakeAuth(_ok_reply(backend.port, destuser="bob")), auth_verbose=verbose)
    nursery.start_soon(LoginSession(ctx, IMAP, server, _conn(), implicit_tls=False).run)
    await _read_until(client, b"\r\n")
    await client.send_all(b"a LOGIN alice pw\r\n")
    assert b"a NO [AUTHENTICATIONFAILED]" in await _read_until(client, b"a NO")
    expected = (
        f"proxy(alice,127.0.0.1:{backend.port}): Login failed as user bob: "
        "[AUTHENTICATIONFAILED] Authentication failed."  # the backend's line after "L NO "
    )
    lines = [r.getMessage() for r in caplog.records if "Login failed" in r.getMessage()]
    if verbose:
        assert len(lines) == 1, lines
        assert lines[0].startswith(expected + ": user=<alice>"), lines
        assert all(r.levelno == logging.INFO for r in caplog.records)
    else:
        assert lines == []


async def test_a_backend_hanging_up_during_the_login_is_logged_with_state_and_duration(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """proxy_input()'s "Disconnected by server: ... (state=S, duration=Ns)", N counted from the
    client's connect; no "(after ...)" (that is for connect errors)."""

    async def greets_and_hangs_up(stream: trio.SocketStream) -> None:
        await stream.send_all(b"* OK [CAPABILITY IMAP4rev1 ID] ready\r\n")
        await stream.receive_some(65536)

    listeners = await nursery.start(partial(trio.serve_tcp, greets_and_hangs_up, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    client, server = trio.testing.memory_stream_pair()
    ctx = _ctx(FakeAuth(_ok_reply(port)), login_proxy_max_reconnects=0)
    nursery.start_soon(LoginSession(ctx, IMAP, server, _conn(), implicit_tls=False).run)
    await _read_until(client, b"\r\n")
    await trio.sleep(3)
    await client.send_all(b"a LOGIN alice pw\r\n")
    assert await _read_until(client, b"a NO") == b"a NO [UNAVAILABLE] Account is temporarily unavailable.\r\n"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert re.match(
        rf"proxy\(alice,127\.0\.0\.1:{port}\): Disconnected by server: Connection closed "
        r"\(state=\S+, duration=3s\): user=<alice>",
        errors[0],
    ), errors
