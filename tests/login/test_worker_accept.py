"""A login process's accept loop: it takes new connections whenever the process has room.

A real ``LoginWorker`` on a real listening socket, with its control channel on a
socketpair whose other end stands for the master.  The auth process is never asked:
the clients here only connect, read the greeting and leave.
"""

from __future__ import annotations

import socket
from functools import partial
from typing import Any

import trio

from proxyd.auth.client import AuthClient
from proxyd.config.settings import EffectiveService, InetListener, Settings
from proxyd.ipc.channel import Channel
from proxyd.ipc.inherited import BoundSocket
from proxyd.ipc.messages import read_command
from proxyd.login import tls
from proxyd.login.session import LoginContext
from proxyd.login.worker import LoginWorker
from proxyd.protocols.imap.plugin import IMAP
from proxyd.sockstream import SockStream
from tests.login.test_session import FakeAuth, _ok_reply

CLIENT_LIMIT = 2


def _worker(listener: socket.socket, control: socket.socket) -> LoginWorker:
    settings = Settings(ssl="no", disable_plaintext_auth=False)
    ctx = LoginContext(
        settings=settings, auth=FakeAuth(_ok_reply(0)), server_tls=None,
        backend_tls=partial(tls.backend_context, settings),
    )
    service = EffectiveService(
        name="imap-login", service_count=0, client_limit=CLIENT_LIMIT, process_limit=1,
        process_min_avail=0, vsz_limit=0, idle_kill=0, user="", group="", chroot="",
    )
    bound = BoundSocket(service="imap-login", listener=InetListener(name="imap", port=0), address="127.0.0.1", sock=listener)
    return LoginWorker(
        ctx, IMAP, service, [bound], Channel(SockStream(control), read_command), AuthClient("/nonexistent")
    )


async def _greeted(port: int) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    with trio.fail_after(5):
        greeting = await stream.receive_some(4096)
    assert greeting.startswith(b"* OK ")
    return stream


async def test_room_freed_while_a_taken_connection_starts_is_seen() -> None:
    """The connection that fills the last slot is taken; before its session registers,
    another client leaves.  The loop saw "full", so the room must wake it: the next
    client is greeted.  (It waited for good when the room was compared with the last
    notification instead of with what the loop saw.)"""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    control, master_end = socket.socketpair()
    worker = _worker(listener, control)
    first: trio.SocketStream | None = None
    original_serve = worker._serve

    async def serve_after_the_first_left(*args: Any) -> None:
        # runs for every taken connection; for the one that fills the process, the
        # first client leaves and its session ends before this session starts
        nonlocal first
        if first is not None and len(worker.clients) + worker.starting >= CLIENT_LIMIT:
            await first.aclose()
            first = None
            with trio.fail_after(5):
                while len(worker.clients) + worker.starting >= CLIENT_LIMIT:
                    await trio.sleep(0.01)
        await original_serve(*args)

    worker._serve = serve_after_the_first_left  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.run)
        first = await _greeted(port)
        second = await _greeted(port)
        third = await _greeted(port)  # the process has room (one client): it must take it
        assert len(worker.clients) == 2
        await second.aclose()
        await third.aclose()
        nursery.cancel_scope.cancel()
    listener.close()
    master_end.close()
    control.close()
