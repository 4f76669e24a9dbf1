"""The auth cache in the chain (Dovecot's ``passdb-cache.c``).

A passdb whose driver has a ``cache_key`` is looked up in the cache first.  A
negative entry is an unknown user.  A positive entry is verified against the
cached password (or accepted at once for a ``nopassword`` entry), then its
fields are replayed through the field rules; ``default_fields`` /
``override_fields`` are not applied again (the cached fields already hold
their effect).  A wrong password against an entry whose last check succeeded,
or that is older than the negative TTL, counts as a miss: the password may
have changed, so the passdb is asked.  After a real lookup the result is
stored (OK, password mismatch, unknown user, unknown scheme; never a
temporary failure); a passdb that checks passwords itself (LDAP ``auth_bind``)
gets a salted hash of the password that worked.  A temporary failure falls
back to an expired entry when there is one.
"""

from __future__ import annotations

from typing import Final

from proxyd import counters
from proxyd.auth import schemes
from proxyd.auth.cache import AuthCache, CachedPassdb, expand_cache_key
from proxyd.auth.chain.attempt import STATIC_PASS_SCHEME, Attempt, Result
from proxyd.auth.expand import ExpandError, request_variables

#: how the cache keeps a password that a passdb checked itself (Dovecot: SHA1)
CACHED_PASSWORD_SCHEME: Final = "SSHA256"  # noqa: S105 - a scheme name


class ChainCache:
    """The auth cache as the chain uses it: keys, hits and stores for one attempt."""

    def __init__(self, cache: AuthCache) -> None:
        self.cache = cache

    def key(self, attempt: Attempt, template: str, index: int) -> str | None:
        """The cache key of passdb number ``index`` (from 0), or None when it cannot expand."""
        variables = request_variables(
            attempt.request,
            user=attempt.user,
            original_user=attempt.original_user,
            passdb_fields=attempt.fields,
        )
        try:
            return expand_cache_key(index + 1, template, variables)
        except ExpandError as exc:
            attempt.error(f"Failed to expand auth cache key: {exc}")
            return None

    async def lookup(self, attempt: Attempt, key: str, *, use_expired: bool) -> Result | None:
        """The result from a cache entry, or None when the passdb must be asked."""
        hit = self.cache.lookup(key)
        if hit is None or (hit.expired and not use_expired):
            attempt.debug_log("cache miss" if hit is None else "cache expired")
            counters.add(counters.Counter.AUTH_CACHE_MISSES)
            return None
        counters.add(counters.Counter.AUTH_CACHE_HITS)
        node = hit.node
        if node.value is None:
            attempt.debug_log("cache hit: user unknown")
            attempt.info("unknown user (cached)")
            return Result.USER_UNKNOWN
        cached = node.value
        result = Result.OK
        if attempt.verify_password and not attempt.skip_password_check:
            if cached.password is None:
                attempt.info("Cached NULL password access")
            elif attempt.wanted_scheme is not None:
                result = await attempt.get_credentials(cached.password, STATIC_PASS_SCHEME)
            else:
                checked = await attempt.check_password(cached.password, STATIC_PASS_SCHEME)
                if checked is Result.PASSWORD_MISMATCH and (
                    node.last_success or hit.negative_expired
                ):
                    # the password may have been changed: ask the passdb
                    attempt.debug_log("cached password mismatch, looking up again")
                    node.last_success = False
                    return None
                if checked not in (Result.OK, Result.PASSWORD_MISMATCH):
                    return None  # a broken cached password: ask the passdb
                result = checked
                node.last_success = result is Result.OK
        attempt.debug_log("cache hit")
        for name, value in cached.fields:
            attempt.set_field(name, value, STATIC_PASS_SCHEME)
        return result

    def save(self, attempt: Attempt, key: str, result: Result, before: dict[str, str]) -> None:
        """Store a real lookup's ``result`` and the fields it changed since ``before``."""
        if result is Result.USER_UNKNOWN:
            self.cache.insert(key, None, last_success=False)
            return
        if result not in (Result.OK, Result.PASSWORD_MISMATCH, Result.SCHEME_NOT_AVAILABLE):
            return  # NEXT, USER_DISABLED, PASS_EXPIRED would come back as a success
        password = attempt.passdb_password
        if "nopassword" in attempt.fields:
            password = None
        elif password is None:
            typed = attempt.request.password
            if result is not Result.OK or typed is None or not attempt.verify_password:
                return  # nothing to check a later password against
            # the passdb checked the password itself (auth_bind): keep a hash of it
            password = schemes.hash_password(typed.reveal(), CACHED_PASSWORD_SCHEME)
        changed = tuple(
            (name, value) for name, value in attempt.fields.items() if before.get(name) != value
        )
        self.cache.insert(key, CachedPassdb(password, changed), last_success=result is Result.OK)
