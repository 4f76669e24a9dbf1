"""The login process's client of the auth process (the socket of ``protocol.py``).

Never imports a passdb: a login process only asks (``pyproject.toml``'s
import contracts keep it so).
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Final, assert_never

import trio

from proxyd.auth.protocol import (
    Answer,
    Challenge,
    Done,
    Lookup,
    SaslAbort,
    SaslBegin,
    SaslContinue,
    SentCall,
)
from proxyd.auth.request import AuthReply, AuthRequest, AuthStatus, FailCode, SaslIO, SaslStart
from proxyd.auth.wire import LineReader, encode, read_answer
from proxyd.ipc.channel import ControlError, send_in_turn
from proxyd.sockstream import socket_of

log = logging.getLogger("proxyd.auth")


class _Connection:
    """The connection to the auth process: calls out (one send each), answers in."""

    __slots__ = ("_lines", "_pending", "_send_lock", "reading", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._lines = LineReader()
        self._pending: deque[bytes] = deque()
        self._send_lock = trio.Lock()
        #: a request's task is reading the connection for everyone (``AuthClient._read``)
        self.reading = False

    async def send(self, call: SentCall) -> None:
        await send_in_turn(self._send_lock, self.stream, encode(call))

    async def receive(self, wait_first: bool = False) -> bool:
        """Wait for answer lines (``next_answer``); False at EOF.  ``wait_first``: nothing
        can have come yet (the only request in flight was just sent), so wait for the
        socket before reading instead of trying a read that would find nothing."""
        while not self._pending:
            if wait_first and (sock := socket_of(self.stream)) is not None:
                await trio.lowlevel.wait_readable(sock)
                wait_first = False
            data = await self.stream.receive_some(65536)
            if not data:
                return False
            self._pending.extend(self._lines.feed(data))
        return True

    def next_answer(self) -> Answer | None:
        """The next answer already read, None when there is none; raises ``ControlError``
        for a line that is none."""
        return read_answer(self._pending.popleft()) if self._pending else None


class _Waiter:
    """Where one request's answers arrive (challenges, then its reply): whoever reads the
    connection appends and wakes the request's task, which waits for one at a time."""

    __slots__ = ("items", "task")

    def __init__(self) -> None:
        self.items: deque[AuthReply | bytes] = deque()
        self.task: trio.lowlevel.Task | None = None

    def put(self, item: AuthReply | bytes) -> None:
        self.items.append(item)
        self.wake()

    def wake(self) -> None:
        """Resume the task if it waits (with an answer, or to take over the reading)."""
        if (task := self.task) is not None:
            self.task = None
            trio.lowlevel.reschedule(task)

    def _abort(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        self.task = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def wait(self) -> None:
        self.task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)


class AuthClient:
    """The login process's view of the auth process (satisfies ``login.session.AuthService``).

    There is no reader task: a request waiting for an answer reads the connection itself
    when nobody else does, hands the other requests' answers to them and, once its own
    has come, goes on in the same task step (no wake-up of a second task per answer);
    the next waiting request takes the reading over.  So nobody reads while nothing is in
    flight: an auth process that went away meanwhile is noticed by the next request,
    whose call then goes on a new connection, as it did when a reader task had seen the
    end first.

    A broken connection makes the pending and following requests a temporary
    failure until a reconnect succeeds, as Dovecot's login processes answer
    while their auth process restarts.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._connection: _Connection | None = None
        #: requests waiting for their reply (and, in an exchange, for challenges)
        self._waiting: dict[int, _Waiter] = {}
        self._next_id = 1
        self._connect_lock = trio.Lock()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the connection while the worker runs (started in its nursery); when that
        ends, close it: requests still pending get a temporary failure."""
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            if (connection := self._connection) is not None:
                await self._drop(connection)

    def adopt(self, stream: trio.abc.Stream) -> None:
        """Use an already connected stream (opened before the chroot)."""
        self._connection = _Connection(stream)

    async def _ensure(self) -> _Connection:
        if self._connection is not None:  # connected: no lock (and no checkpoint) needed
            return self._connection
        async with self._connect_lock:
            if self._connection is None:
                stream = await trio.open_unix_socket(self.path)
                self._connection = _Connection(stream)
            return self._connection

    async def _read(self, connection: _Connection, wait_first: bool = False) -> None:
        """Read what has come (at least one answer, or the end) and hand each answer to its
        request; the caller is the connection's reader meanwhile."""
        connection.reading = True
        done = ended = False
        try:
            if await connection.receive(wait_first):
                while (answer := connection.next_answer()) is not None:
                    match answer:
                        case Challenge():
                            if (waiter := self._waiting.get(answer.id)) is not None:
                                waiter.put(answer.data)
                        case Done():
                            if (waiter := self._waiting.pop(answer.id, None)) is not None:
                                waiter.put(answer.reply)
                        case _:
                            assert_never(answer)
            else:
                ended = True
            done = True
        except (ControlError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            done = ended = True
            if self._connection is connection:  # not our own close()
                log.error("auth process connection broke: %s", exc)
        finally:
            connection.reading = False
            if not done:
                self._hand_over()  # cancelled while reading: another request reads on
        if ended:
            await self._drop(connection)

    def _hand_over(self) -> None:
        """Nobody reads any more: wake a request still waiting, to read in its turn."""
        connection = self._connection
        if connection is None or connection.reading:
            return
        for waiter in self._waiting.values():
            if waiter.task is not None:
                waiter.wake()
                return

    async def _drop(self, connection: _Connection) -> None:
        """The connection ended: its pending requests fail, the next request connects anew."""
        if self._connection is connection:
            self._connection = None
        # after our own close() a newer connection may carry requests: not ours to fail
        if self._connection is None and self._waiting:
            # Dovecot's words; each of them gets a temporary failure
            log.warning("Auth connection closed with %d pending requests", len(self._waiting))
            for waiter in self._waiting.values():
                waiter.put(_COMMUNICATION_FAILURE)
            self._waiting.clear()
        await trio.aclose_forcefully(connection.stream)

    async def _answer(self, connection: _Connection, waiter: _Waiter) -> AuthReply | bytes:
        """The request's next answer (its call was just sent): read by this task when
        nobody else reads."""
        just_sent = True
        while not waiter.items:
            if self._connection is not connection:
                return _COMMUNICATION_FAILURE  # dropped under it (its waiter was failed then)
            if connection.reading:
                await waiter.wait()  # an answer, or the reading is ours now
                just_sent = False
            else:
                # alone in flight and just sent: its answer cannot be there yet
                await self._read(connection, wait_first=just_sent and len(self._waiting) == 1)
                just_sent = False
        self._hand_over()  # this task goes on with its answer: another reads from here
        return waiter.items.popleft()

    async def close(self) -> None:
        """Let go of the auth process (a stopping login process with nobody left logging
        in): after a reload the old auth process ends once its login processes have.  A
        later request connects again."""
        async with self._connect_lock:
            if self._waiting:
                return  # a request still waits for its answer on this connection
            connection, self._connection = self._connection, None
        if connection is not None:
            await trio.aclose_forcefully(connection.stream)

    async def _start(self, call: Callable[[int], SentCall]) -> tuple[_Connection, int, _Waiter] | None:
        """Send a request's first call: the connection, the request's id and where its
        answers arrive; None when the auth process cannot be reached (logged) or the call
        could not be sent.  A connection with nothing in flight that turns out to be gone
        (the auth process went while nobody read) is dropped as a reader would have
        dropped it on seeing its end, and the call goes on a new connection."""
        for _ in range(2):
            try:
                connection = await self._ensure()
            except OSError as exc:
                log.error("auth process not reachable at %s: %s", self.path, exc.strerror)
                return None
            request_id = self._next_id
            self._next_id += 1
            idle = not self._waiting
            waiter = self._waiting[request_id] = _Waiter()
            try:
                await connection.send(call(request_id))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                del self._waiting[request_id]
                if not idle or connection.reading:
                    return None
                await self._read(connection)  # sees the end: logs and drops it as before
                continue
            return connection, request_id, waiter
        return None

    async def lookup(self, request: AuthRequest) -> AuthReply:
        """A user lookup without a password check (LMTP routing)."""
        if (started := await self._start(lambda request_id: Lookup.of(request_id, request))) is None:
            return _COMMUNICATION_FAILURE
        connection, request_id, waiter = started
        try:
            reply = await self._answer(connection, waiter)
            return reply if isinstance(reply, AuthReply) else _COMMUNICATION_FAILURE
        finally:
            self._waiting.pop(request_id, None)

    async def sasl(self, start: SaslStart, io: SaslIO) -> AuthReply:
        """Run an exchange in the auth process, relaying its challenges through ``io``."""
        if (started := await self._start(lambda request_id: SaslBegin(request_id, start))) is None:
            return _COMMUNICATION_FAILURE
        connection, request_id, waiter = started
        finished = False
        try:
            while True:
                item = await self._answer(connection, waiter)
                if isinstance(item, AuthReply):
                    finished = True
                    return item
                response = await io.challenge(item)
                if response is None:
                    return _COMMUNICATION_FAILURE  # aborted: the client has its answer already
                await connection.send(SaslContinue(request_id, response))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            finished = True
            return _COMMUNICATION_FAILURE
        finally:
            self._waiting.pop(request_id, None)
            if not finished:
                # the client aborted or went away: let the auth process forget the exchange
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(1),
                    contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
                ):
                    await connection.send(SaslAbort(request_id))


_COMMUNICATION_FAILURE: Final = AuthReply(
    status=AuthStatus.TEMPFAIL, user="", fail_code=FailCode.TEMP_FAIL, reason="auth process communication failure"
)


def is_communication_failure(reply: AuthReply) -> bool:
    """The reply stands for a lost or unreachable auth process (Dovecot's ``auth_process_comm_fail``)."""
    return reply is _COMMUNICATION_FAILURE
