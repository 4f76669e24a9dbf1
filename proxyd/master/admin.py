"""The admin socket under ``base_dir`` (``proxyctl who|kick|reload|stop``).

One request per connection: a JSON line ``{"cmd": "who", "mask": "*"}`` in,
one JSON line out.  Only root (and the owner of ``base_dir``) can reach it:
the socket is mode 0600.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Sequence
from functools import partial
from typing import Any, Final, Protocol

import trio

from proxyd.config.settings import Settings
from proxyd.ipc.channel import ControlChannel, ControlError
from proxyd.ipc.messages import WhoRow


class Master(Protocol):
    """What the admin socket asks of the master (``proxyd.master.main.Master``)."""

    settings: Settings
    stop_requested: trio.Event

    async def who(self, mask: str) -> list[WhoRow]: ...
    async def kick(self, masks: Sequence[str], host: str | None = None) -> int: ...
    async def flush_cache(self, users: list[str]) -> int: ...
    async def reload(self) -> str: ...

log = logging.getLogger("proxyd")

ADMIN_SOCKET_NAME: Final = "master"


def admin_socket_path(base_dir: str) -> str:
    return os.path.join(base_dir, ADMIN_SOCKET_NAME)


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
    channel = ControlChannel(stream)
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


async def _dispatch(master: Master, request: dict[str, Any]) -> dict[str, Any]:
    cmd = request.get("cmd")
    mask = str(request.get("mask") or "*")
    if cmd == "who":
        return {"ok": True, "sessions": [row.wire() for row in await master.who(mask)]}
    if cmd == "kick":
        host = request.get("host")
        host = None if host is None else str(host)
        count = await master.kick([mask], host)
        target = mask if host is None else f"-h {host} {mask}"
        log.info("proxyctl kick %s: %d connections kicked", target, count)
        return {"ok": True, "count": count}
    if cmd == "cache-flush":
        users = [str(u) for u in request.get("users") or []]
        return {"ok": True, "count": await master.flush_cache(users)}
    if cmd == "reload":
        text = await master.reload()
        return {"ok": text == "reloaded", "message": text}
    if cmd == "stop":
        master.stop_requested.set()
        return {"ok": True}
    return {"ok": False, "message": f"unknown command {cmd!r}"}


def admin_request(base_dir: str, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """The client side (blocking), for proxyctl."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(admin_socket_path(base_dir))
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data) if data else {"ok": False, "message": "no reply"}
    return reply
