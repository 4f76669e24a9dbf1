"""The auth step as the login side sees it: one object with two async methods.

``Authenticator`` takes and returns only the plain records of
``proxyd.auth.request``, so it can later move behind a socket into a separate
auth process without either side changing.  ``open_authenticator`` opens every
configured passdb (through the driver registry) and closes them on exit.

Timing, as in Dovecot's auth process:

* a failed or temporarily failed ``authenticate`` is answered only after
  ``auth_failure_delay`` (default 2 s) unless the passdb returned ``nodelay``;
* a ``nologin`` refusal is not delayed: Dovecot answers it as a success that the
  login process then refuses;
* a success waits until a passdb's ``delay_until`` time, if any.

``lookup`` never waits.

With ``auth_cache_size`` > 0 the chain shares one auth cache (``cache.py``)
for as long as the authenticator is open; a reload opens a new authenticator,
so the cache starts empty again, as Dovecot flushes it on SIGHUP.
``flush_cache`` is what ``proxyctl auth cache flush [USER]`` will call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from proxyd.auth import registry
from proxyd.auth.cache import AuthCache, CacheStatistics
from proxyd.auth.chain import ChainEntry, PassdbChain
from proxyd.auth.request import AuthReply, AuthRequest, AuthStatus, FailCode
from proxyd.config.settings import Settings
from proxyd.errors import ConfigError

log = logging.getLogger("proxyd.auth")


class Authenticator:
    """Checks credentials against the passdb chain."""

    def __init__(self, chain: PassdbChain, *, failure_delay: float = 2.0) -> None:
        self._chain = chain
        self._failure_delay = max(failure_delay, 0.0)

    async def authenticate(self, request: AuthRequest) -> AuthReply:
        """Verify ``request.password``; failures come back after the failure delay."""
        result = await self._chain.authenticate(request)
        reply = result.reply
        if reply.status is AuthStatus.OK:
            if result.delay_until is not None:
                wait = result.delay_until - time.time()
                if wait > 0:
                    await trio.sleep(wait)
            return reply
        if reply.fail_code is not FailCode.LOGIN_DISABLED and "nodelay" not in reply.fields:
            # anti brute-force / timing: every failure takes the same time
            await trio.sleep(self._failure_delay)
        return reply

    async def lookup(self, request: AuthRequest) -> AuthReply:
        """Run the passdb lookups without checking a password (``proxyctl auth test USER``)."""
        result = await self._chain.lookup(request)
        return result.reply

    def flush_cache(self, users: Iterable[str] | None = None) -> int:
        """Empty the auth cache, or drop only ``users``' entries; returns how many went (0: no cache)."""
        cache = self._chain.cache
        return 0 if cache is None else cache.flush(users)

    def cache_statistics(self) -> CacheStatistics | None:
        """The auth cache's counters, or None without a cache."""
        cache = self._chain.cache
        return None if cache is None else cache.statistics()


@asynccontextmanager
async def open_authenticator(
    settings: Settings, *, failure_delay: float | None = None
) -> AsyncIterator[Authenticator]:
    """Open every passdb of ``settings`` and yield an ``Authenticator`` over them.

    ``failure_delay`` overrides ``settings.auth_failure_delay`` (``proxyctl``
    uses 0).  Raises ``ConfigError`` for an unknown driver, bad driver args, or
    no passdb at all.
    """
    if not settings.passdbs:
        raise ConfigError(
            None, f"{settings.config_path}: No passdbs specified in configuration file"
        )
    async with AsyncExitStack() as stack:
        entries: list[ChainEntry] = []
        for passdb_settings in settings.passdbs:
            factory = registry.resolve(passdb_settings)
            passdb = await stack.enter_async_context(factory(passdb_settings))
            entries.append(ChainEntry.build(passdb_settings, passdb))
        cache = None
        if settings.auth_cache_size > 0:
            cache = AuthCache(
                settings.auth_cache_size, settings.auth_cache_ttl, settings.auth_cache_negative_ttl
            )
        chain = PassdbChain(
            entries, verbose=settings.auth_verbose, debug=settings.auth_debug, cache=cache
        )
        delay = settings.auth_failure_delay if failure_delay is None else failure_delay
        log.debug("auth: %d passdb(s) opened", len(entries))
        yield Authenticator(chain, failure_delay=delay)
