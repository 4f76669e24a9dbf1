"""The soak and fault suite: short form in every test run, long form with PROXYD_SOAK=long.

Each scenario appends a ``SoakReport`` to the session's list; the table is
printed at the end of the run and, with ``PROXYD_SOAK_REPORT=FILE``, written
there as markdown (scripts/soak.sh does that for bench/RESULTS.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.soak.report import HEADER, SoakReport
from tests.soak.stack import Stack, proxy_stack

#: "long": the benchmark's form (longer floods, passdb engines, 10,000 sessions)
LONG = os.environ.get("PROXYD_SOAK", "") == "long"

_REPORTS: list[SoakReport] = []


@pytest.fixture
def soak_reports() -> list[SoakReport]:
    return _REPORTS


@pytest.fixture(scope="module")
def hp_stack() -> Iterator[Stack]:
    """High-performance mode: two login processes, 50 clients each (room for 100)."""
    with proxy_stack(
        service_count=0, client_limit=50, process_limit=2, service_extra={"process_min_avail": "2"}
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def hs_stack() -> Iterator[Stack]:
    """High-security mode: one login process per client (room for 100), relay processes."""
    with proxy_stack(service_count=1, client_limit=1, process_limit=100) as stack:
        yield stack


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _REPORTS:
        return
    table = "\n".join([HEADER, *(report.row() for report in _REPORTS)])
    terminalreporter.write_sep("-", f"soak ({'long' if LONG else 'short'} form)")
    terminalreporter.write_line(table)
    target = os.environ.get("PROXYD_SOAK_REPORT")
    if target:
        Path(target).write_text(table + "\n")
