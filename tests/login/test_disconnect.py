"""Every branch of client_get_extra_disconnect_reason(), in Dovecot 2.3.19's order."""

from __future__ import annotations

import dataclasses

import pytest

from proxyd.auth.request import FailCode
from proxyd.login.disconnect import AuthFacts, extra_disconnect_reason

#: one failed attempt, started 7 secs ago on a connection 9 secs old
ONE = AuthFacts(attempts=1, connected_secs=9, auth_secs=7)


def _with(**changes: object) -> str:
    return extra_disconnect_reason(dataclasses.replace(ONE, **changes))  # type: ignore[arg-type]


def test_client_cert_required_over_tls() -> None:
    assert _with(require_client_cert=True, tls=True, cert_invalid=True) == "(client sent an invalid cert)"
    assert _with(require_client_cert=True, tls=True) == "(client didn't send a cert)"
    # a valid certificate says nothing: the next fact speaks
    assert _with(require_client_cert=True, tls=True, cert_valid=True) == "(auth failed, 1 attempts in 7 secs)"
    # not asked for: no word about certificates
    assert _with(tls=True) == "(auth failed, 1 attempts in 7 secs)"


def test_auth_not_ready_counts_from_the_connect() -> None:
    assert _with(auth_ready=False) == "(disconnected before auth was ready, waited 9 secs)"


def test_no_attempts_counts_from_the_connect() -> None:
    assert _with(attempts=0, auth_secs=0) == "(no auth attempts in 9 secs)"
    assert _with(attempts=0, banner_sent=False) == ""


def test_cert_required_without_tls() -> None:
    assert _with(require_client_cert=True) == "(cert required, client didn't start TLS)"


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({"auth_waiting": True, "auth_request": True}, "(client didn't finish SASL auth, waited 7 secs)"),
        ({"auth_request": True, "authenticating": True}, "(disconnected while authenticating, waited 7 secs)"),
        ({"authenticating": True}, "(disconnected while finishing login, waited 7 secs)"),
        ({"aborted": True}, "(aborted authentication)"),
    ],
)
def test_first_attempt_in_progress(changes: dict[str, object], text: str) -> None:
    assert _with(**changes) == text
    # these speak of the first attempt only; on a later one the code decides
    assert _with(attempts=2, **changes) == "(auth failed, 2 attempts in 7 secs)"


def test_auth_process_failure_and_proxy() -> None:
    assert _with(auth_process_failed=True, attempts=3) == "(auth process communication failure)"
    assert _with(proxy_auth_failed=True, successes=1) == "(proxy dest auth failed)"
    assert _with(successes=2, attempts=2) == "(internal failure, 2 successful auths)"
    # the order: the auth process's failure before the backend's
    assert _with(auth_process_failed=True, proxy_auth_failed=True) == "(auth process communication failure)"


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (FailCode.AUTHZ_FAIL, "(authorization failed, 2 attempts in 7 secs)"),
        (FailCode.TEMP_FAIL, "(auth service reported temporary failure)"),
        (FailCode.USER_DISABLED, "(user disabled)"),
        (FailCode.PASS_EXPIRED, "(password expired)"),
        (FailCode.INVALID_BASE64, "(sent invalid base64 in response)"),
        (FailCode.LOGIN_DISABLED, "(login disabled)"),
        (FailCode.MECH_INVALID, "(tried to use unsupported auth mechanism)"),
        (FailCode.MECH_SSL_REQUIRED, "(tried to use disallowed plaintext auth)"),
        (FailCode.AUTH_FAILED, "(auth failed, 2 attempts in 7 secs)"),
        (None, "(auth failed, 2 attempts in 7 secs)"),
    ],
)
def test_last_failure_code(code: FailCode | None, text: str) -> None:
    assert _with(attempts=2, last_fail=code) == text


def test_auth_secs_zero_without_a_sasl_attempt() -> None:
    # attempts refused before the SASL layer (SSL required) never start the clock
    assert _with(auth_secs=0) == "(auth failed, 1 attempts in 0 secs)"
