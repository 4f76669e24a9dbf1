"""Dovecot's submission-login reply texts (``submission-login/client.c``,
``client-authenticate.c``, lib-smtp's server) and the helpers that format them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from proxyd.protocols.events import ClientFailure, LoginPolicy
from proxyd.protocols.submission.xclient import OFFERED
from proxyd.protocols.texts import (
    AUTH_FAILED_MSG,
    AUTHZ_FAILED_MSG,
    INVALID_BASE64_CONTINUED_MSG,
    LOGIN_DISABLED_MSG,
    PROXY_FAILURE_MSG,
    tempfail_text,
)

AUTH_REQUIRED: Final = b"530 5.7.0 Authentication required.\r\n"
UNKNOWN_COMMAND: Final = b"500 5.5.1 Unknown command\r\n"
INVALID_SYNTAX: Final = b"500 5.5.2 Invalid command syntax\r\n"
LINE_TOO_LONG: Final = b"500 5.5.2 Line too long\r\n"
TLS_REQUIRED: Final = b"530 5.7.0 TLS required.\r\n"
TLS_ACTIVE: Final = b"502 5.5.1 TLS is already active.\r\n"
TLS_NOT_ENABLED: Final = b"502 5.5.1 TLS support is not enabled.\r\n"
INVALID_PARAMETERS: Final = b"501 5.5.4 Invalid parameters\r\n"
MISSING_HOSTNAME: Final = b"501 Missing hostname\r\n"
MISSING_MECHANISM: Final = b"501 5.5.4 Missing SASL mechanism parameter\r\n"
OK: Final = b"250 2.0.0 OK\r\n"
XCLIENT_UNTRUSTED: Final = b"550 5.7.14 You are not from trusted IP\r\n"
BYE: Final = b"221 2.0.0 Bye\r\n"
STARTTLS_BEGIN: Final = b"220 2.0.0 Begin TLS negotiation now.\r\n"


def reply(code: int, enhanced: str, text: str) -> bytes:
    return f"{code} {enhanced} {text}\r\n".encode()


@dataclass(frozen=True, slots=True)
class SubmissionOptions:
    hostname: str = "localhost"  # ``hostname``: the greeting and EHLO name
    #: ``submission_backend_capabilities`` (Dovecot's default: 8BITMIME only)
    backend_capabilities: frozenset[str] = frozenset({"8BITMIME"})
    max_mail_size: int = 0  # ``submission_max_mail_size``: SIZE's value (0: none)
    #: ``submission_client_workarounds = exotic-backend``: promise only what the backends have
    exotic_backend: bool = False


def greeting(policy: LoginPolicy, options: SubmissionOptions) -> bytes:
    """``220 <hostname> <login_greeting>``."""
    return f"220 {options.hostname} {policy.greeting}\r\n".encode()


def ehlo_reply(policy: LoginPolicy, options: SubmissionOptions) -> bytes:
    """Dovecot's ``cmd_helo_reply()``: what the session will offer once the backend has it.

    The extensions the submission service adds of its own (BURL, CHUNKING,
    ENHANCEDSTATUSCODES, SIZE, PIPELINING) are promised unless
    ``exotic-backend`` says to promise only what the backends have.
    """
    caps = options.backend_capabilities
    exotic = options.exotic_backend

    def have(name: str) -> bool:
        return not exotic or name in caps

    lines = [options.hostname]
    if "8BITMIME" in caps:
        lines.append("8BITMIME")
    if policy.secured or policy.ssl != "required":
        lines.append("AUTH " + " ".join(policy.advertised_mechanisms()))
    if "BINARYMIME" in caps and "CHUNKING" in caps:
        lines.append("BINARYMIME")
    if have("BURL"):
        lines.append("BURL imap")
    if have("CHUNKING"):
        lines.append("CHUNKING")
    if "DSN" in caps:
        lines.append("DSN")
    if have("ENHANCEDSTATUSCODES"):
        lines.append("ENHANCEDSTATUSCODES")
    if options.max_mail_size > 0:
        lines.append(f"SIZE {options.max_mail_size}")
    elif have("SIZE"):
        lines.append("SIZE")
    if policy.tls_available and not policy.tls_active:
        lines.append("STARTTLS")
    if have("PIPELINING"):
        lines.append("PIPELINING")
    if "VRFY" in caps:
        lines.append("VRFY")
    if policy.trusted:
        lines.append(" ".join(("XCLIENT", *OFFERED)))
    out = [f"250-{line}\r\n" for line in lines[:-1]] + [f"250 {lines[-1]}\r\n"]
    return "".join(out).encode()


def auth_failure_reply(
    failure: ClientFailure, reason: str | None, *, hostname: str, now: datetime
) -> bytes:
    """``submission_client_auth_result()`` after login-common's ``client_auth_handle_reply()``."""
    if failure in (ClientFailure.AUTH_FAILED, ClientFailure.USER_DISABLED, ClientFailure.PASS_EXPIRED):
        return reply(535, "5.7.8", reason or AUTH_FAILED_MSG)
    if failure is ClientFailure.AUTHZ_FAILED:
        return reply(535, "5.7.8", reason or AUTHZ_FAILED_MSG)
    if failure is ClientFailure.TEMPFAIL:
        return reply(454, "4.7.0", reason or tempfail_text(hostname, now))
    if failure is ClientFailure.LOGIN_DISABLED:
        return reply(525, "5.7.13", reason or LOGIN_DISABLED_MSG)
    if failure is ClientFailure.INVALID_BASE64:
        return reply(501, "5.5.2", reason or INVALID_BASE64_CONTINUED_MSG)
    if failure in (ClientFailure.PROXY_UNAVAILABLE, ClientFailure.PROXY_SERVERBUG):
        return reply(454, "4.7.0", PROXY_FAILURE_MSG)
    raise ValueError(f"unknown failure {failure!r}")  # pragma: no cover - enum is closed
