"""The bridge to asyncio database libraries: the only module that imports ``trio_asyncio``.

The pgsql (asyncpg) and mysql (asyncmy) drivers are asyncio libraries; proxyd
runs on Trio.  ``trio_asyncio`` runs an asyncio event loop on top of Trio, and
:meth:`AsyncioLoop.run` calls one asyncio coroutine function from Trio code
(``aio_as_trio(fn, loop=...)(*args)``, the form that lets the library see its
loop).  asyncio objects (connections, records) stay inside the drivers.

One loop per process (per ``trio.run``):

* :func:`open_loop` is an async context manager that yields the process's
  loop.  The first user opens it (``trio_asyncio.open_loop()``); later users
  share it, counted.  When something higher up already runs a trio-asyncio
  loop (a worker's ``main()``, a test fixture), that loop is used and never
  closed here.
* The loop is passed explicitly on every call, so Trio tasks spawned before the
  loop was opened (the session tasks of a running server) can use it too; the
  ``current_loop`` context variable is not needed.
* Users must leave in the reverse order they entered (an ``AsyncExitStack``
  does), because the first one owns the loop's nursery.  The owner closing it
  while others still use it is reported as an error.

Cancellation: a Trio cancel (``fail_after``) cancels the asyncio task, and the
call raises ``trio.Cancelled`` as usual.  An ``asyncio.CancelledError`` raised
by the library itself, not caused by Trio, is turned into
:class:`AsyncioCancelledError` so that it can never look like a Trio cancel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, TypeVar

import trio
import trio_asyncio

log = logging.getLogger("proxyd.auth.aio")

_P = ParamSpec("_P")
_T = TypeVar("_T")


class AsyncioCancelledError(Exception):
    """asyncio code cancelled itself (not a Trio cancellation)."""


class AsyncioLoop:
    """A handle on the process's asyncio loop."""

    __slots__ = ("_loop",)

    def __init__(self, loop: Any) -> None:
        self._loop = loop

    @property
    def closed(self) -> bool:
        """True once the loop was shut down; calls then fail."""
        return bool(self._loop.is_closed())

    async def run(self, fn: Callable[_P, Awaitable[_T]], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``await fn(*args, **kwargs)`` as an asyncio task on this loop; returns its result."""
        try:
            result: _T = await trio_asyncio.aio_as_trio(fn, loop=self._loop)(*args, **kwargs)
        except asyncio.CancelledError as exc:
            raise AsyncioCancelledError("asyncio operation was cancelled") from exc
        return result


@dataclass(slots=True)
class _Shared:
    handle: AsyncioLoop
    users: int


_SHARED: Final[trio.lowlevel.RunVar[_Shared | None]] = trio.lowlevel.RunVar(
    "proxyd_asyncio_loop", default=None
)


@asynccontextmanager
async def open_loop() -> AsyncIterator[AsyncioLoop]:
    """The process's asyncio loop, opened on first use and closed when its opener leaves."""
    shared = _SHARED.get()
    if shared is not None and not shared.handle.closed:
        shared.users += 1
        try:
            yield shared.handle
        finally:
            shared.users -= 1
        return
    outer = trio_asyncio.current_loop.get()
    if outer is not None and not outer.is_closed():
        # someone above us runs a loop: use it, never close it
        shared = _Shared(AsyncioLoop(outer), users=1)
        _SHARED.set(shared)
        try:
            yield shared.handle
        finally:
            shared.users -= 1
            if shared.users == 0:
                _SHARED.set(None)
        return
    async with trio_asyncio.open_loop() as loop:
        shared = _Shared(AsyncioLoop(loop), users=1)
        _SHARED.set(shared)
        try:
            yield shared.handle
        finally:
            shared.users -= 1
            if shared.users:
                log.error("asyncio loop closed while %d passdb(s) still use it", shared.users)
            _SHARED.set(None)
