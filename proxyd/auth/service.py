"""The auth process's socket side and the login processes' client of it.

Dovecot's login processes never open a passdb: they ask the auth process over
a UNIX socket.  Here that socket carries newline-delimited JSON: a request
``{"id": N, "op": "auth"|"lookup", "req": {...}}`` and a reply
``{"id": N, "reply": {...}}``.

A mechanism that runs in the auth process (CRAM-MD5, DIGEST-MD5, SCRAM; see
``proxyd.auth.mechanisms``) is a multi-step exchange, as Dovecot's
auth-client protocol has ``AUTH``/``CONT``/``OK``/``FAIL``: the login process
sends ``{"id": N, "op": "sasl", "start": {...}}``, the auth process answers
``{"id": N, "challenge": BASE64}`` for each step, the login process relays
the client's answer as ``{"id": N, "op": "cont", "response": BASE64}`` (or
``{"id": N, "op": "abort"}``), and the exchange ends with a ``reply``.  Only
these base64 lines cross the socket; password hashes never leave the auth
process.  Each login process keeps one connection and
multiplexes its sessions' requests over it by id; the auth process serves each
request in its own task, so a slow hash or a failure delay holds up nobody else.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from functools import partial
from typing import Any, Final

import trio

from proxyd.auth.authenticator import Authenticator
from proxyd.auth.request import AuthReply, AuthRequest, AuthStatus, FailCode, SaslIO, SaslStart
from proxyd.auth.wire import (
    bytes_from_wire,
    bytes_to_wire,
    reply_from_wire,
    reply_to_wire,
    request_from_wire,
    request_to_wire,
    sasl_start_from_wire,
    sasl_start_to_wire,
)
from proxyd.ipc.channel import ControlChannel, ControlError

log = logging.getLogger("proxyd.auth")

#: the socket's file name inside the login chroot (Dovecot's ``login/login``)
AUTH_SOCKET_NAME: Final = "auth-login"
#: an exchange waiting longer than this for the client's answer is dropped
#: (the login process gives up on the client after 180 s anyway)
EXCHANGE_TIMEOUT: Final = 180.0


async def serve_auth_connections(listener_sock: socket.socket, current: Any) -> None:
    """Accept login-process connections forever; ``current()`` gives the Authenticator to use."""
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(listener_sock))
    await trio.serve_listeners(partial(_serve_one, current), [listener])


async def _serve_one(current: Any, stream: trio.SocketStream) -> None:
    channel = ControlChannel(stream)
    # the exchanges in progress on this connection: id -> where their answers go
    exchanges: dict[Any, trio.MemorySendChannel[bytes | None]] = {}
    async with trio.open_nursery() as nursery:
        try:
            while (message := await channel.receive()) is not None:
                op = message.get("op")
                if op == "sasl":
                    send, receive = trio.open_memory_channel[bytes | None](1)
                    exchanges[message.get("id")] = send
                    nursery.start_soon(_exchange, channel, message, current(), receive, exchanges)
                elif op in ("cont", "abort"):
                    _relay_response(message, exchanges)
                else:
                    nursery.start_soon(_answer, channel, message, current())
        except (ControlError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.warning("login process connection broke: %s", exc)
        nursery.cancel_scope.cancel()


def _relay_response(
    message: dict[str, Any], exchanges: dict[Any, trio.MemorySendChannel[bytes | None]]
) -> None:
    waiting = exchanges.get(message.get("id"))
    if waiting is None:
        return  # the exchange ended meanwhile (timeout)
    response: bytes | None = None
    if message.get("op") == "cont":
        try:
            response = bytes_from_wire(message.get("response"))
        except ValueError:
            log.error("invalid auth continuation from login process")
    try:
        waiting.send_nowait(response)
    except trio.WouldBlock:
        log.error("auth continuation from login process without a challenge")


class _ChannelIO:
    """``SaslIO`` over the login-process connection: challenges out, answers in."""

    def __init__(
        self, channel: ControlChannel, request_id: Any, answers: trio.MemoryReceiveChannel[bytes | None]
    ) -> None:
        self._channel = channel
        self._id = request_id
        self._answers = answers

    async def challenge(self, data: bytes) -> bytes | None:
        await self._channel.send({"id": self._id, "challenge": bytes_to_wire(data)})
        with trio.move_on_after(EXCHANGE_TIMEOUT):
            return await self._answers.receive()
        return None


async def _exchange(
    channel: ControlChannel,
    message: dict[str, Any],
    auth: Authenticator,
    answers: trio.MemoryReceiveChannel[bytes | None],
    exchanges: dict[Any, trio.MemorySendChannel[bytes | None]],
) -> None:
    request_id = message.get("id")
    aborted = False
    try:
        try:
            start = sasl_start_from_wire(message["start"])
        except (KeyError, TypeError, ValueError) as exc:
            log.error("invalid auth request from login process: %s", type(exc).__name__)
            reply = AuthReply(status=AuthStatus.TEMPFAIL, user="", fail_code=FailCode.TEMP_FAIL)
        else:
            io = _ChannelIO(channel, request_id, answers)
            reply = await auth.sasl(start, io)
            aborted = reply.reason == "aborted" and reply.status is AuthStatus.FAIL
        if not aborted:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await channel.send({"id": request_id, "reply": reply_to_wire(reply)})
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the login process went away; the nursery ends the rest
    finally:
        exchanges.pop(request_id, None)


async def _answer(channel: ControlChannel, message: dict[str, Any], auth: Authenticator) -> None:
    try:
        request = request_from_wire(message["req"])
        if message.get("op") == "lookup":
            reply = await auth.lookup(request)
        else:
            reply = await auth.authenticate(request)
    except (KeyError, TypeError, ValueError) as exc:
        log.error("invalid auth request from login process: %s", type(exc).__name__)
        reply = AuthReply(status=AuthStatus.TEMPFAIL, user="", fail_code=FailCode.TEMP_FAIL)
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await channel.send({"id": message.get("id"), "reply": reply_to_wire(reply)})


class AuthClient:
    """The login process's view of the auth process (satisfies ``login.session.AuthService``).

    A broken connection makes the pending and following requests a temporary
    failure until a reconnect succeeds, as Dovecot's login processes answer
    while their auth process restarts.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._channel: ControlChannel | None = None
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
        self._channel = ControlChannel(stream)
        self._nursery.start_soon(self._reader, self._channel)

    async def _ensure(self) -> ControlChannel:
        async with self._connect_lock:
            if self._channel is None:
                stream = await trio.open_unix_socket(self.path)
                self._channel = ControlChannel(stream)
                assert self._nursery is not None
                self._nursery.start_soon(self._reader, self._channel)
            return self._channel

    async def _reader(self, channel: ControlChannel) -> None:
        try:
            while (message := await channel.receive()) is not None:
                request_id = int(message.get("id", 0))
                if "challenge" in message:
                    waiter = self._waiting.get(request_id)
                    if waiter is not None:
                        waiter.send_nowait(bytes_from_wire(message["challenge"]))
                    continue
                waiter = self._waiting.pop(request_id, None)
                if waiter is not None:
                    waiter.send_nowait(reply_from_wire(message["reply"]))
        except (ControlError, trio.BrokenResourceError, trio.ClosedResourceError, KeyError, ValueError) as exc:
            log.error("auth process connection broke: %s", exc)
        finally:
            if self._channel is channel:
                self._channel = None
            for waiter in self._waiting.values():
                waiter.send_nowait(_COMMUNICATION_FAILURE)
            self._waiting.clear()
            await trio.aclose_forcefully(channel.stream)

    async def _call(self, op: str, request: AuthRequest) -> AuthReply:
        try:
            channel = await self._ensure()
        except OSError as exc:
            log.error("auth process not reachable at %s: %s", self.path, exc.strerror)
            return _COMMUNICATION_FAILURE
        request_id = self._next_id
        self._next_id += 1
        send, receive = trio.open_memory_channel[AuthReply | bytes](1)
        self._waiting[request_id] = send
        try:
            await channel.send({"id": request_id, "op": op, "req": request_to_wire(request)})
            reply = await receive.receive()
            return reply if isinstance(reply, AuthReply) else _COMMUNICATION_FAILURE
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return _COMMUNICATION_FAILURE
        finally:
            self._waiting.pop(request_id, None)

    async def sasl(self, start: SaslStart, io: SaslIO) -> AuthReply:
        """Run an exchange in the auth process, relaying its challenges through ``io``."""
        try:
            channel = await self._ensure()
        except OSError as exc:
            log.error("auth process not reachable at %s: %s", self.path, exc.strerror)
            return _COMMUNICATION_FAILURE
        request_id = self._next_id
        self._next_id += 1
        # room for a challenge and the failure a broken connection adds
        send, receive = trio.open_memory_channel[AuthReply | bytes](2)
        self._waiting[request_id] = send
        finished = False
        try:
            await channel.send({"id": request_id, "op": "sasl", "start": sasl_start_to_wire(start)})
            while True:
                item = await receive.receive()
                if isinstance(item, AuthReply):
                    finished = True
                    return item
                response = await io.challenge(item)
                if response is None:
                    return _COMMUNICATION_FAILURE  # aborted: the client has its answer already
                await channel.send({"id": request_id, "op": "cont", "response": bytes_to_wire(response)})
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
                    await channel.send({"id": request_id, "op": "abort"})

    async def authenticate(self, request: AuthRequest) -> AuthReply:
        return await self._call("auth", request)

    async def lookup(self, request: AuthRequest) -> AuthReply:
        return await self._call("lookup", request)


_COMMUNICATION_FAILURE: Final = AuthReply(
    status=AuthStatus.TEMPFAIL, user="", fail_code=FailCode.TEMP_FAIL, reason="auth process communication failure"
)
