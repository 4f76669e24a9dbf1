"""The proxy process: load, open passdbs, bind, serve, reload on SIGHUP, stop on SIGTERM.

One process serves everything for now; the supervised process model is a later
step and will reuse ``LoginSession`` unchanged.
"""

from __future__ import annotations

import logging
import signal
from contextlib import AsyncExitStack
from functools import partial

import trio

from proxyd.auth.authenticator import open_authenticator
from proxyd.config.load import load_settings
from proxyd.config.settings import Settings
from proxyd.errors import ConfigError
from proxyd.login import tls
from proxyd.login.server import open_listeners, serve
from proxyd.login.session import LoginContext

log = logging.getLogger("proxyd")

#: how long proxied sessions get to finish after SIGTERM before they are cut
SHUTDOWN_GRACE = 2.0


async def _open_context(settings: Settings, stack: AsyncExitStack) -> LoginContext:
    auth = await stack.enter_async_context(open_authenticator(settings))
    return LoginContext(
        settings=settings,
        auth=auth,
        server_tls=tls.server_context(settings),
        backend_tls=partial(tls.backend_context, settings),
    )


async def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT."""
    async with AsyncExitStack() as stack:
        current = await _open_context(settings, stack)
        bound = await open_listeners(settings)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as sessions:
                async with trio.open_nursery() as accepting:
                    await accepting.start(serve, bound, lambda: current, sessions)
                    log.info("proxyd %s starting up (%d listeners)", _version(), len(bound))
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            current = await _reload(current, stack)
                            continue
                        log.info("Shutting down (signal %s)", signal.Signals(signum).name)
                        break
                    # stop accepting first, then close the sockets nobody waits on any more
                    accepting.cancel_scope.cancel()
                for item in bound:
                    await item.listener.aclose()
                sessions.cancel_scope.deadline = trio.current_time() + SHUTDOWN_GRACE
                sessions.cancel_scope.cancel()


async def _reload(current: LoginContext, stack: AsyncExitStack) -> LoginContext:
    """New logins use the new config and passdbs; proxied sessions keep going."""
    try:
        settings = load_settings(current.settings.config_path)
        new = await _open_context(settings, stack)
    except (ConfigError, OSError) as exc:
        log.error("SIGHUP: reload failed, keeping the old configuration: %s", exc)
        return current
    if settings.services != current.settings.services or settings.listen != current.settings.listen:
        log.warning("SIGHUP: listener changes need a restart; other settings were reloaded")
    log.info("SIGHUP received - configuration reloaded")
    return new


def _version() -> str:
    from proxyd import __version__

    return __version__
