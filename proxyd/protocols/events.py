"""Events and policy shared by every client-facing login engine.

Theory of operation
-------------------
A login engine (``proxyd.protocols.imap.server.ImapLoginServer`` and its siblings)
is sans-IO, in the style of h11: the driver (``proxyd.login.session``) feeds it the
client's bytes with ``receive_data()`` (``b""`` means EOF), pulls events with
``next_event()`` until it returns ``NEED_DATA``, and after every call writes out
whatever ``data_to_send()`` returns.  The engine answers everything it can by
itself (CAPABILITY, NOOP, ID, ENABLE, bad commands, the plaintext rules, unknown
mechanisms) and only surfaces what needs the outside world:

* ``AuthBegin`` / ``AuthContinue``: a SASL exchange the driver runs
  (``proxyd.protocols.sasl``) and answers with ``sasl_challenge()``,
  ``auth_failed()``, ``auth_backend_reply()`` or ``login_succeeded()``;
  ``AuthAborted`` (the client sent ``*``) and ``AuthRefused`` with
  ``during_exchange=True`` (a malformed response) end an exchange from the
  client side, already answered;
* ``AuthRefused``: the engine refused an attempt by itself (plaintext or
  SSL rules, unknown mechanism, bad base64); only for logging;
* ``StartTLS``: the OK is already queued; the driver flushes it, performs the
  handshake (feeding ``trailing_data()`` to TLS as Dovecot does, so plaintext
  pipelined after STARTTLS is never executed) and calls ``tls_started()``;
* ``TrustedClientInfo``: a trusted peer forwarded the real client's addresses;
* ``LogInfo``: a line to log at info level with the session's fields (IMAP's
  ``ID sent:``); client-supplied parts are already sanitized;
* ``Close``: the goodbye (if any) is queued; the driver flushes and closes.

Between ``AuthBegin`` and the driver's answer the engine buffers further input
and emits nothing (Dovecot does not read while an auth request is pending).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, TypeAlias


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: ``next_event()`` returns this when it needs more input.
NEED_DATA: Final = _NeedData()


@dataclass(frozen=True, slots=True)
class AuthBegin:
    """The client starts authenticating.

    ``mech`` is upper-case and one the engine accepted (advertised and allowed now).
    IMAP ``LOGIN u p`` and POP3 ``USER``/``PASS`` arrive as ``mech="PLAIN"`` with
    ``initial_response = b"\\0u\\0p"`` and ``plaintext_login=True``.
    ``initial_response`` is the decoded SASL-IR (``b""`` for ``=``), or None.
    """

    mech: str
    initial_response: bytes | None
    plaintext_login: bool = False

    def __repr__(self) -> str:
        ir = None if self.initial_response is None else f"<{len(self.initial_response)} bytes>"
        return f"AuthBegin(mech={self.mech!r}, initial_response={ir}, plaintext_login={self.plaintext_login})"


@dataclass(frozen=True, slots=True)
class AuthContinue:
    """A decoded SASL continuation response from the client."""

    response: bytes

    def __repr__(self) -> str:
        return f"AuthContinue(<{len(self.response)} bytes>)"


@dataclass(frozen=True, slots=True)
class AuthAborted:
    """The client aborted the SASL exchange (``*``); the engine already replied."""


@dataclass(frozen=True, slots=True)
class AuthRefused:
    """The engine refused an authentication attempt by itself and already replied.

    Before any ``AuthBegin`` (``during_exchange=False``): plaintext not allowed,
    SSL/TLS required, unsupported mechanism, invalid base64 in the SASL-IR.
    During an exchange (``during_exchange=True``): the client's continuation
    line was not base64; the exchange is over, as after ``AuthAborted``.
    ``log_text`` is Dovecot's auth_verbose wording (e.g.
    ``Login failed: Plaintext authentication disabled``).
    """

    log_text: str
    during_exchange: bool = False
    #: Dovecot's auth failure code when the refusal happened at its SASL layer
    #: (``mech_invalid``, ``mech_ssl_required``, ``invalid_base64``); None when
    #: login-common refused before it (SSL required, LOGIN without TLS)
    fail_code: str | None = None


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Start TLS now; the engine queued the OK and drops its parser state."""


@dataclass(frozen=True, slots=True)
class TrustedClientInfo:
    """Connection facts forwarded by a trusted peer (IMAP ID ``x-*`` keys, POP3 XCLIENT).

    Only fields that were present are set.
    """

    remote_ip: str | None = None
    remote_port: int | None = None
    local_ip: str | None = None
    local_port: int | None = None
    proxy_ttl: int | None = None
    session_id: str | None = None
    forward_fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LogInfo:
    """An info line for the session's log (``message``, sanitized); nothing to answer."""

    message: str


@dataclass(frozen=True, slots=True)
class Close:
    """The session must end; ``reason`` is the log text (e.g. ``Aborted login by logging out``)."""

    reason: str


#: everything a login engine reports (a ``match`` over it can be exhaustive)
Event: TypeAlias = (
    AuthBegin
    | AuthContinue
    | AuthAborted
    | AuthRefused
    | StartTLS
    | TrustedClientInfo
    | LogInfo
    | Close
)


class ClientFailure(enum.Enum):
    """Why a login attempt failed, as far as the client-visible text is concerned."""

    AUTH_FAILED = "auth_failed"  # wrong password / unknown user
    TEMPFAIL = "tempfail"  # passdb trouble: "Temporary authentication failure."
    LOGIN_DISABLED = "login_disabled"  # nologin (+ reason)
    AUTHZ_FAILED = "authz_failed"
    USER_DISABLED = "user_disabled"
    PASS_EXPIRED = "pass_expired"  # noqa: S105 - an enum value, not a password
    INVALID_BASE64 = "invalid_base64"
    PROXY_UNAVAILABLE = "proxy_unavailable"  # backend CONNECT/INTERNAL/REMOTE/PROTOCOL
    PROXY_SERVERBUG = "proxy_serverbug"  # backend REMOTE_CONFIG/INTERNAL_CONFIG, TTL loop


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """What the engine needs to know about the configuration and this connection.

    ``tls_available``: TLS is configured (``ssl != no`` with a certificate), so
    STARTTLS can be offered.  ``secured``: TLS, trusted network or same host.
    ``mechanisms``: ``auth_mechanisms`` upper-cased, in configuration order.
    """

    greeting: str = "Dovecot ready."
    mechanisms: tuple[str, ...] = ("PLAIN",)
    ssl: str = "yes"  # no | yes | required
    tls_available: bool = False
    tls_active: bool = False
    secured: bool = False
    trusted: bool = False
    disable_plaintext_auth: bool = True
    max_bad_commands: int = 3

    def plaintext_allowed(self) -> bool:
        """Dovecot's ``client_check_plaintext_auth()``."""
        return self.secured or (not self.disable_plaintext_auth and self.ssl != "required")

    def advertised_mechanisms(self) -> tuple[str, ...]:
        """Dovecot's ``sasl_server_get_advertised_mechs()``: nothing before TLS with ssl=required,
        no plaintext mechanisms where plaintext is not allowed."""
        if self.ssl == "required" and not self.secured:
            return ()
        public = tuple(m for m in self.mechanisms if m not in PRIVATE_MECHANISMS)
        if self.plaintext_allowed():
            return public
        return tuple(m for m in public if m not in PLAINTEXT_MECHANISMS)


#: SASL mechanisms that carry the password in the clear (Dovecot's MECH_SEC_PLAINTEXT:
#: an OAuth2 bearer token counts as a password).
PLAINTEXT_MECHANISMS: Final = frozenset({"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"})
#: mechanisms never advertised nor accepted by AUTH/AUTHENTICATE (Dovecot's MECH_SEC_PRIVATE):
#: APOP is POP3's own command
PRIVATE_MECHANISMS: Final = frozenset({"APOP"})
