"""``log_path``, ``info_log_path``, ``debug_log_path``, ``log_timestamp``, ``syslog_facility``.

Real logins through a running proxyd; the lines are read from the files (or
the syslog socket) Dovecot's settings name.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import PasswdWriter
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import wait_until
from tests.fixtures.proxyd import ProxydRunner
from tests.helpers.clients import CLIENT_TIMEOUT

pytestmark = pytest.mark.proxyd_only


def _login(address: str, port: int, user: str = "alice", password: str = "alicepw") -> None:
    with imaplib.IMAP4(address, port, timeout=CLIENT_TIMEOUT) as imap:
        try:
            imap.login(user, password)
        except imaplib.IMAP4.error:
            return
        imap.logout()


def test_info_debug_and_error_lines_go_to_their_files(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, backend_a: DovecotBackend
) -> None:
    logs = proxyd.workdir
    config = proxyd.config(
        passwd_file(()),
        log_path=str(logs / "errors.log"),
        info_log_path=str(logs / "info.log"),
        debug_log_path=str(logs / "debug.log"),
        log_timestamp='"%Y-%m-%dT%H:%M:%S.%{usecs} "',
        auth_debug="yes",
    )
    running = proxyd.start(config)
    _login(running.address(), running.port())
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6} "

    def lines(name: str) -> list[str]:
        path = logs / name
        return path.read_text().splitlines() if path.exists() else []

    wait_until(
        lambda: any("Login: user=<alice>" in line for line in lines("info.log")),
        timeout=10,
        what="the login in info.log",
    )
    info = lines("info.log")
    assert all(re.match(stamp + r"[\w.-]+: Info: ", line) for line in info), info
    assert any(re.match(stamp + r"imap-login: Info: Login: user=<alice>", line) for line in info)
    debug = lines("debug.log")
    assert debug
    assert all(re.match(stamp + r"[\w.-]+: Debug: ", line) for line in debug), debug
    assert all(": Info: " not in line and ": Debug: " not in line for line in lines("errors.log"))


@pytest.fixture
def syslog_socket() -> Iterator[socket.socket]:
    """A datagram socket at /dev/log standing in for the system's syslog daemon."""
    if os.path.lexists("/dev/log"):
        pytest.skip("/dev/log belongs to a syslog daemon here")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("/dev/log")
    sock.settimeout(0.2)
    try:
        yield sock
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink("/dev/log")


def test_log_path_syslog_with_the_facility(
    proxyd: ProxydRunner,
    passwd_file: PasswdWriter,
    backend_a: DovecotBackend,
    syslog_socket: socket.socket,
    tmp_path: Path,
) -> None:
    running = proxyd.start(
        proxyd.config(passwd_file(()), log_path="syslog", syslog_facility="local3")
    )
    _login(running.address(), running.port())
    received: list[bytes] = []

    def login_logged() -> bool:
        with contextlib.suppress(TimeoutError):
            while True:
                received.append(syslog_socket.recv(65536))
        return any(b"imap-login: Info: Login: user=<alice>" in message for message in received)

    wait_until(login_logged, timeout=10, what="the login in syslog")
    line = next(m for m in received if b"Login: user=<alice>" in m)
    # <PRI> = local3 (19) * 8 + info (6); the ident, then Dovecot's prefix and level
    assert line.startswith(b"<158>proxyd: imap-login: Info: Login: user=<alice>")
