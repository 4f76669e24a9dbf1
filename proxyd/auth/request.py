"""What a login process tells the auth step about one login attempt, and what it gets back.

These two records are the whole contract between the login side (``proxyd.login``)
and the auth side (``proxyd.auth``).  They hold only plain values, so the auth
step can later move into a separate auth process without changing either side.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from proxyd.secret import Secret


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """Addresses and flags of one client connection, as Dovecot's auth request carries them.

    ``remote_ip``/``local_ip`` may have been replaced by what a trusted peer forwarded
    (IMAP ID ``x-originating-ip``, POP3 XCLIENT, HAProxy); ``real_*`` always hold the
    socket's own addresses.
    """

    service: str  # the protocol's name in ``protocols`` ("imap", "sieve", ...), Dovecot's %s
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    real_local_ip: str
    real_local_port: int
    real_remote_ip: str
    real_remote_port: int
    secured: bool  # TLS, trusted network, or same-host connection
    tls: bool  # the client connection itself is TLS
    session_id: str
    trusted: bool = False  # the peer is in login_trusted_networks
    client_id: str | None = None  # retained IMAP ID arguments (imap_id_retain)
    forward_fields: Mapping[str, str] = field(default_factory=dict)  # from a trusted upstream proxy
    #: the client sent a certificate that verified against ``ssl_ca`` (``ssl_verify_client_cert``)
    valid_client_cert: bool = False
    #: its ``ssl_cert_username_field`` ("" without one)
    cert_username: str = ""


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """One credentials check: the result of a finished SASL exchange.

    ``user`` is the authentication identity (authcid); ``login_user`` is the
    authorization identity (authzid) when the client asked for a different one.
    ``password`` is None for lookups without verification (``proxyctl auth test USER``).
    """

    conn: ConnectionInfo
    mech: str  # "PLAIN", "LOGIN", ...
    user: str
    password: Secret | None
    login_user: str = ""
    #: the extra fields set so far (by earlier passdbs of the chain, and the ``forward_*``
    #: fields a trusted proxy in front sent): what ``%{passdb:NAME}`` expands to
    passdb_fields: Mapping[str, str] = field(default_factory=dict)
    #: set by the chain for a credentials lookup (CRAM-MD5, SCRAM, ...): the scheme the
    #: mechanism wants, for drivers that can answer in it (checkpassword's ``SCHEME``)
    credentials_scheme: str = ""

    # The copies every login makes, by the constructor: ``dataclasses.replace`` costs
    # several times as much (tests/auth/test_request.py checks that they keep every field).

    def with_names(self, user: str, login_user: str, password: Secret | None) -> AuthRequest:
        """This request for the names (and password) a mechanism read."""
        return AuthRequest(
            self.conn, self.mech, user, password, login_user, self.passdb_fields, self.credentials_scheme
        )

    def for_passdb(self, user: str, passdb_fields: Mapping[str, str], credentials_scheme: str) -> AuthRequest:
        """This request as the chain hands it to one passdb."""
        return AuthRequest(
            self.conn, self.mech, user, self.password, self.login_user, passdb_fields, credentials_scheme
        )


@dataclass(frozen=True, slots=True)
class SaslStart:
    """The start of an exchange that runs in the auth process (Dovecot's ``AUTH`` line).

    ``initial_response`` is the decoded SASL-IR (``b""`` for ``=``) or None.
    """

    conn: ConnectionInfo
    mech: str
    initial_response: bytes | None = field(default=None, repr=False)


class SaslIO(Protocol):
    """How the auth side reaches the client during an exchange (Dovecot's ``CONT`` lines)."""

    async def challenge(self, data: bytes) -> bytes | None:
        """Send ``data`` to the client; its decoded answer, or None when it aborted."""
        ...


class AuthStatus(enum.Enum):
    """Outcome class of an auth attempt, as the login process sees it."""

    OK = "ok"
    FAIL = "fail"
    TEMPFAIL = "tempfail"


class FailCode(enum.Enum):
    """Dovecot's auth failure codes (``code=`` in the auth reply), each mapped to a client text."""

    AUTH_FAILED = "auth_failed"  # generic
    TEMP_FAIL = "temp_fail"
    AUTHZ_FAIL = "authz_fail"
    USER_DISABLED = "user_disabled"
    PASS_EXPIRED = "pass_expired"  # noqa: S105 - an enum name, not a password
    INVALID_BASE64 = "invalid_base64"
    MECH_INVALID = "mech_invalid"
    MECH_SSL_REQUIRED = "mech_ssl_required"
    LOGIN_DISABLED = "login_disabled"  # nologin


@dataclass(frozen=True, slots=True)
class AuthReply:
    """The auth step's answer.

    ``user`` is the final user name (passdb ``user=`` rewrites applied).  ``fields``
    are the passdb extra fields the login side acts on (``proxy``, ``host``, ``port``,
    ``destuser``, ``pass``, ``nologin``, ``reason``, ...), value-less fields mapped to
    ``""``.  A ``pass`` field is always a real password to forward: when the passdb gave
    none and the client used a plaintext mechanism, the auth step adds the client's
    password, as Dovecot's auth process does.
    """

    status: AuthStatus
    user: str
    fields: Mapping[str, str] = field(default_factory=dict)
    fail_code: FailCode | None = None
    reason: str | None = None  # passdb reason= or an internal explanation (never a password)

    def with_fields(self, fields: Mapping[str, str]) -> AuthReply:
        """This reply with other extra fields (by the constructor: see ``AuthRequest``)."""
        return AuthReply(self.status, self.user, fields, self.fail_code, self.reason)

    def __repr__(self) -> str:
        shown = {k: ("<hidden>" if k in _SECRET_FIELDS else v) for k, v in self.fields.items()}
        return (
            f"AuthReply(status={self.status.name}, user={self.user!r}, fields={shown!r}, "
            f"fail_code={self.fail_code}, reason={self.reason!r})"
        )


#: ``token``: the bearer token the oauth2 passdb checked (Dovecot passes it on as a field)
_SECRET_FIELDS = frozenset({"pass", "password", "password_noscheme", "token"})


def is_secret_field(name: str) -> bool:
    """True for extra fields whose values must never be printed or logged."""
    return name.lower() in _SECRET_FIELDS


def without_secrets(reply: AuthReply) -> AuthReply:
    """``reply`` without any password field (what a process that routes, not logs in, gets)."""
    if not any(is_secret_field(name) for name in reply.fields):
        return reply
    fields = {k: v for k, v in reply.fields.items() if not is_secret_field(k)}
    return dataclasses.replace(reply, fields=fields)
