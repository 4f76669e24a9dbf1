"""``import_environment``: the child processes keep only the variables it names.

The auth process expands ``%{env:NAME}`` when it answers a login, so a static
passdb whose ``host`` comes from the environment shows what it sees.
"""

from __future__ import annotations

import imaplib

import pytest

from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.proxyd import ProxydRunner
from tests.helpers.clients import CLIENT_TIMEOUT

pytestmark = pytest.mark.proxyd_only


def _start_and_login(
    proxyd: ProxydRunner, backend: DovecotBackend, variable: str, import_environment: str
) -> bool:
    config = proxyd.config(None, import_environment=import_environment)
    config.passdbs.append(
        {
            "driver": "static",
            "args": f"nopassword=y proxy=y host=%{{env:{variable}}} port={backend.imap_port}",
        }
    )
    running = proxyd.start(config)
    with imaplib.IMAP4(running.address(), running.port(), timeout=CLIENT_TIMEOUT) as imap:
        try:
            imap.login("alice", "alicepw")
        except imaplib.IMAP4.error:
            return False
        imap.logout()
        return True


def test_a_variable_not_imported_is_gone_in_the_auth_process(
    proxyd: ProxydRunner, backend_a: DovecotBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROXYD_TEST_BACKEND", backend_a.address)
    assert not _start_and_login(proxyd, backend_a, "PROXYD_TEST_BACKEND", "TZ")


def test_an_imported_variable_stays(
    proxyd: ProxydRunner, backend_a: DovecotBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROXYD_TEST_BACKEND", backend_a.address)
    assert _start_and_login(proxyd, backend_a, "PROXYD_TEST_BACKEND", "TZ PROXYD_TEST_BACKEND")


def test_name_equals_value_sets_one(proxyd: ProxydRunner, backend_a: DovecotBackend) -> None:
    assert _start_and_login(
        proxyd, backend_a, "PROXYD_TEST_SET", f"$import_environment PROXYD_TEST_SET={backend_a.address}"
    )
