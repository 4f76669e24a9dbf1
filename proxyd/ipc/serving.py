"""How a child process that serves connections runs until it is done, and how SIGTERM stops it.

The login, lmtp and relay processes share this shape: their tasks (control
channel, accept loops, sessions) run in one nursery until the process has
nothing left to do.  SIGTERM makes the process take no new work; its live
sessions then get ``grace`` seconds, Dovecot's 2 s, before the rest is
cancelled.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final

import trio

from proxyd.wakeup import Wakeup

#: how long live sessions may go on after SIGTERM (Dovecot's 2 s)
GRACE: Final = 2.0


@asynccontextmanager
async def serve_until_stopped(
    *,
    finished: Callable[[], bool],
    changed: Wakeup,
    stop: Callable[[], Awaitable[None]],
    on_finished: Callable[[], None] | None = None,
    grace: float = GRACE,
) -> AsyncIterator[trio.Nursery]:
    """A nursery for the process's tasks; leaving the block waits until ``finished()``.

    ``changed`` is notified whenever ``finished()`` may have become true;
    ``stop`` is what SIGTERM does first (take no new work, tell the master);
    ``on_finished`` runs once nothing is left, before the tasks are cancelled
    (it may end the process without unwinding them).
    """
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_sigterm, nursery.cancel_scope, stop, grace)
        yield nursery
        while not finished():
            await changed.wait()
        if on_finished is not None:
            on_finished()
        nursery.cancel_scope.cancel()


async def _stop_on_sigterm(
    scope: trio.CancelScope, stop: Callable[[], Awaitable[None]], grace: float
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            await stop()
            scope.deadline = trio.current_time() + grace
