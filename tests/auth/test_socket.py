"""The auth socket end to end in one Trio run: ``serve_auth_connections`` (the auth
process's side) and ``AuthClient`` (a login process's) over a real UNIX socket, with a
real authenticator over in-memory passdbs.

A request the passdb answers at once is answered by the connection's reader; one that
has to wait (a passdb's I/O, the failure delay, a challenge) keeps a task of its own
while the others go on."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyd.auth.authenticator import Authenticator
from proxyd.auth.client import AuthClient, is_communication_failure
from proxyd.auth.passdb import PassdbReply, PassdbResult
from proxyd.auth.protocol import Done, SaslBegin
from proxyd.auth.request import AuthReply, AuthRequest, AuthStatus, FailCode, SaslStart
from proxyd.auth.server import serve_auth_connections
from proxyd.auth.wire import MAX_LINE, LineReader, encode, read_answer, read_call
from proxyd.sockstream import SockStream
from tests.auth.fakes import FakePassdb, make_chain
from tests.auth.util import make_conn, make_request

# nopassword, as the rig's static passdb: a stored password is checked in a worker thread
_USERS = {
    "alice": [("nopassword", ""), ("proxy", ""), ("host", "127.0.0.2")],
    "slow": [("nopassword", ""), ("proxy", ""), ("host", "127.0.0.3")],
    "carol": [("password", "secret"), ("proxy", ""), ("host", "127.0.0.4")],
}


class _Passdb(FakePassdb):
    """Answers at once (as the static driver or an auth cache hit does), except for
    users whose name starts with "slow": those wait a second (a database round trip)."""

    async def lookup(self, request: AuthRequest) -> PassdbReply:
        if request.user.startswith("slow"):
            await trio.sleep(1)
        self.calls.append(request.user)
        if request.user not in self.users:
            return PassdbReply(PassdbResult.USER_UNKNOWN)
        return PassdbReply(PassdbResult.OK, tuple(self.users[request.user]))


class _NoChallenges:
    async def challenge(self, data: bytes) -> bytes | None:
        raise AssertionError("PLAIN with an initial response has no challenge")


class _Cram:
    """A CRAM-MD5 client; ``abort``: it gives up at the challenge instead."""

    def __init__(self, user: str, password: str, *, abort: bool = False) -> None:
        self.user, self.password, self.abort = user, password, abort
        self.challenges: list[bytes] = []

    async def challenge(self, data: bytes) -> bytes | None:
        self.challenges.append(data)
        if self.abort:
            return None
        digest = hmac.new(self.password.encode(), data, hashlib.md5).hexdigest()
        return f"{self.user} {digest}".encode()


def _plain(user: str, password: str) -> SaslStart:
    return SaslStart(make_conn(), "PLAIN", f"\0{user}\0{password}".encode())


@contextlib.asynccontextmanager
async def _auth_server(path: str, authenticator: Authenticator) -> AsyncIterator[tuple[trio.Nursery, trio.Event]]:
    """The auth process's accept loop on ``path``, in a nursery of its own; setting the
    event stops it accepting (the nursery then ends with its last connection)."""
    stop = trio.Event()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(16)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_auth_connections, listener, lambda: authenticator, stop)
            yield nursery, stop


@pytest.fixture
async def auth_path(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[str]:
    path = str(tmp_path / "login")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    authenticator = Authenticator(make_chain(_Passdb(_USERS)), failure_delay=2.0)
    stop = trio.Event()
    nursery.start_soon(serve_auth_connections, listener, lambda: authenticator, stop)
    with listener:
        yield path
        stop.set()


@pytest.fixture
async def client(auth_path: str, nursery: trio.Nursery) -> AuthClient:
    auth = AuthClient(auth_path)
    await nursery.start(auth.run)
    return auth


async def test_a_login_the_passdb_answers_at_once(client: AuthClient) -> None:
    reply = await client.sasl(_plain("alice", "secret"), _NoChallenges())
    assert reply.status is AuthStatus.OK
    assert reply.user == "alice"
    assert reply.fields == {"proxy": "", "host": "127.0.0.2", "pass": "secret"}


async def test_a_waiting_request_holds_up_nobody(
    client: AuthClient, autojump_clock: trio.testing.MockClock
) -> None:
    """A slow lookup and a failure (2 s delay) wait in their own tasks; logins answered
    at once are answered meanwhile, on the same connection."""
    done: dict[str, tuple[AuthReply, float]] = {}

    async def login(name: str, user: str, password: str) -> None:
        reply = await client.sasl(_plain(user, password), _NoChallenges())
        done[name] = (reply, trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(login, "slow", "slow", "secret")
        nursery.start_soon(login, "wrong", "nobody", "wrong")
        await trio.testing.wait_all_tasks_blocked()
        for n in range(3):
            nursery.start_soon(login, f"fast{n}", "alice", "secret")
    assert done["slow"][0].status is AuthStatus.OK
    assert done["slow"][0].fields["host"] == "127.0.0.3"
    assert done["slow"][1] == pytest.approx(1.0)
    assert done["wrong"][0].status is AuthStatus.FAIL
    assert done["wrong"][0].fail_code is FailCode.AUTH_FAILED
    assert done["wrong"][1] == pytest.approx(2.0)
    for n in range(3):
        assert done[f"fast{n}"][0].status is AuthStatus.OK
        assert done[f"fast{n}"][1] == 0


async def test_a_request_cancelled_while_it_reads_leaves_the_reading_to_the_next(
    client: AuthClient, autojump_clock: trio.testing.MockClock
) -> None:
    """Requests read the connection themselves, one at a time: the first one waiting reads
    for everyone; cancelled meanwhile, it hands the reading on, and nothing is lost."""
    done: dict[str, tuple[AuthReply, float]] = {}

    async def login(name: str, user: str, password: str) -> None:
        reply = await client.sasl(_plain(user, password), _NoChallenges())
        done[name] = (reply, trio.current_time())

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as first:
            nursery.start_soon(login, "wrong", "nobody", "wrong")  # answered after 2 s
            await trio.testing.wait_all_tasks_blocked()
            cancelled = trio.CancelScope()

            async def slow() -> None:
                with cancelled:
                    await login("slow", "slow", "secret")

            nursery.start_soon(slow)
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(0.5)
            cancelled.cancel()  # one of the two was reading
            await trio.sleep(0.1)
            nursery.start_soon(login, "fast", "alice", "secret")
        assert not first.cancelled_caught
    assert "slow" not in done
    assert done["wrong"][0].status is AuthStatus.FAIL
    assert done["wrong"][1] == pytest.approx(2.0)
    assert done["fast"][0].status is AuthStatus.OK
    assert done["fast"][1] == pytest.approx(0.6)


async def _one_shot_auth(path: str, answers: int, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """An auth process that takes one connection, answers its first ``answers`` calls
    with an OK, reads on without answering, and goes away when its listener is closed
    (cancelled): its connection ends then."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        task_status.started()
        await trio.lowlevel.wait_readable(listener)
        conn, _ = listener.accept()
        stream = SockStream(conn)
        reader = LineReader()
        try:
            while data := await stream.receive_some():
                for line in reader.feed(data):
                    call = read_call(line)
                    if answers > 0:
                        answers -= 1
                        await stream.send_all(encode(Done(call.id, AuthReply(AuthStatus.OK, "alice"))))
        finally:
            conn.close()
            os.unlink(path)


async def test_an_auth_process_gone_while_idle_is_reconnected_to(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody reads while nothing is in flight: the next request notices the end, and its
    call goes on a new connection (nothing logged, as when a reader task saw the end)."""
    path = str(tmp_path / "login")
    client = AuthClient(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        async with trio.open_nursery() as first:
            await first.start(_one_shot_auth, path, 1)
            assert (await client.sasl(_plain("alice", "x"), _NoChallenges())).status is AuthStatus.OK
            first.cancel_scope.cancel()  # the auth process goes away
        await nursery.start(_one_shot_auth, path, 1)
        with caplog.at_level(logging.DEBUG, logger="proxyd.auth"):
            reply = await client.sasl(_plain("alice", "x"), _NoChallenges())
        assert reply.status is AuthStatus.OK
        assert not is_communication_failure(reply)
        assert not [r for r in caplog.records if r.name == "proxyd.auth"]
        nursery.cancel_scope.cancel()


async def test_an_auth_process_gone_under_pending_requests_fails_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "login")
    client = AuthClient(path)
    replies: list[AuthReply] = []

    async def login() -> None:
        replies.append(await client.sasl(_plain("alice", "x"), _NoChallenges()))

    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        async with trio.open_nursery() as logins, trio.open_nursery() as server:
            await server.start(_one_shot_auth, path, 0)
            logins.start_soon(login)
            logins.start_soon(login)
            await trio.testing.wait_all_tasks_blocked()
            server.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    assert len(replies) == 2
    assert all(is_communication_failure(reply) for reply in replies)
    assert "Auth connection closed with 2 pending requests" in caplog.text


async def test_an_exchange_with_challenges(
    client: AuthClient, autojump_clock: trio.testing.MockClock
) -> None:
    io = _Cram("carol", "secret")
    reply = await client.sasl(SaslStart(make_conn(), "CRAM-MD5", None), io)
    assert reply.status is AuthStatus.OK
    assert reply.user == "carol"
    assert reply.fields["host"] == "127.0.0.4"
    assert len(io.challenges) == 1
    assert io.challenges[0].startswith(b"<")
    # and one with the wrong password fails after the failure delay
    failed = await client.sasl(SaslStart(make_conn(), "CRAM-MD5", None), _Cram("carol", "x"))
    assert failed.status is AuthStatus.FAIL
    assert trio.current_time() == pytest.approx(2.0)


async def test_an_aborted_exchange_is_forgotten(client: AuthClient) -> None:
    io = _Cram("carol", "secret", abort=True)
    reply = await client.sasl(SaslStart(make_conn(), "CRAM-MD5", None), io)
    assert reply.status is AuthStatus.TEMPFAIL  # the login process's own answer stands
    assert io.challenges
    # the connection goes on serving
    assert (await client.sasl(_plain("alice", "secret"), _NoChallenges())).status is AuthStatus.OK


async def test_a_lookup_never_carries_a_password(client: AuthClient) -> None:
    reply = await client.lookup(make_request("alice"))
    assert reply.status is AuthStatus.OK
    assert reply.fields == {"proxy": "", "host": "127.0.0.2"}


async def _raw(path: str) -> trio.SocketStream:
    return await trio.open_unix_socket(path)


async def _answers(stream: trio.SocketStream, count: int) -> list[Done]:
    reader, answers = LineReader(), []
    while len(answers) < count:
        data = await stream.receive_some()
        assert data, "the auth process closed the connection"
        answers += [read_answer(line) for line in reader.feed(data)]
    assert all(isinstance(answer, Done) for answer in answers)
    return answers  # type: ignore[return-value]


async def _closed(stream: trio.SocketStream) -> bool:
    """The other side closed (with unread data left: a reset)."""
    try:
        return await stream.receive_some() == b""
    except trio.BrokenResourceError:
        return True


async def test_answers_made_together_go_out_in_one_send(auth_path: str) -> None:
    stream = await _raw(auth_path)
    calls = b"".join(encode(SaslBegin(n, _plain("alice", "secret"))) for n in (1, 2, 3))
    await stream.send_all(calls)
    data = await stream.receive_some()
    answers = [read_answer(line) for line in LineReader().feed(data)]
    assert [answer.id for answer in answers] == [1, 2, 3]
    assert all(isinstance(a, Done) and a.reply.status is AuthStatus.OK for a in answers)
    await stream.aclose()


async def test_bad_lines_never_take_the_auth_process_down(
    auth_path: str, client: AuthClient, caplog: pytest.LogCaptureFixture
) -> None:
    # a call with an id whose body cannot be read: a temporary failure for that id
    stream = await _raw(auth_path)
    await stream.send_all(b'["sasl",7,{"conn":{},"mech":"PLAIN"}]\n["lookup",8]\n')
    first, second = await _answers(stream, 2)
    assert {first.id, second.id} == {7, 8}
    assert first.reply.status is second.reply.status is AuthStatus.TEMPFAIL
    assert "invalid auth request from login process: ValidationError" in caplog.text
    # a line that is no call at all: that connection ends, nothing else
    with caplog.at_level(logging.WARNING):
        await stream.send_all(b"\xff\xfe not json\n")
        assert await stream.receive_some() == b""
    assert "login process connection broke: invalid auth call" in caplog.text
    await stream.aclose()
    # a line too long (the auth process may close while it is still being sent)
    stream = await _raw(auth_path)
    with contextlib.suppress(trio.BrokenResourceError):
        await stream.send_all(b"x" * (MAX_LINE + 65536))
    assert await _closed(stream)
    assert "login process connection broke: auth message too long" in caplog.text
    await stream.aclose()
    assert (await client.sasl(_plain("alice", "secret"), _NoChallenges())).status is AuthStatus.OK


async def test_a_request_with_extra_fields_is_refused(auth_path: str) -> None:
    """Nothing a login process sends sets what only the auth process sets (``passdb_fields``)."""
    stream = await _raw(auth_path)
    line = json.loads(encode(SaslBegin(3, _plain("alice", "secret"))))
    line.append({"passdb_fields": {"host": "192.0.2.1"}})
    await stream.send_all(json.dumps(line).encode() + b"\n")
    (answer,) = await _answers(stream, 1)
    assert answer.id == 3
    assert answer.reply.status is AuthStatus.TEMPFAIL
    await stream.aclose()


async def test_answers_to_no_challenge_are_refused(
    auth_path: str, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    stream = await _raw(auth_path)
    await stream.send_all(encode(SaslBegin(5, SaslStart(make_conn(), "CRAM-MD5", None))))
    (line,) = LineReader().feed(await stream.receive_some())
    assert read_answer(line).id == 5
    # an answer to no challenge is refused; a second one before the client's is logged
    await stream.send_all(b'["cont",9,"eA=="]\n["cont",5,"!!"]\n["cont",5,"eA=="]\n')
    await trio.testing.wait_all_tasks_blocked()
    assert "invalid auth continuation from login process" in caplog.text
    assert "auth continuation from login process without a challenge" in caplog.text
    # ("!!" was taken as an abort: the exchange ended, nothing more is sent for it)
    await stream.send_all(encode(SaslBegin(6, _plain("alice", "x"))))
    (done,) = await _answers(stream, 1)
    assert done.id == 6
    assert trio.current_time() == 0
    await stream.aclose()


async def test_a_login_process_that_goes_away_cancels_its_waiting_requests(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Its slow lookups and exchanges waiting for an answer end with the connection, and a
    stopping auth process ends once its connections have (nothing waits for a timeout)."""
    path = str(tmp_path / "login")
    passdb = _Passdb(_USERS)
    authenticator = Authenticator(make_chain(passdb), failure_delay=2.0)
    async with _auth_server(path, authenticator) as (_, stop):
        stream = await _raw(path)
        await stream.send_all(
            encode(SaslBegin(1, _plain("slow", "x")))
            + encode(SaslBegin(2, SaslStart(make_conn(), "CRAM-MD5", None)))
        )
        (line,) = LineReader().feed(await stream.receive_some())
        assert read_answer(line).id == 2  # the challenge; the lookup of "slow" waits
        stop.set()
        await stream.aclose()
    # the nursery ended: serve_auth_connections returned with nothing left waiting
    assert trio.current_time() < 1
    assert "slow" not in passdb.calls


_calls = st.sampled_from(["lookup", "sasl", "cont", "abort", "challenge", "done", "auth"])
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=5) | st.binary(max_size=5).map(
        lambda b: base64.b64encode(b).decode()
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["conn", "mech", "initial_response", "x"]), inner, max_size=3),
    max_leaves=8,
)
_lines = st.lists(
    st.one_of(
        st.tuples(_calls, st.integers(0, 5), st.lists(_values, max_size=3)).map(
            lambda t: json.dumps([t[0], t[1], *t[2]]).encode()
        ),
        st.binary(max_size=30).filter(lambda b: b"\n" not in b),
    ),
    max_size=6,
)


@settings(max_examples=40, deadline=None)
@given(lines=_lines)
def test_any_lines_leave_the_auth_process_serving(tmp_path_factory: pytest.TempPathFactory, lines: list[bytes]) -> None:
    """Whatever a (broken) login process sends, the auth process answers or drops that
    connection, and serves the next one."""
    path = str(tmp_path_factory.mktemp("fuzz") / "login")

    async def main() -> None:
        authenticator = Authenticator(make_chain(_Passdb(_USERS)), failure_delay=0)
        async with _auth_server(path, authenticator) as (nursery, stop):
            stream = await _raw(path)
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(b"".join(line + b"\n" for line in lines))
                await stream.send_eof()
            # answered to the end, or dropped: either way the connection ends
            with trio.fail_after(5), contextlib.suppress(trio.BrokenResourceError):
                while await stream.receive_some():
                    pass
            await stream.aclose()
            client = AuthClient(path)
            await nursery.start(client.run)
            reply = await client.sasl(_plain("alice", "x"), _NoChallenges())
            assert reply.status is AuthStatus.OK
            await client.close()
            stop.set()
            nursery.cancel_scope.cancel()

    trio.run(main)
