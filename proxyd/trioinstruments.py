"""Trio's instrument registry as a plain dict, for the processes that run the logins.

Trio asks its registry (``Instruments``, a ``collections.UserDict``) whether any
instrument wants a hook before and after every task step, every I/O wait and every
reschedule: about fifty questions per login, each a call of ``UserDict.__contains__``
in Python, almost always to hear "no".  ``lighten()`` swaps the running loop's
registry for a ``dict`` subclass holding the same entries, whose ``in`` is the C
dict lookup; Trio's own methods for adding, removing and calling instruments work
on it unchanged (they go through ``.data``, which is the dict itself here).

It relies on Trio internals (``GLOBAL_RUN_CONTEXT.runner.instruments``); when they
are not what this module knows, ``lighten()`` leaves everything as it is.
"""

from __future__ import annotations

from typing import Any

try:
    from trio._core._instrumentation import Instruments
    from trio._core._run import GLOBAL_RUN_CONTEXT
except ImportError:  # another Trio layout: nothing to lighten
    _KNOWN_LAYOUT = False
else:
    _KNOWN_LAYOUT = True

    # defined once here, not per ``lighten()``: a class made in every login process
    # costs ~15 µs and writes fresh pages
    class DictInstruments(dict[str, dict[Any, None]]):
        """Trio's ``Instruments`` with C-speed ``in``: the same hooks, the same methods."""

        __slots__ = ()

        @property
        def data(self) -> DictInstruments:
            return self

        add_instrument = Instruments.add_instrument
        remove_instrument = Instruments.remove_instrument
        call = Instruments.call


def lighten() -> bool:
    """Swap the running Trio loop's instrument registry for the dict one (call it inside
    ``trio.run``); False when Trio is not laid out as expected and nothing changed."""
    if not _KNOWN_LAYOUT:
        return False
    runner = getattr(GLOBAL_RUN_CONTEXT, "runner", None)
    current = getattr(runner, "instruments", None)
    if type(current) is not Instruments or not isinstance(current.data, dict):
        return False
    runner.instruments = DictInstruments(current.data)  # type: ignore[union-attr]
    return True
