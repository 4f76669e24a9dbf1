"""The login process's client of the auth process (the socket of ``protocol.py``).

Never imports a passdb: a login process only asks (``pyproject.toml``'s
import contracts keep it so).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Final, assert_never

import trio

from proxyd.auth.protocol import (
    Answer,
    Call,
    Challenge,
    Done,
    Lookup,
    SaslAbort,
    SaslBegin,
    SaslContinue,
    read_answer,
)
from proxyd.auth.request import AuthReply, AuthRequest, AuthStatus, FailCode, SaslIO, SaslStart
from proxyd.ipc.channel import Channel, ControlError

log = logging.getLogger("proxyd.auth")

_AuthChannel = Channel[Call, Answer]


class AuthClient:
    """The login process's view of the auth process (satisfies ``login.session.AuthService``).

    A broken connection makes the pending and following requests a temporary
    failure until a reconnect succeeds, as Dovecot's login processes answer
    while their auth process restarts.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._channel: _AuthChannel | None = None
        #: requests waiting for their reply (and, in an exchange, for challenges)
        self._waiting: dict[int, trio.MemorySendChannel[AuthReply | bytes]] = {}
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
        self._channel = Channel(stream, read_answer)
        self._nursery.start_soon(self._reader, self._channel)

    async def _ensure(self) -> _AuthChannel:
        if self._channel is not None:  # connected: no lock (and no checkpoint) needed
            return self._channel
        async with self._connect_lock:
            if self._channel is None:
                stream = await trio.open_unix_socket(self.path)
                self._channel = Channel(stream, read_answer)
                assert self._nursery is not None
                self._nursery.start_soon(self._reader, self._channel)
            return self._channel

    async def _reader(self, channel: _AuthChannel) -> None:
        try:
            while (answer := await channel.receive()) is not None:
                match answer:
                    case Challenge():
                        if (waiter := self._waiting.get(answer.id)) is not None:
                            waiter.send_nowait(answer.data)
                    case Done():
                        if (waiter := self._waiting.pop(answer.id, None)) is not None:
                            waiter.send_nowait(answer.reply)
                    case _:
                        assert_never(answer)
        except (ControlError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if self._channel is channel:  # not our own close()
                log.error("auth process connection broke: %s", exc)
        finally:
            if self._channel is channel:
                self._channel = None
            # after our own close() a newer connection may carry requests: not ours to fail
            if self._channel is None and self._waiting:
                # Dovecot's words; each of them gets a temporary failure
                log.warning("Auth connection closed with %d pending requests", len(self._waiting))
                for waiter in self._waiting.values():
                    waiter.send_nowait(_COMMUNICATION_FAILURE)
                self._waiting.clear()
            await trio.aclose_forcefully(channel.stream)

    async def close(self) -> None:
        """Let go of the auth process (a stopping login process with nobody left logging
        in): after a reload the old auth process ends once its login processes have.  A
        later request connects again."""
        async with self._connect_lock:
            if self._waiting:
                return  # a request still waits for its answer on this connection
            channel, self._channel = self._channel, None
        if channel is not None:
            await trio.aclose_forcefully(channel.stream)

    async def _open(
        self, room: int
    ) -> tuple[_AuthChannel, int, trio.MemoryReceiveChannel[AuthReply | bytes]] | None:
        """The connection, a new request id and where its answers arrive; None (logged)
        when the auth process cannot be reached."""
        try:
            channel = await self._ensure()
        except OSError as exc:
            log.error("auth process not reachable at %s: %s", self.path, exc.strerror)
            return None
        request_id = self._next_id
        self._next_id += 1
        # not open_memory_channel[...](): calling the subscripted alias costs more than
        # the channel (typing's __orig_class__ handling), once per login
        pair: tuple[trio.MemorySendChannel[AuthReply | bytes], trio.MemoryReceiveChannel[AuthReply | bytes]]
        pair = trio.open_memory_channel(room)
        send, receive = pair
        self._waiting[request_id] = send
        return channel, request_id, receive

    async def lookup(self, request: AuthRequest) -> AuthReply:
        """A user lookup without a password check (LMTP routing)."""
        if (opened := await self._open(1)) is None:
            return _COMMUNICATION_FAILURE
        channel, request_id, receive = opened
        try:
            await channel.send(Lookup(request_id, request))
            reply = await receive.receive()
            return reply if isinstance(reply, AuthReply) else _COMMUNICATION_FAILURE
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return _COMMUNICATION_FAILURE
        finally:
            self._waiting.pop(request_id, None)

    async def sasl(self, start: SaslStart, io: SaslIO) -> AuthReply:
        """Run an exchange in the auth process, relaying its challenges through ``io``."""
        # room for a challenge and the failure a broken connection adds
        if (opened := await self._open(2)) is None:
            return _COMMUNICATION_FAILURE
        channel, request_id, receive = opened
        finished = False
        try:
            await channel.send(SaslBegin(request_id, start))
            while True:
                item = await receive.receive()
                if isinstance(item, AuthReply):
                    finished = True
                    return item
                response = await io.challenge(item)
                if response is None:
                    return _COMMUNICATION_FAILURE  # aborted: the client has its answer already
                await channel.send(SaslContinue(request_id, response))
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
                    await channel.send(SaslAbort(request_id))


_COMMUNICATION_FAILURE: Final = AuthReply(
    status=AuthStatus.TEMPFAIL, user="", fail_code=FailCode.TEMP_FAIL, reason="auth process communication failure"
)


def is_communication_failure(reply: AuthReply) -> bool:
    """The reply stands for a lost or unreachable auth process (Dovecot's ``auth_process_comm_fail``)."""
    return reply is _COMMUNICATION_FAILURE
