"""``proxyd.trioinstruments``: Trio's instrument registry swapped for a dict keeps working."""

from __future__ import annotations

import trio
import trio.lowlevel

from proxyd import trioinstruments


class _Steps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0
        self.io_waits = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1

    def before_io_wait(self, timeout: float) -> None:
        self.io_waits += 1


def test_instruments_still_come_and_go_after_the_swap() -> None:
    async def main() -> tuple[bool, int, int, int]:
        swapped = trioinstruments.lighten()
        steps = _Steps()
        trio.lowlevel.add_instrument(steps)
        for _ in range(5):
            await trio.lowlevel.checkpoint()
        await trio.sleep(0.001)
        seen, waits = steps.steps, steps.io_waits
        trio.lowlevel.remove_instrument(steps)
        for _ in range(5):
            await trio.lowlevel.checkpoint()
        return swapped, seen, waits, steps.steps

    swapped, seen, waits, after = trio.run(main)
    # on the Trio this project runs the swap happens: a Trio that moved its internals
    # shows up here, not as a silent loss
    assert swapped
    assert seen >= 5
    assert waits >= 1
    assert after == seen


def test_a_failing_instrument_is_dropped_as_trio_drops_it() -> None:
    class Broken(trio.abc.Instrument):
        calls = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            Broken.calls += 1
            raise RuntimeError("instrument bug")

    async def main() -> None:
        assert trioinstruments.lighten()
        trio.lowlevel.add_instrument(Broken())
        for _ in range(3):
            await trio.lowlevel.checkpoint()

    trio.run(main)
    assert Broken.calls == 1


def test_instruments_given_to_trio_run_survive_the_swap() -> None:
    steps = _Steps()

    async def main() -> None:
        assert trioinstruments.lighten()
        for _ in range(3):
            await trio.lowlevel.checkpoint()

    trio.run(main, instruments=[steps])
    assert steps.steps >= 4
