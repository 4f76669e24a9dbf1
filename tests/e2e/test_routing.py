"""Logins through proxyd reach the right Dovecot backend, over every client transport."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import proxy_started
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import client_address
from tests.fixtures.proxyd import ProxydProcess
from tests.fixtures.tls import TlsFiles
from tests.helpers.clients import IMAP4, IMAP4_SSL, curl, fetch_subjects, openssl_s_client

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("user", "password", "backend_name"), [("alice", "alicepw", "a"), ("bob", "bobpw", "b")]
)
def test_each_user_reaches_the_backend_named_in_the_passdb(
    standard_proxyd: ProxydProcess,
    backend_a: DovecotBackend,
    backend_b: DovecotBackend,
    user: str,
    password: str,
    backend_name: str,
) -> None:
    """passwd-file ``host=``/``port=`` pick the backend: the INBOX seen is that backend's."""
    backend = backend_a if backend_name == "a" else backend_b
    with IMAP4(standard_proxyd.address(), standard_proxyd.port()) as client:
        typ, _ = client.login(user, password)
        assert typ == "OK"
        assert fetch_subjects(client) == [backend.subject_for(user)]
        client.logout()
    lines = standard_proxyd.wait_for_log(proxy_started(user, backend.address))
    assert any(f"{backend.address}:{backend.imap_port}" in line for line in lines), lines


def test_destuser_logs_in_to_the_backend_as_another_user(
    standard_proxyd: ProxydProcess, backend_a: DovecotBackend
) -> None:
    """carol has ``destuser=dave``: the backend session is dave's, with carol's password."""
    with IMAP4(standard_proxyd.address(), standard_proxyd.port()) as client:
        client.login("carol", "carolpw")
        assert fetch_subjects(client) == [backend_a.subject_for("dave")]
        client.logout()
    backend_a.wait_for_log(r"imap-login: Info: Login: user=<dave>")


def test_backend_sees_the_original_client_address(
    standard_proxyd: ProxydProcess, backend_b: DovecotBackend
) -> None:
    """The client's IP reaches the backend through ID x-originating-ip (backend: ``rip=``).

    The client connects from 127.0.0.21 while proxyd itself connects to the
    backend from 127.0.0.1, so ``rip=127.0.0.21`` can only come from the ID
    command; ``lip=`` is the address the client connected to.  The backend
    logs the session id proxyd gave the connection.
    """
    source = client_address(1)
    with IMAP4(standard_proxyd.address(), standard_proxyd.port(), source_ip=source) as client:
        client.login("bob", "bobpw")
        client.logout()
    lines = backend_b.wait_for_log(rf"Login: user=<bob>, method=\S+, rip={re.escape(source)}, ")
    assert f"lip={standard_proxyd.address()}," in lines[-1]
    backend_session = re.search(r"session=<([^>]+)>", lines[-1])
    assert backend_session, lines[-1]
    proxy_lines = standard_proxyd.wait_for_log(rf"user=<bob>.*rip={re.escape(source)}\b.*session=<")
    proxy_sessions = {
        m.group(1) for line in proxy_lines for m in re.finditer(r"session=<([^>]+)>", line)
    }
    assert backend_session.group(1) in proxy_sessions


def test_curl_authenticate_plain(standard_proxyd: ProxydProcess, backend_b: DovecotBackend) -> None:
    """curl with ``--login-options AUTH=PLAIN`` (AUTHENTICATE PLAIN with SASL-IR) fetches bob's message."""
    url = f"imap://{standard_proxyd.address()}:{standard_proxyd.port()}/INBOX;UID=1"
    result = curl(["-v", url, "-u", "bob:bobpw", "--login-options", "AUTH=PLAIN"])
    assert result.returncode == 0, result.stderr
    assert "AUTHENTICATE PLAIN" in result.stderr
    assert f"Subject: {backend_b.subject_for('bob')}" in result.stdout


def test_curl_wrong_password_is_login_denied(standard_proxyd: ProxydProcess) -> None:
    """curl reports a refused login as exit code 67 ("Login denied")."""
    url = f"imap://{standard_proxyd.address()}:{standard_proxyd.port()}/INBOX"
    result = curl(
        [
            url,
            "-u",
            "bob:not-bobs",
            "--login-options",
            "AUTH=PLAIN",
            "-X",
            "NOOP",
            "--interface",
            client_address(2),
        ]
    )
    assert result.returncode == 67, (result.returncode, result.stderr)


def test_implicit_tls_listener(
    standard_proxyd: ProxydProcess, proxyd_tls: TlsFiles, backend_a: DovecotBackend
) -> None:
    """imaplib.IMAP4_SSL verifies proxyd's certificate (trustme CA, IP SAN) and logs in."""
    with IMAP4_SSL(
        standard_proxyd.address("imaps"),
        standard_proxyd.port("imaps"),
        ssl_context=proxyd_tls.client_context(),
    ) as client:
        assert client.login("alice", "alicepw")[0] == "OK"
        assert fetch_subjects(client) == [backend_a.subject_for("alice")]
        client.logout()


def test_starttls_with_imaplib(
    standard_proxyd: ProxydProcess, proxyd_tls: TlsFiles, backend_b: DovecotBackend
) -> None:
    """STARTTLS on the plain listener, then LOGIN inside TLS."""
    with IMAP4(standard_proxyd.address(), standard_proxyd.port()) as client:
        assert "STARTTLS" in client.capabilities
        typ, _ = client.starttls(ssl_context=proxyd_tls.client_context())
        assert typ == "OK"
        assert client.login("bob", "bobpw")[0] == "OK"
        assert fetch_subjects(client) == [backend_b.subject_for("bob")]
        client.logout()


def test_starttls_with_openssl_s_client(
    standard_proxyd: ProxydProcess, proxyd_tls: TlsFiles, backend_a: DovecotBackend
) -> None:
    """openssl s_client -starttls imap verifies the certificate; a pipelined session works."""
    result = openssl_s_client(
        [
            "-connect",
            f"{standard_proxyd.address()}:{standard_proxyd.port()}",
            "-starttls",
            "imap",
            "-CAfile",
            str(proxyd_tls.ca_pem),
            "-verify_return_error",
            "-verify_ip",
            standard_proxyd.address(),
        ],
        "a1 LOGIN alice alicepw\n"
        "a2 EXAMINE INBOX\n"
        "a3 FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\n"
        "a4 LOGOUT\n",
    )
    # exit 0 also means the server ended TLS with close_notify ("unexpected eof" otherwise)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert re.search(r"^a1 OK ", result.stdout, re.MULTILINE), result.stdout
    assert f"Subject: {backend_a.subject_for('alice')}" in result.stdout
    assert re.search(r"^a4 OK ", result.stdout, re.MULTILINE), result.stdout
