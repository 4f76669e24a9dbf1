"""The socket between login processes and the auth process: its messages as records.

Dovecot's login processes never open a passdb: they ask the auth process over
a UNIX socket.  Here that socket carries one JSON object per line
(``proxyd.ipc.channel``); each message carries the ``id`` of its request, so
a login process multiplexes all its sessions over one connection.

Login process → auth process (a ``Call``):

* ``Lookup`` ``{"id": N, "op": "lookup", "req": {...}}``: a user lookup
  without a password check (LMTP routing), one request, one ``Done``;
* ``SaslBegin`` ``{"id": N, "op": "sasl", "start": {...}}``: a mechanism that
  runs in the auth process (CRAM-MD5, DIGEST-MD5, SCRAM; see
  ``proxyd.auth.mechanisms``), a multi-step exchange as Dovecot's auth-client
  protocol has ``AUTH``/``CONT``/``OK``/``FAIL``: each ``Challenge`` is
  answered by ``SaslContinue`` ``{"id": N, "op": "cont", "response": BASE64}``
  or ``SaslAbort`` ``{"id": N, "op": "abort"}``, and a ``Done`` ends it.

Auth process → login process (an ``Answer``): ``Challenge`` ``{"id": N,
"challenge": BASE64}`` and ``Done`` ``{"id": N, "reply": {...}}``.

The request, reply and SASL start bodies are encoded by ``wire.py``.  Only
these lines cross the socket; password hashes never leave the auth process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from proxyd.auth.request import AuthReply, AuthRequest, SaslStart
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
from proxyd.ipc.channel import ControlError

#: the socket's file name inside the login chroot (Dovecot's ``login/login``)
AUTH_SOCKET_NAME: Final = "login"

# -- calls (login -> auth) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lookup:
    """Look the user up without a password check."""

    id: int
    request: AuthRequest

    def wire(self) -> Mapping[str, Any]:
        return {"id": self.id, "op": "lookup", "req": request_to_wire(self.request)}


@dataclass(frozen=True, slots=True)
class SaslBegin:
    """Start a mechanism that runs in the auth process."""

    id: int
    start: SaslStart

    def wire(self) -> Mapping[str, Any]:
        return {"id": self.id, "op": "sasl", "start": sasl_start_to_wire(self.start)}


@dataclass(frozen=True, slots=True)
class SaslContinue:
    """The client's answer to a challenge; None: it was not base64."""

    id: int
    response: bytes | None

    def wire(self) -> Mapping[str, Any]:
        response = None if self.response is None else bytes_to_wire(self.response)
        return {"id": self.id, "op": "cont", "response": response}


@dataclass(frozen=True, slots=True)
class SaslAbort:
    """The client gave up (or went away) in the middle of an exchange."""

    id: int

    def wire(self) -> Mapping[str, Any]:
        return {"id": self.id, "op": "abort"}


@dataclass(frozen=True, slots=True)
class BadCall:
    """A call whose body could not be read; it is answered with a temporary failure."""

    id: int
    #: what was wrong (an exception's class name), for the log
    error: str

    def wire(self) -> Mapping[str, Any]:
        raise TypeError("a BadCall is never sent")


Call: TypeAlias = Lookup | SaslBegin | SaslContinue | SaslAbort | BadCall


# -- answers (auth -> login) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """A step of an exchange: data for the client."""

    id: int
    data: bytes

    def wire(self) -> Mapping[str, Any]:
        return {"id": self.id, "challenge": bytes_to_wire(self.data)}


@dataclass(frozen=True, slots=True)
class Done:
    """The end of a request or an exchange."""

    id: int
    reply: AuthReply

    def wire(self) -> Mapping[str, Any]:
        return {"id": self.id, "reply": reply_to_wire(self.reply)}


Answer: TypeAlias = Challenge | Done


# -- reading --------------------------------------------------------------------------------


def _id(data: Mapping[str, Any]) -> int:
    value = data.get("id")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ControlError("auth message without an id")
    return value


def read_call(data: dict[str, Any]) -> Call:
    """The call a decoded line holds; a body that cannot be read is a ``BadCall``.

    Raises ``ControlError`` only for a line without a usable id (no answer could
    reach its sender).
    """
    call_id = _id(data)
    op = data.get("op")
    try:
        match op:
            case "sasl":
                return SaslBegin(call_id, sasl_start_from_wire(data["start"]))
            case "cont":
                try:
                    return SaslContinue(call_id, bytes_from_wire(data.get("response")))
                except ValueError:
                    return SaslContinue(call_id, None)
            case "abort":
                return SaslAbort(call_id)
            case "lookup":
                return Lookup(call_id, request_from_wire(data["req"]))
            case _:
                raise ValueError(f"unknown op {op!r}")
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        return BadCall(call_id, type(exc).__name__)


def read_answer(data: dict[str, Any]) -> Answer:
    """The answer a decoded line holds; raises ``ControlError``."""
    answer_id = _id(data)
    try:
        if "challenge" in data:
            return Challenge(answer_id, bytes_from_wire(data["challenge"]))
        return Done(answer_id, reply_from_wire(data["reply"]))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ControlError(f"invalid auth answer: {type(exc).__name__}") from None
