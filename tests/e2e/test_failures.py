"""Failed logins: exact client texts, no backend contact, the client stays connected."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import PasswdWriter
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import BACKEND_A_ADDRESS, client_address, free_port
from tests.fixtures.proxyd import PasswdEntry, ProxydProcess, ProxydRunner, proxy_fields
from tests.helpers.clients import RawImapClient
from tests.helpers.recording_backend import ImapScript, RecordingImapBackend

pytestmark = pytest.mark.e2e

AUTH_FAILED = "NO [AUTHENTICATIONFAILED] Authentication failed."
UNAVAILABLE = "NO [UNAVAILABLE] Account is temporarily unavailable."


@pytest.fixture
def recording_backend() -> Iterator[RecordingImapBackend]:
    with RecordingImapBackend(ImapScript(users={"rita": "ritapw"})) as backend:
        yield backend


@pytest.fixture
def rita_proxyd(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, recording_backend: RecordingImapBackend
) -> ProxydProcess:
    """proxyd with the standard users plus rita, who is routed to the recording backend."""
    rita = PasswdEntry(
        "rita", "{PLAIN}ritapw", proxy_fields(recording_backend.address, recording_backend.port)
    )
    return proxyd.start(proxyd.config(passwd_file([rita])))


def test_wrong_password_is_refused_without_contacting_the_backend(
    rita_proxyd: ProxydProcess, recording_backend: RecordingImapBackend
) -> None:
    """A wrong password gets Dovecot's text, no backend connection is made, and the
    same connection can go on to log in correctly (which does reach the backend)."""
    with RawImapClient(
        rita_proxyd.address(), rita_proxyd.port(), source_ip=client_address(3)
    ) as client:
        assert client.greeting.startswith("* OK ")
        reply = client.command("LOGIN rita wrong-password")
        assert reply.tagged == AUTH_FAILED
        assert client.command("NOOP").tagged == "OK NOOP completed."
        # give a (wrong) backend connection time to show up before asserting there is none
        time.sleep(0.5)
        assert recording_backend.connection_count() == 0

        reply = client.command("LOGIN rita ritapw")
        assert reply.status == "OK", reply
    [connection] = recording_backend.wait_for_connections(1)
    assert connection.credentials == [("", "rita", "ritapw")]


def test_unknown_user_gets_the_same_text_as_a_wrong_password(
    rita_proxyd: ProxydProcess, recording_backend: RecordingImapBackend
) -> None:
    """No user enumeration: an unknown user reads exactly like a wrong password."""
    with RawImapClient(
        rita_proxyd.address(), rita_proxyd.port(), source_ip=client_address(4)
    ) as client:
        assert client.command("LOGIN nosuchuser whatever").tagged == AUTH_FAILED
        assert client.command("LOGOUT").tagged == "OK Logout completed."
    assert recording_backend.connection_count() == 0


def test_wrong_password_for_a_dovecot_routed_user_makes_no_backend_login(
    standard_proxyd: ProxydProcess, backend_a: DovecotBackend
) -> None:
    """alice with a wrong password: refused by proxyd; backend-a logs no attempt for her from this client."""
    source = client_address(5)
    with RawImapClient(
        standard_proxyd.address(), standard_proxyd.port(), source_ip=source
    ) as client:
        assert client.command("LOGIN alice not-alicepw").tagged == AUTH_FAILED
        assert client.command("LOGOUT").status == "OK"
    time.sleep(0.5)
    assert not backend_a.log_lines(rf"rip={source.replace('.', '[.]')}\b")


def test_backend_down_gives_unavailable_and_the_client_stays_connected(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, backend_a: DovecotBackend
) -> None:
    """dan's backend port is closed: ``NO [UNAVAILABLE] Account is temporarily unavailable.``
    after proxyd's retries (bounded by ``login_proxy_timeout``); then the same
    connection logs in as alice and reads her mail."""
    closed_port = free_port(BACKEND_A_ADDRESS)
    dan = PasswdEntry("dan", "{PLAIN}danpw", proxy_fields(BACKEND_A_ADDRESS, closed_port))
    running = proxyd.start(proxyd.config(passwd_file([dan]), login_proxy_timeout="3s"))
    with RawImapClient(running.address(), running.port(), source_ip=client_address(6)) as client:
        started = time.monotonic()
        reply = client.command("LOGIN dan danpw")
        elapsed = time.monotonic() - started
        assert reply.tagged == UNAVAILABLE
        assert elapsed < 10, f"took {elapsed:.1f} s with login_proxy_timeout = 3s"
        assert client.command("NOOP").tagged == "OK NOOP completed."

        assert client.command("LOGIN alice alicepw").status == "OK"
        assert client.command("EXAMINE INBOX").status == "OK"
        reply = client.command("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert reply.status == "OK", reply
        assert f"Subject: {backend_a.subject_for('alice')}" in reply.untagged
