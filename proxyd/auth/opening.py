"""``open_authenticator``: every configured passdb opened (through the driver registry), an
``Authenticator`` over them, the passdbs closed on exit.

Apart from ``authenticator.py`` because that module is compiled with mypyc (setup.py),
which has no async generators (an ``asynccontextmanager`` is one); this runs once per
auth process, not per login.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from proxyd.auth import registry
from proxyd.auth.authenticator import Authenticator
from proxyd.auth.cache import AuthCache
from proxyd.auth.chain import ChainEntry, PassdbChain
from proxyd.auth.penalty import AuthPenalty
from proxyd.auth.proxy import ProxyFinisher
from proxyd.auth.schemes import set_worker_limit
from proxyd.auth.username import RulesByProtocol
from proxyd.config.settings import Settings
from proxyd.errors import ConfigError

log = logging.getLogger("proxyd.auth")


@asynccontextmanager
async def open_authenticator(
    settings: Settings, *, failure_delay: float | None = None, penalty: bool = True
) -> AsyncIterator[Authenticator]:
    """Open every passdb of ``settings`` and yield an ``Authenticator`` over them.

    ``failure_delay`` overrides ``settings.auth_failure_delay`` (``proxyctl``
    uses 0); ``penalty=False`` turns the per-IP auth penalty off (``proxyctl``).
    Raises ``ConfigError`` for an unknown driver, bad driver args, or
    no passdb at all.
    """
    if not settings.passdbs:
        raise ConfigError(
            None, f"{settings.config_path}: No passdbs specified in configuration file"
        )
    if "anonymous" in settings.auth_mechanisms and not settings.auth_anonymous_username:
        raise ConfigError(None, "ANONYMOUS listed in mechanisms, but anonymous_username not set")
    own = [passdb for passdb in settings.passdbs if not passdb.master]
    if own and own[-1].pass_:
        raise ConfigError(own[-1].location, "Last passdb can't have pass=yes")
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
            entries,
            verbose=settings.auth_verbose,
            debug=settings.auth_debug,
            cache=cache,
            username_rules=RulesByProtocol(settings),
        )
        set_worker_limit(settings.auth_worker_max_count)
        delay = settings.auth_failure_delay if failure_delay is None else failure_delay
        log.debug("auth: %d passdb(s) opened", len(entries))
        yield Authenticator(
            chain,
            failure_delay=delay,
            proxy=ProxyFinisher.from_settings(settings),
            penalty=AuthPenalty() if penalty else None,
            master_user_separator=settings.auth_master_user_separator,
            verbose=settings.auth_verbose or settings.auth_debug,
            require_client_cert=settings.auth_ssl_require_client_cert,
            username_from_cert=settings.auth_ssl_username_from_cert,
            anonymous_username=settings.auth_anonymous_username,
            realms=settings.auth_realms,
        )
