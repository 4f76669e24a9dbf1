"""Dovecot's imap-login reply texts and the helpers that format them.

Every client-visible string of the pre-login IMAP dialogue lives here, so the
engines (``server.py``, ``backend.py``) and the driver share one spelling.
The texts are Dovecot 2.3's (``imap-login-client.c``, ``client-authenticate.c``,
``login-common.h``, ``login-proxy.h``); comments name the Dovecot constant.
The texts every login process shares are in :mod:`proxyd.protocols.texts`.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Final

from proxyd.protocols.events import ClientFailure, LoginPolicy
from proxyd.protocols.texts import (
    AUTH_ABORTED_MSG,
    AUTH_FAILED_MSG,
    AUTH_PLAINTEXT_DISABLED_MSG,
    AUTH_TEMP_FAILED_MSG,
    AUTHZ_FAILED_MSG,
    INVALID_BASE64_CONTINUED_MSG,
    INVALID_BASE64_INITIAL_MSG,
    INVALID_BASE64_RESPONSE_MSG,
    LOGIN_DISABLED_MSG,
    MECH_PLAINTEXT_DISABLED_MSG,
    PLAINTEXT_EXPOSED_NOTICE,
    PROXY_FAILURE_MSG,
    SSL_REQUIRED_MSG,
    UNSUPPORTED_MECH_MSG,
    tempfail_text,
)

#: ``CAPABILITY_BANNER_STRING`` of a default Dovecot 2.3 build.
CAPABILITY_BANNER: Final = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE"

BAD_COMMAND_MSG: Final = "Error in IMAP command received by server."
TOO_MANY_BAD_MSG: Final = "Too many invalid IMAP commands."
FORGOT_TAG_MSG: Final = (
    "First parameter in line is IMAP's command tag, not the command name. "
    "Add that before the command, like: a login user pass"
)
INVALID_ID_MSG: Final = "Invalid ID parameters"


class Status(enum.Enum):
    """IMAP response conditions used before login."""

    OK = "OK"
    NO = "NO"
    BAD = "BAD"
    BYE = "BYE"


def reply_line(tag: str | None, status: Status, text: str, code: str | None = None) -> bytes:
    """``<tag> <status> [<code>] <text>\\r\\n``; untagged (``*``) for BYE or a None tag."""
    prefix = "*" if tag is None or status is Status.BYE else tag
    middle = f"[{code}] " if code is not None else ""
    return f"{prefix} {status.value} {middle}{text}\r\n".encode()


def capability_string(policy: LoginPolicy, configured: str = "", literal_minus: bool = False) -> str:
    """Dovecot's ``get_capability()`` for the pre-login CAPABILITY reply and greeting.

    ``configured`` is ``imap_capability``, ``literal_minus`` ``imap_literal_minus``.
    """
    if configured == "":
        caps = CAPABILITY_BANNER
    elif not configured.startswith("+"):
        caps = configured
    else:
        caps = f"{CAPABILITY_BANNER} {configured[1:]}"
    if configured == "" or configured.startswith("+"):
        caps += " LITERAL-" if literal_minus else " LITERAL+"
    if policy.tls_available and not policy.tls_active:
        caps += " STARTTLS"
    if login_command_disabled(policy):
        caps += " LOGINDISABLED"
    for mech in policy.advertised_mechanisms():
        caps += f" AUTH={mech}"
    return caps


def login_command_disabled(policy: LoginPolicy) -> bool:
    """Dovecot's ``is_login_cmd_disabled()``: when LOGINDISABLED is advertised."""
    if policy.secured:
        return "PLAIN" not in (mech.upper() for mech in policy.mechanisms)
    return policy.disable_plaintext_auth or policy.ssl == "required"


def greeting(policy: LoginPolicy, configured: str = "", literal_minus: bool = False) -> bytes:
    """``* OK [CAPABILITY ...] <login_greeting>``."""
    caps = capability_string(policy, configured, literal_minus)
    return f"* OK [CAPABILITY {caps}] {policy.greeting}\r\n".encode()


def auth_failure_reply(
    tag: str | None,
    failure: ClientFailure,
    reason: str | None,
    *,
    hostname: str,
    now: datetime,
) -> bytes:
    """The tagged reply for a failed login, as ``client_auth_handle_reply()`` + ``imap_client_auth_result()``.

    ``reason`` is the passdb's ``reason=`` (or another failure text); where
    Dovecot has a default text it is used when ``reason`` is None.
    """
    if failure is ClientFailure.AUTH_FAILED or failure is ClientFailure.USER_DISABLED:
        if reason is None:
            return reply_line(tag, Status.NO, AUTH_FAILED_MSG, "AUTHENTICATIONFAILED")
        # AUTHFAILED_REASON: an own resp-code in the reason replaces [ALERT].
        if reason.startswith("["):
            return reply_line(tag, Status.NO, reason)
        return reply_line(tag, Status.NO, reason, "ALERT")
    if failure is ClientFailure.TEMPFAIL:
        text = reason if reason is not None else tempfail_text(hostname, now)
        return reply_line(tag, Status.NO, text, "UNAVAILABLE")
    if failure is ClientFailure.LOGIN_DISABLED:
        return reply_line(tag, Status.NO, reason or LOGIN_DISABLED_MSG, "CONTACTADMIN")
    if failure is ClientFailure.AUTHZ_FAILED:
        return reply_line(tag, Status.NO, reason or AUTHZ_FAILED_MSG, "AUTHORIZATIONFAILED")
    if failure is ClientFailure.PASS_EXPIRED:
        return reply_line(tag, Status.NO, reason or AUTH_FAILED_MSG, "EXPIRED")
    if failure is ClientFailure.INVALID_BASE64:
        return reply_line(tag, Status.BAD, reason or INVALID_BASE64_CONTINUED_MSG)
    if failure is ClientFailure.PROXY_UNAVAILABLE:
        return reply_line(tag, Status.NO, PROXY_FAILURE_MSG, "UNAVAILABLE")
    if failure is ClientFailure.PROXY_SERVERBUG:
        return reply_line(tag, Status.NO, PROXY_FAILURE_MSG, "SERVERBUG")
    raise ValueError(f"unknown failure {failure!r}")  # pragma: no cover - enum is closed


__all__ = [
    "AUTHZ_FAILED_MSG",
    "AUTH_ABORTED_MSG",
    "AUTH_FAILED_MSG",
    "AUTH_PLAINTEXT_DISABLED_MSG",
    "AUTH_TEMP_FAILED_MSG",
    "BAD_COMMAND_MSG",
    "CAPABILITY_BANNER",
    "FORGOT_TAG_MSG",
    "INVALID_BASE64_CONTINUED_MSG",
    "INVALID_BASE64_INITIAL_MSG",
    "INVALID_BASE64_RESPONSE_MSG",
    "INVALID_ID_MSG",
    "LOGIN_DISABLED_MSG",
    "MECH_PLAINTEXT_DISABLED_MSG",
    "PLAINTEXT_EXPOSED_NOTICE",
    "PROXY_FAILURE_MSG",
    "SSL_REQUIRED_MSG",
    "TOO_MANY_BAD_MSG",
    "UNSUPPORTED_MECH_MSG",
    "Status",
    "auth_failure_reply",
    "capability_string",
    "greeting",
    "login_command_disabled",
    "reply_line",
    "tempfail_text",
]
