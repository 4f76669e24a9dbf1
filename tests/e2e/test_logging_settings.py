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
import threading
from collections.abc import Iterator

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
        lambda: any("Started proxying to " in line for line in lines("info.log")),
        timeout=10,
        what="the login in info.log",
    )
    info = lines("info.log")
    assert all(re.match(stamp + r"[\w.-]+: Info: ", line) for line in info), info
    assert any(
        re.match(stamp + r"imap-login: Info: proxy\(alice,[^)]+\): Started proxying to .*: user=<alice>", line)
        for line in info
    )
    debug = lines("debug.log")
    assert debug
    assert all(re.match(stamp + r"[\w.-]+: Debug: ", line) for line in debug), debug
    assert all(": Info: " not in line and ": Debug: " not in line for line in lines("errors.log"))


class SyslogStandIn:
    """A datagram socket at /dev/log read by a thread, as a syslog daemon reads it
    (a sender blocks once a few unread datagrams are queued)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("/dev/log")
        self.sock.settimeout(0.2)
        self.received: list[bytes] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                self.received.append(self.sock.recv(65536))

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def syslog() -> Iterator[SyslogStandIn]:
    if os.path.lexists("/dev/log"):
        pytest.skip("/dev/log belongs to a syslog daemon here")
    stand_in = SyslogStandIn()
    try:
        yield stand_in
    finally:
        stand_in.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink("/dev/log")


def test_log_path_syslog_with_the_facility(
    proxyd: ProxydRunner,
    passwd_file: PasswdWriter,
    backend_a: DovecotBackend,
    syslog: SyslogStandIn,
) -> None:
    running = proxyd.start(
        proxyd.config(passwd_file(()), log_path="syslog", syslog_facility="local3")
    )
    _login(running.address(), running.port())

    def login_logged() -> bool:
        return any(b"imap-login: Info: proxy(alice," in m for m in list(syslog.received))

    wait_until(login_logged, timeout=10, what="the login in syslog")
    line = next(m for m in list(syslog.received) if b"Started proxying to " in m)
    # <PRI> = local3 (19) * 8 + info (6); the ident, then Dovecot's prefix and level
    assert line.startswith(b"<158>proxyd: imap-login: Info: proxy(alice,")


def test_login_log_format_and_elements(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, backend_a: DovecotBackend
) -> None:
    """Dovecot's settings reshape every client line, the relay process's disconnect line too."""
    config = proxyd.config(
        passwd_file(()),
        login_log_format_elements='"user=<%u> proto=%s mech=%m port=%{lport} empty=%e"',
        login_log_format='"%s | %$"',
    )
    running = proxyd.start(config)
    _login(running.address(), running.port())
    port = running.port()
    lines = running.wait_for_log(r"imap-login: Info: user=<alice>, .*\| proxy\(alice,[^)]+\): Started proxying")
    assert re.search(
        rf"imap-login: Info: user=<alice>, proto=imap, mech=PLAIN, port={port} \| "
        r"proxy\(alice,[\d.]+:\d+\): Started proxying to <[\d.]+> \(\d+\.\d{3} secs\)$",
        lines[0],
    )
    # the session went to the relay process at login; its end is logged there, same shape
    running.wait_for_log(
        rf"imap-login: Info: user=<alice>, proto=imap, mech=PLAIN, port={port} \| "
        r"proxy\(alice,[\d.]+:\d+\): Disconnected by (client|server)"
    )
