"""The auth process's side of the login socket (``protocol.py``).

Each login process keeps one connection; every call on it is served in its
own task, so a slow hash or a failure delay holds up nobody else.  An exchange
(``SaslBegin``) keeps a task until its ``Done``, fed the client's answers by
the connection's reader.

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
from collections.abc import Callable
from functools import partial
from typing import Final, assert_never

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
    read_call,
)
from proxyd.auth.request import AuthReply, AuthStatus, FailCode, without_secrets
from proxyd.ipc.channel import Channel, ControlError
from proxyd.ipc.inherited import accept_forever
from proxyd.sockstream import SockStream
from proxyd.wakeup import Wakeup

log = logging.getLogger("proxyd.auth")

#: an exchange waiting longer than this for the client's answer is dropped
#: (the login process gives up on the client after 180 s anyway)
EXCHANGE_TIMEOUT: Final = 180.0

_LoginChannel = Channel[Answer, Call]
#: the exchanges in progress on one connection: id -> where the client's answers go
_Exchanges = dict[int, trio.MemorySendChannel[bytes | None]]
_AnswerChannels = tuple[trio.MemorySendChannel[bytes | None], trio.MemoryReceiveChannel[bytes | None]]


async def serve_auth_connections(
    listener_sock: socket.socket, current: Callable[[], Authenticator], stop_accepting: trio.Event
) -> None:
    """Accept login-process connections until ``stop_accepting``, then serve those accepted
    until each is closed; ``current()`` gives the Authenticator to use."""
    async with trio.open_nursery() as connections:

        def take(conn: socket.socket, _addr: object) -> None:
            stream = SockStream(conn)
            connections.start_soon(_serve_one, current, stream)

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


async def _serve_one(current: Callable[[], Authenticator], stream: SockStream) -> None:
    channel: _LoginChannel = Channel(stream, read_call)
    exchanges: _Exchanges = {}
    async with trio.open_nursery() as nursery:
        try:
            while (call := await channel.receive()) is not None:
                match call:
                    case SaslBegin():
                        # unsubscripted: the typing alias's call costs more than the channel
                        pair: _AnswerChannels = trio.open_memory_channel(1)
                        send, receive = pair
                        exchanges[call.id] = send
                        nursery.start_soon(_exchange, channel, call, current(), receive, exchanges)
                    case SaslContinue() | SaslAbort():
                        _relay_response(call, exchanges)
                    case Lookup() | BadCall():
                        nursery.start_soon(_answer, channel, call, current())
                    case _:
                        assert_never(call)
        except (ControlError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.warning("login process connection broke: %s", exc)
        nursery.cancel_scope.cancel()
    await trio.aclose_forcefully(stream)


def _relay_response(call: SaslContinue | SaslAbort, exchanges: _Exchanges) -> None:
    waiting = exchanges.get(call.id)
    if waiting is None:
        return  # the exchange ended meanwhile (timeout)
    response: bytes | None = None
    if isinstance(call, SaslContinue):
        response = call.response
        if response is None:
            log.error("invalid auth continuation from login process")
    try:
        waiting.send_nowait(response)
    except trio.WouldBlock:
        log.error("auth continuation from login process without a challenge")


class _ChannelIO:
    """``SaslIO`` over the login-process connection: challenges out, answers in."""

    def __init__(
        self, channel: _LoginChannel, request_id: int, answers: trio.MemoryReceiveChannel[bytes | None]
    ) -> None:
        self._channel = channel
        self._id = request_id
        self._answers = answers

    async def challenge(self, data: bytes) -> bytes | None:
        await self._channel.send(Challenge(self._id, data))
        with trio.move_on_after(EXCHANGE_TIMEOUT):
            return await self._answers.receive()
        return None


async def _exchange(
    channel: _LoginChannel,
    call: SaslBegin,
    auth: Authenticator,
    answers: trio.MemoryReceiveChannel[bytes | None],
    exchanges: _Exchanges,
) -> None:
    try:
        reply = await auth.sasl(call.start, _ChannelIO(channel, call.id, answers))
        aborted = reply.reason == "aborted" and reply.status is AuthStatus.FAIL
        if not aborted:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await channel.send(Done(call.id, reply))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the login process went away; the nursery ends the rest
    finally:
        exchanges.pop(call.id, None)


async def _answer(channel: _LoginChannel, call: Lookup | BadCall, auth: Authenticator) -> None:
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
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await channel.send(Done(call.id, reply))
