"""The hand-off of a proxied plaintext session to the relay process, over real sockets.

``hand_off()`` (the login process's side) and ``RelayHost`` (the relay process)
talk over a real ``SOCK_SEQPACKET`` socket; the "client" and "backend" are
socketpairs, so what the relay moves between them can be checked byte for byte.
"""

from __future__ import annotations

import array
import contextlib
import functools
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing

from proxyd.config.settings import Settings
from proxyd.ipc.channel import Channel
from proxyd.ipc.messages import (
    Command,
    CountReply,
    Kick,
    Question,
    Reply,
    Report,
    Status,
    Stop,
    Who,
    WhoReply,
    WhoRow,
    read_command,
    read_report,
)
from proxyd.proxied.connection import ProxiedConnection, session_matches
from proxyd.proxied.handoff import HandoffError, HandoffRecord, fds_of, hand_off, parse_last_word
from proxyd.proxied.proxystate import ProxyState
from proxyd.proxied.relay import RelayStats
from proxyd.proxied.relay import relay as relay_bytes
from proxyd.proxied.relayhost import RelayHost

RECORD = HandoffRecord(
    service="imap-login",
    protocol="imap",
    user="alice",
    remote_ip="192.0.2.7",
    backend_ip="127.0.0.2",
    backend_port=143,
    log_fields="user=<alice>, method=PLAIN, rip=192.0.2.7, lip=127.0.0.1, session=<x>",
    connected_at=1700000000.5,
    client_pending=b"b NOOP\r\n",
    backend_pending=b"* 1 EXISTS\r\n",
    backend_host="mail-a.example.test",
)


def test_record_round_trip() -> None:
    assert HandoffRecord.decode(RECORD.encode()) == RECORD


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b"{}", b'{"service": 1}', RECORD.encode().replace(b'"user":"alice"', b'"user":null')],
)
def test_invalid_records_are_refused(data: bytes) -> None:
    with pytest.raises(HandoffError):
        HandoffRecord.decode(data)


def test_line_breaks_never_reach_a_log_line() -> None:
    forged = RECORD.encode().replace(b"user=<alice>", b"user=<alice>\\r\\nFAKE: line")
    assert "\n" not in HandoffRecord.decode(forged).log_fields


def test_fds_of_reads_scm_rights() -> None:
    payload = (3).to_bytes(4, "little") + (9).to_bytes(4, "little")
    assert fds_of([(socket.SOL_SOCKET, socket.SCM_RIGHTS, payload)]) == [3, 9]
    assert fds_of([(socket.SOL_SOCKET, 99, payload)]) == []


@dataclass
class Relay:
    host: RelayHost
    path: str
    control: Channel[Command, Report]

    async def ask(self, message: Question) -> Reply:
        await self.control.send(message)
        while True:
            reply = await self.control.receive()
            assert reply is not None
            if not isinstance(reply, Status):
                assert reply.id == message.id
                return reply


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    path = str(tmp_path / "relay")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(8)
    ours, theirs = trio.socket.socketpair()
    host = RelayHost(
        Settings(), listener, Channel(trio.SocketStream(theirs), read_command), frozenset({"imap-login"})
    )
    with ours, theirs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(host.run)
            yield Relay(host, path, Channel(trio.SocketStream(ours), read_report))
            nursery.cancel_scope.cancel()


def _proxied(client: trio.socket.SocketType, backend: trio.socket.SocketType) -> ProxiedConnection:
    return ProxiedConnection(
        client=trio.SocketStream(client),
        backend=trio.SocketStream(backend),
        client_pending=RECORD.client_pending,
        backend_pending=RECORD.backend_pending,
        user="alice",
        protocol="imap",
        remote_ip=RECORD.remote_ip,
        backend_ip="127.0.0.2",
        backend_port=143,
        log_fields=RECORD.log_fields,
        log=logging.getLogger("imap-login"),
        state=ProxyState(),
        record=None,
    )


async def test_a_handed_off_session_is_relayed_listed_and_kicked(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    user_end, client_end = trio.socket.socketpair()
    server_end, backend_end = trio.socket.socketpair()
    conn = _proxied(client_end, backend_end)
    assert await hand_off(relay.path, "imap-login", conn)
    await conn.release()  # the login process lets go: nothing is sent by that
    with trio.fail_after(5):
        assert await server_end.recv(100) == b"b NOOP\r\n"  # pipelined bytes first
        assert await user_end.recv(100) == b"* 1 EXISTS\r\n"
        await user_end.send(b"c NOOP\r\n")
        assert await server_end.recv(100) == b"c NOOP\r\n"
        await server_end.send(b"c OK done\r\n")
        assert await user_end.recv(100) == b"c OK done\r\n"

        who = await relay.ask(Who("al*", id=1))
        assert isinstance(who, WhoReply)
        assert who.sessions == (
            WhoRow("alice", "imap", "192.0.2.7", "127.0.0.2:143", who.sessions[0].age),
        )
        assert await relay.ask(Kick(("alice",), id=2)) == CountReply(2, 1)
        assert await user_end.recv(100) == b""  # closed, no message
        assert await server_end.recv(100) == b""
    user_end.close()
    server_end.close()
    assert "proxy(alice,127.0.0.2:143): Disconnected by proxy: Kicked by admin: user=<alice>" in caplog.text


async def test_tls_sessions_and_a_missing_relay_stay_in_the_login_process(relay: Relay) -> None:
    a, b = trio.socket.socketpair()
    with a, b:
        conn = _proxied(a, b)
        assert not await hand_off(relay.path + "-missing", "imap-login", conn)
        conn.client = trio.StapledStream(trio.testing.MemorySendStream(), trio.testing.MemoryReceiveStream())
        assert not await hand_off(relay.path, "imap-login", conn)
    assert relay.host.sessions == {}


async def test_garbage_is_refused_and_the_relay_goes_on(relay: Relay, caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(5):
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        await sock.connect(relay.path)
        await sock.send(b"not a record")
        assert await sock.recv(16) == b""  # no answer, just the close
        sock.close()
    assert "refused a hand-off" in caplog.text
    user_end, client_end = trio.socket.socketpair()
    server_end, backend_end = trio.socket.socketpair()
    with user_end, client_end, server_end, backend_end:
        assert await hand_off(relay.path, "imap-login", _proxied(client_end, backend_end))
        assert len(relay.host.sessions) == 1


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("kind", ["pipe", "bad record"])
async def test_refused_descriptors_are_closed_once(
    relay: Relay, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """A hand-off whose descriptors are not two stream sockets, or whose record is no
    record, is refused; the relay's copies of the descriptors are closed, each once."""
    a, b = socket.socketpair()
    r, w = os.pipe()
    fds = [a.fileno(), r] if kind == "pipe" else [a.fileno(), b.fileno()]
    data = b"not a record" if kind == "bad record" else RECORD.encode()
    before = _open_fds()
    try:
        with trio.fail_after(5):
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            with sock:
                await sock.connect(relay.path)
                await sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())])
                assert await sock.recv(16) == b""  # no answer, just the close
            while _open_fds() > before:  # the relay's copies (same process here) go
                await trio.sleep(0.01)
        reason = "not a stream socket" if kind == "pipe" else "invalid hand-off record"
        assert reason in caplog.text
        # ours are untouched: a double close in the relay would have closed one of them
        a.getsockname()
        os.fstat(r)
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


async def test_a_full_relay_answers_no(relay: Relay) -> None:
    relay.host.client_limit = 0
    a, b = trio.socket.socketpair()
    with a, b:
        assert not await hand_off(relay.path, "imap-login", _proxied(a, b))


async def test_a_kick_during_the_hand_off_is_carried_out_by_the_relay(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    """The login process counted the kick; its last word tells the relay process."""
    caplog.set_level(logging.INFO)
    user_end, client_end = socket.socketpair()
    server_end, backend_end = socket.socketpair()
    with user_end, client_end, server_end, backend_end, trio.fail_after(5):
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with sock:
            await sock.connect(relay.path)
            fds = array.array("i", [client_end.fileno(), backend_end.fileno()])
            await sock.sendmsg([RECORD.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
            assert await sock.recv(16) == b"OK"
            await sock.send(b"KICK Kicked by admin")
        client_end.close()
        backend_end.close()
        assert await trio.to_thread.run_sync(user_end.recv, 100) == b""  # closed, no message
    assert "): Disconnected by proxy: Kicked by admin: user=<" in caplog.text
    assert relay.host.sessions == {}


def test_last_words() -> None:
    assert parse_last_word(b"GO") == (True, "")
    assert parse_last_word(b"") == (False, "")  # the login process kept the session
    assert parse_last_word(b"KICK Kicked by admin") == (True, "Kicked by admin")
    assert parse_last_word(b"KICK x\r\ny") == (True, "x??y")


async def test_without_a_last_word_the_relay_drops_its_copies(relay: Relay) -> None:
    """A login process that got no answer in time keeps relaying; when the relay's
    late OK finds no GO, it must not relay the same sockets too."""
    user_end, client_end = socket.socketpair()
    server_end, backend_end = socket.socketpair()
    with user_end, client_end, server_end, backend_end, trio.fail_after(5):
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with sock:
            await sock.connect(relay.path)
            fds = array.array("i", [client_end.fileno(), backend_end.fileno()])
            await sock.sendmsg([RECORD.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
            assert await sock.recv(16) == b"OK"
        while relay.host.sessions:
            await trio.sleep(0.01)
        # nothing was sent on the session (no pending bytes went out, no close)
        server_end.setblocking(False)
        with pytest.raises(BlockingIOError):
            server_end.recv(100)


async def test_a_stopping_relay_takes_no_more(relay: Relay, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a reload the old relay process shares the socket with its successor:
    once told to stop it must leave every new hand-off to the successor."""
    monkeypatch.setattr("proxyd.proxied.handoff.ANSWER_TIMEOUT", 0.5)
    await relay.control.send(Stop())
    while not relay.host.stopping:
        await trio.sleep(0.01)
    a, b = trio.socket.socketpair()
    with a, b:
        assert not await hand_off(relay.path, "imap-login", _proxied(a, b))
    assert relay.host.sessions == {}


def test_kick_selection_by_user_mask_and_backend() -> None:
    """``kick --host``: the backend's IP or the passdb's host name, and the user mask."""
    def match(mask: str, host: str | None) -> bool:
        return session_matches("alice", "127.0.0.2", "mail-a.example.test", [mask], host)

    assert match("*", None)
    assert match("a*", "127.0.0.2")
    assert match("", "mail-a.example.test")
    assert not match("b*", "127.0.0.2")
    assert not match("*", "127.0.0.3")
    assert not match("*", "")
    assert session_matches("alice", "127.0.0.2", "", ["bob", "al*"], None)
    assert session_matches("alice", "127.0.0.2", "", [], None)


# -- high-security: the login process relays a session until it is quiet ------------------


def _fresh(client: trio.socket.SocketType, backend: trio.socket.SocketType) -> ProxiedConnection:
    """A just-logged-in session, as the login process has it (nothing pending)."""
    conn = _proxied(client, backend)
    conn.client_pending = conn.backend_pending = b""
    return conn


async def _run_in_login_process(conn: ProxiedConnection, relay: Relay) -> bool:
    """What ``LoginSession`` does after a login: relay in its scope, offer it once quiet."""
    moved = False
    with trio.CancelScope() as scope:
        moved = await conn.run_within(scope, functools.partial(hand_off, relay.path, "imap-login", conn))
    if moved:
        await conn.release()
    else:
        await conn.kicked_out()
    return moved


async def test_a_session_that_ends_within_the_quiet_time_is_never_handed_off(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    """LOGIN, OK, LOGOUT, BYE, close: the login process relays it to its end itself; the
    relay process never hears of it, and the one disconnect line is the login process's."""
    caplog.set_level(logging.INFO)
    async with _relayed_by_login_process(relay) as s:
        await _round_trip(s, b"z LOGOUT\r\n", b"* BYE Logging out\r\nz OK Logout completed.\r\n")
        s.server.close()  # the backend closes first, as after a LOGOUT
        assert await s.user.recv(100) == b""
    assert s.moved == [False]
    assert relay.host._next_id == 0  # no hand-off ever reached it
    assert not s.conn.moved
    lines = [r.getMessage() for r in caplog.records if "Disconnected" in r.getMessage()]
    assert len(lines) == 1
    assert "proxy(alice,127.0.0.2:143): Disconnected by server (0s idle, in=10, out=43)" in lines[0]


async def _append(into: list[bool], result: Awaitable[bool]) -> None:
    into.append(await result)


@dataclass
class _Relaying:
    """A proxied session its login process relays: the user's and the backend's ends."""

    user: trio.socket.SocketType
    server: trio.socket.SocketType
    conn: ProxiedConnection
    #: ``_run_in_login_process``'s answer once it returned: [moved?]
    moved: list[bool]


@contextlib.asynccontextmanager
async def _relayed_by_login_process(relay: Relay) -> AsyncIterator[_Relaying]:
    """A fresh session relayed as ``LoginSession`` does after a login; the block's end
    waits for that relay to end (or to hand the session off)."""
    user_end, client_end = trio.socket.socketpair()
    server_end, backend_end = trio.socket.socketpair()
    session = _Relaying(user_end, server_end, _fresh(client_end, backend_end), [])
    with user_end, server_end, trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _append(session.moved, _run_in_login_process(session.conn, relay)))
            yield session


async def _round_trip(s: _Relaying, command: bytes, reply: bytes) -> None:
    """The user's command reaches the backend, and the backend's reply the user."""
    await s.user.send(command)
    assert await s.server.recv(100) == command
    await s.server.send(reply)
    assert await s.user.recv(100) == reply


async def test_a_quiet_session_is_handed_off_and_goes_on_in_the_relay_process(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    """Commands relayed by the login process, then quiet: the relay process takes it,
    bytes flow both ways there, and its disconnect line counts the whole session."""
    caplog.set_level(logging.INFO)
    async with _relayed_by_login_process(relay) as s:
        await _round_trip(s, b"b SELECT INBOX\r\n", b"b OK selected\r\n")
        # quiet from here: moved within HANDOFF_QUIET, the login side lets go
        while not s.moved:
            await trio.sleep(0.01)
        assert s.moved == [True]
        assert s.conn.moved
        assert len(relay.host.sessions) == 1
        [moved_conn] = relay.host.sessions.values()
        assert (moved_conn.relayed_in, moved_conn.relayed_out) == (16, 15)
        await _round_trip(s, b"c IDLE\r\n", b"+ idling\r\n")
        s.user.shutdown(socket.SHUT_WR)  # the client leaves
        assert await s.server.recv(100) == b""
        while relay.host.sessions:
            await trio.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records if "Disconnected" in r.getMessage()]
    assert len(lines) == 1
    assert "Disconnected by client (0s idle, in=24, out=25)" in lines[0]


async def test_a_kick_while_the_login_process_relays_ends_it_there(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    """``kick`` before the session is quiet: the login process ends it with Dovecot's line
    (no message to the client), and the relay process never sees it."""
    caplog.set_level(logging.INFO)
    async with _relayed_by_login_process(relay) as s:
        await s.user.send(b"b NOOP\r\n")
        assert await s.server.recv(100) == b"b NOOP\r\n"
        s.conn.kick("Kicked by admin")
        assert await s.user.recv(100) == b""  # closed, no message
        assert await s.server.recv(100) == b""
    assert s.moved == [False]
    assert relay.host._next_id == 0
    lines = [r.getMessage() for r in caplog.records if "Disconnected" in r.getMessage()]
    assert lines == [
        "proxy(alice,127.0.0.2:143): Disconnected by proxy: Kicked by admin: " + RECORD.log_fields
    ]


async def test_a_refused_session_stays_and_keeps_what_was_held(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    """A full relay process: the quiet session goes on in the login process, to its end."""
    caplog.set_level(logging.INFO)
    relay.host.client_limit = 0
    async with _relayed_by_login_process(relay) as s:
        await trio.sleep(0.5)  # quiet: offered and refused by now
        assert relay.host.sessions == {}
        await _round_trip(s, b"c NOOP\r\n", b"c OK\r\n")
        s.user.shutdown(socket.SHUT_WR)
        assert await s.server.recv(100) == b""
    assert s.moved == [False]
    lines = [r.getMessage() for r in caplog.records if "Disconnected" in r.getMessage()]
    assert len(lines) == 1
    assert "Disconnected by client (0s idle, in=8, out=6)" in lines[0]


async def test_bytes_the_relay_holds_go_with_the_hand_off(relay: Relay) -> None:
    """A client that reads nothing for a while: the hub holds what its socket would not
    take (or meets a bulk read), pauses and hands the session off; what it held goes in
    the record, and the client gets every byte, in order, from the relay process."""
    user_end, client_end = socket.socketpair()
    server_end, backend_end = socket.socketpair()
    for sock in (user_end, client_end):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    payload = bytes(range(256)) * 1024  # 256 KiB from the backend
    conn = _fresh(trio.socket.from_stdlib_socket(client_end), trio.socket.from_stdlib_socket(backend_end))
    received = bytearray()
    user_end.settimeout(5)
    server_end.settimeout(5)
    with user_end, server_end, trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            moved: list[bool] = []
            nursery.start_soon(lambda: _append(moved, _run_in_login_process(conn, relay)))
            # (the backend's write ends once the client has read enough)
            nursery.start_soon(functools.partial(trio.to_thread.run_sync, server_end.sendall, payload))
            await trio.sleep(0.6)  # the client reads nothing meanwhile: paused and moved
            assert moved == [True]
            [moved_conn] = relay.host.sessions.values()
            # what the login process had read and not written went in the record, uncounted
            assert moved_conn.backend_pending
            assert moved_conn.relayed_out + len(moved_conn.backend_pending) < len(payload)
            while len(received) < len(payload):
                chunk = await trio.to_thread.run_sync(user_end.recv, 65536)
                assert chunk
                received += chunk
    assert bytes(received) == payload


async def test_relay_pauses_when_quiet_and_gives_back_what_it_held() -> None:
    """``relay(pause_after=...)``: both sides stay open; counts and held bytes add up."""
    user_end, client_end = trio.socket.socketpair()
    server_end, backend_end = trio.socket.socketpair()
    with user_end, client_end, server_end, backend_end, trio.fail_after(5):
        stats = RelayStats()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    relay_bytes, trio.SocketStream(client_end), trio.SocketStream(backend_end),
                    client_pending=b"a NOOP\r\n", stats=stats, pause_after=0.1,
                )
            )
            assert await server_end.recv(100) == b"a NOOP\r\n"
            await server_end.send(b"a OK\r\n")
            assert await user_end.recv(100) == b"a OK\r\n"
        assert stats.paused
        assert not stats.closed_by
        assert (stats.client_to_server, stats.server_to_client) == (8, 6)
        assert stats.held_to_server == stats.held_to_client == b""
        # the sockets are untouched: the session goes on from here
        await user_end.send(b"b NOOP\r\n")
        assert await client_end.recv(100) == b"b NOOP\r\n"
