"""Every message between the master and its children, as frozen records.

Commands go from the master to a child over the child's control socketpair
(``Channel[Command, Report]`` in the master, ``Channel[Report, Command]`` in
the child); reports go back:

============================  =================  ==============================
command                       who gets it        report
============================  =================  ==============================
``Stop``                      every child        none; the child stops accepting
                                                 and finishes its sessions
``QueueFull``                 login              none; the oldest pre-login
                                                 client is destroyed
``ServiceFull``               login              none; while full, every new
                                                 client beyond client_limit
                                                 displaces the oldest pre-login
                                                 one (high-performance mode)
``IpLimit``                   login              none; new connections from the
                                                 address are refused (or no
                                                 longer are)
``Who``                       login, relay       ``WhoReply``
``Kick``                      login, relay       ``CountReply``
``CacheFlush``                auth               ``CountReply``
(unasked)                     from any child     ``Status``
(unasked)                     from login         ``PreloginCount`` (only with
                                                 proxyd_prelogin_per_ip_limit)
============================  =================  ==============================

A command that wants a reply carries an ``id`` the reply repeats.  Each record
has ``wire()`` (its JSON object) and is read back by ``read_command`` /
``read_report``, which raise ``ControlError`` for anything else; the JSON is
small and flat, so encoding costs no more than the dicts it replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from proxyd.ipc.channel import ControlError

# -- commands (master -> child) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stop:
    """Accept no more clients; finish the sessions held, then exit."""

    TAG: ClassVar[str] = "stop"

    def wire(self) -> Mapping[str, Any]:
        return {"cmd": self.TAG}


@dataclass(frozen=True, slots=True)
class QueueFull:
    """The service is full: destroy the oldest pre-login client (Dovecot's answer)."""

    TAG: ClassVar[str] = "queue-full"

    def wire(self) -> Mapping[str, Any]:
        return {"cmd": self.TAG}


@dataclass(frozen=True, slots=True)
class ServiceFull:
    """The service is at ``process_limit`` with no process accepting (``full``), or no
    longer is.  While full, a login process takes a new client beyond its
    ``client_limit`` and destroys its own oldest pre-login one for it at once (Dovecot's
    MASTER_LOGIN_STATE_FULL and ``client_destroy_oldest()`` as avail-overflow callback)."""

    TAG: ClassVar[str] = "service-full"
    full: bool

    def wire(self) -> Mapping[str, Any]:
        return {"cmd": self.TAG, "full": self.full}


@dataclass(frozen=True, slots=True)
class IpLimit:
    """``ip`` has ``proxyd_prelogin_per_ip_limit`` pre-login connections in the service
    (``over``): refuse its new connections; or it is below the limit again."""

    TAG: ClassVar[str] = "ip-limit"
    ip: str
    over: bool

    def wire(self) -> Mapping[str, Any]:
        return {"cmd": self.TAG, "ip": self.ip, "over": self.over}


@dataclass(frozen=True, slots=True)
class Who:
    """The proxied sessions of users matching ``mask`` (``proxyctl who``)."""

    TAG: ClassVar[str] = "who"
    mask: str = "*"
    id: int = 0

    def wire(self) -> Mapping[str, Any]:
        return {"cmd": self.TAG, "id": self.id, "mask": self.mask}


@dataclass(frozen=True, slots=True)
class Kick:
    """End the proxied sessions of users matching one of ``masks``; with ``host`` only
    those proxied to that backend (``proxyctl kick``, the doveadm API's ``proxyKick``)."""

    TAG: ClassVar[str] = "kick"
    masks: tuple[str, ...] = ("*",)
    host: str | None = None
    id: int = 0

    def wire(self) -> Mapping[str, Any]:
        return {"cmd": self.TAG, "id": self.id, "masks": list(self.masks), "host": self.host}


@dataclass(frozen=True, slots=True)
class CacheFlush:
    """Forget auth cache entries: of ``users``, or all of them when empty."""

    TAG: ClassVar[str] = "cache-flush"
    users: tuple[str, ...] = ()
    id: int = 0

    def wire(self) -> Mapping[str, Any]:
        return {"cmd": self.TAG, "id": self.id, "users": list(self.users)}


@dataclass(frozen=True, slots=True)
class LastLogin:
    """Where did ``user``'s last login go (``proxyctl move --wait``)? For the auth process."""

    TAG: ClassVar[str] = "last-login"
    user: str = ""
    id: int = 0

    def wire(self) -> Mapping[str, Any]:
        return {"cmd": self.TAG, "id": self.id, "user": self.user}


Command: TypeAlias = (
    Stop | QueueFull | ServiceFull | IpLimit | Who | Kick | CacheFlush | LastLogin
)
#: the commands that want a reply
Question: TypeAlias = Who | Kick | CacheFlush | LastLogin


# -- reports (child -> master) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """What the master's accounting needs: clients held, and whether it still accepts.

    ``prelogin_since``: when the longest-waiting client still logging in connected
    (``time.time()``), None when none is; sent only by processes with a
    ``service_count``, whose pre-login clients the master displaces itself when the
    service is full (high-performance processes displace their own).
    """

    TAG: ClassVar[str] = "status"
    clients: int
    accepting: bool
    prelogin_since: float | None = None

    def wire(self) -> Mapping[str, Any]:
        wire: dict[str, Any] = {"ev": self.TAG, "clients": self.clients, "accepting": self.accepting}
        if self.prelogin_since is not None:
            wire["prelogin_since"] = self.prelogin_since
        return wire


@dataclass(frozen=True, slots=True)
class PreloginCount:
    """A pre-login connection from ``ip`` began (``delta`` 1) or ended or logged in (-1)."""

    TAG: ClassVar[str] = "prelogin"
    ip: str
    delta: int

    def wire(self) -> Mapping[str, Any]:
        return {"ev": self.TAG, "ip": self.ip, "delta": self.delta}


@dataclass(frozen=True, slots=True)
class WhoRow:
    """One proxied session as ``proxyctl who`` shows it."""

    user: str
    protocol: str
    ip: str
    backend: str
    #: seconds since the client connected
    age: int

    @classmethod
    def of(
        cls, user: str, protocol: str, ip: str, backend: str, connected_at: float, now: float
    ) -> WhoRow:
        return cls(user, protocol, ip, backend, round(now - connected_at))

    def wire(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "protocol": self.protocol,
            "ip": self.ip,
            "backend": self.backend,
            "age": self.age,
        }

    @classmethod
    def read(cls, data: Any) -> WhoRow:
        if not isinstance(data, dict):
            raise ControlError("who row is not an object")
        return cls(
            user=_str(data, "user"),
            protocol=_str(data, "protocol"),
            ip=_str(data, "ip"),
            backend=_str(data, "backend"),
            age=_int(data, "age"),
        )


@dataclass(frozen=True, slots=True)
class WhoReply:
    """The answer to ``Who``."""

    TAG: ClassVar[str] = "who"
    id: int
    sessions: tuple[WhoRow, ...]

    def wire(self) -> Mapping[str, Any]:
        return {"ev": self.TAG, "id": self.id, "sessions": [row.wire() for row in self.sessions]}


@dataclass(frozen=True, slots=True)
class CountReply:
    """The answer to ``Kick`` and ``CacheFlush``: how many sessions or entries."""

    TAG: ClassVar[str] = "count"
    id: int
    count: int

    def wire(self) -> Mapping[str, Any]:
        return {"ev": self.TAG, "id": self.id, "count": self.count}


@dataclass(frozen=True, slots=True)
class LastLoginReply:
    """The answer to ``LastLogin``: the host and wall-clock time, None when not known."""

    TAG: ClassVar[str] = "last-login"
    id: int
    host: str | None
    at: float | None

    def wire(self) -> Mapping[str, Any]:
        return {"ev": self.TAG, "id": self.id, "host": self.host, "at": self.at}


Reply: TypeAlias = WhoReply | CountReply | LastLoginReply
Report: TypeAlias = Status | PreloginCount | Reply


# -- reading ------------------------------------------------------------------------------


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ControlError(f"{key}: not a string")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return None if value is None else _str(data, key)


def _opt_number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
        raise ControlError(f"{key}: not a number")
    return value


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ControlError(f"{key}: not an integer")
    return value


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise ControlError(f"{key}: not a list")
    return value


def read_command(data: dict[str, Any]) -> Command:
    """The command a decoded line holds; raises ``ControlError``."""
    match data.get("cmd"):
        case Stop.TAG:
            return Stop()
        case QueueFull.TAG:
            return QueueFull()
        case ServiceFull.TAG:
            full = data.get("full")
            if not isinstance(full, bool):
                raise ControlError("full: not a boolean")
            return ServiceFull(full=full)
        case IpLimit.TAG:
            over = data.get("over")
            if not isinstance(over, bool):
                raise ControlError("over: not a boolean")
            return IpLimit(ip=_str(data, "ip"), over=over)
        case Who.TAG:
            return Who(mask=_str(data, "mask"), id=_int(data, "id"))
        case Kick.TAG:
            masks = tuple(str(mask) for mask in _list(data, "masks"))
            return Kick(masks=masks, host=_opt_str(data, "host"), id=_int(data, "id"))
        case CacheFlush.TAG:
            users = tuple(str(user) for user in _list(data, "users"))
            return CacheFlush(users=users, id=_int(data, "id"))
        case LastLogin.TAG:
            return LastLogin(user=_str(data, "user"), id=_int(data, "id"))
    raise ControlError(f"unknown command {str(data.get('cmd'))[:40]!r}")


def read_report(data: dict[str, Any]) -> Report:
    """The report a decoded line holds; raises ``ControlError``."""
    match data.get("ev"):
        case Status.TAG:
            accepting = data.get("accepting")
            if not isinstance(accepting, bool):
                raise ControlError("accepting: not a boolean")
            return Status(
                clients=_int(data, "clients"), accepting=accepting,
                prelogin_since=_opt_number(data, "prelogin_since"),
            )
        case PreloginCount.TAG:
            delta = _int(data, "delta")
            if delta not in (1, -1):
                raise ControlError("delta: not 1 or -1")
            return PreloginCount(ip=_str(data, "ip"), delta=delta)
        case WhoReply.TAG:
            rows = tuple(WhoRow.read(row) for row in _list(data, "sessions"))
            return WhoReply(id=_int(data, "id"), sessions=rows)
        case CountReply.TAG:
            return CountReply(id=_int(data, "id"), count=_int(data, "count"))
        case LastLoginReply.TAG:
            return LastLoginReply(id=_int(data, "id"), host=_opt_str(data, "host"), at=_opt_number(data, "at"))
    raise ControlError(f"unknown report {str(data.get('ev'))[:40]!r}")
