"""Node-wide counters for ``/metrics``, in memory every process shares: no messages.

Theory of operation
-------------------
Before the zygote is forked the master maps an anonymous shared region
(``create()``): one *slot* of 64-bit integers per process.  The zygote gives
each child it forks a free slot (``set_slot`` just before ``fork()``, so the
child inherits the number) and frees it when it reaps the child.  A process
only ever adds to its own slot, so no lock is needed; a slot's next owner goes
on adding to what its predecessors left, so the sum over all slots is the
node's total since start, whatever processes came and went.  The master sums
the slots when it is scraped.  A login costs a few integer additions and no
system call: the login path is measured, and a control message per login was
the price this layout avoids.

Should every slot be taken (more live processes than ``create()`` planned
for), a process shares the last slot: its additions race with another's and a
few may be lost; nothing else breaks.

Times are kept in microseconds, histograms as one counter per bucket (not
cumulative; the exposition adds them up) plus a count and a sum.
"""

from __future__ import annotations

import bisect
import enum
import mmap
from collections.abc import Sequence
from typing import Final

from proxyd.protocols import registry

#: protocols the counters distinguish (label values): the registry's
PROTOCOLS: Final = tuple(spec.name for spec in registry.PROTOCOLS)


class LoginResult(enum.IntEnum):
    OK = 0
    AUTH_FAILED = 1
    TEMP_FAILED = 2
    BACKEND_FAILED = 3
    REFERRAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()


#: histogram bucket bounds in seconds (+Inf is implied)
BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram(enum.IntEnum):
    BACKEND_LOGIN = 0
    AUTH = 1


class Counter(enum.IntEnum):
    """Plain counters after the login and histogram blocks."""

    BYTES_CLIENT_TO_BACKEND = 0
    BYTES_BACKEND_TO_CLIENT = 1
    AUTH_CACHE_HITS = 2
    AUTH_CACHE_MISSES = 3
    PENALTIES = 4
    #: pre-login clients destroyed to make room in a full service ("Connection queue full")
    QUEUE_FULL = 5
    #: connections refused by proxyd_prelogin_per_ip_limit
    PRELOGIN_PER_IP_REFUSED = 6


_LOGINS: Final = 0
_HISTOGRAM_SIZE: Final = len(BUCKETS) + 3  # buckets, +Inf, count, sum (microseconds)
_HISTOGRAMS: Final = _LOGINS + len(PROTOCOLS) * len(LoginResult)
_COUNTERS: Final = _HISTOGRAMS + len(Histogram) * _HISTOGRAM_SIZE
STRIDE: Final = _COUNTERS + len(Counter)
_WORD: Final = 8


class _Region:
    __slots__ = ("mapping", "slots", "values")

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.mapping = mmap.mmap(-1, slots * STRIDE * _WORD, flags=mmap.MAP_SHARED)
        self.values = memoryview(self.mapping).cast("q")


_region: _Region | None = None
#: this process's slot (-1: counting is off, e.g. in proxyctl or unit tests)
_base = -1


def create(slots: int) -> None:
    """Map the shared region (in the master, before the zygote is forked)."""
    global _region, _base
    _region = _Region(max(slots, 2))
    _base = -1


def set_slot(slot: int) -> None:
    """Count into ``slot`` from now on (the zygote calls it before each fork)."""
    global _base
    if _region is None:
        return
    _base = min(slot, _region.slots - 1) * STRIDE


def slots() -> int:
    return 0 if _region is None else _region.slots


# -- counting (any process) ------------------------------------------------------------------


def add(counter: Counter, n: int = 1) -> None:
    if _base >= 0 and _region is not None:
        _region.values[_base + _COUNTERS + counter] += n


def login(protocol: str, result: LoginResult) -> None:
    if _base < 0 or _region is None:
        return
    try:
        index = PROTOCOLS.index(protocol)
    except ValueError:
        return
    _region.values[_base + _LOGINS + index * len(LoginResult) + result] += 1


def observe(histogram: Histogram, seconds: float) -> None:
    if _base < 0 or _region is None:
        return
    start = _base + _HISTOGRAMS + histogram * _HISTOGRAM_SIZE
    # the first bucket whose bound is >= seconds (len(BUCKETS): +Inf), one C call per login
    bucket = bisect.bisect_left(BUCKETS, seconds)
    values = _region.values
    values[start + bucket] += 1
    values[start + len(BUCKETS) + 1] += 1
    values[start + len(BUCKETS) + 2] += max(0, round(seconds * 1_000_000))


# -- reading (the master) -------------------------------------------------------------------


class Totals:
    """The sum over every slot, read at one moment."""

    def __init__(self, sums: Sequence[int]) -> None:
        self._sums = sums

    def logins(self, protocol: str, result: LoginResult) -> int:
        return self._sums[_LOGINS + PROTOCOLS.index(protocol) * len(LoginResult) + result]

    def histogram(self, histogram: Histogram) -> tuple[list[int], int, float]:
        """(per-bucket counts including +Inf, count, sum in seconds)."""
        start = _HISTOGRAMS + histogram * _HISTOGRAM_SIZE
        buckets = list(self._sums[start : start + len(BUCKETS) + 1])
        count = self._sums[start + len(BUCKETS) + 1]
        return buckets, count, self._sums[start + len(BUCKETS) + 2] / 1_000_000

    def counter(self, counter: Counter) -> int:
        return self._sums[_COUNTERS + counter]


def totals() -> Totals:
    if _region is None:
        return Totals([0] * STRIDE)
    values = _region.values
    used = _region.slots * STRIDE
    return Totals([sum(values[i:used:STRIDE]) for i in range(STRIDE)])


class SlotAllocator:
    """The zygote's book of which child has which slot.

    ``_free``: the slots to hand out next (from the end); ``_by_pid``; ``_last``: the slot the
    rest share.
    """

    def __init__(self, first: int = 1) -> None:
        # slot 0 is the master's (and the zygote's, which counts nothing); the region is
        # mapped before the zygote and never changes
        self._last = max(slots() - 1, first)
        self._free: list[int] = list(range(self._last - 1, first - 1, -1))
        self._by_pid: dict[int, int] = {}

    def take(self) -> int:
        return self._free.pop() if self._free else self._last

    def give_back(self, slot: int) -> None:
        if slot < self._last:
            self._free.append(slot)

    def owned(self, pid: int, slot: int) -> None:
        self._by_pid[pid] = slot

    def release(self, pid: int) -> None:
        self.give_back(self._by_pid.pop(pid, self._last))
