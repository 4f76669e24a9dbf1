"""The passdb chain: run the configured passdbs in order for one login attempt.

Theory of operation (Dovecot's ``auth-request.c``: ``auth_request_set_field``,
``auth_request_password_verify``, ``auth_request_handle_passdb_callback``):

Before any lookup the user name is checked and lowercased (``username.py``).
Then, for each passdb that its ``skip`` setting does not exclude:

1. Remember the extra fields so far (a snapshot) and forget the previous
   passdb's stored password.
2. Apply ``default_fields``, then every field the driver returned, through
   ``_set_field`` (the field rules below), then verify the password, then apply
   ``override_fields``.
3. Map the result to a rule: OK → ``result_success``, INTERNAL_FAILURE (a
   ``PassdbTempFail``) → ``result_internalfail``, everything else →
   ``result_failure``; ``noauthenticate`` → continue.  USER_DISABLED and
   PASS_EXPIRED end the chain at once, rules ignored.
4. A successful passdb's fields are kept; a failed one's are rolled back to the
   snapshot.  ``nopassword``/``noauthenticate`` never leak into the next passdb.
5. ``continue*`` goes on with the next passdb; after a successful ``continue``
   the password counts as verified (``skip_password_check``) and ``skip =
   authenticated`` passdbs are skipped.
6. At the end: success needs an OK result *and* an earlier ``return-ok`` /
   ``continue-ok`` (``passdb_success``); otherwise an internal failure seen on
   the way turns into a temporary failure, everything else is a plain failure.

Field rules (``_set_field``): ``name:protected`` sets only if unset,
``name:remove`` deletes; ``password``/``password_noscheme`` is the stored
password (the driver's default scheme is prepended when it has no
``{SCHEME}``; a second one is an error); ``user``/``username``/``domain``
rewrite the user name; ``nopassword`` accepts any password (refused with an
error when a non-empty password was returned too); ``allow_nets``,
``allow_real_nets``, ``fail`` and ``delay_until`` are checks; ``userdb_*`` are
dropped (proxyd has no userdb); ``passdb_import`` sets a tab-separated list;
everything else is an extra field for the login process.  NULL values (None)
are skipped, and any non-NULL value, even ``N`` or ``""``, enables a boolean.

The auth cache (``cache.py``, Dovecot's ``passdb-cache.c``): a passdb whose
driver has a ``cache_key`` is looked up in the cache first.  A negative entry
is an unknown user.  A positive entry is verified against the cached password
(or accepted at once for a ``nopassword`` entry), then its fields are replayed
through the field rules; ``default_fields``/``override_fields`` are not applied
again (the cached fields already hold their effect).  A wrong password against
an entry whose last check succeeded, or that is older than the negative TTL,
counts as a miss: the password may have changed, so the passdb is asked.
After a real lookup the result is stored (OK, password mismatch, unknown user,
unknown scheme; never a temporary failure); a passdb that checks passwords
itself (LDAP ``auth_bind``) gets a salted hash of the password that worked.  A
temporary failure falls back to an expired entry when there is one.

Not supported yet: master users (``login_user``, ``master = yes`` passdbs),
passdb ``mechanisms``/``username_filter``, ``proxy_maybe`` resolution (DNS,
self detection) and ``deny`` passdbs.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from proxyd.auth import schemes
from proxyd.auth.cache import AuthCache, CachedPassdb, expand_cache_key, parse_cache_key
from proxyd.auth.expand import ExpandError, request_variables
from proxyd.auth.fields import Template
from proxyd.auth.passdb import Passdb, PassdbReply, PassdbResult, PassdbTempFail, VerifyingPassdb
from proxyd.auth.request import AuthReply, AuthRequest, AuthStatus, FailCode
from proxyd.auth.username import (
    UsernameError,
    normalize_username,
    password_has_illegal_chars,
    sanitize_for_log,
)
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError

log = logging.getLogger("proxyd.auth")

#: the scheme for passwords in default_fields/override_fields (Dovecot's STATIC_PASS_SCHEME)
STATIC_PASS_SCHEME: Final = "PLAIN"  # noqa: S105 - a scheme name
#: how the cache keeps a password that a passdb checked itself (Dovecot: SHA1)
CACHED_PASSWORD_SCHEME: Final = "SSHA256"  # noqa: S105 - a scheme name
#: delay_until may be at most this far in the future (AUTH_REQUEST_MAX_DELAY_SECS)
MAX_DELAY_SECS: Final = 300

_RULES: Final = frozenset(
    {"return-ok", "return-fail", "return", "continue", "continue-ok", "continue-fail"}
)
_SKIPS: Final = frozenset({"never", "authenticated", "unauthenticated"})
#: fields the chain acts on itself; they never reach the login process
_HIDDEN: Final = frozenset(
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


class _Result(enum.Enum):
    """PassdbResult plus Dovecot's internal PASSDB_RESULT_NEXT (``noauthenticate``)."""

    OK = "ok"
    NEXT = "next"
    USER_UNKNOWN = "user_unknown"
    USER_DISABLED = "user_disabled"
    PASS_EXPIRED = "pass_expired"  # noqa: S105 - result names, not passwords
    PASSWORD_MISMATCH = "password_mismatch"  # noqa: S105
    SCHEME_NOT_AVAILABLE = "scheme_not_available"
    INTERNAL_FAILURE = "internal_failure"

    @classmethod
    def of(cls, result: PassdbResult) -> _Result:
        return cls(result.value)


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
        """
        for name in ("result_success", "result_failure", "result_internalfail"):
            value = getattr(settings, name)
            if value not in _RULES:
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


@dataclass(slots=True)
class _State:
    """Per-request mutable state of one chain run."""

    request: AuthRequest
    original_user: str
    user: str
    verify_password: bool
    fields: dict[str, str] = dataclasses.field(default_factory=dict)
    #: the fields as the last successful passdb left them (rolled back to on failure)
    snapshot: dict[str, str] = dataclasses.field(default_factory=dict)
    passdb_password: str | None = None
    failed: bool = False
    skip_password_check: bool = False
    passdb_success: bool = False
    seen_internal_failure: bool = False
    delay_until: float | None = None
    entry: ChainEntry | None = None


class PassdbChain:
    """The configured passdbs, in order; one ``run`` per login attempt."""

    def __init__(
        self,
        entries: Sequence[ChainEntry],
        *,
        verbose: bool = False,
        debug: bool = False,
        cache: AuthCache | None = None,
    ) -> None:
        self._entries = tuple(entries)
        self._verbose = verbose or debug
        self._debug = debug
        self._cache = cache

    @property
    def cache(self) -> AuthCache | None:
        """The auth cache, if ``auth_cache_size`` enabled one."""
        return self._cache

    async def authenticate(self, request: AuthRequest) -> ChainResult:
        """Look the user up and verify ``request.password``."""
        return await self._run(request, verify_password=True)

    async def lookup(self, request: AuthRequest) -> ChainResult:
        """Look the user up without checking any password."""
        return await self._run(request, verify_password=False)

    # -- logging -------------------------------------------------------------

    def _prefix(self, state: _State, subsystem: str | None = None) -> str:
        conn = state.request.conn
        name = subsystem or (state.entry.name if state.entry is not None else "auth")
        parts = [sanitize_for_log(state.user) if state.user else "?"]
        if conn.remote_ip:
            parts.append(conn.remote_ip)
        if conn.session_id:
            parts.append(f"<{conn.session_id}>")
        return f"{name}({','.join(parts)}): "

    def _info(self, state: _State, message: str, subsystem: str | None = None) -> None:
        if self._verbose:
            log.info("%s%s", self._prefix(state, subsystem), message)

    def _debug_log(self, state: _State, message: str) -> None:
        if self._debug:
            log.debug("%s%s", self._prefix(state), message)

    def _error(self, state: _State, message: str) -> None:
        log.error("%s%s", self._prefix(state), message)

    # -- the run ---------------------------------------------------------------

    async def _run(self, request: AuthRequest, *, verify_password: bool) -> ChainResult:
        # what a trusted proxy in front forwarded is in the extra fields from the start,
        # as Dovecot imports it: %{passdb:forward_NAME} sees it, a passdb may override it
        forwarded = {f"forward_{key}": value for key, value in request.conn.forward_fields.items()}
        state = _State(
            request=request,
            original_user=request.user,
            user=request.user,
            verify_password=verify_password,
            fields=dict(forwarded),
            snapshot=dict(forwarded),
        )
        mech_subsystem = request.mech.lower() or "auth"
        if verify_password and request.password is None:
            self._error(state, "No password given for authentication")
            return ChainResult(self._reply(state, _Result.USER_UNKNOWN))
        try:
            state.user = normalize_username(request.user)
        except UsernameError as exc:
            self._info(state, str(exc), mech_subsystem)
            return ChainResult(self._reply(state, _Result.USER_UNKNOWN))
        if request.login_user and request.login_user != request.user:
            self._info(state, "Master user login attempted without master passdbs", mech_subsystem)
            return ChainResult(self._reply(state, _Result.USER_UNKNOWN))
        if (
            verify_password
            and request.password is not None
            and password_has_illegal_chars(request.password.reveal())
        ):
            self._info(state, "Attempted login with password having illegal chars", mech_subsystem)
            return ChainResult(self._reply(state, _Result.USER_UNKNOWN))

        index = self._next_index(state, 0)
        if index is None:
            self._error(state, "All password databases were skipped")
            return ChainResult(self._reply(state, _Result.INTERNAL_FAILURE))
        while True:
            entry = self._entries[index]
            state.entry = entry
            result = await self._one_passdb(state, entry, index)
            done, result = self._handle_result(state, entry, result, index)
            if done:
                break
            next_index = self._next_index(state, index + 1)
            assert next_index is not None  # _handle_result only continues when there is one
            index = next_index

        reply = self._reply(state, result)
        delay = state.delay_until if reply.status is AuthStatus.OK else None
        return ChainResult(reply, delay)

    def _next_index(self, state: _State, start: int) -> int | None:
        for index in range(start, len(self._entries)):
            skip = self._entries[index].settings.skip
            if skip == "authenticated" and state.skip_password_check:
                continue
            if skip == "unauthenticated" and not state.skip_password_check:
                continue
            return index
        return None

    async def _one_passdb(self, state: _State, entry: ChainEntry, index: int) -> _Result:
        state.passdb_password = None
        before = dict(state.fields)
        before_failed = state.failed
        cache_key = self._cache_key(state, entry, index)
        if cache_key is not None:
            cached = await self._from_cache(state, cache_key, use_expired=False)
            if cached is not None:
                self._debug_log(state, f"Finished passdb lookup: {cached.value} (cached)")
                return cached
        self._debug_log(state, "Performing passdb lookup")
        try:
            self._export(state, entry.default_fields, "default_fields")
            result = await self._query(state, entry)
        except PassdbTempFail as exc:
            self._error(state, str(exc) or "passdb lookup failed")
            result = _Result.INTERNAL_FAILURE
        except ExpandError as exc:
            self._error(state, f"Failed to expand template: {exc}")
            result = _Result.INTERNAL_FAILURE
        except Exception:  # a driver bug must not take the login process down
            log.exception("%sUnexpected error in passdb lookup", self._prefix(state))
            result = _Result.INTERNAL_FAILURE
        try:
            self._export(state, entry.override_fields, "override_fields")
        except ExpandError as exc:
            self._error(state, f"Failed to expand override_fields: {exc}")
            result = _Result.INTERNAL_FAILURE
        if cache_key is not None:
            if result is _Result.INTERNAL_FAILURE:
                state.fields = dict(before)
                state.failed = before_failed
                state.passdb_password = None
                fallback = await self._from_cache(state, cache_key, use_expired=True)
                if fallback is not None:
                    self._info(state, "Falling back to expired data from cache")
                    return fallback
            else:
                self._save_cache(state, cache_key, result, before)
        self._debug_log(state, f"Finished passdb lookup: {result.value}")
        return result

    # -- the auth cache -----------------------------------------------------------

    def _cache_key(self, state: _State, entry: ChainEntry, index: int) -> str | None:
        if self._cache is None or entry.cache_key is None:
            return None
        variables = request_variables(
            state.request,
            user=state.user,
            original_user=state.original_user,
            passdb_fields=state.fields,
        )
        try:
            return expand_cache_key(index + 1, entry.cache_key, variables)
        except ExpandError as exc:
            self._error(state, f"Failed to expand auth cache key: {exc}")
            return None

    async def _from_cache(self, state: _State, key: str, *, use_expired: bool) -> _Result | None:
        """The result from a cache entry, or None when the passdb must be asked."""
        assert self._cache is not None
        hit = self._cache.lookup(key)
        if hit is None or (hit.expired and not use_expired):
            self._debug_log(state, "cache miss" if hit is None else "cache expired")
            return None
        node = hit.node
        if node.value is None:
            self._debug_log(state, "cache hit: user unknown")
            self._info(state, "unknown user (cached)")
            return _Result.USER_UNKNOWN
        cached = node.value
        result = _Result.OK
        if state.verify_password and not state.skip_password_check:
            if cached.password is None:
                self._info(state, "Cached NULL password access")
            else:
                checked = await self._check_password(state, cached.password, STATIC_PASS_SCHEME)
                if checked is _Result.PASSWORD_MISMATCH and (
                    node.last_success or hit.negative_expired
                ):
                    # the password may have been changed: ask the passdb
                    self._debug_log(state, "cached password mismatch, looking up again")
                    node.last_success = False
                    return None
                if checked not in (_Result.OK, _Result.PASSWORD_MISMATCH):
                    return None  # a broken cached password: ask the passdb
                result = checked
                node.last_success = result is _Result.OK
        self._debug_log(state, "cache hit")
        for name, value in cached.fields:
            self._set_field(state, name, value, STATIC_PASS_SCHEME)
        return result

    def _save_cache(self, state: _State, key: str, result: _Result, before: dict[str, str]) -> None:
        assert self._cache is not None
        if result is _Result.USER_UNKNOWN:
            self._cache.insert(key, None, last_success=False)
            return
        if result not in (_Result.OK, _Result.PASSWORD_MISMATCH, _Result.SCHEME_NOT_AVAILABLE):
            return  # NEXT, USER_DISABLED, PASS_EXPIRED would come back as a success
        password = state.passdb_password
        if "nopassword" in state.fields:
            password = None
        elif password is None:
            typed = state.request.password
            if result is not _Result.OK or typed is None or not state.verify_password:
                return  # nothing to check a later password against
            # the passdb checked the password itself (auth_bind): keep a hash of it
            password = schemes.hash_password(typed.reveal(), CACHED_PASSWORD_SCHEME)
        changed = tuple(
            (name, value) for name, value in state.fields.items() if before.get(name) != value
        )
        self._cache.insert(key, CachedPassdb(password, changed), last_success=result is _Result.OK)

    async def _query(self, state: _State, entry: ChainEntry) -> _Result:
        request = dataclasses.replace(state.request, user=state.user, passdb_fields=dict(state.fields))
        password = state.request.password
        passdb = entry.passdb
        checks_itself = (
            state.verify_password
            and not state.skip_password_check
            and password is not None
            and isinstance(passdb, VerifyingPassdb)
        )
        reply: PassdbReply
        if checks_itself:
            assert password is not None
            assert isinstance(passdb, VerifyingPassdb)
            reply = await passdb.verify_plain(request, password)
        else:
            reply = await passdb.lookup(request)
        result = _Result.of(reply.result)
        if result is _Result.INTERNAL_FAILURE:
            self._error(state, "passdb lookup failed")
            return result
        if result is _Result.USER_UNKNOWN:
            self._info(state, "unknown user")
            return result
        for name, value in reply.fields:
            if value is None or not name:
                continue  # NULL columns and nameless ones are skipped
            self._set_field(state, name, value, passdb.default_pass_scheme)
        if result is not _Result.OK:
            if result is _Result.PASSWORD_MISMATCH:
                self._info(state, "Password mismatch")
            return result
        if "noauthenticate" in state.fields:
            return _Result.NEXT
        if state.verify_password and not checks_itself:
            result = await self._verify(state, passdb.default_pass_scheme)
        return result

    async def _verify(self, state: _State, default_scheme: str) -> _Result:
        if state.skip_password_check:
            return _Result.OK
        if "nopassword" in state.fields:
            self._debug_log(state, "Allowing any password")
            return _Result.OK
        if state.passdb_password is None:
            self._info(state, "No password returned (and no nopassword)")
            return _Result.PASSWORD_MISMATCH
        return await self._check_password(state, state.passdb_password, default_scheme)

    async def _check_password(self, state: _State, stored: str, default_scheme: str) -> _Result:
        password = state.request.password
        assert password is not None
        try:
            matched = await schemes.verify_async(
                password.reveal(), stored, default_scheme, state.original_user
            )
        except schemes.UnknownSchemeError as exc:
            self._error(state, f"Unknown scheme {exc.scheme}")
            return _Result.SCHEME_NOT_AVAILABLE
        except schemes.SchemeError as exc:
            scheme = schemes.split_scheme(stored)[0] or default_scheme
            self._error(state, f"Password data is not valid for scheme {scheme}: {exc}")
            return _Result.INTERNAL_FAILURE
        if not matched:
            self._info(state, "Password mismatch")
            return _Result.PASSWORD_MISMATCH
        return _Result.OK

    def _export(self, state: _State, template: Template, what: str) -> None:
        if not template:
            return
        variables = request_variables(
            state.request,
            user=state.user,
            original_user=state.original_user,
            passdb_fields=state.fields,
        )
        for name, value in template.export(variables):
            self._set_field(state, name, value, STATIC_PASS_SCHEME)
        self._debug_log(state, f"{what} applied")

    # -- the field rules --------------------------------------------------------

    def _set_field(self, state: _State, name: str, value: str, default_scheme: str) -> None:
        if name.endswith(":protected") and len(name) > len(":protected"):
            name = name[: -len(":protected")]
            if name in state.fields:
                return
        elif name.endswith(":remove") and len(name) > len(":remove"):
            state.fields.pop(name[: -len(":remove")], None)
            return

        if name in ("password", "password_noscheme"):
            self._set_password(state, value, default_scheme, noscheme=name == "password_noscheme")
            return
        if name in ("user", "username", "domain"):
            self._update_user(state, name, value)
        elif name == "allow_nets":
            self._check_networks(state, name, value, state.request.conn.remote_ip)
        elif name == "allow_real_nets":
            self._check_networks(state, name, value, state.request.conn.real_remote_ip)
        elif name == "fail":
            state.failed = True
        elif name == "delay_until":
            self._set_delay_until(state, value)
        elif name.startswith("userdb_"):
            return  # prefetch userdb fields: a proxy has no userdb
        elif name == "passdb_import":
            for item in value.split("\t"):
                key, _, item_value = item.partition("=")
                if key:
                    self._set_field(state, key, item_value, default_scheme)
            return
        elif name == "noauthenticate":
            state.fields[name] = value
            state.fields["nopassword"] = ""
            return
        elif name == "nopassword":
            stored = state.passdb_password
            if (
                stored is not None
                and "noauthenticate" not in state.fields
                and schemes.split_scheme(stored)[1] != ""
            ):
                self._error(state, "nopassword set but password is non-empty")
                return
            state.passdb_password = None
            state.fields[name] = value
            return
        # login_user is remembered (hidden) but master users are not supported
        state.fields[name] = value

    def _set_password(
        self, state: _State, value: str, default_scheme: str, *, noscheme: bool
    ) -> None:
        if state.passdb_password is not None:
            self._error(state, "Multiple password values not supported")
            return
        if value.startswith("{") and not noscheme and "}" in value:
            state.passdb_password = value
        else:
            state.passdb_password = f"{{{default_scheme}}}{value}"

    def _update_user(self, state: _State, name: str, value: str) -> None:
        old = state.user
        local, at, domain = old.partition("@")
        if name == "user":
            new = value
        elif name == "username":
            new = value if "@" in value else value + at + domain
        else:  # domain
            new = f"{local}@{value}"
        if not new:
            self._error(state, "username attempted to be changed to empty")
            state.failed = True
            return
        if new != old:
            self._debug_log(
                state, f"username changed {sanitize_for_log(old)} -> {sanitize_for_log(new)}"
            )
            # Dovecot keeps a rewrite even if this passdb then fails
            state.user = new

    def _check_networks(self, state: _State, name: str, value: str, remote_ip: str) -> None:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        if remote_ip:
            try:
                address = ipaddress.ip_address(remote_ip)
            except ValueError:
                address = None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for net in value.replace(",", " ").split():
            if net == "local":
                if address is None:
                    state.fields[name] = value
                    return
                continue
            try:
                network = ipaddress.ip_network(net, strict=False)
            except ValueError:
                self._info(state, f"{name}: Invalid network '{net}'")
                continue
            if address is not None and address.version == network.version and address in network:
                state.fields[name] = value
                return
        if address is None:
            self._info(state, f"{name} check failed: Remote IP not known and 'local' missing")
        else:
            self._info(state, f"{name} check failed: IP {address} not in allowed networks")
        state.failed = True

    def _set_delay_until(self, state: _State, value: str) -> None:
        stamp_text, plus, extra_text = value.partition("+")
        extra = 0
        if plus:
            if not extra_text.isascii() or not extra_text.isdigit():
                self._error(state, f"Invalid delay_until randomness number '{extra_text}'")
                state.failed = True
                return
            extra = secrets.randbelow(int(extra_text)) if int(extra_text) > 0 else 0
        if not stamp_text.isascii() or not stamp_text.isdigit():
            self._error(state, f"Invalid delay_until timestamp '{stamp_text}'")
            state.failed = True
            return
        now = time.time()
        stamp = int(stamp_text)
        if stamp <= now:
            return
        if stamp - now > MAX_DELAY_SECS:
            self._error(
                state, f"delay_until timestamp {stamp_text} is too much in the future, failing"
            )
            state.failed = True
            return
        state.delay_until = min(stamp + extra, now + MAX_DELAY_SECS)

    # -- result rules -------------------------------------------------------------

    def _handle_result(
        self, state: _State, entry: ChainEntry, result: _Result, index: int
    ) -> tuple[bool, _Result]:
        """Apply result_* rules; ``(done, result)``."""
        if state.failed:
            # something inside the passdb failed (allow_nets, fail, ...): this
            # lookup fails, but the next passdb may still succeed
            if result is _Result.OK:
                result = _Result.USER_UNKNOWN
            state.failed = False
        if result is _Result.USER_DISABLED:
            return True, result
        if result is _Result.PASS_EXPIRED:
            self._set_field(state, "reason", "Password expired", STATIC_PASS_SCHEME)
            return True, result

        settings = entry.settings
        if result is _Result.OK:
            rule = settings.result_success
        elif result is _Result.INTERNAL_FAILURE:
            rule = settings.result_internalfail
        elif result is _Result.NEXT:
            self._debug_log(state, "Not performing authentication (noauthenticate set)")
            rule = "continue"
        else:
            rule = settings.result_failure

        passdb_continue = rule.startswith("continue")
        if rule in ("return-ok", "continue-ok"):
            state.passdb_success = True
        elif rule in ("return-fail", "continue-fail"):
            state.passdb_success = False
        if rule == "continue-ok" or (rule == "continue" and result is _Result.OK):
            # the password was verified: later passdbs need not check it again
            state.skip_password_check = True

        # nopassword is specific to one passdb
        state.fields.pop("nopassword", None)
        state.fields.pop("noauthenticate", None)

        if result in (_Result.OK, _Result.NEXT):
            state.snapshot = dict(state.fields)
        else:
            state.fields = dict(state.snapshot)

        if passdb_continue and self._next_index(state, index + 1) is not None:
            if result is _Result.INTERNAL_FAILURE:
                state.seen_internal_failure = True
            return False, result
        if result is _Result.NEXT:
            self._error(state, "Last passdb had noauthenticate field, cannot authenticate user")
            return True, _Result.INTERNAL_FAILURE
        if state.passdb_success:
            return True, _Result.OK
        if state.seen_internal_failure:
            return True, _Result.INTERNAL_FAILURE
        return True, result

    # -- the reply -------------------------------------------------------------------

    def _reply(self, state: _State, result: _Result) -> AuthReply:
        visible = {k: v for k, v in state.fields.items() if k not in _HIDDEN}
        for flag in ("proxy", "nologin"):
            if flag in visible:
                visible[flag] = ""  # Dovecot booleanizes these for the login process
        success = result is _Result.OK and state.passdb_success and not state.failed

        if success:
            if state.original_user != state.user and "original_user" not in visible:
                visible["original_user"] = state.original_user
            password = state.request.password
            if "proxy" in visible and "pass" not in visible and password is not None:
                # forward the password the client typed, not the passdb's
                visible["pass"] = password.reveal()
            if "nologin" in visible and "proxy" not in visible:
                # Dovecot answers OK+nologin and the login process refuses the
                # login; here the refusal is explicit (proxy wins, as there)
                return AuthReply(
                    status=AuthStatus.FAIL,
                    user=state.user,
                    fields=visible,
                    fail_code=FailCode.LOGIN_DISABLED,
                    reason=visible.get("reason") or None,
                )
            return AuthReply(status=AuthStatus.OK, user=state.user, fields=visible)

        visible.pop("nologin", None)
        if result is _Result.INTERNAL_FAILURE:
            return AuthReply(
                status=AuthStatus.TEMPFAIL,
                user=state.user,
                fields=visible,
                fail_code=FailCode.TEMP_FAIL,
            )
        if result is _Result.USER_DISABLED:
            code = FailCode.USER_DISABLED
        elif result is _Result.PASS_EXPIRED:
            code = FailCode.PASS_EXPIRED
        else:
            code = FailCode.AUTH_FAILED
        return AuthReply(
            status=AuthStatus.FAIL,
            user=state.user,
            fields=visible,
            fail_code=code,
            reason=visible.get("reason") or None,
        )
