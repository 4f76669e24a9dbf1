"""Dovecot's pop3-login reply texts and the helpers that format them.

Every client-visible string of the pre-login POP3 dialogue lives here, so the
engines (``server.py``, ``backend.py``) share one spelling.  The texts are
Dovecot 2.3's (``pop3-login/client.c``, ``client-authenticate.c``,
``pop3-proxy.c``); the ones every login process shares (``login-common.h``,
``login-proxy.h``) are in :mod:`proxyd.protocols.texts`.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Final

from proxyd.protocols.events import ClientFailure, LoginPolicy
from proxyd.protocols.texts import (
    AUTH_FAILED_MSG,
    AUTH_PLAINTEXT_DISABLED_MSG,
    AUTHZ_FAILED_MSG,
    INVALID_BASE64_CONTINUED_MSG,
    INVALID_BASE64_INITIAL_MSG,
    INVALID_BASE64_RESPONSE_MSG,
    LOGIN_DISABLED_MSG,
    MECH_PLAINTEXT_DISABLED_MSG,
    PROXY_FAILURE_MSG,
    SSL_REQUIRED_MSG,
    UNSUPPORTED_MECH_MSG,
    tempfail_text,
)

#: ``POP3_CAPABILITY_REPLY`` (``src/pop3/pop3-capability.h``): the fixed part of CAPA.
CAPABILITY_LINES: Final = ("CAPA", "TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE")

UNKNOWN_COMMAND_MSG: Final = "Unknown command."
TOO_MANY_BAD_MSG: Final = "Too many invalid bad commands."
NO_USERNAME_MSG: Final = "No username given."
APOP_NOT_ENABLED_MSG: Final = "APOP not enabled."
APOP_INVALID_PARAMETERS_MSG: Final = "Invalid parameters."
APOP_INVALID_MD5_MSG: Final = "Invalid characters in MD5 response."
LOGOUT_MSG: Final = "Logging out"
XCLIENT_UPDATED_MSG: Final = "Updated"
XCLIENT_UNTRUSTED_MSG: Final = "You are not from trusted IP - ignoring"
INVALID_PARAMETERS_MSG: Final = "Invalid parameters"
AUTH_ABORTED_MSG: Final = "Authentication aborted by client."


class Reply(enum.Enum):
    """Dovecot's ``enum pop3_cmd_reply``: which prefix a reply line gets."""

    OK = "+OK"
    ERROR = "-ERR"
    AUTH_ERROR = "-ERR [AUTH]"  # dropped to plain -ERR when the text has its own [code]
    TEMPFAIL = "-ERR [SYS/TEMP]"


def reply_line(kind: Reply, text: str) -> bytes:
    """Dovecot's ``client_send_reply()``: ``<prefix> <text>\\r\\n``."""
    prefix = kind.value
    if kind is Reply.AUTH_ERROR and text.startswith("["):
        prefix = Reply.ERROR.value
    return f"{prefix} {text}\r\n".encode()


def greeting(policy: LoginPolicy, apop_challenge: str | None = None) -> bytes:
    """``+OK [XCLIENT] <login_greeting> <apop challenge>``; ``[XCLIENT]`` only for trusted
    peers, the challenge only when APOP is enabled."""
    text = ("[XCLIENT] " if policy.trusted else "") + policy.greeting
    if apop_challenge is not None:
        text += " " + apop_challenge
    return reply_line(Reply.OK, text)


def user_command_allowed(policy: LoginPolicy) -> bool:
    """Whether CAPA lists ``USER`` (Dovecot looks only at disable_plaintext_auth here, not ssl)."""
    return not policy.disable_plaintext_auth or policy.secured


def capability_reply(policy: LoginPolicy) -> bytes:
    """The whole multi-line answer to ``CAPA`` (Dovecot's ``cmd_capa()``)."""
    lines = ["+OK", *CAPABILITY_LINES]
    if policy.tls_available and not policy.tls_active:
        lines.append("STLS")
    if user_command_allowed(policy):
        lines.append("USER")
    lines.append(" ".join(("SASL", *policy.advertised_mechanisms())))
    lines.append(".")
    return "".join(f"{line}\r\n" for line in lines).encode()


def mechanism_list(policy: LoginPolicy) -> bytes:
    """``AUTH`` without a mechanism: the old-style list Outlook asks for."""
    lines = ["+OK", *policy.advertised_mechanisms(), "."]
    return "".join(f"{line}\r\n" for line in lines).encode()


def auth_failure_reply(
    failure: ClientFailure, reason: str | None, *, hostname: str, now: datetime
) -> bytes:
    """The reply to a failed login, as ``client_auth_handle_reply()`` + ``pop3_client_auth_result()``.

    ``reason`` is the passdb's ``reason=`` (or another failure text); where
    Dovecot has a default text it is used when ``reason`` is None.
    """
    if failure is ClientFailure.AUTH_FAILED or failure is ClientFailure.USER_DISABLED:
        return reply_line(Reply.AUTH_ERROR, reason or AUTH_FAILED_MSG)
    if failure is ClientFailure.TEMPFAIL:
        return reply_line(Reply.TEMPFAIL, reason or tempfail_text(hostname, now))
    if failure is ClientFailure.LOGIN_DISABLED:
        return reply_line(Reply.AUTH_ERROR, reason or LOGIN_DISABLED_MSG)
    if failure is ClientFailure.AUTHZ_FAILED:
        return reply_line(Reply.AUTH_ERROR, reason or AUTHZ_FAILED_MSG)
    if failure is ClientFailure.PASS_EXPIRED:
        return reply_line(Reply.AUTH_ERROR, reason or AUTH_FAILED_MSG)
    if failure is ClientFailure.INVALID_BASE64:
        return reply_line(Reply.AUTH_ERROR, reason or INVALID_BASE64_CONTINUED_MSG)
    if failure is ClientFailure.PROXY_UNAVAILABLE:
        return reply_line(Reply.TEMPFAIL, PROXY_FAILURE_MSG)
    if failure is ClientFailure.PROXY_SERVERBUG:
        return reply_line(Reply.ERROR, PROXY_FAILURE_MSG)
    raise ValueError(f"unknown failure {failure!r}")  # pragma: no cover - enum is closed


__all__ = [
    "APOP_INVALID_MD5_MSG",
    "APOP_INVALID_PARAMETERS_MSG",
    "APOP_NOT_ENABLED_MSG",
    "AUTH_ABORTED_MSG",
    "AUTH_FAILED_MSG",
    "AUTH_PLAINTEXT_DISABLED_MSG",
    "CAPABILITY_LINES",
    "INVALID_BASE64_CONTINUED_MSG",
    "INVALID_BASE64_INITIAL_MSG",
    "INVALID_BASE64_RESPONSE_MSG",
    "INVALID_PARAMETERS_MSG",
    "LOGOUT_MSG",
    "MECH_PLAINTEXT_DISABLED_MSG",
    "NO_USERNAME_MSG",
    "PROXY_FAILURE_MSG",
    "SSL_REQUIRED_MSG",
    "TOO_MANY_BAD_MSG",
    "UNKNOWN_COMMAND_MSG",
    "UNSUPPORTED_MECH_MSG",
    "XCLIENT_UNTRUSTED_MSG",
    "XCLIENT_UPDATED_MSG",
    "Reply",
    "auth_failure_reply",
    "capability_reply",
    "greeting",
    "mechanism_list",
    "reply_line",
    "user_command_allowed",
]
