"""Non-plaintext SASL mechanisms through proxyd to real Dovecot backends.

The exchange runs in proxyd's auth process against hashes made by Debian's
``doveadm pw``; the backend login then uses the master user (``master=``/
``pass=``), as the proxying document's second way describes.
"""

from __future__ import annotations

import pytest

from tests.fixtures.dovecot import MASTER_PASSWORD, MASTER_USER, DovecotBackend, dovecot_hash
from tests.fixtures.proxyd import (
    PasswdEntry,
    ProxydProcess,
    ProxydRunner,
    proxy_fields,
    write_passwd_file,
)
from tests.helpers.clients import IMAP4, fetch_subjects
from tests.helpers.scram_client import ScramClient

pytestmark = pytest.mark.e2e

MECHS = "plain login cram-md5 digest-md5 scram-sha-1 scram-sha-256"


def _master_fields(backend: DovecotBackend) -> dict[str, str | None]:
    return proxy_fields(
        backend.address, backend.imap_port, master=MASTER_USER, **{"pass": MASTER_PASSWORD}
    )


@pytest.fixture
def sasl_proxyd(
    proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend
) -> ProxydProcess:
    """alice: {CRAM-MD5} -> backend-a; bob: {SCRAM-SHA-256} -> backend-b; dave: {PLAIN}, scram-sha-1."""
    entries = [
        PasswdEntry("alice", dovecot_hash("alicepw", "CRAM-MD5"), _master_fields(backend_a)),
        PasswdEntry("bob", dovecot_hash("bobpw", "SCRAM-SHA-256"), _master_fields(backend_b)),
        PasswdEntry("dave", "{PLAIN}davepw", _master_fields(backend_a)),
    ]
    path = write_passwd_file(proxyd.workdir / "sasl-users", entries)
    return proxyd.start(proxyd.config(path, auth_mechanisms=MECHS, auth_verbose="yes"))


def test_capability_lists_the_mechanisms(sasl_proxyd: ProxydProcess) -> None:
    with IMAP4(sasl_proxyd.address(), sasl_proxyd.port()) as client:
        caps = [c for c in client.capabilities if c.startswith("AUTH=")]
        assert caps == [
            "AUTH=PLAIN", "AUTH=LOGIN", "AUTH=CRAM-MD5", "AUTH=DIGEST-MD5",
            "AUTH=SCRAM-SHA-1", "AUTH=SCRAM-SHA-256",
        ]  # fmt: skip


def test_cram_md5_with_imaplib(sasl_proxyd: ProxydProcess, backend_a: DovecotBackend) -> None:
    with IMAP4(sasl_proxyd.address(), sasl_proxyd.port()) as client:
        typ, _ = client.login_cram_md5("alice", "alicepw")
        assert typ == "OK"
        assert fetch_subjects(client) == [backend_a.subject_for("alice")]
        client.logout()
    backend_a.wait_for_log(r"Login: user=<alice>.*")


def test_cram_md5_wrong_password(sasl_proxyd: ProxydProcess) -> None:
    with (
        IMAP4(sasl_proxyd.address(), sasl_proxyd.port()) as client,
        pytest.raises(IMAP4.error, match="Authentication failed"),
    ):
        client.login_cram_md5("alice", "wrong")
    sasl_proxyd.wait_for_log(r"cram-md5\(alice,[^)]*\): Password mismatch")


def _scram_login(
    proxy: ProxydProcess, hash_name: str, mech: str, user: str, password: str, *, wrong: bool = False
) -> tuple[IMAP4, ScramClient, list[bytes]]:
    scram = ScramClient(hash_name, user, password)
    challenges: list[bytes] = []

    def answer(challenge: bytes) -> bytes:
        challenges.append(challenge)
        if len(challenges) == 1:
            return scram.first()
        if len(challenges) == 2:
            return scram.final(challenge, password="nope" if wrong else None)
        return b""

    client = IMAP4(proxy.address(), proxy.port())
    try:
        client.authenticate(mech, answer)
    except BaseException:
        client.shutdown()
        raise
    return client, scram, challenges


@pytest.mark.parametrize(
    ("mech", "hash_name", "user", "password", "backend_name"),
    [("SCRAM-SHA-256", "sha256", "bob", "bobpw", "b"), ("SCRAM-SHA-1", "sha1", "dave", "davepw", "a")],
)
def test_scram_login_reaches_the_backend(
    sasl_proxyd: ProxydProcess,
    backend_a: DovecotBackend,
    backend_b: DovecotBackend,
    mech: str,
    hash_name: str,
    user: str,
    password: str,
    backend_name: str,
) -> None:
    """The server signature the client gets proves the server knew the key."""
    backend = backend_a if backend_name == "a" else backend_b
    client, scram, challenges = _scram_login(sasl_proxyd, hash_name, mech, user, password)
    with client:
        assert scram.verify(challenges[2])
        assert fetch_subjects(client) == [backend.subject_for(user)]
        client.logout()


def test_scram_wrong_proof_fails(sasl_proxyd: ProxydProcess) -> None:
    with pytest.raises(IMAP4.error, match="Authentication failed"):
        _scram_login(sasl_proxyd, "sha256", "SCRAM-SHA-256", "bob", "bobpw", wrong=True)
    sasl_proxyd.wait_for_log(r"scram-sha-256\(bob,[^)]*\): Password mismatch")


def test_scheme_that_cannot_serve_the_mechanism(sasl_proxyd: ProxydProcess) -> None:
    """bob's {SCRAM-SHA-256} cannot give CRAM-MD5 credentials: Dovecot's text, a plain failure."""
    with (
        IMAP4(sasl_proxyd.address(), sasl_proxyd.port()) as client,
        pytest.raises(IMAP4.error, match="Authentication failed"),
    ):
        client.login_cram_md5("bob", "bobpw")
    sasl_proxyd.wait_for_log(r"Requested CRAM-MD5 scheme, but we have only SCRAM-SHA-256")
