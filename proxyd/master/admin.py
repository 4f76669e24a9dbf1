"""The admin socket under ``base_dir``, the master's side (``proxyctl who|kick|reload|stop``).

The requests and the reply are ``proxyd.ipc.admin`` records, one request per
connection.  Only root (and the owner of ``base_dir``) can reach it: the
socket is mode 0600.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from functools import partial
from typing import Protocol, assert_never

import trio

from proxyd.config.settings import Settings
from proxyd.ipc.admin import (
    AdminCacheFlush,
    AdminKick,
    AdminLastLogin,
    AdminReload,
    AdminReply,
    AdminRequest,
    AdminStop,
    AdminUnknown,
    AdminWho,
    admin_socket_path,
    read_admin_request,
)
from proxyd.ipc.channel import Channel, ControlError
from proxyd.ipc.messages import WhoRow


class Master(Protocol):
    """What the admin socket asks of the master (``proxyd.master.main.Master``)."""

    settings: Settings
    stop_requested: trio.Event

    async def who(self, mask: str) -> list[WhoRow]: ...
    async def kick(self, masks: Sequence[str], host: str | None = None) -> int: ...
    async def flush_cache(self, users: list[str]) -> int: ...
    async def last_login(self, user: str) -> tuple[str | None, float | None]: ...
    async def reload(self) -> str: ...

log = logging.getLogger("proxyd")

async def serve_admin(master: Master, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    path = admin_socket_path(master.settings.base_dir)
    _remove_stale(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    task_status.started()
    try:
        await trio.serve_listeners(partial(_handle, master), [listener])
    finally:
        _remove_stale(path)


def _remove_stale(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


async def _handle(master: Master, stream: trio.SocketStream) -> None:
    channel: Channel[AdminReply, AdminRequest] = Channel(stream, read_admin_request)
    try:
        with trio.fail_after(30):
            request = await channel.receive()
            if request is None:
                return
            await channel.send(await _dispatch(master, request))
    except (ControlError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def _dispatch(master: Master, request: AdminRequest) -> AdminReply:
    match request:
        case AdminWho(mask=mask):
            return AdminReply(ok=True, sessions=tuple(await master.who(mask)))
        case AdminKick(mask=mask, host=host):
            count = await master.kick([mask], host)
            target = mask if host is None else f"-h {host} {mask}"
            log.info("proxyctl kick %s: %d connections kicked", target, count)
            return AdminReply(ok=True, count=count)
        case AdminCacheFlush(users=users):
            return AdminReply(ok=True, count=await master.flush_cache(list(users)))
        case AdminLastLogin(user=user):
            host, at = await master.last_login(user)
            return AdminReply(ok=True, message=host or "", at=at or 0.0)
        case AdminReload():
            text = await master.reload()
            return AdminReply(ok=text == "reloaded", message=text)
        case AdminStop():
            master.stop_requested.set()
            return AdminReply(ok=True)
        case AdminUnknown(name=name):
            return AdminReply(ok=False, message=f"unknown command {name}")
        case _:
            assert_never(request)
