"""proxyd.counters: per-process slots in shared memory, summed; slots outlive their processes."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from proxyd import counters
from proxyd.counters import Counter, Histogram, LoginResult


@pytest.fixture(autouse=True)
def region() -> Iterator[None]:
    counters.create(4)
    yield
    counters._region = None
    counters._base = -1


def test_forked_processes_add_up_in_their_own_slots() -> None:
    allocator = counters.SlotAllocator()
    counters.set_slot(0)
    counters.login("imap", LoginResult.OK)
    pids = []
    for result in (LoginResult.OK, LoginResult.AUTH_FAILED):
        slot = allocator.take()
        counters.set_slot(slot)
        pid = os.fork()
        if pid == 0:
            counters.login("imap", result)
            counters.add(Counter.BYTES_CLIENT_TO_BACKEND, 1000)
            counters.observe(Histogram.AUTH, 0.02)
            os._exit(0)
        allocator.owned(pid, slot)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
        allocator.release(pid)
    totals = counters.totals()
    assert totals.logins("imap", LoginResult.OK) == 2
    assert totals.logins("imap", LoginResult.AUTH_FAILED) == 1
    assert totals.logins("pop3", LoginResult.OK) == 0
    assert totals.counter(Counter.BYTES_CLIENT_TO_BACKEND) == 2000
    buckets, count, total = totals.histogram(Histogram.AUTH)
    assert count == 2
    assert buckets[counters.BUCKETS.index(0.025)] == 2
    assert total == pytest.approx(0.04)
    # a freed slot is reused and goes on counting from where it was
    slot = allocator.take()
    assert slot in (1, 2)
    counters.set_slot(slot)
    counters.login("imap", LoginResult.OK)
    assert counters.totals().logins("imap", LoginResult.OK) == 3


def test_more_processes_than_slots_share_the_last() -> None:
    allocator = counters.SlotAllocator()
    taken = [allocator.take() for _ in range(6)]
    assert taken == [1, 2, 3, 3, 3, 3]


def test_without_a_region_nothing_is_counted() -> None:
    counters.set_slot(1)
    counters._base = -1
    counters.login("imap", LoginResult.OK)
    counters.observe(Histogram.BACKEND_LOGIN, 100.0)
    assert counters.totals().logins("imap", LoginResult.OK) == 0


@pytest.mark.parametrize(
    ("seconds", "bucket"),
    [(0.0, 0), (0.005, 0), (0.0050001, 1), (0.01, 1), (0.3, 6), (10.0, 10), (10.5, 11), (1e9, 11)],
)
def test_a_value_counts_in_the_first_bucket_it_fits(seconds: float, bucket: int) -> None:
    """Prometheus's ``le``: a value on a bound counts in that bound's bucket; past the last, +Inf."""
    counters.set_slot(1)
    counters.observe(Histogram.AUTH, seconds)
    buckets, count, _ = counters.totals().histogram(Histogram.AUTH)
    assert count == 1
    assert buckets == [1 if i == bucket else 0 for i in range(len(counters.BUCKETS) + 1)]
