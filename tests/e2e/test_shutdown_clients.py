"""``shutdown_clients``: whether stopping proxyd also ends the proxied sessions.

With ``no`` (Dovecot's way to upgrade without dropping connections) the master
exits at once with status 0 and closes the listeners, while the sessions already
proxied go on in their login and relay processes until the clients leave.
"""

from __future__ import annotations

import imaplib
import os
import signal

import pytest

from tests.e2e.conftest import PasswdWriter
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import port_accepts, wait_until
from tests.fixtures.proxyd import ProxydRunner
from tests.fixtures.tls import TlsFiles
from tests.helpers.clients import CLIENT_TIMEOUT, fetch_subjects

pytestmark = pytest.mark.proxyd_only


def _children(pid: int) -> set[int]:
    """Every process below ``pid`` (the zygote's children included)."""
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        parent = frontier.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as file:
                kids = {int(word) for word in file.read().split()}
        except FileNotFoundError:
            continue
        frontier |= kids - found
        found |= kids
    return found


def test_sessions_outlive_the_master_with_shutdown_clients_no(
    proxyd: ProxydRunner,
    passwd_file: PasswdWriter,
    backend_a: DovecotBackend,
    proxyd_tls: TlsFiles,
) -> None:
    running = proxyd.start(proxyd.config(passwd_file(()), shutdown_clients="no"))
    plain = imaplib.IMAP4(running.address("imap"), running.port("imap"), timeout=CLIENT_TIMEOUT)
    plain.login("alice", "alicepw")
    secure = imaplib.IMAP4_SSL(
        running.address("imaps"), running.port("imaps"),
        ssl_context=proxyd_tls.client_context(), timeout=CLIENT_TIMEOUT,
    )  # fmt: skip
    secure.login("alice", "alicepw")
    running.wait_for_log(r"Started proxying.*\n?.*")
    survivors = _children(running.pid)
    assert running.stop(signal.SIGTERM) == 0
    # the listeners close once every process has let go of them
    wait_until(
        lambda: not port_accepts(running.address("imap"), running.port("imap")),
        timeout=5,
        what="the imap listener to close",
    )
    subject = backend_a.subject_for("alice")
    for client in (plain, secure):
        client.select("INBOX", readonly=True)
        assert fetch_subjects(client) == [subject]
        client.logout()
    # with their clients gone, the processes that kept them exit too
    wait_until(
        lambda: not any(os.path.exists(f"/proc/{pid}") for pid in survivors),
        timeout=15,
        what="the login and relay processes to exit",
    )


def test_sessions_end_with_the_master_by_default(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, backend_a: DovecotBackend
) -> None:
    running = proxyd.start(proxyd.config(passwd_file(())))
    plain = imaplib.IMAP4(running.address("imap"), running.port("imap"), timeout=CLIENT_TIMEOUT)
    plain.login("alice", "alicepw")
    assert running.stop(signal.SIGTERM) == 0
    try:
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            plain.select("INBOX", readonly=True)
    finally:
        plain.shutdown()
