"""The auth process's side of the login socket (``protocol.py``).

Each login process keeps one connection.  A request is served where it is read,
by the connection's reader, as long as it can be answered at once (a static
passdb, an auth cache hit): the answers of everything read together go out in
one send.  A request that has to wait (a passdb's I/O, a hash in a thread, the
failure delay, a client's answer to a challenge) keeps the task that started it,
and a new task takes over the reading, so a slow request holds up nobody else;
a task is spawned only when a request has to wait.  An exchange waiting for the
client's answer is handed it by the reader.

On a reload the old auth process stops accepting (the listening socket is
shared: connections not yet accepted wait there for its successor) and serves
the connections it has until their login processes close them, as Dovecot's
auth process does ("auth clients should disconnect soon"): a login racing the
reload is answered by the process that took its request, never dropped.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from functools import partial
from typing import Any, Final, TypeVar, assert_never

import trio

from proxyd.auth.authenticator import Authenticator
from proxyd.auth.protocol import (
    Answer,
    BadCall,
    Call,
    Challenge,
    Done,
    Lookup,
    SaslAbort,
    SaslBegin,
    SaslContinue,
)
from proxyd.auth.request import AuthReply, AuthStatus, FailCode, without_secrets
from proxyd.auth.wire import LineReader, encode, encode_into, read_call
from proxyd.ipc.channel import ControlError, send_in_turn
from proxyd.ipc.inherited import accept_forever
from proxyd.sockstream import SockStream
from proxyd.wakeup import Wakeup

log = logging.getLogger("proxyd.auth")

#: an exchange waiting longer than this for the client's answer is dropped
#: (the login process gives up on the client after 180 s anyway)
EXCHANGE_TIMEOUT: Final = 180.0

_BROKEN: Final = (ControlError, trio.BrokenResourceError, trio.ClosedResourceError)
_T = TypeVar("_T")


async def serve_auth_connections(
    listener_sock: socket.socket, current: Callable[[], Authenticator], stop_accepting: trio.Event
) -> None:
    """Accept login-process connections until ``stop_accepting``, then serve those accepted
    until each is closed; ``current()`` gives the Authenticator to use."""
    async with trio.open_nursery() as connections:

        def take(conn: socket.socket, _addr: object) -> None:
            connections.start_soon(_Connection(current, SockStream(conn), connections).read)

        async with trio.open_nursery() as accepting:
            # checked right before each accept(): once the event is set (and our successor
            # may be told so) not one more connection is taken, even one already readable
            accepting.start_soon(partial(
                accept_forever, listener_sock, take, name="auth",
                accepting=lambda: not stop_accepting.is_set(), changed=Wakeup(),
            ))
            await stop_accepting.wait()
            accepting.cancel_scope.cancel()
        # our copy only: the successor (and the master) keep the socket listening
        listener_sock.close()


@types.coroutine
def _resume(coro: Coroutine[Any, Any, _T], trap: Any) -> Generator[Any, Any, _T]:
    """Go on with ``coro`` in this task after its first step stopped at ``trap`` (Trio's
    request to block): what ``await coro`` does after the first step."""
    while True:
        try:
            value = yield trap
        except BaseException as exc:  # Trio's Cancelled among them: the coroutine's to handle
            try:
                trap = coro.throw(exc)
            except StopIteration as stop:
                result: _T = stop.value
                return result
        else:
            try:
                trap = coro.send(value)
            except StopIteration as stop:
                result = stop.value
                return result


class _Connection:
    """One login process's connection.  Whichever task reads it runs ``read``; at most
    one at a time (a reader that blocks on a request hands the reading on first).

    Its tasks live in the nursery of all connections, each in a cancel scope of its own
    (a connection costs no nursery): when the connection ends, the requests still
    waiting on it are cancelled and the socket is closed at once."""

    __slots__ = (
        "_current", "_exchanges", "_lines", "_nursery", "_out", "_pending", "_scopes", "_send_lock", "stream",
    )

    def __init__(self, current: Callable[[], Authenticator], stream: SockStream, nursery: trio.Nursery) -> None:
        self._current = current
        self.stream = stream
        self._nursery = nursery
        #: the cancel scopes of this connection's tasks (its reader, the requests waiting)
        self._scopes: set[trio.CancelScope] = set()
        self._lines = LineReader()
        #: lines read and not yet served
        self._pending: deque[bytes] = deque()
        #: the answers made at once, sent together before the reader waits again
        self._out = bytearray()
        self._send_lock = trio.Lock()
        #: the exchanges in progress: id -> where the client's answers go
        self._exchanges: dict[int, _ConnectionIO] = {}

    async def read(self) -> None:
        """Serve the calls as they arrive, until EOF or a line that is no call."""
        # entered before any request's first step runs here: a request that has to wait
        # goes on in this task, inside this scope
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                await self._read()
            finally:
                self._scopes.discard(scope)

    async def _read(self) -> None:
        blocked = None
        try:
            while (blocked := self._serve_pending()) is None:
                if self._out:
                    await self._flush()
                data = await self.stream.receive_some(65536)
                if not data:
                    break
                self._pending.extend(self._lines.feed(data))
        except _BROKEN as exc:
            log.warning("login process connection broke: %s", exc)
        if blocked is None:
            self._close()
            return
        # this task stays with the request that has to wait; another one reads on
        self._nursery.start_soon(self.read)
        coro, trap = blocked
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            answer = await _resume(coro, trap)
            if answer is not None:
                await self.send(encode(answer))

    def _close(self) -> None:
        """The end of the connection: its waiting requests are cancelled (their answers
        could go nowhere), the socket closed (no checkpoint: the reader ends here)."""
        for scope in self._scopes:
            scope.cancel()
        self.stream.socket.close()

    def _serve_pending(self) -> tuple[Coroutine[Any, Any, Answer | None], Any] | None:
        """Serve the calls read so far as far as they can be answered at once (their answers
        go to ``_out``); the first that has to wait comes back with what it waits for."""
        pending = self._pending
        while pending:
            coro = self._serve(read_call(pending.popleft()))
            if coro is None:
                continue
            try:
                trap = coro.send(None)
            except StopIteration as done:
                if done.value is not None:
                    encode_into(done.value, self._out)
                continue
            return coro, trap
        return None

    def _serve(self, call: Call) -> Coroutine[Any, Any, Answer | None] | None:
        """The coroutine that answers ``call``; None for a call answered by relaying it."""
        match call:
            case SaslBegin():
                return self._exchange(call, self._current())
            case SaslContinue() | SaslAbort():
                self._relay_response(call)
                return None
            case Lookup() | BadCall():
                return _answer(call, self._current())
            case _:
                assert_never(call)

    async def _flush(self) -> None:
        data = bytes(self._out)
        self._out.clear()
        await self.send(data)

    async def send(self, data: bytes) -> None:
        await send_in_turn(self._send_lock, self.stream, data)

    def _relay_response(self, call: SaslContinue | SaslAbort) -> None:
        waiting = self._exchanges.get(call.id)
        if waiting is None:
            return  # the exchange ended meanwhile (timeout)
        response: bytes | None = None
        if isinstance(call, SaslContinue):
            response = call.response
            if response is None:
                log.error("invalid auth continuation from login process")
        waiting.deliver(response)

    async def _exchange(self, call: SaslBegin, auth: Authenticator) -> Done | None:
        """The exchange's ``Done``; None when the client aborted it (nobody waits for one)."""
        io = self._exchanges[call.id] = _ConnectionIO(self, call.id)
        try:
            reply = await auth.sasl(call.start, io)
        finally:
            self._exchanges.pop(call.id, None)
        if reply.reason == "aborted" and reply.status is AuthStatus.FAIL:
            return None
        return Done(call.id, reply)


class _ConnectionIO:
    """``SaslIO`` over the login-process connection: challenges out, the client's answers
    in (``deliver``, from the reader; room for one, as an exchange waits for one at a time)."""

    __slots__ = ("_answer", "_connection", "_has_answer", "_id", "_task")

    def __init__(self, connection: _Connection, request_id: int) -> None:
        self._connection = connection
        self._id = request_id
        self._answer: bytes | None = None
        self._has_answer = False
        #: the exchange's task while it waits for an answer
        self._task: trio.lowlevel.Task | None = None

    def deliver(self, response: bytes | None) -> None:
        """The client's answer (None: aborted, or not base64)."""
        if self._has_answer:
            log.error("auth continuation from login process without a challenge")
            return
        self._answer, self._has_answer = response, True
        if (task := self._task) is not None:
            self._task = None
            trio.lowlevel.reschedule(task)

    def _abort(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def challenge(self, data: bytes) -> bytes | None:
        """Send ``data`` to the client, wait for its answer (None: aborted or timed out)."""
        await self._connection.send(encode(Challenge(self._id, data)))
        if not self._has_answer:
            with trio.move_on_after(EXCHANGE_TIMEOUT):
                self._task = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort)
            if not self._has_answer:
                return None
        answer, self._answer, self._has_answer = self._answer, None, False
        return answer


async def _answer(call: Lookup | BadCall, auth: Authenticator) -> Done:
    try:
        match call:
            case Lookup():
                # a lookup serves routing (LMTP): no password of any kind leaves this process
                reply = without_secrets(await auth.lookup(call.request))
            case BadCall():
                raise ValueError(call.error)
            case _:
                assert_never(call)
    except (KeyError, TypeError, ValueError) as exc:
        name = call.error if isinstance(call, BadCall) else type(exc).__name__
        log.error("invalid auth request from login process: %s", name)
        reply = AuthReply(status=AuthStatus.TEMPFAIL, user="", fail_code=FailCode.TEMP_FAIL)
    return Done(call.id, reply)
