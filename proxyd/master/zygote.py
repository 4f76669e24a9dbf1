"""The zygote: a pre-imported, never-Trio process that forks the master's children.

Trio must not be running in a process that forks (style.md §4.4), and a fresh
interpreter per login process would cost tens of milliseconds.  So before the
master starts Trio it forks this zygote, which has every module imported and
its heap frozen (``gc.freeze()``), and asks it over a socketpair for each new
child.  The zygote double-forks: the grandchild is orphaned at once and, since
the master is a child subreaper, becomes the master's own child — ``ps`` shows
login processes under the master, and the master reaps them through pidfds.

Requests: ``{"op": "spawn", "kind": "login"|"auth", "service": NAME}`` with the
child's control socket attached (SCM_RIGHTS); reply ``{"pid": N}``.
``{"op": "reload", "settings": ...}`` is not needed: the master sends the
config path and the zygote re-reads it (``{"op": "reload"}``).
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import trio

from proxyd.config.load import load_settings
from proxyd.config.settings import Settings
from proxyd.errors import ConfigError

_PR_SET_CHILD_SUBREAPER: Final = 36

log = logging.getLogger("proxyd")

#: (settings, kind, service, control socket, inherited sockets) -> never returns
ChildMain = Callable[[Settings, str, str, socket.socket, "InheritedSockets"], NoReturn]


@dataclass(slots=True)
class InheritedSockets:
    """Sockets bound by the master before the zygote was forked."""

    #: service name -> listening sockets of that service, with their listener config index
    listeners: dict[str, list[tuple[socket.socket, int, str]]]
    auth: socket.socket
    #: the built-in tcpwrap access service's socket, when login_access_sockets names it
    tcpwrap: socket.socket | None = None
    #: the relay process's hand-off socket, when some login service is in high-security mode
    relay: socket.socket | None = None


def become_subreaper() -> None:
    """Orphaned descendants are re-parented to us, not to init."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


class ZygoteHandle:
    """The master's end: ask for children, one request at a time."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.pid = pid
        self._sock = trio.socket.from_stdlib_socket(sock)
        self._lock = trio.Lock()

    async def _request(self, request: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        async with self._lock:
            data = json.dumps(request).encode()
            if fds:
                await self._sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(_fd_array(fds)))])
            else:
                await self._sock.send(data)
            reply = await self._sock.recv(4096)
        if not reply:
            raise OSError("zygote died")
        result: dict[str, Any] = json.loads(reply)
        return result

    async def spawn(self, kind: str, service: str, control_fd: int) -> int:
        reply = await self._request({"op": "spawn", "kind": kind, "service": service}, [control_fd])
        if "pid" not in reply:
            raise OSError(reply.get("error", "spawn failed"))
        return int(reply["pid"])

    async def reload(self) -> None:
        reply = await self._request({"op": "reload"}, [])
        if "error" in reply:
            raise ConfigError(None, str(reply["error"]))


def _fd_array(fds: list[int]) -> ctypes.Array[ctypes.c_int]:
    return (ctypes.c_int * len(fds))(*fds)


def start_zygote(
    settings: Settings,
    inherited: InheritedSockets,
    child_main: ChildMain,
    on_reload: Callable[[Settings], None] | None = None,
) -> ZygoteHandle:
    """Fork the zygote (call before ``trio.run``); ``on_reload`` rebuilds derived state there."""
    master_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # the zygote
        master_end.close()
        try:
            _zygote_loop(settings, inherited, zygote_end, child_main, on_reload)
        finally:
            os._exit(0)
    zygote_end.close()
    return ZygoteHandle(master_end, pid)


def _zygote_loop(
    settings: Settings,
    inherited: InheritedSockets,
    sock: socket.socket,
    child_main: ChildMain,
    on_reload: Callable[[Settings], None] | None,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from setproctitle import setproctitle

    setproctitle("proxyd: zygote")
    gc.collect()
    gc.freeze()  # children share these pages instead of copying them on the first GC
    while True:
        try:
            data, ancdata, _flags, _addr = sock.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
        except InterruptedError:
            continue
        if not data:
            return  # the master is gone
        fds: list[int] = []
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(int.from_bytes(payload[i : i + 4], sys.byteorder) for i in range(0, len(payload) - len(payload) % 4, 4))
        request = json.loads(data)
        if request.get("op") == "reload":
            try:
                settings = load_settings(settings.config_path)
                if on_reload is not None:
                    on_reload(settings)
            except (ConfigError, OSError, ValueError) as exc:
                sock.send(json.dumps({"error": str(exc)}).encode())
                continue
            sock.send(b'{"ok": true}')
            continue
        try:
            pid = _double_fork(settings, request, fds, inherited, sock, child_main)
            sock.send(json.dumps({"pid": pid}).encode())
        except OSError as exc:
            sock.send(json.dumps({"error": str(exc)}).encode())
        finally:
            for fd in fds:
                os.close(fd)


def _double_fork(
    settings: Settings,
    request: dict[str, Any],
    fds: list[int],
    inherited: InheritedSockets,
    zygote_sock: socket.socket,
    child_main: ChildMain,
) -> int:
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:
        os.close(read_end)
        try:
            second = os.fork()
            if second == 0:
                os.close(write_end)
                zygote_sock.close()
                control = socket.socket(fileno=fds[0])
                child_main(settings, str(request["kind"]), str(request.get("service", "")), control, inherited)
            os.write(write_end, str(second).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        data = os.read(read_end, 32)
    finally:
        os.close(read_end)
        os.waitpid(first, 0)
    if not data:
        raise OSError("fork failed")
    return int(data)
