"""Wake the tasks that wait for "something changed" (a count, a flag), in Trio."""

from __future__ import annotations

import trio


class Wakeup:
    """Every ``wait()`` returns at the next ``notify()``; waiters re-check their condition.

    A ``trio.Event`` can be set only once, so each notification sets the
    current one and puts a fresh one in its place.
    """

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()

    def pending(self) -> trio.Event:
        """The event the next ``notify()`` sets: taken before a loop reads the state it
        waits on, it cannot miss a notification that comes while the loop is busy (a
        ``wait()`` after some other ``await`` would)."""
        return self._event
