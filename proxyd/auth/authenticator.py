"""The auth step as the login side sees it: one object with two async methods.

``Authenticator`` takes and returns only the plain records of
``proxyd.auth.request``, so it can later move behind a socket into a separate
auth process without either side changing.  ``proxyd.auth.opening.open_authenticator``
opens every configured passdb (through the driver registry) and closes them on exit.

Timing, as in Dovecot's auth process:

* a failed or temporarily failed ``authenticate`` is answered only after
  ``auth_failure_delay`` (default 2 s) unless the passdb returned ``nodelay``;
* a ``nologin`` refusal is not delayed: Dovecot answers it as a success that the
  login process then refuses;
* a success waits until a passdb's ``delay_until`` time, if any;
* before a request starts, an IP with an auth penalty waits for it
  (``penalty.py``); failures raise it, except ``nodelay`` ones;
* a success that proxies goes through ``proxy.py`` (``proxy_maybe``, host
  names, ``hostip``, the client's password as ``pass``).

``lookup`` never waits.

With ``auth_cache_size`` > 0 the chain shares one auth cache (``cache.py``)
for as long as the authenticator is open; a reload opens a new authenticator,
so the cache starts empty again, as Dovecot flushes it on SIGHUP.
``flush_cache`` is what ``proxyctl auth cache flush [USER]`` calls.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from typing import Final

import trio

from proxyd import counters
from proxyd.auth import mechanisms
from proxyd.auth.cache import AuthCache
from proxyd.auth.chain import ChainResult, PassdbChain
from proxyd.auth.mechanisms import AnonymousLogin, NeedCredentials, Success
from proxyd.auth.penalty import AuthPenalty, penalty_ident, userpass_checksum
from proxyd.auth.proxy import ProxyFinisher, split_master_user, split_names
from proxyd.auth.request import AuthReply, AuthRequest, AuthStatus, FailCode, SaslIO, SaslStart
from proxyd.log import MAX_LOG_USERNAME_LEN, MAX_MECH_NAME_LEN, sanitize
from proxyd.protocols.sasl import (
    OAUTH2_MECHANISMS,
    Challenge,
    Credentials,
    SaslFailed,
    oauth2_failure_challenge,
)
from proxyd.secret import Secret

log = logging.getLogger("proxyd.auth")


class Authenticator:
    """Checks credentials against the passdb chain."""

    def __init__(
        self,
        chain: PassdbChain,
        *,
        failure_delay: float = 2.0,
        proxy: ProxyFinisher | None = None,
        penalty: AuthPenalty | None = None,
        master_user_separator: str = "",
        verbose: bool = False,
        require_client_cert: bool = False,
        username_from_cert: bool = False,
        anonymous_username: str = "anonymous",
        realms: tuple[str, ...] = (),
    ) -> None:
        self._chain = chain
        self._failure_delay = max(failure_delay, 0.0)
        # proxy_maybe/host resolution (proxy.py) and the per-IP penalty (penalty.py)
        self._proxy = proxy or ProxyFinisher()
        self._penalty = penalty
        self._separator = master_user_separator
        self._verbose = verbose
        # auth_ssl_require_client_cert / auth_ssl_username_from_cert
        self._require_cert = require_client_cert
        self._cert_user = username_from_cert
        self._anonymous_user = anonymous_username
        self._realms = realms  # auth_realms, offered by DIGEST-MD5
        self._last_logins: dict[str, tuple[str, float]] = {}

    async def authenticate(self, request: AuthRequest) -> AuthReply:
        """Verify ``request.password``; failures come back after the failure delay."""
        request = split_master_user(request, self._separator)
        ident, last_penalty = await self._penalty_wait(request)
        refused = self._refuse_without_cert(request)
        if refused is not None:
            return await self._finish(request, refused, ident, last_penalty)
        request = self._with_cert_user(request)
        result = await self._chain.authenticate(request)
        return await self._finish(request, result, ident, last_penalty)

    def _refuse_without_cert(self, request: AuthRequest) -> ChainResult | None:
        """``auth_ssl_require_client_cert``: no valid certificate (or no name in it), no login."""
        conn = request.conn
        if not self._require_cert:
            return None
        if not conn.valid_client_cert:
            reason = "Client didn't present valid SSL certificate"
        elif self._cert_user and not conn.cert_username:
            reason = "SSL certificate didn't contain username"
        else:
            return None
        log.info("%s: %s", _mech_prefix(request, None), reason)
        return ChainResult(AuthReply(status=AuthStatus.FAIL, user=request.user, fail_code=FailCode.AUTH_FAILED))

    def _with_cert_user(self, request: AuthRequest) -> AuthRequest:
        """``auth_ssl_username_from_cert``: the certificate's name overrides the mechanism's."""
        if self._cert_user and request.conn.cert_username:
            return dataclasses.replace(request, user=request.conn.cert_username)
        return request

    def _identified(
        self, request: AuthRequest, authcid: str, authzid: str, password: Secret | None = None
    ) -> AuthRequest:
        """The request for the names a mechanism read, built once: ``user*master``
        (``auth_master_user_separator``) split, the certificate's name applied."""
        login_user = authzid if authzid != authcid else ""
        user, login_user = split_names(authcid, login_user, self._separator)
        if self._cert_user and request.conn.cert_username:
            user = request.conn.cert_username
        return request.with_names(user, login_user, password)

    async def _penalty_wait(self, request: AuthRequest) -> tuple[str | None, int]:
        """Wait out the client IP's auth penalty; ``(ident, penalty)`` for ``_finish``."""
        ident = penalty_ident(request.conn.remote_ip) if self._penalty is not None else None
        last_penalty = 0
        if self._penalty is not None:
            last_penalty, wait = self._penalty.delay(ident)
            if wait:
                counters.add(counters.Counter.PENALTIES)
                await trio.sleep(wait)
        return ident, last_penalty

    async def _finish(
        self, request: AuthRequest, result: ChainResult, ident: str | None, last_penalty: int
    ) -> AuthReply:
        """Success: wait for ``delay_until`` and resolve proxying; failure: penalty and delay."""
        reply = result.reply
        if reply.status is AuthStatus.OK:
            if result.delay_until is not None:
                wait = result.delay_until - time.time()
                if wait > 0:
                    await trio.sleep(wait)
            reply = await self._proxy.finish(request, reply)
            if reply.status is AuthStatus.OK and "host" in reply.fields:
                self._note_login(reply.user or request.user, reply.fields["host"])
        if reply.status is AuthStatus.OK or reply.fail_code is FailCode.LOGIN_DISABLED:
            if self._penalty is not None:
                self._penalty.succeeded(ident, last_penalty)
            return reply
        if "nodelay" not in reply.fields:
            if self._penalty is not None:
                password = None if request.password is None else request.password.reveal()
                checksum = userpass_checksum(reply.user or request.user, password)
                self._penalty.failed(ident, last_penalty, checksum)
            # anti brute-force / timing: every failure takes the same time
            await trio.sleep(self._failure_delay)
        return reply

    async def sasl(self, start: SaslStart, io: SaslIO) -> AuthReply:
        """Run one exchange of a mechanism that lives here (``mechanisms.AUTH_MECHANISMS``).

        ``io`` relays the challenges to the client.  Like ``authenticate``, a
        failure comes back after the failure delay.  An abort by the client
        ends the exchange with a failure nobody waits for.
        """
        request = AuthRequest(conn=start.conn, mech=start.mech, user="", password=None)
        try:
            mech = mechanisms.create(start.mech, self._realms)
        except KeyError:
            log.error("Unsupported authentication mechanism %s", sanitize(start.mech, MAX_MECH_NAME_LEN))
            return AuthReply(status=AuthStatus.TEMPFAIL, user="", fail_code=FailCode.TEMP_FAIL)
        ident, last_penalty = await self._penalty_wait(request)
        refused = self._refuse_without_cert(request)
        if refused is not None:
            return await self._finish(request, refused, ident, last_penalty)
        result: ChainResult | None = None
        step = mech.start(start.initial_response)
        while True:
            if isinstance(step, Challenge):
                response = await io.challenge(step.data)
                if response is None:
                    return _ABORTED
                step = mech.step(response)
            elif isinstance(step, NeedCredentials):
                request = self._identified(request, step.authcid, step.authzid)
                result = await self._chain.lookup_credentials(request, step.scheme, step.scheme_user)
                if result.credentials is None:
                    return await self._finish(request, result, ident, last_penalty)
                step = mech.credentials(result.credentials)
            elif isinstance(step, Success):
                assert result is not None
                if step.final is not None and await io.challenge(step.final) is None:
                    return _ABORTED
                return await self._finish(request, result, ident, last_penalty)
            elif isinstance(step, AnonymousLogin):
                return await self._anonymous(request, step, ident, last_penalty)
            elif isinstance(step, SaslFailed):
                if self._verbose:
                    log.info("%s: %s", _mech_prefix(request, result), step.reason)
                if (
                    start.mech in OAUTH2_MECHANISMS
                    and await io.challenge(oauth2_failure_challenge(start.mech)) is None
                ):
                    return _ABORTED
                failed = AuthReply(
                    status=AuthStatus.FAIL,
                    user=result.reply.user if result is not None else request.user,
                    fail_code=FailCode.AUTH_FAILED,
                )
                return await self._finish(request, ChainResult(failed), ident, last_penalty)
            else:
                assert isinstance(step, Credentials)
                if start.mech == "EXTERNAL":
                    return await self._external(request, step, ident, last_penalty)
                return await self._plaintext(request, step, io, ident, last_penalty)

    async def _plaintext(
        self, request: AuthRequest, step: Credentials, io: SaslIO, ident: str | None, last_penalty: int
    ) -> AuthReply:
        """PLAIN, LOGIN, XOAUTH2, OAUTHBEARER: the passdbs verify the typed password."""
        request = self._identified(request, step.authcid, step.authzid, Secret(step.password))
        result = await self._chain.authenticate(request)
        reply = result.reply
        if (
            request.mech in OAUTH2_MECHANISMS
            and reply.status is not AuthStatus.OK
            and reply.fail_code is not FailCode.LOGIN_DISABLED
            and await io.challenge(oauth2_failure_challenge(request.mech)) is None
        ):
            return _ABORTED
        return await self._finish(request, result, ident, last_penalty)

    async def _anonymous(
        self, request: AuthRequest, step: AnonymousLogin, ident: str | None, last_penalty: int
    ) -> AuthReply:
        """ANONYMOUS: the anonymous user, routed by its passdb entry.

        Dovecot asks no passdb here (its anonymous user logs in locally); a proxy
        has no local mailboxes, so the passdbs are looked up (without a password
        check) for where ``auth_anonymous_username`` goes.
        """
        if self._verbose:
            traced = dataclasses.replace(request, user=step.trace)
            log.info("%s: login", _mech_prefix(traced, None))
        request = dataclasses.replace(request, user=self._anonymous_user)
        result = await self._chain.lookup(request)
        reply = result.reply
        if reply.status is AuthStatus.OK:
            reply = dataclasses.replace(reply, fields={**reply.fields, "anonymous": ""})
        return await self._finish(request, ChainResult(reply, result.delay_until), ident, last_penalty)

    async def _external(
        self, request: AuthRequest, step: Credentials, ident: str | None, last_penalty: int
    ) -> AuthReply:
        """EXTERNAL: the certificate's user, checked by the passdbs as for an empty password."""
        user = request.conn.cert_username if self._cert_user else ""
        if not user:
            if self._verbose:
                log.info("%s: username not known", _mech_prefix(request, None))
            failed = AuthReply(status=AuthStatus.FAIL, user="", fail_code=FailCode.AUTH_FAILED)
            return await self._finish(request, ChainResult(failed), ident, last_penalty)
        request = dataclasses.replace(
            request,
            user=user,
            password=Secret(step.password),
            login_user=step.authzid if step.authzid != user else "",
        )
        result = await self._chain.authenticate(request)
        return await self._finish(request, result, ident, last_penalty)

    async def lookup(self, request: AuthRequest) -> AuthReply:
        """Run the passdb lookups without checking a password (``proxyctl auth test USER``)."""
        request = split_master_user(request, self._separator)
        result = await self._chain.lookup(request)
        return await self._proxy.finish(request, result.reply)

    @property
    def cache(self) -> AuthCache | None:
        """The auth cache, if ``auth_cache_size`` enabled one."""
        return self._chain.cache

    def _note_login(self, user: str, host: str) -> None:
        """Where ``user``'s last successful login was sent (``proxyctl move --wait``): a
        session may begin and end between two looks at ``who``."""
        logins = self._last_logins
        logins.pop(user, None)
        logins[user] = (host, time.time())
        if len(logins) > _LAST_LOGINS:
            del logins[next(iter(logins))]

    def last_login(self, user: str) -> tuple[str, float] | None:
        """(host, wall-clock time) of ``user``'s last login sent to a backend, if any."""
        return self._last_logins.get(user)

    def flush_cache(self, users: Iterable[str] | None = None) -> int:
        """Empty the auth cache, or drop only ``users``' entries; returns how many went (0: no cache)."""
        return 0 if self.cache is None else self.cache.flush(users)


#: users whose last login's host is remembered (the oldest is forgotten first)
_LAST_LOGINS: Final = 10000

#: what an exchange the client aborted ends with (the login process has answered already)
_ABORTED: Final = AuthReply(status=AuthStatus.FAIL, user="", fail_code=FailCode.AUTH_FAILED, reason="aborted")


def _mech_prefix(request: AuthRequest, result: ChainResult | None) -> str:
    """Dovecot's mechanism log prefix: ``cram-md5(user,ip,<session>)``."""
    user = result.reply.user if result is not None and result.reply.user else request.user
    parts = [sanitize(user, MAX_LOG_USERNAME_LEN) if user else "?"]
    if request.conn.remote_ip:
        parts.append(request.conn.remote_ip)
    if request.conn.session_id:
        parts.append(f"<{sanitize(request.conn.session_id)}>")
    return f"{request.mech.lower()}({','.join(parts)})"
