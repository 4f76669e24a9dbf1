"""The auth process's side of a plaintext exchange, for login tests with a fake passdb answer.

``run_exchange`` does what ``Authenticator.sasl`` does for PLAIN, LOGIN, XOAUTH2 and
OAUTHBEARER (challenges through ``io``, Dovecot's OAuth2 JSON error before a failure),
but asks ``authenticate`` for the reply instead of the passdb chain, with no delay.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from proxyd.auth.mechanisms import create
from proxyd.auth.request import AuthReply, AuthRequest, AuthStatus, FailCode, SaslIO, SaslStart
from proxyd.protocols.sasl import (
    OAUTH2_MECHANISMS,
    Challenge,
    Credentials,
    SaslFailed,
    oauth2_failure_challenge,
)
from proxyd.secret import Secret

_FAILED = AuthReply(status=AuthStatus.FAIL, user="", fail_code=FailCode.AUTH_FAILED)


async def run_exchange(
    start: SaslStart, io: SaslIO, authenticate: Callable[[AuthRequest], Awaitable[AuthReply]]
) -> AuthReply:
    try:
        mech = create(start.mech)
    except KeyError:
        return AuthReply(status=AuthStatus.TEMPFAIL, user="", fail_code=FailCode.TEMP_FAIL)
    step = mech.start(start.initial_response)
    while isinstance(step, Challenge):
        response = await io.challenge(step.data)
        if response is None:
            return _FAILED
        step = mech.step(response)
    if isinstance(step, Credentials):
        reply = await authenticate(
            AuthRequest(
                conn=start.conn,
                mech=start.mech,
                user=step.authcid,
                password=Secret(step.password),
                login_user=step.authzid if step.authzid != step.authcid else "",
            )
        )
    else:
        assert isinstance(step, SaslFailed), step
        reply = _FAILED
    if (
        start.mech in OAUTH2_MECHANISMS
        and reply.status is not AuthStatus.OK
        and reply.fail_code is not FailCode.LOGIN_DISABLED
    ):
        await io.challenge(oauth2_failure_challenge(start.mech))
    return reply
