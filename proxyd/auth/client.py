"""The login process's client of the auth process (the socket of ``protocol.py``).

Never imports a passdb: a login process only asks (``pyproject.toml``'s
import contracts keep it so).
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
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

log = logging.getLogger("proxyd.auth")


class _Connection:
    """The connection to the auth process: calls out (one send each), answers in."""

    __slots__ = ("_lines", "_pending", "_send_lock", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._lines = LineReader()
        self._pending: deque[bytes] = deque()
        self._send_lock = trio.Lock()

    async def send(self, call: SentCall) -> None:
        await send_in_turn(self._send_lock, self.stream, encode(call))

    async def receive(self) -> Answer | None:
        """The next answer, None at EOF; raises ``ControlError`` for a line that is none."""
        while not self._pending:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self._pending.extend(self._lines.feed(data))
        return read_answer(self._pending.popleft())


class _Waiter:
    """Where one request's answers arrive (challenges, then its reply): the reader
    appends and wakes the request's task, which waits for one at a time."""

    __slots__ = ("items", "task")

    def __init__(self) -> None:
        self.items: deque[AuthReply | bytes] = deque()
        self.task: trio.lowlevel.Task | None = None

    def put(self, item: AuthReply | bytes) -> None:
        self.items.append(item)
        if (task := self.task) is not None:
            self.task = None
            trio.lowlevel.reschedule(task)

    def _abort(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        self.task = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def get(self) -> AuthReply | bytes:
        if not self.items:
            self.task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        return self.items.popleft()


class AuthClient:
    """The login process's view of the auth process (satisfies ``login.session.AuthService``).

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
        self._nursery: trio.Nursery | None = None

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the connection's reader running; started in the worker's nursery."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def adopt(self, stream: trio.abc.Stream) -> None:
        """Use an already connected stream (opened before the chroot)."""
        assert self._nursery is not None
        self._connection = _Connection(stream)
        self._nursery.start_soon(self._reader, self._connection)

    async def _ensure(self) -> _Connection:
        if self._connection is not None:  # connected: no lock (and no checkpoint) needed
            return self._connection
        async with self._connect_lock:
            if self._connection is None:
                stream = await trio.open_unix_socket(self.path)
                self._connection = _Connection(stream)
                assert self._nursery is not None
                self._nursery.start_soon(self._reader, self._connection)
            return self._connection

    async def _reader(self, connection: _Connection) -> None:
        try:
            while (answer := await connection.receive()) is not None:
                match answer:
                    case Challenge():
                        if (waiter := self._waiting.get(answer.id)) is not None:
                            waiter.put(answer.data)
                    case Done():
                        if (waiter := self._waiting.pop(answer.id, None)) is not None:
                            waiter.put(answer.reply)
                    case _:
                        assert_never(answer)
        except (ControlError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if self._connection is connection:  # not our own close()
                log.error("auth process connection broke: %s", exc)
        finally:
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

    async def _open(self) -> tuple[_Connection, int, _Waiter] | None:
        """The connection, a new request id and where its answers arrive; None (logged)
        when the auth process cannot be reached."""
        try:
            connection = await self._ensure()
        except OSError as exc:
            log.error("auth process not reachable at %s: %s", self.path, exc.strerror)
            return None
        request_id = self._next_id
        self._next_id += 1
        waiter = self._waiting[request_id] = _Waiter()
        return connection, request_id, waiter

    async def lookup(self, request: AuthRequest) -> AuthReply:
        """A user lookup without a password check (LMTP routing)."""
        if (opened := await self._open()) is None:
            return _COMMUNICATION_FAILURE
        connection, request_id, waiter = opened
        try:
            await connection.send(Lookup.of(request_id, request))
            reply = await waiter.get()
            return reply if isinstance(reply, AuthReply) else _COMMUNICATION_FAILURE
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return _COMMUNICATION_FAILURE
        finally:
            self._waiting.pop(request_id, None)

    async def sasl(self, start: SaslStart, io: SaslIO) -> AuthReply:
        """Run an exchange in the auth process, relaying its challenges through ``io``."""
        if (opened := await self._open()) is None:
            return _COMMUNICATION_FAILURE
        connection, request_id, waiter = opened
        finished = False
        try:
            await connection.send(SaslBegin(request_id, start))
            while True:
                item = await waiter.get()
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
