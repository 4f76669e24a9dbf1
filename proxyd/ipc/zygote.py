"""The zygote socket's messages (master <-> zygote), one JSON object per datagram.

The master asks (``Spawn``, with the child's control socket attached as
SCM_RIGHTS, or ``Reload``); the zygote answers each request with a reply
carrying the request's ``seq`` (``Spawned``, ``Reloaded`` or ``ZygoteError``),
so a late reply to a cancelled request is never taken for the next one's.
``Exited`` reports a child's wait status at any time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from proxyd.ipc.channel import ControlError, decode_object


@dataclass(frozen=True, slots=True)
class Spawn:
    """Fork a child of ``kind`` (login, auth, relay, tcpwrap) for ``service``."""

    seq: int
    kind: str
    service: str

    def wire(self) -> Mapping[str, Any]:
        return {"op": "spawn", "kind": self.kind, "service": self.service, "seq": self.seq}


@dataclass(frozen=True, slots=True)
class Reload:
    """Re-read the configuration (SIGHUP)."""

    seq: int

    def wire(self) -> Mapping[str, Any]:
        return {"op": "reload", "seq": self.seq}


ZygoteRequest: TypeAlias = Spawn | Reload


@dataclass(frozen=True, slots=True)
class Spawned:
    seq: int
    pid: int

    def wire(self) -> Mapping[str, Any]:
        return {"pid": self.pid, "seq": self.seq}


@dataclass(frozen=True, slots=True)
class Reloaded:
    seq: int

    def wire(self) -> Mapping[str, Any]:
        return {"ok": True, "seq": self.seq}


@dataclass(frozen=True, slots=True)
class ZygoteError:
    """The request failed: ``fork()`` or the configuration."""

    seq: int
    error: str

    def wire(self) -> Mapping[str, Any]:
        return {"error": self.error, "seq": self.seq}


@dataclass(frozen=True, slots=True)
class Exited:
    """A child exited with wait status ``status``."""

    pid: int
    status: int

    def wire(self) -> Mapping[str, Any]:
        return {"ev": "exit", "pid": self.pid, "status": self.status}


ZygoteReply: TypeAlias = Spawned | Reloaded | ZygoteError
ZygoteReport: TypeAlias = ZygoteReply | Exited


def encode(record: ZygoteRequest | ZygoteReport) -> bytes:
    """One record as one datagram."""
    return json.dumps(record.wire()).encode()


# The zygote's two datagrams per login, made without the record or the JSON encoder: a
# fork write-protects every page of the zygote, so each object it touches afterwards (the
# record's class, its __init__, json's functions and encoder) costs it a page fault and a
# copy per fork.  The same bytes as ``encode(Spawned(seq, pid))`` and
# ``encode(Exited(pid, status))`` (tests/ipc/test_zygote.py).


#: ``% (pid, seq)`` and ``% (pid, status)``: the zygote's loop formats them itself
SPAWNED_WIRE: Final = b'{"pid": %d, "seq": %d}'
EXITED_WIRE: Final = b'{"ev": "exit", "pid": %d, "status": %d}'
#: what comes before the seq at the end of every request (``wire()`` puts it last): the
#: zygote knows a request it has read before by the bytes ahead of it
SEQ_MARK: Final = b', "seq": '


def encode_spawned(seq: int, pid: int) -> bytes:
    return SPAWNED_WIRE % (pid, seq)


def encode_exited(pid: int, status: int) -> bytes:
    return EXITED_WIRE % (pid, status)


def _int(message: Mapping[str, Any], key: str) -> int:
    value = message.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ControlError(f"zygote message: {key} is not an integer")
    return value


def read_request(data: bytes) -> ZygoteRequest:
    """What the master asks; raises ``ControlError``."""
    message = decode_object(data)
    seq = _int(message, "seq")
    if message.get("op") == "reload":
        return Reload(seq)
    return Spawn(seq, str(message.get("kind", "")), str(message.get("service", "")))


def read_report(data: bytes) -> ZygoteReport:
    """What the zygote says; raises ``ControlError``."""
    message = decode_object(data)
    if message.get("ev") == "exit":
        return Exited(_int(message, "pid"), _int(message, "status"))
    seq = _int(message, "seq")
    if "pid" in message:
        return Spawned(seq, _int(message, "pid"))
    if "error" in message:
        return ZygoteError(seq, str(message["error"]))
    return Reloaded(seq)
