"""The socket between login processes and the auth process: its messages as records.

Dovecot's login processes never open a passdb: they ask the auth process over
a UNIX socket.  Here that socket carries one message per line, each a typed
record (``msgspec`` Structs, encoded and checked by ``wire.py``); each message
carries the ``id`` of its request, so a login process multiplexes all its
sessions over one connection.

Login process → auth process (a ``Call``):

* ``Lookup`` ``["lookup", N, CONN, MECH, USER, PASSWORD, LOGIN_USER]``: a user
  lookup without a password check (LMTP routing), one request, one ``Done``;
* ``SaslBegin`` ``["sasl", N, {conn, mech, initial_response}]``: an exchange
  (every mechanism runs in the auth process, see ``proxyd.auth.mechanisms``), as
  Dovecot's auth-client protocol has ``AUTH``/``CONT``/``OK``/``FAIL``: each
  ``Challenge`` is answered by ``SaslContinue`` ``["cont", N, BASE64]`` or
  ``SaslAbort`` ``["abort", N]``, and a ``Done`` ends it.

Auth process → login process (an ``Answer``): ``Challenge`` ``["challenge", N,
BASE64]`` and ``Done`` ``["done", N, {status, user, fields, fail_code, reason}]``.

Only these lines cross the socket; password hashes never leave the auth process
(a ``Done`` carries the reply's extra fields: ``pass`` only as the password to
forward to a backend, as Dovecot's auth process sends it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias

import msgspec

from proxyd.auth.request import AuthReply, AuthRequest, ConnectionInfo, SaslStart
from proxyd.secret import Secret

#: the socket's file name inside the login chroot (Dovecot's ``login/login``)
AUTH_SOCKET_NAME: Final = "login"

# -- calls (login -> auth) ----------------------------------------------------------------


class Lookup(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True, tag="lookup"):
    """Look the user up without a password check."""

    id: int
    conn: ConnectionInfo
    mech: str
    user: str
    password: str | None
    login_user: str

    @classmethod
    def of(cls, request_id: int, request: AuthRequest) -> Lookup:
        password = None if request.password is None else request.password.reveal()
        return cls(request_id, request.conn, request.mech, request.user, password, request.login_user)

    def __repr__(self) -> str:  # never the password (AuthRequest holds it as a Secret)
        return f"Lookup(id={self.id}, user={self.user!r}, mech={self.mech!r}, password=<hidden>)"

    @property
    def request(self) -> AuthRequest:
        """The request: only the fields a login process may set (not ``passdb_fields``)."""
        password = None if self.password is None else Secret(self.password)
        return AuthRequest(self.conn, self.mech, self.user, password, self.login_user)


class SaslBegin(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True, tag="sasl"):
    """Start an exchange in the auth process."""

    id: int
    start: SaslStart


class SaslContinue(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True, tag="cont"):
    """The client's answer to a challenge; None: it was not base64."""

    id: int
    response: bytes | None

    def __repr__(self) -> str:  # LOGIN's second response is the password
        return f"SaslContinue(id={self.id}, response=<hidden>)"


class SaslAbort(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True, tag="abort"):
    """The client gave up (or went away) in the middle of an exchange."""

    id: int


@dataclass(frozen=True, slots=True)
class BadCall:
    """A call with an id whose body could not be read; it is answered with a temporary
    failure.  Never sent: ``wire.read_call`` makes it."""

    id: int
    #: what was wrong (the decoder's exception class name: never the line's values), for the log
    error: str


Call: TypeAlias = Lookup | SaslBegin | SaslContinue | SaslAbort | BadCall
#: the calls a login process sends
SentCall: TypeAlias = Lookup | SaslBegin | SaslContinue | SaslAbort


# -- answers (auth -> login) ----------------------------------------------------------------


class Challenge(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True, tag="challenge"):
    """A step of an exchange: data for the client."""

    id: int
    data: bytes


class Done(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True, tag="done"):
    """The end of a request or an exchange."""

    id: int
    reply: AuthReply


Answer: TypeAlias = Challenge | Done
