"""The passdb chain runner: run the configured passdbs in order for one login attempt.

Theory of operation (Dovecot's ``auth-request.c``: ``auth_request_set_field``,
``auth_request_password_verify``, ``auth_request_handle_passdb_callback``):

Before any lookup the user name is checked and lowercased (``username.py``).
Then, for each passdb that its ``skip`` setting does not exclude:

1. Remember the extra fields so far (a snapshot) and forget the previous
   passdb's stored password.
2. Look in the auth cache (``cached.py``); on a miss apply ``default_fields``,
   then every field the driver returned, through the field rules
   (``attempt.py``), then verify the password, then apply ``override_fields``.
3. Apply the result rules (``rules.py``): ``continue*`` goes on with the next
   passdb; after a successful ``continue`` the password counts as verified
   (``skip_password_check``) and ``skip = authenticated`` passdbs are skipped.
4. At the end, turn the result and the fields into the reply (``reply.py``).

A master user login (``alice*admin`` with ``auth_master_user_separator``, or
an authzid) runs only the ``master = yes`` passdbs first, for the master
user and its password.  When one succeeds the request becomes the login
user's (``Master user logging in as alice``); if its ``result_success`` is
``continue`` (``pass = yes``) the user's own passdbs follow, without a
password check, else the login succeeds there.  A failure after the master
user was accepted is an authorization failure.

Credentials lookups (``lookup_credentials``, for the mechanisms that need the
stored password rather than the typed one) run the same rules; "the password
matched" becomes "the stored password gives the wanted credentials".

Not supported: passdb ``mechanisms``/``username_filter`` and ``deny`` passdbs.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, cast

from proxyd.auth.cache import AuthCache, parse_cache_key
from proxyd.auth.chain.attempt import Attempt, Result
from proxyd.auth.chain.cached import ChainCache
from proxyd.auth.chain.reply import build_reply
from proxyd.auth.chain.rules import RULES, apply_result_rules
from proxyd.auth.expand import ExpandError, request_variables
from proxyd.auth.fields import Template
from proxyd.auth.passdb import Passdb, PassdbReply, PassdbTempFail, VerifyingPassdb
from proxyd.auth.request import AuthReply, AuthRequest, AuthStatus
from proxyd.auth.username import (
    DEFAULT_RULES,
    UsernameError,
    UsernameRules,
    normalize_username,
    password_has_illegal_chars,
)
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError

log = logging.getLogger("proxyd.auth")

_SKIPS: Final = frozenset({"never", "authenticated", "unauthenticated"})


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """One opened passdb with its parsed settings."""

    settings: PassdbSettings
    passdb: Passdb
    default_fields: Template
    override_fields: Template
    #: the auth cache key template (``cache.parse_cache_key``); None: never cached
    cache_key: str | None = None

    @classmethod
    def build(cls, settings: PassdbSettings, passdb: Passdb) -> ChainEntry:
        """Validate the chain settings of ``settings``; raises ``ConfigError`` with its location.

        A driver that wants its results cached has a ``cache_key`` attribute:
        the text (query, filter) whose %-variables its lookup depends on.
        ``pass = yes`` is Dovecot's older spelling of ``result_success = continue``.
        """
        if settings.pass_:
            settings = dataclasses.replace(settings, result_success="continue")
        for name in ("result_success", "result_failure", "result_internalfail"):
            value = getattr(settings, name)
            if value not in RULES:
                raise ConfigError(settings.location, f"passdb: Unknown {name} value '{value}'")
        if settings.skip not in _SKIPS:
            raise ConfigError(settings.location, f"passdb: Unknown skip value '{settings.skip}'")
        try:
            defaults = Template.parse(settings.default_fields)
            overrides = Template.parse(settings.override_fields)
        except ValueError as exc:
            raise ConfigError(settings.location, str(exc)) from None
        key_text = getattr(passdb, "cache_key", None)
        cache_key = parse_cache_key(key_text) if isinstance(key_text, str) else None
        return cls(settings, passdb, defaults, overrides, cache_key)

    @property
    def name(self) -> str:
        """The name Dovecot puts in log prefixes: the passdb's name, else its driver."""
        return self.settings.name or self.settings.driver


@dataclass(frozen=True, slots=True)
class ChainResult:
    """The chain's answer: the reply, and when a success may be sent (``delay_until``)."""

    reply: AuthReply
    delay_until: float | None = None  # wall-clock seconds since the epoch
    #: the raw credentials a ``lookup_credentials`` run found (None otherwise)
    credentials: bytes | None = dataclasses.field(default=None, repr=False)



@functools.cache
def _verifies_itself(kind: type) -> bool:
    """The passdb checks passwords itself (``VerifyingPassdb``: it is a ``Passdb`` with a
    ``verify_plain``), decided once per class: an ``isinstance`` against a
    runtime-checkable Protocol costs ~20 µs a call."""
    return callable(getattr(kind, "verify_plain", None))


class PassdbChain:
    """The configured passdbs, in order; one ``run`` per login attempt."""

    def __init__(
        self,
        entries: Sequence[ChainEntry],
        *,
        verbose: bool = False,
        debug: bool = False,
        cache: AuthCache | None = None,
        username_rules: Callable[[str], UsernameRules] | None = None,
    ) -> None:
        self._entries = tuple(entries)
        #: protocol -> auth_username_* rules (settings of protocol blocks applied)
        self._username_rules = username_rules or (lambda _protocol: DEFAULT_RULES)
        self._verbose = verbose or debug
        self._debug = debug
        self._cache = ChainCache(cache) if cache is not None else None

    @property
    def cache(self) -> AuthCache | None:
        """The auth cache, if ``auth_cache_size`` enabled one."""
        return self._cache.cache if self._cache is not None else None

    async def authenticate(self, request: AuthRequest) -> ChainResult:
        """Look the user up and verify ``request.password``."""
        return await self._run(request, verify_password=True)

    async def lookup(self, request: AuthRequest) -> ChainResult:
        """Look the user up without checking any password."""
        return await self._run(request, verify_password=False)

    async def lookup_credentials(
        self, request: AuthRequest, scheme: str, scheme_user: str
    ) -> ChainResult:
        """Look the user up for its credentials in ``scheme`` (``auth_request_lookup_credentials()``).

        The passdb rules run as for a password check, with "the password
        matched" replaced by "the stored password gives credentials in
        ``scheme``" (``scheme_user`` is the name a plaintext password is
        hashed with); the mechanism then checks the client's proof against
        ``ChainResult.credentials``.
        """
        return await self._run(request, verify_password=True, wanted=(scheme, scheme_user))

    async def _run(
        self,
        request: AuthRequest,
        *,
        verify_password: bool,
        wanted: tuple[str, str] | None = None,
    ) -> ChainResult:
        # what a trusted proxy in front forwarded is in the extra fields from the start,
        # as Dovecot imports it: %{passdb:forward_NAME} sees it, a passdb may override it
        forwarded = {f"forward_{key}": value for key, value in request.conn.forward_fields.items()}
        attempt = Attempt(
            request=request,
            original_user=request.user,
            user=request.user,
            verify_password=verify_password,
            verbose=self._verbose,
            debug=self._debug,
            fields=dict(forwarded),
            snapshot=dict(forwarded),
        )
        if wanted is not None:
            attempt.wanted_scheme, attempt.scheme_user = wanted
        mech_subsystem = request.mech.lower() or "auth"
        if verify_password and request.password is None and wanted is None:
            attempt.error("No password given for authentication")
            return ChainResult(build_reply(attempt, Result.USER_UNKNOWN))
        try:
            attempt.user = normalize_username(
                request.user,
                self._username_rules(request.conn.service),
                lambda name: request_variables(request, user=name),
            )
        except UsernameError as exc:
            attempt.info(str(exc), mech_subsystem)
            return ChainResult(build_reply(attempt, Result.USER_UNKNOWN))
        if request.login_user and request.login_user != request.user:
            if not any(entry.settings.master for entry in self._entries):
                attempt.info("Master user login attempted without master passdbs", mech_subsystem)
                return ChainResult(build_reply(attempt, Result.USER_UNKNOWN))
            try:
                attempt.login_user = normalize_username(request.login_user)
            except UsernameError as exc:
                attempt.info(str(exc), mech_subsystem)
                return ChainResult(build_reply(attempt, Result.USER_UNKNOWN))
            attempt.debug_log(f"Master user lookup for login: {attempt.login_user}")
        if (
            verify_password
            and request.password is not None
            and password_has_illegal_chars(request.password.reveal())
        ):
            attempt.info("Attempted login with password having illegal chars", mech_subsystem)
            return ChainResult(build_reply(attempt, Result.USER_UNKNOWN))

        index = self._next_index(attempt, 0)
        if index is None:
            attempt.error("All password databases were skipped")
            return ChainResult(build_reply(attempt, Result.INTERNAL_FAILURE))
        while True:
            entry = self._entries[index]
            attempt.passdb_name = entry.name
            result = await self._one_passdb(attempt, entry, index)
            start = index + 1
            if attempt.login_user and result is Result.OK and not attempt.failed:
                self._master_login_finish(attempt)
                start = 0  # a continuing chain goes on with the user's own passdbs
            done, result = apply_result_rules(
                attempt, entry.settings, result, functools.partial(self._has_next, attempt, start)
            )
            if done:
                break
            next_index = self._next_index(attempt, start)
            assert next_index is not None  # the rules only continue when there is one
            index = next_index

        if (
            result is Result.SCHEME_NOT_AVAILABLE
            and wanted is not None
            and attempt.seen_user_unknown
        ):
            # one of the passdbs accepted the scheme, but the user was unknown there
            result = Result.USER_UNKNOWN
        reply = build_reply(attempt, result)
        ok = reply.status is AuthStatus.OK
        return ChainResult(
            reply, attempt.delay_until if ok else None, attempt.credentials if ok else None
        )

    @staticmethod
    def _master_login_finish(attempt: Attempt) -> None:
        """A master passdb accepted the master user: from now on the request is the login user's."""
        attempt.info(f"Master user logging in as {attempt.login_user}")
        attempt.master_user = attempt.user
        attempt.user = attempt.login_user
        attempt.login_user = ""

    def _has_next(self, attempt: Attempt, start: int) -> bool:
        return self._next_index(attempt, start) is not None

    def _next_index(self, attempt: Attempt, start: int) -> int | None:
        """The next passdb to run from ``start``: a master passdb while the master user is
        being checked, else one of the user's own."""
        master_phase = bool(attempt.login_user)
        for index in range(start, len(self._entries)):
            if self._entries[index].settings.master != master_phase:
                continue
            skip = self._entries[index].settings.skip
            if skip == "authenticated" and attempt.skip_password_check:
                continue
            if skip == "unauthenticated" and not attempt.skip_password_check:
                continue
            return index
        return None

    async def _one_passdb(self, attempt: Attempt, entry: ChainEntry, index: int) -> Result:
        attempt.passdb_password = None
        before = dict(attempt.fields)
        before_failed = attempt.failed
        cache = self._cache if entry.cache_key is not None else None
        cache_key = None
        if cache is not None and entry.cache_key is not None:
            cache_key = cache.key(attempt, entry.cache_key, index)
        if cache is not None and cache_key is not None:
            cached = await cache.lookup(attempt, cache_key, use_expired=False)
            if cached is not None:
                attempt.debug_log(f"Finished passdb lookup: {cached.value} (cached)")
                return cached
        attempt.debug_log("Performing passdb lookup")
        try:
            attempt.export(entry.default_fields, "default_fields")
            result = await self._query(attempt, entry)
        except PassdbTempFail as exc:
            attempt.error(str(exc) or "passdb lookup failed")
            result = Result.INTERNAL_FAILURE
        except ExpandError as exc:
            attempt.error(f"Failed to expand template: {exc}")
            result = Result.INTERNAL_FAILURE
        except Exception:  # a driver bug must not take the login process down
            log.exception("%sUnexpected error in passdb lookup", attempt.prefix())
            result = Result.INTERNAL_FAILURE
        try:
            attempt.export(entry.override_fields, "override_fields")
        except ExpandError as exc:
            attempt.error(f"Failed to expand override_fields: {exc}")
            result = Result.INTERNAL_FAILURE
        if cache is not None and cache_key is not None:
            if result is Result.INTERNAL_FAILURE:
                attempt.fields = dict(before)
                attempt.failed = before_failed
                attempt.passdb_password = None
                fallback = await cache.lookup(attempt, cache_key, use_expired=True)
                if fallback is not None:
                    attempt.info("Falling back to expired data from cache")
                    return fallback
            else:
                cache.save(attempt, cache_key, result, before)
        if attempt.debug:
            attempt.debug_log(f"Finished passdb lookup: {result.value}")
        return result

    async def _query(self, attempt: Attempt, entry: ChainEntry) -> Result:
        request = attempt.request.for_passdb(
            attempt.user, dict(attempt.fields), attempt.wanted_scheme or ""
        )
        password = attempt.request.password
        passdb = entry.passdb
        checks_itself = (
            attempt.verify_password
            and not attempt.skip_password_check
            and password is not None
            and _verifies_itself(type(passdb))
        )
        reply: PassdbReply
        if checks_itself:
            assert password is not None
            reply = await cast("VerifyingPassdb", passdb).verify_plain(request, password)
        else:
            reply = await passdb.lookup(request)
        result = Result.of(reply.result)
        if result is Result.INTERNAL_FAILURE:
            attempt.error("passdb lookup failed")
            return result
        if result is Result.USER_UNKNOWN:
            attempt.info("unknown user")
            return result
        for name, value in reply.fields:
            if value is None or not name:
                continue  # NULL columns and nameless ones are skipped
            attempt.set_field(name, value, passdb.default_pass_scheme)
        if result is not Result.OK:
            if result is Result.PASSWORD_MISMATCH:
                attempt.info("Password mismatch")
            return result
        if "noauthenticate" in attempt.fields:
            return Result.NEXT
        if attempt.verify_password and not checks_itself:
            result = await self._verify(attempt, passdb.default_pass_scheme)
        return result

    async def _verify(self, attempt: Attempt, default_scheme: str) -> Result:
        if attempt.skip_password_check:
            return Result.OK
        if attempt.wanted_scheme is not None:
            if "nopassword" in attempt.fields or attempt.passdb_password is None:
                attempt.info(
                    f"Requested {attempt.wanted_scheme} scheme, but we have a NULL password"
                )
                return Result.SCHEME_NOT_AVAILABLE
            return await attempt.get_credentials(attempt.passdb_password, default_scheme)
        if "nopassword" in attempt.fields:
            attempt.debug_log("Allowing any password")
            return Result.OK
        if attempt.passdb_password is None:
            attempt.info("No password returned (and no nopassword)")
            return Result.PASSWORD_MISMATCH
        return await attempt.check_password(attempt.passdb_password, default_scheme)
