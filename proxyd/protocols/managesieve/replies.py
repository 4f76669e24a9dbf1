"""Pigeonhole's managesieve-login reply texts and the helpers that format them.

Texts are Pigeonhole 0.5's (``managesieve-login/client.c``,
``client-authenticate.c``, ``managesieve-proxy.c``); the ones every login
process shares are in :mod:`proxyd.protocols.texts`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from proxyd.protocols.events import ClientFailure, LoginPolicy
from proxyd.protocols.managesieve.grammar import quote
from proxyd.protocols.texts import (
    AUTH_FAILED_MSG,
    AUTHZ_FAILED_MSG,
    INVALID_BASE64_CONTINUED_MSG,
    LOGIN_DISABLED_MSG,
    PROXY_FAILURE_MSG,
    tempfail_text,
)

#: Debian's managesieve_implementation_string is "Dovecot (Debian) Pigeonhole"
DEFAULT_IMPLEMENTATION: Final = "Dovecot Pigeonhole"
#: what Pigeonhole 0.5.19 fills managesieve_sieve_capability with (its default extensions)
DEFAULT_SIEVE_CAPABILITY: Final = (
    "fileinto reject envelope encoded-character vacation subaddress comparator-i;ascii-numeric "
    "relational regex imap4flags copy include variables body enotify environment mailbox date "
    "index ihave duplicate mime foreverypart extracttext"
)
#: ... and managesieve_notify_capability
DEFAULT_NOTIFY_CAPABILITY: Final = "mailto"

BAD_COMMAND_MSG: Final = "Error in MANAGESIEVE command received by server."
TOO_MANY_BAD_MSG: Final = "Too many invalid MANAGESIEVE commands."
CAPABILITY_DONE_MSG: Final = "Capability completed."
LOGOUT_MSG: Final = "Logout completed."
NOOP_MSG: Final = "NOOP Completed"
INVALID_ECHO_TAG_MSG: Final = "Invalid echo tag."
STARTTLS_BEGIN_MSG: Final = "Begin TLS negotiation now."
TLS_DONE_MSG: Final = "TLS negotiation successful."
XCLIENT_UNTRUSTED_MSG: Final = "You are not from trusted IP"
XCLIENT_UPDATED_MSG: Final = "Updated"
EMPTY_RESPONSE_MSG: Final = "Received empty AUTHENTICATE client response line."
INVALID_RESPONSE_MSG: Final = "Invalid AUTHENTICATE client response."
INVALID_INITIAL_RESPONSE_MSG: Final = "Invalid AUTHENTICATE initial response."


class Status(enum.Enum):
    OK = "OK"
    NO = "NO"
    BYE = "BYE"


def reply_line(status: Status, text: str | None, code: str | None = None) -> bytes:
    """Pigeonhole's ``client_send_reply_code()``: ``OK|NO|BYE [(code)] ["text"]``."""
    line = status.value.encode()
    if code is not None:
        line += b" (" + code.encode() + b")"
    if text is not None:
        line += b" " + quote(text)
    return line + b"\r\n"


@dataclass(frozen=True, slots=True)
class SieveOptions:
    """The ManageSieve settings of the pre-login dialogue."""

    implementation: str = DEFAULT_IMPLEMENTATION  # managesieve_implementation_string
    sieve_capability: str = DEFAULT_SIEVE_CAPABILITY  # managesieve_sieve_capability
    notify_capability: str = DEFAULT_NOTIFY_CAPABILITY  # managesieve_notify_capability


def capability_lines(policy: LoginPolicy, options: SieveOptions) -> bytes:
    """Pigeonhole's ``client_send_capabilities()``: the greeting and CAPABILITY lines."""
    lines = [
        b'"IMPLEMENTATION" ' + quote(options.implementation),
        b'"SIEVE" ' + quote(options.sieve_capability),
    ]
    if options.notify_capability:
        lines.append(b'"NOTIFY" ' + quote(options.notify_capability))
    lines.append(b'"SASL" ' + quote(" ".join(policy.advertised_mechanisms())))
    if policy.tls_available and not policy.tls_active:
        lines.append(b'"STARTTLS"')
    lines.append(b'"VERSION" "1.0"')
    if policy.trusted:
        lines.append(b'"XCLIENT"')
    return b"".join(line + b"\r\n" for line in lines)


def greeting(policy: LoginPolicy, options: SieveOptions) -> bytes:
    """The capabilities, then ``OK "<login_greeting>"``."""
    return capability_lines(policy, options) + reply_line(Status.OK, policy.greeting)


def auth_failure_reply(
    failure: ClientFailure, reason: str | None, *, hostname: str, now: datetime
) -> bytes:
    """``managesieve_client_auth_result()`` after login-common's ``client_auth_handle_reply()``."""
    if failure is ClientFailure.AUTH_FAILED or failure is ClientFailure.USER_DISABLED:
        return reply_line(Status.NO, reason or AUTH_FAILED_MSG)
    if failure is ClientFailure.TEMPFAIL:
        return reply_line(Status.NO, reason or tempfail_text(hostname, now), "TRYLATER")
    if failure is ClientFailure.LOGIN_DISABLED:
        return reply_line(Status.NO, reason or LOGIN_DISABLED_MSG)
    if failure is ClientFailure.AUTHZ_FAILED:
        return reply_line(Status.NO, reason or AUTHZ_FAILED_MSG)
    if failure is ClientFailure.PASS_EXPIRED:
        return reply_line(Status.NO, reason or AUTH_FAILED_MSG)
    if failure is ClientFailure.INVALID_BASE64:
        return reply_line(Status.NO, reason or INVALID_BASE64_CONTINUED_MSG)
    if failure is ClientFailure.PROXY_UNAVAILABLE:
        return reply_line(Status.NO, PROXY_FAILURE_MSG, "TRYLATER")
    if failure is ClientFailure.PROXY_SERVERBUG:
        return reply_line(Status.NO, PROXY_FAILURE_MSG)
    raise ValueError(f"unknown failure {failure!r}")  # pragma: no cover - enum is closed
