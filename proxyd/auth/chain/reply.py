"""The chain's reply to the login process: which fields it sees, and the status."""

from __future__ import annotations

from typing import Final

from proxyd.auth.chain.attempt import Attempt, Result
from proxyd.auth.request import AuthReply, AuthStatus, FailCode

#: fields the chain acts on itself; they never reach the login process
HIDDEN: Final = frozenset(
    {
        "user",
        "username",
        "domain",
        "login_user",
        "allow_nets",
        "allow_real_nets",
        "fail",
        "delay_until",
    }
)


def build_reply(attempt: Attempt, result: Result) -> AuthReply:
    """The reply for the chain's final ``result``."""
    visible = {k: v for k, v in attempt.fields.items() if k not in HIDDEN}
    for flag in ("proxy", "nologin"):
        if flag in visible:
            visible[flag] = ""  # Dovecot booleanizes these for the login process
    success = result is Result.OK and attempt.passdb_success and not attempt.failed

    if success:
        if attempt.original_user != attempt.user and "original_user" not in visible:
            visible["original_user"] = attempt.original_user
        if attempt.master_user and "auth_user" not in visible:
            visible["auth_user"] = attempt.master_user
        password = attempt.request.password
        if "proxy" in visible and "pass" not in visible and password is not None:
            # forward the password the client typed, not the passdb's
            visible["pass"] = password.reveal()
        if "proxy" in visible and "master" not in visible and attempt.master_user:
            # the master user logs in to the backend as well
            visible["master"] = attempt.master_user
        if "nologin" in visible and "proxy" not in visible:
            # Dovecot answers OK+nologin and the login process refuses the
            # login; here the refusal is explicit (proxy wins, as there)
            return AuthReply(
                status=AuthStatus.FAIL,
                user=attempt.user,
                fields=visible,
                fail_code=FailCode.LOGIN_DISABLED,
                reason=visible.get("reason") or None,
            )
        return AuthReply(status=AuthStatus.OK, user=attempt.user, fields=visible)

    visible.pop("nologin", None)
    if result is Result.INTERNAL_FAILURE:
        return AuthReply(
            status=AuthStatus.TEMPFAIL,
            user=attempt.user,
            fields=visible,
            fail_code=FailCode.TEMP_FAIL,
        )
    if attempt.master_user:
        # the master user authenticated, but may not log in as the wanted user
        code = FailCode.AUTHZ_FAIL
    elif result is Result.USER_DISABLED:
        code = FailCode.USER_DISABLED
    elif result is Result.PASS_EXPIRED:
        code = FailCode.PASS_EXPIRED
    else:
        code = FailCode.AUTH_FAILED
    return AuthReply(
        status=AuthStatus.FAIL,
        user=attempt.user,
        fields=visible,
        fail_code=code,
        reason=visible.get("reason") or None,
    )
