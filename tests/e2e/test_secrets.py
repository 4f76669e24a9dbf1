"""Passwords never reach proxyd's log, even with ``auth_debug`` and ``auth_verbose``."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import PasswdWriter, proxy_started
from tests.fixtures.net import client_address
from tests.fixtures.proxyd import PasswdEntry, ProxydRunner, proxy_fields
from tests.helpers.clients import RawImapClient, curl
from tests.helpers.recording_backend import ImapScript, RecordingImapBackend

pytestmark = pytest.mark.e2e

GOOD = "Canary-Good-7f3a9e"
WRONG = "Canary-Wrong-41bc2d"
USER = "canary"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def forbidden_strings() -> list[str]:
    """Every form in which the two passwords travel: clear, LOGIN's and PLAIN's base64."""
    forms = []
    for password in (GOOD, WRONG):
        forms += [
            password,
            b64(password),
            b64(f"\0{USER}\0{password}"),
            b64(f"{USER}\0{USER}\0{password}"),
        ]
    return forms


@pytest.fixture
def canary_backend() -> Iterator[RecordingImapBackend]:
    with RecordingImapBackend(ImapScript(users={USER: GOOD})) as backend:
        yield backend


def test_no_password_in_the_log_with_auth_debug(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, canary_backend: RecordingImapBackend
) -> None:
    """LOGIN, AUTHENTICATE PLAIN (with and without SASL-IR) and AUTHENTICATE LOGIN,
    each with a good and a wrong password, leave no trace of either password in
    the log; the log does record the logins themselves."""
    canary = PasswdEntry(
        USER, "{PLAIN}" + GOOD, proxy_fields(canary_backend.address, canary_backend.port)
    )
    config = proxyd.config(passwd_file([canary]), auth_debug="yes", auth_verbose="yes")
    running = proxyd.start(config)
    host, port = running.address(), running.port()

    # every failed login comes from an address of its own: a per-IP auth penalty
    # (Dovecot delays the next attempt from that IP by 4 s) must not slow the test
    sources = iter(client_address(n) for n in range(12, 20))
    for password, expected in ((WRONG, "NO"), (GOOD, "OK")):
        plain_ir = b64(f"\0{USER}\0{password}")
        plain_full = b64(f"{USER}\0{USER}\0{password}")
        with RawImapClient(host, port, source_ip=next(sources)) as client:
            assert client.command(f'LOGIN {USER} "{password}"').status == expected
        with RawImapClient(host, port, source_ip=next(sources)) as client:
            assert client.command(f"AUTHENTICATE PLAIN {plain_ir}").status == expected
        with RawImapClient(host, port, source_ip=next(sources)) as client:
            tag = client.next_tag()
            client.send_raw(f"{tag} AUTHENTICATE PLAIN\r\n".encode())
            assert client.read_line().startswith("+")
            client.send_raw(f"{plain_full}\r\n".encode())
            assert client.read_reply(tag).status == expected
        with RawImapClient(host, port, source_ip=next(sources)) as client:
            tag = client.next_tag()
            client.send_raw(f"{tag} AUTHENTICATE LOGIN\r\n".encode())
            assert client.read_line().startswith("+")
            client.send_raw(f"{b64(USER)}\r\n".encode())
            assert client.read_line().startswith("+")
            client.send_raw(f"{b64(password)}\r\n".encode())
            assert client.read_reply(tag).status == expected

    url = f"imap://{host}:{port}/INBOX"
    result = curl([url, "-u", f"{USER}:{GOOD}", "--login-options", "AUTH=PLAIN", "-X", "NOOP"])
    assert result.returncode == 0, result.stderr

    running.wait_for_log(proxy_started(USER, canary_backend.address))
    assert running.stop() == 0
    log = running.log_text()
    assert USER in log
    leaked = [form for form in forbidden_strings() if form in log]
    assert not leaked, f"password material in proxyd's log: {leaked}"
