"""The auth process's socket side and the login processes' client of it.

Dovecot's login processes never open a passdb: they ask the auth process over
a UNIX socket.  Here that socket carries newline-delimited JSON: a request
``{"id": N, "op": "auth"|"lookup", "req": {...}}`` and a reply
``{"id": N, "reply": {...}}``.  Each login process keeps one connection and
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
from proxyd.auth.request import AuthReply, AuthRequest, AuthStatus, FailCode
from proxyd.auth.wire import reply_from_wire, reply_to_wire, request_from_wire, request_to_wire
from proxyd.master.control import ControlChannel, ControlError

log = logging.getLogger("proxyd.auth")

#: the socket's file name inside the login chroot (Dovecot's ``login/login``)
AUTH_SOCKET_NAME: Final = "auth-login"


async def serve_auth_connections(listener_sock: socket.socket, current: Any) -> None:
    """Accept login-process connections forever; ``current()`` gives the Authenticator to use."""
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(listener_sock))
    await trio.serve_listeners(partial(_serve_one, current), [listener])


async def _serve_one(current: Any, stream: trio.SocketStream) -> None:
    channel = ControlChannel(stream)
    async with trio.open_nursery() as nursery:
        try:
            while (message := await channel.receive()) is not None:
                nursery.start_soon(_answer, channel, message, current())
        except (ControlError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.warning("login process connection broke: %s", exc)
        nursery.cancel_scope.cancel()


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
        self._waiting: dict[int, trio.MemorySendChannel[AuthReply]] = {}
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
                waiter = self._waiting.pop(int(message.get("id", 0)), None)
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
        send, receive = trio.open_memory_channel[AuthReply](1)
        self._waiting[request_id] = send
        try:
            await channel.send({"id": request_id, "op": op, "req": request_to_wire(request)})
            return await receive.receive()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return _COMMUNICATION_FAILURE
        finally:
            self._waiting.pop(request_id, None)

    async def authenticate(self, request: AuthRequest) -> AuthReply:
        return await self._call("auth", request)

    async def lookup(self, request: AuthRequest) -> AuthReply:
        return await self._call("lookup", request)


_COMMUNICATION_FAILURE: Final = AuthReply(
    status=AuthStatus.TEMPFAIL, user="", fail_code=FailCode.TEMP_FAIL, reason="auth process communication failure"
)
