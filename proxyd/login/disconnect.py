"""The "(...)" a pre-login client's disconnect line ends with (sans-IO).

Dovecot 2.3's ``client_get_extra_disconnect_reason()``: the first fact that
explains the disconnect wins, in Dovecot's order.  The session keeps the facts
(``AuthFacts``) and asks ``extra_disconnect_reason()`` when it logs
``Disconnected: Connection closed (...)``, ``Disconnected: Inactivity (...)``
and the like.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from proxyd.auth.request import FailCode

#: the codes with a text of their own; any other (or none) is "auth failed"
_FAIL_TEXTS: Final = {
    FailCode.TEMP_FAIL: "auth service reported temporary failure",
    FailCode.USER_DISABLED: "user disabled",
    FailCode.PASS_EXPIRED: "password expired",
    FailCode.INVALID_BASE64: "sent invalid base64 in response",
    FailCode.LOGIN_DISABLED: "login disabled",
    FailCode.MECH_INVALID: "tried to use unsupported auth mechanism",
    FailCode.MECH_SSL_REQUIRED: "tried to use disallowed plaintext auth",
}


@dataclass(frozen=True, slots=True)
class AuthFacts:
    """What a pre-login session knows about its authentication when it ends.

    ``connected_secs`` counts from the connect, ``auth_secs`` from the first
    attempt that reached the SASL layer (0 when none did).
    """

    attempts: int
    connected_secs: int
    auth_secs: int = 0
    #: ``auth_ssl_require_client_cert``
    require_client_cert: bool = False
    tls: bool = False
    cert_invalid: bool = False
    cert_valid: bool = False
    #: the connection to the auth process was up when the client came
    auth_ready: bool = True
    #: the greeting went out (Dovecot: a plugin may disconnect before it)
    banner_sent: bool = True
    #: the client owes the answer to a SASL challenge
    auth_waiting: bool = False
    #: an auth request is in flight in the auth process
    auth_request: bool = False
    #: between the start of an attempt and the auth process's final answer
    authenticating: bool = False
    #: the client ended an exchange with ``*``
    aborted: bool = False
    #: the auth process could not be reached or dropped the request
    auth_process_failed: bool = False
    #: the backend refused the login the proxy tried for the client
    proxy_auth_failed: bool = False
    #: attempts the auth process accepted
    successes: int = 0
    #: the code of the last auth reply (None: no code, or no reply)
    last_fail: FailCode | None = None


def extra_disconnect_reason(facts: AuthFacts) -> str:
    """``(reason)`` for the disconnect line, or "" when there is nothing to add."""
    f = facts
    if f.require_client_cert and f.tls:
        if f.cert_invalid:
            return "(client sent an invalid cert)"
        if not f.cert_valid:
            return "(client didn't send a cert)"
    if not f.auth_ready:
        return f"(disconnected before auth was ready, waited {f.connected_secs} secs)"
    if f.attempts == 0:
        return f"(no auth attempts in {f.connected_secs} secs)" if f.banner_sent else ""
    if f.require_client_cert and not f.tls:
        return "(cert required, client didn't start TLS)"
    first = f.attempts == 1
    if f.auth_waiting and first:
        return f"(client didn't finish SASL auth, waited {f.auth_secs} secs)"
    if f.auth_request and first:
        return f"(disconnected while authenticating, waited {f.auth_secs} secs)"
    if f.authenticating and first:
        return f"(disconnected while finishing login, waited {f.auth_secs} secs)"
    if f.aborted and first:
        return "(aborted authentication)"
    if f.auth_process_failed:
        return "(auth process communication failure)"
    if f.proxy_auth_failed:
        return "(proxy dest auth failed)"
    if f.successes > 0:
        return f"(internal failure, {f.successes} successful auths)"
    if f.last_fail is FailCode.AUTHZ_FAIL:
        return f"(authorization failed, {f.attempts} attempts in {f.auth_secs} secs)"
    text = _FAIL_TEXTS.get(f.last_fail) if f.last_fail is not None else None
    if text is not None:
        return f"({text})"
    return f"(auth failed, {f.attempts} attempts in {f.auth_secs} secs)"
