"""The demo cluster's local twin (``scripts/demo.sh``) and the README walkthrough.

One twin for the module, started the way the README says (``scripts/demo.sh``)
but in a directory of its own, on 127.78.0.0/24 instead of 127.0.0.0/24 (so
that it never meets other tests' servers, which use 127.0.0.x and 127.77.x.y)
and without the install steps (``PROXYD_DEMO_NO_INSTALL=1``, the running
interpreter's environment as the venv).  The tests follow the walkthrough, in order:

1. the curl commands the demo prints log in through either proxy, and the
   Subject names the backend;
2. a move by hand: ``UPDATE`` of host and delay_until through ``demo.sh psql``,
   then ``proxyctl kick`` on both nodes; the old session is closed, a login
   during the move waits and lands on the new backend;
3. the same with ``proxyctl move`` (back to the first backend);
4. a backend stops: its sessions are closed spread over
   ``login_proxy_max_disconnect_delay`` (5 s in demo/proxyd.conf), and the
   backend comes back with ``demo.sh start-backend``.

Bounded: about 30 s in all on an idle machine.
"""

from __future__ import annotations

import imaplib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_SH = REPO_ROOT / "scripts" / "demo.sh"
NET = "127.78.0"
PROXY_A = f"{NET}.1"
PROXY_B = f"{NET}.6"
BACKEND_A = f"{NET}.2"
BACKEND_B = f"{NET}.3"
IMAP_PORT = 10143
#: the move window of the tests: long enough to see the wait, short for the suite
MOVE_DELAY = 4

pytestmark = [pytest.mark.proxyd_only, pytest.mark.timeout(120)]


@dataclass
class Twin:
    """A running twin and how to drive it."""

    directory: Path
    environment: dict[str, str]
    start_output: str

    def demo(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        """``scripts/demo.sh ARGS``; returns stdout (stderr too when it fails)."""
        result = subprocess.run(
            ["bash", str(DEMO_SH), *args],
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


def _requirements() -> None:
    if os.geteuid() != 0:
        pytest.skip("scripts/demo.sh runs as root (it starts Dovecot and PostgreSQL)")
    for path in ("/usr/sbin/dovecot", "/usr/bin/curl", "/usr/bin/openssl"):
        if not Path(path).exists():
            pytest.skip(f"{path} is missing")
    if not list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")):
        pytest.skip("PostgreSQL is not installed")


@pytest.fixture(scope="module")
def twin() -> Iterator[Twin]:
    _requirements()
    directory = Path(tempfile.mkdtemp(prefix="proxyd-demo-twin-")) / "demo"
    # postgres and Dovecot's unprivileged processes must reach the demo directory
    directory.parent.chmod(0o755)
    environment = dict(os.environ)
    environment.update(
        PROXYD_DEMO_DIR=str(directory),
        PROXYD_DEMO_NET=NET,
        PROXYD_DEMO_NO_INSTALL="1",
        PROXYD_VENV=str(Path(sys.executable).parent.parent),
    )
    result = subprocess.run(
        ["bash", str(DEMO_SH)], env=environment, capture_output=True, text=True, timeout=120
    )
    running = Twin(directory, environment, result.stdout)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield running
    finally:
        running.demo("stop", check=False)
        shutil.rmtree(directory.parent, ignore_errors=True)


def _curl(url: str, user: str, password: str) -> tuple[int, str, float]:
    started = time.monotonic()
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "20", url, "-u", f"{user}:{password}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


def _backend_of(output: str, user: str) -> str:
    match = re.search(rf"Subject: Hello {user}, this is (backend-[ab])", output)
    assert match, output
    return match.group(1)


def _imap_session(address: str, user: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4(address, IMAP_PORT, timeout=20)
    client.login(user, password)
    client.select("INBOX")
    return client


def _fetch_subject(client: imaplib.IMAP4) -> str:
    status, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert status == "OK"
    item = data[0]
    assert isinstance(item, tuple)
    return item[1].decode()


def _login_during_move(twin: Twin, proxy: str) -> tuple[int, str]:
    """curl as alice while her delay_until is ahead; checks it waited until then."""
    row = twin.demo(
        "psql",
        "-A",
        "-t",
        "-c",
        "SELECT delay_until FROM cluster_accounts WHERE username = 'alice'",
    )
    delay_until = int(row.strip())
    # the login starts inside the move window ...
    assert time.time() < delay_until - 0.5, (delay_until, time.time())
    code, output, _ = _curl(f"imap://{proxy}:{IMAP_PORT}/INBOX;UID=1", "alice", "alicepw")
    # ... and is let through when it ends (delay_until is whole seconds)
    assert time.time() >= delay_until - 0.05, (delay_until, time.time())
    return code, output


def _closed_by_server(client: imaplib.IMAP4) -> bool:
    try:
        client.noop()
    except (imaplib.IMAP4.abort, OSError):
        return True
    return False


def _who(twin: Twin, node: str, user: str) -> list[str]:
    return [line for line in twin.demo("proxyctl", node, "who", user).splitlines() if user in line]


def test_printed_curl_commands_log_in_through_either_proxy(twin: Twin) -> None:
    commands = [
        line.strip().split("#")[0]
        for line in twin.start_output.splitlines()
        if line.strip().startswith("curl -s ")
    ]
    seen: dict[tuple[str, str], str] = {}
    for command in commands:
        argv = shlex.split(command)
        url = next(arg for arg in argv if "://" in arg)
        user = argv[-1].split(":")[0]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, (command, result.stderr)
        if url.endswith(("UID=1", "/1")):
            seen[(url.split("/")[2], user)] = _backend_of(result.stdout, user)
        else:
            assert result.stdout.startswith("1 "), (command, result.stdout)  # POP3 LIST
    expected = {"alice": "backend-a", "bob": "backend-b"}
    nodes = {node.split(":")[0] for node, _ in seen}
    assert {PROXY_A, PROXY_B} <= nodes, commands
    for (_, user), backend in seen.items():
        assert backend == expected[user]
    status = twin.demo("status")
    for name in ("proxyd-a", "proxyd-b", "backend-a", "backend-b", "postgres"):
        assert f"{name}: running" in status


def test_move_by_hand_delays_logins_and_lands_them_on_the_new_backend(twin: Twin) -> None:
    old = _imap_session(PROXY_B, "alice", "alicepw")
    try:
        assert "this is backend-a" in _fetch_subject(old)
        twin.demo(
            "psql",
            "-c",
            f"UPDATE cluster_accounts SET host = '{BACKEND_B}', "
            f"delay_until = extract(epoch from now())::int + {MOVE_DELAY} "
            "WHERE username = 'alice'",
        )
        assert "1 connections kicked" in twin.demo("proxyctl", "b", "kick", "alice")
        twin.demo("proxyctl", "a", "kick", "alice")
        assert _closed_by_server(old)
    finally:
        old.shutdown()
    code, output = _login_during_move(twin, PROXY_A)
    assert code == 0, output
    assert _backend_of(output, "alice") == "backend-b"
    # after the move window, no wait
    code, output, elapsed = _curl(f"imap://{PROXY_B}:{IMAP_PORT}/INBOX;UID=1", "alice", "alicepw")
    assert code == 0, output
    assert _backend_of(output, "alice") == "backend-b"
    assert elapsed < 1.5, elapsed


def test_proxyctl_move_delays_logins_and_lands_them_on_the_new_backend(twin: Twin) -> None:
    old = _imap_session(PROXY_A, "alice", "alicepw")
    try:
        assert "this is backend-b" in _fetch_subject(old)
        assert _who(twin, "a", "alice")
        output = twin.demo("proxyctl", "a", "move", "alice", BACKEND_A, "--delay", str(MOVE_DELAY))
        assert "1 connections kicked" in output, output
        assert f"go to {BACKEND_A}" in output, output
        twin.demo("proxyctl", "b", "kick", "alice")  # the other node's sessions
        assert _closed_by_server(old)
    finally:
        old.shutdown()
    rows = twin.demo(
        "psql", "-A", "-t", "-c", "SELECT host FROM cluster_accounts WHERE username = 'alice'"
    )
    assert rows.strip() == BACKEND_A
    code, output = _login_during_move(twin, PROXY_B)
    assert code == 0, output
    assert _backend_of(output, "alice") == "backend-a"


def _watch_close(client: imaplib.IMAP4, closed: list[float]) -> None:
    sock = client.socket()
    sock.settimeout(30)
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass
    closed.append(time.monotonic())


def test_stopped_backend_disconnects_are_spread(twin: Twin) -> None:
    sessions = [_imap_session(PROXY_A, "bob", "bobpw") for _ in range(6)]
    sessions += [_imap_session(PROXY_B, "bob", "bobpw") for _ in range(2)]
    closed: list[float] = []
    threads = [threading.Thread(target=_watch_close, args=(s, closed)) for s in sessions]
    try:
        for thread in threads:
            thread.start()
        stopped = time.monotonic()
        twin.demo("stop-backend", "backend-b")
        for thread in threads:
            thread.join(30)
    finally:
        for session in sessions:
            session.sock.close()
    delays = sorted(t - stopped for t in closed)
    assert len(delays) == len(sessions)
    # login_proxy_max_disconnect_delay = 5s: not all at once, all within the 5 s (+ slack)
    assert delays[-1] - delays[0] > 2.0, delays
    assert delays[-1] - delays[0] < 7.0, delays
    assert delays[-1] < 25, delays
    log = (twin.directory / "proxyd-a" / "proxyd.log").read_text()
    assert re.search(r"disconnecting client in \d+ms", log), log[-2000:]
    # while it is down, bob's logins fail; once it is back they work again
    code, output, _ = _curl(f"imap://{PROXY_A}:{IMAP_PORT}/INBOX;UID=1", "bob", "bobpw")
    assert code != 0, output
    twin.demo("start-backend", "backend-b")
    code, output, _ = _curl(f"imap://{PROXY_B}:{IMAP_PORT}/INBOX;UID=1", "bob", "bobpw")
    assert code == 0, output
    assert _backend_of(output, "bob") == "backend-b"
    with socket.create_connection((BACKEND_B, IMAP_PORT), timeout=5) as probe:
        assert probe.recv(64).startswith(b"* OK")
