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
INVALID_PARAMETERS: Final = b"501 5.5.4 Invalid parameters\r\n"
MISSING_HOSTNAME: Final = b"501 Missing hostname\r\n"
MISSING_MECHANISM: Final = b"501 5.5.4 Missing SASL mechanism parameter\r\n"
OK: Final = b"250 2.0.0 OK\r\n"
XCLIENT_UNTRUSTED: Final = b"550 5.7.14 You are not from trusted IP\r\n"
BYE: Final = b"221 2.0.0 Bye\r\n"
STARTTLS_BEGIN: Final = b"220 2.0.0 Begin TLS negotiation now.\r\n"
#: what Dovecot's submission-login assumes of its backends (``submission_backend_capabilities`` unset)
BACKEND_EXTENSIONS: Final = ("8BITMIME",)


def reply(code: int, enhanced: str, text: str) -> bytes:
    return f"{code} {enhanced} {text}\r\n".encode()


@dataclass(frozen=True, slots=True)
class SubmissionOptions:
    hostname: str = "localhost"  # ``hostname``: the greeting and EHLO name


def greeting(policy: LoginPolicy, options: SubmissionOptions) -> bytes:
    """``220 <hostname> <login_greeting>``."""
    return f"220 {options.hostname} {policy.greeting}\r\n".encode()


def ehlo_reply(policy: LoginPolicy, options: SubmissionOptions) -> bytes:
    """Dovecot's ``cmd_helo_reply()`` before login (the default backend capabilities)."""
    lines = [options.hostname, *BACKEND_EXTENSIONS]
    if policy.secured or policy.ssl != "required":
        lines.append(" ".join(("AUTH", *policy.advertised_mechanisms())))
    lines += ["BURL imap", "CHUNKING", "ENHANCEDSTATUSCODES", "SIZE"]
    if policy.tls_available and not policy.tls_active:
        lines.append("STARTTLS")
    lines.append("PIPELINING")
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
