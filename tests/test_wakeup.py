"""proxyd.wakeup: a notification that comes while a loop is busy is not lost."""

from __future__ import annotations

import trio
import trio.testing

from proxyd.wakeup import Wakeup


async def test_wait_returns_at_the_next_notify() -> None:
    changed = Wakeup()
    woken = trio.Event()

    async def waiter() -> None:
        await changed.wait()
        woken.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert not woken.is_set()
        changed.notify()
        await woken.wait()


async def test_pending_keeps_a_notify_that_came_while_the_loop_was_busy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The master's loops take ``pending()`` before they read their state: a notify in
    between (while they await something else) ends their next wait at once, where a
    ``wait()`` begun after it would have missed it."""
    changed = Wakeup()
    pending = changed.pending()
    changed.notify()  # while the loop was busy elsewhere
    with trio.move_on_after(1) as missed:
        await changed.wait()  # begun too late: waits for another notify
    assert missed.cancelled_caught
    with trio.fail_after(1):
        await pending.wait()  # returns at once
    assert not changed.pending().is_set()  # the next round waits for the next notify
