"""``log_timestamp`` through DovecotFormatter: the per-second cache gives what strftime gives."""

from __future__ import annotations

import logging
import time

import pytest

from proxyd.log import DEFAULT_TIMESTAMP, DovecotFormatter


def _record(created: float) -> logging.LogRecord:
    record = logging.LogRecord("imap-login", logging.INFO, __file__, 1, "Login: %s", ("x",), None)
    record.created = created
    return record


@pytest.mark.parametrize("timestamp", [DEFAULT_TIMESTAMP, "%Y-%m-%dT%H:%M:%S.%{usecs} ", "[%{usecs}|%S] "])
def test_lines_of_one_second_and_the_next(timestamp: str) -> None:
    formatter = DovecotFormatter(timestamp)
    base = 1_700_000_000.0
    # two lines in one second (the cache is used), then the next second (it is renewed)
    for created in (base + 0.25, base + 0.750001, base + 1.5, base + 0.1):
        when = time.localtime(created)
        before, _, after = timestamp.partition("%{usecs}")
        expected = time.strftime(before, when)
        if "%{usecs}" in timestamp:
            expected += f"{int((created % 1) * 1_000_000):06d}" + time.strftime(after, when)
        assert formatter.format(_record(created)) == f"{expected}imap-login: Info: Login: x"


def test_no_timestamp() -> None:
    assert DovecotFormatter(None).format(_record(1_700_000_000.5)) == "imap-login: Info: Login: x"
