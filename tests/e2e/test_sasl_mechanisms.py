"""Non-plaintext SASL mechanisms through proxyd to real Dovecot backends.

The exchange runs in proxyd's auth process against hashes made by Debian's
``doveadm pw``; the backend login then uses the master user (``master=``/
``pass=``), as the proxying document's second way describes.
"""

from __future__ import annotations

import base64
import poplib
import re
import socket
import ssl
import subprocess

import pytest
import trustme
from puresasl.client import SASLClient

from tests.e2e.conftest import PasswdWriter
from tests.fixtures.dovecot import MASTER_PASSWORD, MASTER_USER, DovecotBackend, dovecot_hash
from tests.fixtures.net import PROXYD_ADDRESS, PROXYD_OTHER_ADDRESS, free_port
from tests.fixtures.proxyd import (
    Listener,
    PasswdEntry,
    ProxydProcess,
    ProxydRunner,
    proxy_fields,
    write_passwd_file,
)
from tests.fixtures.tls import TlsFiles
from tests.helpers.clients import IMAP4, IMAP4_SSL, curl, fetch_subjects
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


def _doveadm_hash(password: str, scheme: str, user: str) -> str:
    """``doveadm pw -u USER``: DIGEST-MD5 hashes include the user name."""
    result = subprocess.run(
        ["doveadm", "-c", "/dev/null", "pw", "-s", scheme, "-u", user, "-p", password],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return result.stdout.strip()


@pytest.fixture
def both_proxyd(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> tuple[ProxydProcess, ProxydProcess]:
    """(IMAP, POP3) proxyds; carol has a {DIGEST-MD5} hash and logs in to backend-a as dave."""
    processes = []
    for protocol, port in (("imap", backend_a.imap_port), ("pop3", backend_a.pop3_port)):
        fields = proxy_fields(
            backend_a.address, port, master=MASTER_USER, destuser="dave",
            **{"pass": MASTER_PASSWORD},
        )  # fmt: skip
        entries = [
            PasswdEntry("carol", _doveadm_hash("carolpw", "DIGEST-MD5", "carol"), fields),
            PasswdEntry("erin", dovecot_hash("erinpw", "CRAM-MD5"), fields),
        ]
        path = write_passwd_file(proxyd.workdir / f"{protocol}-users", entries)
        # clients connect from 127.0.0.1 to 127.0.0.5: not secured, so no plaintext auth
        config = proxyd.config(
            path,
            address=PROXYD_OTHER_ADDRESS,
            auth_mechanisms=MECHS,
            protocols="imap pop3" if protocol == "pop3" else "imap",
            disable_plaintext_auth="yes",
            auth_verbose="yes",
        )
        if protocol == "pop3":
            port = free_port(PROXYD_OTHER_ADDRESS)
            config.listeners = [
                Listener("imap-login", "imap", PROXYD_OTHER_ADDRESS, 0),
                Listener("imap-login", "imaps", PROXYD_OTHER_ADDRESS, 0, ssl=True),
                Listener("pop3-login", "pop3", PROXYD_OTHER_ADDRESS, port),
                Listener("pop3-login", "pop3s", PROXYD_OTHER_ADDRESS, 0, ssl=True),
            ]
        processes.append(proxyd.start(config))
    return processes[0], processes[1]


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_curl_cram_md5(
    both_proxyd: tuple[ProxydProcess, ProxydProcess], backend_a: DovecotBackend, protocol: str
) -> None:
    """curl's own CRAM-MD5 client, IMAP and POP3, on a connection where plaintext
    mechanisms are refused, reaches dave's mailbox on backend-a."""
    proxy = both_proxyd[0] if protocol == "imap" else both_proxyd[1]
    path = "INBOX;UID=1" if protocol == "imap" else "1"
    url = f"{protocol}://{proxy.address(protocol)}:{proxy.port(protocol)}/{path}"
    result = curl([url, "-u", "erin:erinpw", "--login-options", "AUTH=CRAM-MD5"])
    assert result.returncode == 0, result.stderr
    assert backend_a.subject_for("dave") in result.stdout
    proxy.wait_for_log(r"Started proxying to <[^>]+>.*: user=<erin>, method=CRAM-MD5")
    wrong = curl([url, "-u", "erin:wrong", "--login-options", "AUTH=CRAM-MD5"])
    assert wrong.returncode == 67, wrong.stderr  # login denied


def _digest_client(proxy: ProxydProcess, service: str, password: str) -> SASLClient:
    return SASLClient(
        proxy.address(), service, mechanism="DIGEST-MD5", username="carol", password=password
    )


def test_digest_md5_imap(
    both_proxyd: tuple[ProxydProcess, ProxydProcess], backend_a: DovecotBackend
) -> None:
    """pure-sasl's RFC 2831 client against a {DIGEST-MD5} hash from ``doveadm pw -u``;
    the client checks the server's rspauth."""
    proxy = both_proxyd[0]
    sasl = _digest_client(proxy, "imap", "carolpw")
    with IMAP4(proxy.address(), proxy.port()) as client:
        typ, _ = client.authenticate("DIGEST-MD5", lambda challenge: sasl.process(challenge) or b"")
        assert typ == "OK"
        assert sasl.complete  # rspauth verified
        assert fetch_subjects(client) == [backend_a.subject_for("dave")]
        client.logout()
    wrong = _digest_client(proxy, "imap", "wrong")
    with (
        IMAP4(proxy.address(), proxy.port()) as client,
        pytest.raises(IMAP4.error, match="Authentication failed"),
    ):
        client.authenticate("DIGEST-MD5", lambda challenge: wrong.process(challenge) or b"")
    proxy.wait_for_log(r"digest-md5\(carol,[^)]*\): Password mismatch")


def test_digest_md5_auth_realms(proxyd: ProxydRunner, backend_a: DovecotBackend) -> None:
    """``auth_realms = example.com``: the challenge offers it, pure-sasl answers in it, and
    carol@example.com's hash (``doveadm pw -u carol@example.com``: realm example.com) verifies."""
    fields = proxy_fields(
        backend_a.address, backend_a.imap_port, master=MASTER_USER, destuser="dave",
        **{"pass": MASTER_PASSWORD},
    )  # fmt: skip
    entry = PasswdEntry("carol@example.com", _doveadm_hash("carolpw", "DIGEST-MD5", "carol@example.com"), fields)
    path = write_passwd_file(proxyd.workdir / "realm-users", [entry])
    running = proxyd.start(proxyd.config(path, auth_mechanisms="plain digest-md5", auth_realms="example.com"))
    sasl = SASLClient(running.address(), "imap", mechanism="DIGEST-MD5", username="carol", password="carolpw")
    challenges: list[bytes] = []

    def answer(challenge: bytes) -> bytes:
        challenges.append(challenge)
        return sasl.process(challenge) or b""

    with IMAP4(running.address(), running.port()) as client:
        assert client.authenticate("DIGEST-MD5", answer)[0] == "OK"
        assert sasl.complete  # rspauth verified
        assert fetch_subjects(client) == [backend_a.subject_for("dave")]
        client.logout()
    assert challenges[0].startswith(b'realm="example.com",nonce=')
    running.wait_for_log(r"Started proxying to <[^>]+>.*: user=<carol@example.com>, method=DIGEST-MD5")


def test_digest_md5_pop3(
    both_proxyd: tuple[ProxydProcess, ProxydProcess], backend_a: DovecotBackend
) -> None:
    pop3 = both_proxyd[1]
    sasl = _digest_client(pop3, "pop", "carolpw")  # digest-uri pop/127.0.0.5
    with socket.create_connection((pop3.address("pop3"), pop3.port("pop3")), timeout=10) as sock:
        stream = sock.makefile("rwb")
        stream.readline()
        stream.write(b"AUTH DIGEST-MD5\r\n")
        stream.flush()
        while (line := stream.readline().rstrip(b"\r\n")).startswith(b"+ "):
            answer = sasl.process(base64.b64decode(line[2:])) or b""
            stream.write(base64.b64encode(answer) + b"\r\n")
            stream.flush()
        assert line.startswith(b"+OK"), line
        assert sasl.complete
        stream.write(b"RETR 1\r\n")
        stream.flush()
        message = b"".join(iter(lambda: stream.readline(), b".\r\n")).decode()
        assert backend_a.subject_for("dave") in message


def test_pop3_capa_sasl_lists_non_plaintext_mechanisms_before_tls(
    both_proxyd: tuple[ProxydProcess, ProxydProcess],
) -> None:
    """disable_plaintext_auth = yes on an insecure connection: only the mechanisms that do not
    expose the password are offered, and they work."""
    pop3 = both_proxyd[1]
    with socket.create_connection(
        (pop3.address("pop3"), pop3.port("pop3")), timeout=10, source_address=(PROXYD_ADDRESS, 0)
    ) as sock:
        stream = sock.makefile("rwb")
        stream.readline()
        stream.write(b"CAPA\r\n")
        stream.flush()
        lines = []
        while (line := stream.readline().rstrip(b"\r\n")) != b".":
            lines.append(line.decode())
        assert "SASL CRAM-MD5 DIGEST-MD5 SCRAM-SHA-1 SCRAM-SHA-256" in lines, lines
        stream.write(b"AUTH\r\n")
        stream.flush()
        listed = []
        while (line := stream.readline().rstrip(b"\r\n")) != b".":
            listed.append(line.decode())
        assert listed[1:] == ["CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"], listed


# -- master passdbs -------------------------------------------------------------------------


@pytest.fixture
def master_proxyd(
    proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend
) -> ProxydProcess:
    """A master passdb (``proxymaster``, the backends' master user too) before the users' passdb,
    which routes alice and bob but names no master user or password itself."""
    masters = write_passwd_file(
        proxyd.workdir / "masters",
        [PasswdEntry(MASTER_USER, dovecot_hash(MASTER_PASSWORD, "CRAM-MD5"), {})],
    )
    users = write_passwd_file(
        proxyd.workdir / "users",
        [
            PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(backend_a.address, backend_a.imap_port)),
            PasswdEntry("bob", "{PLAIN}bobpw", proxy_fields(backend_b.address, backend_b.imap_port)),
        ],
    )
    config = proxyd.config(None, auth_mechanisms=MECHS, auth_master_user_separator="*", auth_verbose="yes")
    config.passdbs = [
        {"driver": "passwd-file", "args": str(masters), "master": "yes", "pass": "yes"},
        {"driver": "passwd-file", "args": str(users)},
    ]
    return proxyd.start(config)


def test_master_user_login_reaches_the_users_backend(
    master_proxyd: ProxydProcess, backend_b: DovecotBackend
) -> None:
    """``bob*proxymaster`` with the master password: bob's backend, logged in there as bob
    with the same master user, as Dovecot's proxy does (``master=``, ``pass=`` added)."""
    with IMAP4(master_proxyd.address(), master_proxyd.port()) as client:
        typ, _ = client.login(f"bob*{MASTER_USER}", MASTER_PASSWORD)
        assert typ == "OK"
        assert fetch_subjects(client) == [backend_b.subject_for("bob")]
        client.logout()
    master_proxyd.wait_for_log(rf"passwd-file\({MASTER_USER},[^)]*\): Master user logging in as bob")
    master_proxyd.wait_for_log(
        rf"proxy\(bob,{re.escape(backend_b.address)}:\d+\): Started proxying to <{re.escape(backend_b.address)}> "
        rf"\(master {MASTER_USER}\)"
    )
    backend_b.wait_for_log(r"Login: user=<bob>")


def test_master_user_with_sasl_authzid(master_proxyd: ProxydProcess, backend_b: DovecotBackend) -> None:
    """AUTHENTICATE PLAIN with authzid=bob, authcid=proxymaster is the same master login."""
    with IMAP4(master_proxyd.address(), master_proxyd.port()) as client:
        response = f"bob\0{MASTER_USER}\0{MASTER_PASSWORD}".encode()
        typ, _ = client.authenticate("PLAIN", lambda _challenge: response)
        assert typ == "OK"
        assert fetch_subjects(client) == [backend_b.subject_for("bob")]
        client.logout()


def test_master_user_wrong_password_and_unknown_login_user(master_proxyd: ProxydProcess) -> None:
    with IMAP4(master_proxyd.address(), master_proxyd.port()) as client:
        with pytest.raises(IMAP4.error, match=r"\[AUTHENTICATIONFAILED\] Authentication failed"):
            client.login(f"bob*{MASTER_USER}", "wrong")
        # the master user is fine, but the user to log in as does not exist
        with pytest.raises(IMAP4.error, match=r"\[AUTHORIZATIONFAILED\] Authorization failed"):
            client.login(f"nobody*{MASTER_USER}", MASTER_PASSWORD)


def test_master_user_with_cram_md5_needs_a_password_to_forward(master_proxyd: ProxydProcess) -> None:
    """CRAM-MD5 proves the master password without revealing it: with no ``pass`` field to
    forward, the proxy cannot log in to the backend (Dovecot: "password not given")."""
    with (
        IMAP4(master_proxyd.address(), master_proxyd.port()) as client,
        pytest.raises(IMAP4.error, match=r"\[UNAVAILABLE\]"),
    ):
        client.login_cram_md5(f"bob*{MASTER_USER}", MASTER_PASSWORD)
    master_proxyd.wait_for_log(r"Master user logging in as bob")
    master_proxyd.wait_for_log(r"proxy\(bob\): password not given")


# -- APOP ------------------------------------------------------------------------------------


@pytest.fixture
def apop_proxyd(proxyd: ProxydRunner, backend_a: DovecotBackend) -> ProxydProcess:
    """POP3 with ``auth_mechanisms = plain apop``: dave has a {PLAIN} password, alice a hash."""
    fields = proxy_fields(
        backend_a.address, backend_a.pop3_port, master=MASTER_USER, **{"pass": MASTER_PASSWORD}
    )
    entries = [
        PasswdEntry("dave", "{PLAIN}davepw", fields),
        PasswdEntry("alice", dovecot_hash("alicepw", "SHA512-CRYPT"), fields),
    ]
    path = write_passwd_file(proxyd.workdir / "apop-users", entries)
    config = proxyd.config(path, auth_mechanisms="plain apop", protocols="imap pop3", auth_verbose="yes")
    config.listeners += [
        Listener("pop3-login", "pop3", PROXYD_ADDRESS, free_port(PROXYD_ADDRESS)),
        Listener("pop3-login", "pop3s", PROXYD_ADDRESS, 0, ssl=True),
    ]
    return proxyd.start(config)


def test_apop_with_poplib(apop_proxyd: ProxydProcess, backend_a: DovecotBackend) -> None:
    """poplib's APOP against the greeting's challenge; the password must be stored in
    plaintext, as Dovecot requires; APOP is not listed as a SASL mechanism."""
    address, port = apop_proxyd.address("pop3"), apop_proxyd.port("pop3")
    client = poplib.POP3(address, port, timeout=10)
    try:
        assert re.search(r"<[0-9a-f]+\.[0-9a-f]+\.[0-9a-f]+\.[A-Za-z0-9+/=]+@[^>]+>$", client.getwelcome().decode())
        assert "APOP" not in client.capa().get("SASL", [])
        assert client.apop("dave", "davepw").startswith(b"+OK")
        assert backend_a.subject_for("dave") in b"\n".join(client.retr(1)[1]).decode()
        client.quit()
    finally:
        client.close()
    for user, password in (("dave", "wrong"), ("alice", "alicepw")):
        client = poplib.POP3(address, port, timeout=10)
        try:
            with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Authentication failed"):
                client.apop(user, password)
        finally:
            client.close()
    apop_proxyd.wait_for_log(r"apop\(dave,[^)]*\): Password mismatch")
    apop_proxyd.wait_for_log(r"Requested PLAIN scheme, but we have only SHA512-CRYPT")


# -- EXTERNAL: client certificates ------------------------------------------------------------


@pytest.fixture
def client_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def external_proxyd(
    proxyd: ProxydRunner, backend_a: DovecotBackend, proxyd_tls: TlsFiles, client_ca: trustme.CA
) -> ProxydProcess:
    """``ssl_verify_client_cert`` against a CA of client certificates; the certificate's
    common name is the user (``auth_ssl_username_from_cert``), alice has ``nopassword``."""
    ca_pem = proxyd.workdir / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(ca_pem))
    fields = proxy_fields(
        backend_a.address, backend_a.imap_port, master=MASTER_USER, nopassword="y",
        **{"pass": MASTER_PASSWORD},
    )  # fmt: skip
    path = write_passwd_file(proxyd.workdir / "cert-users", [PasswdEntry("alice", "", fields)])
    config = proxyd.config(
        path,
        auth_mechanisms="plain external",
        ssl_verify_client_cert="yes",
        ssl_ca=f"<{ca_pem}",
        auth_ssl_username_from_cert="yes",
        auth_verbose="yes",
    )
    return proxyd.start(config)


def _cert_context(proxyd_tls: TlsFiles, client_ca: trustme.CA | None, name: str) -> ssl.SSLContext:
    context = proxyd_tls.client_context()
    if client_ca is not None:
        client_ca.issue_cert(f"{name}.example", common_name=name).configure_cert(context)
    return context


def test_external_with_a_client_certificate(
    external_proxyd: ProxydProcess, backend_a: DovecotBackend, proxyd_tls: TlsFiles, client_ca: trustme.CA
) -> None:
    """imaplib's AUTHENTICATE EXTERNAL over implicit TLS with alice's certificate reaches her
    mailbox through the master user; without a certificate the user is not known."""
    address, port = external_proxyd.address("imaps"), external_proxyd.port("imaps")
    with IMAP4_SSL(address, port, ssl_context=_cert_context(proxyd_tls, client_ca, "alice")) as client:
        assert client.authenticate("EXTERNAL", lambda _challenge: b"")[0] == "OK"
        assert fetch_subjects(client) == [backend_a.subject_for("alice")]
        client.logout()
    with (
        IMAP4_SSL(address, port, ssl_context=_cert_context(proxyd_tls, None, "")) as client,
        pytest.raises(IMAP4.error, match="AUTHENTICATIONFAILED"),
    ):
        client.authenticate("EXTERNAL", lambda _challenge: b"")
    external_proxyd.wait_for_log(r"external\(\?,[^)]*\): username not known")


def test_require_client_cert_refuses_other_logins(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, proxyd_tls: TlsFiles, client_ca: trustme.CA
) -> None:
    """auth_ssl_require_client_cert: even a right password needs a valid certificate."""
    ca_pem = proxyd.workdir / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(ca_pem))
    config = proxyd.config(
        passwd_file(()),
        ssl_verify_client_cert="yes",
        ssl_ca=f"<{ca_pem}",
        auth_ssl_require_client_cert="yes",
        auth_verbose="yes",
    )
    running = proxyd.start(config)
    address, port = running.address("imaps"), running.port("imaps")
    with IMAP4_SSL(address, port, ssl_context=_cert_context(proxyd_tls, client_ca, "bob")) as client:
        assert client.login("bob", "bobpw")[0] == "OK"
        client.logout()
    with (
        IMAP4_SSL(address, port, ssl_context=_cert_context(proxyd_tls, None, "")) as client,
        pytest.raises(IMAP4.error, match="AUTHENTICATIONFAILED"),
    ):
        client.login("bob", "bobpw")
    running.wait_for_log(r"Client didn't present valid SSL certificate")


# -- ANONYMOUS ---------------------------------------------------------------------------------


def test_anonymous_is_routed_by_the_anonymous_users_passdb_entry(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    """ANONYMOUS logs in as auth_anonymous_username, whose passdb entry says where it goes
    (here backend-a's alice through the master user); offered without TLS too."""
    fields = proxy_fields(
        backend_a.address, backend_a.imap_port, destuser="alice", master=MASTER_USER,
        **{"pass": MASTER_PASSWORD},
    )  # fmt: skip
    path = write_passwd_file(proxyd.workdir / "anon-users", [PasswdEntry("guest", "{PLAIN}x", fields)])
    config = proxyd.config(
        path,
        address=PROXYD_OTHER_ADDRESS,
        auth_mechanisms="plain anonymous",
        auth_anonymous_username="guest",
        disable_plaintext_auth="yes",
        auth_verbose="yes",
    )
    running = proxyd.start(config)
    with IMAP4(running.address(), running.port(), source_ip=PROXYD_ADDRESS) as client:
        assert [c for c in client.capabilities if c.startswith("AUTH=")] == ["AUTH=ANONYMOUS"]
        assert client.authenticate("ANONYMOUS", lambda _challenge: b"someone@example.com")[0] == "OK"
        assert fetch_subjects(client) == [backend_a.subject_for("alice")]
        client.logout()
    running.wait_for_log(r"anonymous\(someone@example.com,[^)]*\): login")
    running.wait_for_log(r"Started proxying to <[^>]+>.*: user=<guest>, method=ANONYMOUS")


def test_password_forwarding_cannot_serve_a_non_plaintext_login(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    """A passdb that leaves the password check to the backend (nopassword) has no password to
    forward for CRAM-MD5: Dovecot's text, and the backend never sees a login."""
    config = proxyd.config(None, auth_mechanisms="plain cram-md5", auth_verbose="yes")
    config.passdbs = [
        {
            "driver": "static",
            "args": f"nopassword=y proxy=y host={backend_a.address} port={backend_a.imap_port}",
        }
    ]
    running = proxyd.start(config)
    with IMAP4(running.address(), running.port()) as client:
        with pytest.raises(IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login_cram_md5("alice", "alicepw")
        # the same passdb forwards a plaintext password as Dovecot does
        assert client.login("alice", "alicepw")[0] == "OK"
        client.logout()
    running.wait_for_log(r"Requested CRAM-MD5 scheme, but we have a NULL password")
