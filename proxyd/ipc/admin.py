"""The admin socket's messages (``proxyctl`` -> master), and its blocking client.

One request per connection: a JSON line in (``{"cmd": "who", "mask": "*"}``),
one JSON line out (``{"ok": true, "sessions": [...]}``).  The master serves it
(``proxyd.master.admin``); ``proxyctl`` asks with ``admin_request``.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

from proxyd.ipc.channel import ControlError
from proxyd.ipc.messages import WhoRow

ADMIN_SOCKET_NAME: Final = "master"


def admin_socket_path(base_dir: str) -> str:
    return os.path.join(base_dir, ADMIN_SOCKET_NAME)


@dataclass(frozen=True, slots=True)
class AdminWho:
    """``proxyctl who [MASK]``: the proxied sessions."""

    TAG: ClassVar[str] = "who"
    mask: str = "*"

    def wire(self) -> Mapping[str, Any]:
        return {"cmd": self.TAG, "mask": self.mask}


@dataclass(frozen=True, slots=True)
class AdminKick:
    """``proxyctl kick [--host HOST] [MASK]``."""

    TAG: ClassVar[str] = "kick"
    mask: str = "*"
    host: str | None = None

    def wire(self) -> Mapping[str, Any]:
        return {"cmd": self.TAG, "mask": self.mask, "host": self.host}


@dataclass(frozen=True, slots=True)
class AdminCacheFlush:
    """``proxyctl auth cache flush [USER...]`` (all entries when ``users`` is empty)."""

    TAG: ClassVar[str] = "cache-flush"
    users: tuple[str, ...] = ()

    def wire(self) -> Mapping[str, Any]:
        return {"cmd": self.TAG, "users": list(self.users)}


@dataclass(frozen=True, slots=True)
class AdminReload:
    """``proxyctl reload`` (SIGHUP)."""

    TAG: ClassVar[str] = "reload"

    def wire(self) -> Mapping[str, Any]:
        return {"cmd": self.TAG}


@dataclass(frozen=True, slots=True)
class AdminStop:
    """``proxyctl stop``."""

    TAG: ClassVar[str] = "stop"

    def wire(self) -> Mapping[str, Any]:
        return {"cmd": self.TAG}


@dataclass(frozen=True, slots=True)
class AdminLastLogin:
    """Where ``user``'s last login went (``proxyctl move --wait``): the reply's ``message``
    is the host ("" when none is known) and ``at`` its wall-clock time."""

    TAG: ClassVar[str] = "last-login"
    user: str = ""

    def wire(self) -> Mapping[str, Any]:
        return {"cmd": self.TAG, "user": self.user}


@dataclass(frozen=True, slots=True)
class AdminUnknown:
    """A command this master does not know (answered ``ok: false``)."""

    name: str

    def wire(self) -> Mapping[str, Any]:
        return {"cmd": self.name}


AdminRequest: TypeAlias = (
    AdminWho | AdminKick | AdminCacheFlush | AdminLastLogin | AdminReload | AdminStop | AdminUnknown
)


@dataclass(frozen=True, slots=True)
class AdminReply:
    """The answer: ``ok``, and what the command returns (a message, a count, sessions)."""

    ok: bool
    message: str = ""
    count: int = 0
    sessions: tuple[WhoRow, ...] = ()
    #: a wall-clock time (``AdminLastLogin``)
    at: float = 0.0

    def wire(self) -> Mapping[str, Any]:
        return {
            "ok": self.ok,
            "message": self.message,
            "count": self.count,
            "sessions": [row.wire() for row in self.sessions],
            "at": self.at,
        }


def read_admin_request(data: dict[str, Any]) -> AdminRequest:
    """The request a decoded line holds (as lenient as ``proxyctl`` needs)."""
    cmd = data.get("cmd")
    mask = str(data.get("mask") or "*")
    match cmd:
        case AdminWho.TAG:
            return AdminWho(mask)
        case AdminKick.TAG:
            host = data.get("host")
            return AdminKick(mask, None if host is None else str(host))
        case AdminCacheFlush.TAG:
            users = data.get("users") or []
            if not isinstance(users, list):
                raise ControlError("users: not a list")
            return AdminCacheFlush(tuple(str(user) for user in users))
        case AdminLastLogin.TAG:
            return AdminLastLogin(str(data.get("user") or ""))
        case AdminReload.TAG:
            return AdminReload()
        case AdminStop.TAG:
            return AdminStop()
    return AdminUnknown(repr(cmd))


def read_admin_reply(data: Mapping[str, Any]) -> AdminReply:
    """The reply a decoded line holds; raises ``ControlError``."""
    try:
        sessions = tuple(WhoRow.read(row) for row in data.get("sessions") or ())
        return AdminReply(
            ok=bool(data.get("ok")),
            message=str(data.get("message") or ""),
            count=int(data.get("count") or 0),
            sessions=sessions,
            at=float(data.get("at") or 0.0),
        )
    except (TypeError, ValueError) as exc:
        raise ControlError(f"invalid admin reply: {exc}") from None


def admin_request(base_dir: str, request: AdminRequest, timeout: float = 30.0) -> AdminReply:
    """Ask the running master (blocking, for proxyctl); raises ``OSError`` when it is not there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(admin_socket_path(base_dir))
        sock.sendall(json.dumps(request.wire()).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        return AdminReply(ok=False, message="no reply")
    try:
        return read_admin_reply(json.loads(data))
    except (ValueError, AttributeError, ControlError) as exc:
        return AdminReply(ok=False, message=f"invalid reply: {exc}")
