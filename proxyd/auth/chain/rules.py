"""The result rules: what one passdb's result means for the chain.

Dovecot's ``auth_request_handle_passdb_callback``: OK → ``result_success``,
INTERNAL_FAILURE (a ``PassdbTempFail``) → ``result_internalfail``, everything
else → ``result_failure``; ``noauthenticate`` → continue.  USER_DISABLED and
PASS_EXPIRED end the chain at once, rules ignored.  A successful passdb's
fields are kept, a failed one's rolled back to the snapshot; ``nopassword`` /
``noauthenticate`` never leak into the next passdb.  At the end, success needs
an OK result *and* an earlier ``return-ok`` / ``continue-ok``; otherwise an
internal failure seen on the way turns into a temporary failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from proxyd.auth.chain.attempt import STATIC_PASS_SCHEME, Attempt, Result
from proxyd.config.settings import PassdbSettings

RULES: Final = frozenset(
    {"return-ok", "return-fail", "return", "continue", "continue-ok", "continue-fail"}
)


def apply_result_rules(
    attempt: Attempt,
    settings: PassdbSettings,
    result: Result,
    has_next: Callable[[], bool],
) -> tuple[bool, Result]:
    """Apply the ``result_*`` rules of ``settings``; ``(done, result)``.

    ``has_next`` says whether a passdb follows; it is asked after the rules
    have updated ``attempt`` (a verified password skips ``skip = authenticated``).
    """
    if attempt.failed:
        # something inside the passdb failed (allow_nets, fail, ...): this
        # lookup fails, but the next passdb may still succeed
        if result is Result.OK:
            result = Result.USER_UNKNOWN
        attempt.failed = False
    if result is Result.USER_UNKNOWN:
        attempt.seen_user_unknown = True
    if result is Result.USER_DISABLED:
        return True, result
    if result is Result.PASS_EXPIRED:
        attempt.set_field("reason", "Password expired", STATIC_PASS_SCHEME)
        return True, result

    if result is Result.OK:
        rule = settings.result_success
    elif result is Result.INTERNAL_FAILURE:
        rule = settings.result_internalfail
    elif result is Result.NEXT:
        attempt.debug_log("Not performing authentication (noauthenticate set)")
        rule = "continue"
    else:
        rule = settings.result_failure

    passdb_continue = rule.startswith("continue")
    if rule in ("return-ok", "continue-ok"):
        attempt.passdb_success = True
    elif rule in ("return-fail", "continue-fail"):
        attempt.passdb_success = False
    if rule == "continue-ok" or (rule == "continue" and result is Result.OK):
        # the password was verified: later passdbs need not check it again
        attempt.skip_password_check = True

    # nopassword is specific to one passdb
    attempt.fields.pop("nopassword", None)
    attempt.fields.pop("noauthenticate", None)

    if result in (Result.OK, Result.NEXT):
        attempt.snapshot = dict(attempt.fields)
    else:
        attempt.fields = dict(attempt.snapshot)

    if passdb_continue and has_next():
        if result is Result.INTERNAL_FAILURE:
            attempt.seen_internal_failure = True
        return False, result
    if result is Result.NEXT:
        attempt.error("Last passdb had noauthenticate field, cannot authenticate user")
        return True, Result.INTERNAL_FAILURE
    if attempt.passdb_success:
        return True, Result.OK
    if attempt.seen_internal_failure:
        return True, Result.INTERNAL_FAILURE
    return True, result
