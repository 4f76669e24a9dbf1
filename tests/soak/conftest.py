"""The soak and fault suite: short form in every test run, long form with PROXYD_SOAK=long.

Each scenario appends a ``SoakReport`` to the session's list; the table is
printed at the end of the run and, with ``PROXYD_SOAK_REPORT=FILE``, written
there as markdown (scripts/soak.sh does that for bench/RESULTS.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.soak.procs import tree
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


#: where a failed scenario's logs and process snapshot are kept (the stack's own files go)
ARTIFACTS = Path(os.environ.get("PROXYD_TEST_ARTIFACTS", "/tmp/proxyd-soak-failures"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def keep_evidence_of_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """A failed scenario leaves its proxy's log, the backend's log and a snapshot of the
    proxy's processes (titles, open descriptors, each one's Python stack) behind, and
    prints the log's tail: a module-scoped stack's files are gone by the time anyone looks."""
    yield
    if not request.node.stash.get(_CALL_FAILED, False):
        return
    stack = next((v for v in request.node.funcargs.values() if isinstance(v, Stack)), None)
    if stack is None:
        return
    target = ARTIFACTS / f"{request.node.name}-{time.strftime('%Y%m%dT%H%M%S')}"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(stack.proxy.log_path, target / "proxyd.log")
    backend_log = stack.backend.root / "stderr.log"
    if backend_log.exists():
        shutil.copy(backend_log, target / "backend.log")
    (target / "processes.txt").write_text(_snapshot(stack.proxy.pid))
    who = stack.runner.proxyctl("-c", str(stack.proxy.config_path), "who")
    sockets = subprocess.run(["ss", "-tanp"], capture_output=True, text=True, timeout=30, check=False)
    (target / "who.txt").write_text(who.stdout + who.stderr)
    (target / "sockets.txt").write_text(sockets.stdout)
    print(f"--- kept in {target}; the proxy's log ends with ---\n{stack.proxy.log_text()[-6000:]}")


def _snapshot(root: int) -> str:
    lines = []
    spy = shutil.which("py-spy") or str(Path(__file__).parents[2] / ".venv/bin/py-spy")
    for proc in tree(root):
        try:
            fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
        except OSError:
            fds = -1
        lines.append(f"== {proc.pid} (parent {proc.ppid}) {proc.title}: {fds} descriptors")
        if Path(spy).exists():
            dump = subprocess.run(
                [spy, "dump", "--pid", str(proc.pid)],
                capture_output=True, text=True, timeout=30, check=False,
            )
            lines.append(dump.stdout + dump.stderr)
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _REPORTS:
        return
    table = "\n".join([HEADER, *(report.row() for report in _REPORTS)])
    terminalreporter.write_sep("-", f"soak ({'long' if LONG else 'short'} form)")
    terminalreporter.write_line(table)
    target = os.environ.get("PROXYD_SOAK_REPORT")
    if target:
        Path(target).write_text(table + "\n")
