"""TLS towards the backend: ssl=yes / any-cert, starttls, host name checks and SNI,
client CA settings, CRLs, and a client certificate used for SASL EXTERNAL (spec §6.3).

The backends' certificates come from the session's trustme CA and name the
backend's IP and ``localhost``.  proxyd trusts that CA through ``ssl_ca``
(or ``ssl_client_ca_file``) where a test wants verification to succeed.
"""

from __future__ import annotations

import datetime
import re
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.e2e import proxy_support as ps
from tests.fixtures.dovecot import DovecotBackend, DovecotFactory
from tests.fixtures.net import client_address
from tests.fixtures.proxyd import PasswdEntry, ProxydRunner, proxy_fields
from tests.helpers.recording_backend import ImapScript, RecordingImapBackend

pytestmark = [pytest.mark.e2e, pytest.mark.proxyd_only]

CERT_ADDRESS = "127.0.0.6"


def tls_login_line(backend: DovecotBackend, protocol: str, user: str, source: str) -> str:
    """The backend's latest Login line for ``user`` from ``source``."""
    return backend.wait_for_log(
        rf"{protocol}-login: Info: Login: user=<{user}>, method=\S+, rip={re.escape(source)},"
    )[-1]


@pytest.mark.parametrize("protocol", ps.PROTOCOLS)
def test_ssl_yes_and_starttls_are_verified_against_the_ca(
    proxyd: ProxydRunner, backend_a: DovecotBackend, protocol: str
) -> None:
    a = backend_a
    entries = [
        PasswdEntry(
            "alice",
            "{PLAIN}alicepw",
            proxy_fields(a.address, ps.backend_port(a, protocol, tls=True), ssl="yes"),
        ),
        PasswdEntry(
            "bob",
            "{PLAIN}bobpw",
            proxy_fields(a.address, ps.backend_port(a, protocol), starttls="yes"),
        ),
        # the name is what the certificate is checked against (and sent as SNI)
        PasswdEntry(
            "dave",
            "{PLAIN}carolpw",
            proxy_fields(
                "localhost", ps.backend_port(a, protocol, tls=True), hostip=a.address, ssl="yes"
            ),
        ),
    ]
    running = ps.start(proxyd, entries, ssl_ca=f"<{a.ca_path}")
    source = client_address(80)
    for user, password in (("alice", "alicepw"), ("bob", "bobpw"), ("dave", "carolpw")):
        assert ps.login(running, protocol, user, password, source_ip=source).ok, user
        assert ", TLS, " in tls_login_line(a, protocol, user, source), user


@pytest.mark.parametrize("protocol", ps.PROTOCOLS)
def test_unverifiable_backend_certificate_is_a_temporary_failure(
    proxyd: ProxydRunner, backend_a: DovecotBackend, protocol: str
) -> None:
    """Without the test CA (the system store does not know it) ``ssl=yes`` fails;
    ``any-cert`` does not check and works."""
    a = backend_a
    tls_port = ps.backend_port(a, protocol, tls=True)
    entries = [
        PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(a.address, tls_port, ssl="yes")),
        PasswdEntry("bob", "{PLAIN}bobpw", proxy_fields(a.address, tls_port, ssl="any-cert")),
        PasswdEntry(
            "dave",
            "{PLAIN}carolpw",
            proxy_fields(a.address, ps.backend_port(a, protocol), starttls="any-cert"),
        ),
    ]
    running = ps.start(proxyd, entries)
    source = client_address(81)
    answer = ps.login(running, protocol, "alice", "alicepw", source_ip=source)
    assert answer.line == ps.unavailable(protocol)
    running.wait_for_log(r"proxy\(alice,[^)]+\): Aborting due to internal error: .*certificate verify failed")
    assert ps.login(running, protocol, "bob", "bobpw", source_ip=source).ok
    assert ps.login(running, protocol, "dave", "carolpw", source_ip=source).ok


def test_host_name_must_match_the_certificate(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    a = backend_a
    entries = [
        PasswdEntry(
            "alice",
            "{PLAIN}alicepw",
            proxy_fields("imap.wrong.example", a.imaps_port, hostip=a.address, ssl="yes"),
        )
    ]
    running = ps.start(proxyd, entries, ssl_ca=f"<{a.ca_path}")
    answer = ps.login(running, "imap", "alice", "alicepw", source_ip=client_address(82))
    assert answer.line == ps.unavailable("imap")
    running.wait_for_log(
        r"proxy\(alice,[^)]+\): Aborting due to internal error: .*(Hostname mismatch|certificate verify failed)"
    )


def test_ssl_client_ca_file_replaces_ssl_ca(
    proxyd: ProxydRunner, backend_b: DovecotBackend
) -> None:
    b = backend_b
    entries = [PasswdEntry("bob", "{PLAIN}bobpw", proxy_fields(b.address, b.imaps_port, ssl="yes"))]
    running = ps.start(proxyd, entries, ssl_client_ca_file=str(b.ca_path))
    assert ps.login(running, "imap", "bob", "bobpw", source_ip=client_address(83)).ok


# -- SNI -----------------------------------------------------------------------------------------


def test_host_is_sent_as_sni(proxyd: ProxydRunner, tls_ca: trustme.CA, tmp_path: Path) -> None:
    server_names: list[str | None] = []
    cert = tls_ca.issue_cert("127.0.0.4", "imap.example.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)

    def remember(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        server_names.append(name)

    context.sni_callback = remember  # type: ignore[assignment]
    ca = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca))
    with RecordingImapBackend(ImapScript(users={"alice": "alicepw"}), tls=context) as rec:
        entries = [
            PasswdEntry(
                "alice",
                "{PLAIN}alicepw",
                proxy_fields("imap.example.test", rec.port, hostip=rec.address, starttls="yes"),
            ),
            PasswdEntry(
                "bob",
                "{PLAIN}alicepw",
                proxy_fields(rec.address, rec.port, starttls="yes", destuser="alice"),
            ),
        ]
        running = ps.start(proxyd, entries, ssl_ca=f"<{ca}")
        assert ps.login(running, "imap", "alice", "alicepw", source_ip=client_address(84)).ok
        assert ps.login(running, "imap", "bob", "alicepw", source_ip=client_address(84)).ok
    # a name is sent as SNI; an IP address is not (TLS has no SNI for IPs)
    assert server_names == ["imap.example.test", None]


# -- CRL -------------------------------------------------------------------------------------------


def revoking_crl(ca: trustme.CA, revoked_cert_pem: Path) -> bytes:
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    leaf = x509.load_pem_x509_certificate(revoked_cert_pem.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(leaf.serial_number)
        .revocation_date(now - datetime.timedelta(minutes=5))
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=1))
        .add_revoked_certificate(revoked)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return crl.public_bytes(serialization.Encoding.PEM)


def test_crl_in_the_ca_file_is_checked(
    proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend, tls_ca: trustme.CA
) -> None:
    """A CRL that comes with the CAs revokes backend-a's certificate; backend-b's is fine.
    With ``ssl_require_crl = no`` CRLs are not looked at."""
    ca_with_crl = proxyd.workdir / "ca-with-crl.pem"
    proxyd.workdir.mkdir(parents=True, exist_ok=True)
    ca_with_crl.write_bytes(tls_ca.cert_pem.bytes() + revoking_crl(tls_ca, backend_a.cert_path))
    entries = [
        PasswdEntry(
            "alice",
            "{PLAIN}alicepw",
            proxy_fields(backend_a.address, backend_a.imaps_port, ssl="yes"),
        ),
        PasswdEntry(
            "bob", "{PLAIN}bobpw", proxy_fields(backend_b.address, backend_b.imaps_port, ssl="yes")
        ),
    ]
    running = ps.start(proxyd, entries, ssl_ca=f"<{ca_with_crl}")
    source = client_address(85)
    assert ps.login(running, "imap", "alice", "alicepw", source_ip=source).line == ps.unavailable(
        "imap"
    )
    running.wait_for_log(
        r"proxy\(alice,[^)]+\): Aborting due to internal error: .*certificate (verify failed|revoked)"
    )
    assert ps.login(running, "imap", "bob", "bobpw", source_ip=source).ok
    relaxed = ps.start(proxyd, entries, ssl_ca=f"<{ca_with_crl}", ssl_require_crl="no")
    assert ps.login(relaxed, "imap", "alice", "alicepw", source_ip=source).ok


# -- client certificate + EXTERNAL -------------------------------------------------------------------

CERT_BACKEND_CONFIG = """
auth_mechanisms = plain login external
ssl_ca = <{ca}
ssl_verify_client_cert = yes
auth_ssl_username_from_cert = yes
ssl_cert_username_field = commonName
ssl_require_crl = no
passdb {{
  driver = static
  args = nopassword=y
  mechanisms = external
}}
"""


@pytest.fixture(scope="module")
def backend_cert(
    dovecot_factory: DovecotFactory, tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> DovecotBackend:
    """A Dovecot that asks for client certificates and offers EXTERNAL (user = the cert's CN)."""
    directory = tmp_path_factory.mktemp("cert-backend")
    directory.chmod(0o755)
    ca = directory / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca))
    ca.chmod(0o644)
    return dovecot_factory.start(
        "backend-cert", CERT_ADDRESS, extra_config=CERT_BACKEND_CONFIG.format(ca=ca)
    )


@pytest.fixture(scope="module")
def client_cert(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """proxyd's client certificate: CN=dave."""
    directory = tmp_path_factory.mktemp("client-cert")
    leaf = tls_ca.issue_cert("proxyd.client.test", common_name="dave")
    cert, key = directory / "client.pem", directory / "client.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


@pytest.mark.parametrize("protocol", ps.PROTOCOLS)
def test_client_certificate_logs_in_with_external(
    proxyd: ProxydRunner,
    backend_cert: DovecotBackend,
    client_cert: tuple[Path, Path],
    protocol: str,
) -> None:
    """carol -> dave with ``proxy_mech=external``: the backend takes the user from the
    certificate proxyd presents (ssl_client_cert/key); no password is involved."""
    cert, key = client_cert
    b = backend_cert
    entries = [
        PasswdEntry(
            "carol",
            "{PLAIN}carolpw",
            proxy_fields(
                b.address,
                ps.backend_port(b, protocol),
                starttls="yes",
                destuser="dave",
                proxy_mech="external",
            ),
        )
    ]
    running = ps.start(
        proxyd,
        entries,
        ssl_ca=f"<{b.ca_path}",
        ssl_client_cert=f"<{cert}",
        ssl_client_key=f"<{key}",
    )
    source = client_address(86)
    assert ps.login(running, protocol, "carol", "carolpw", source_ip=source).ok
    line = tls_login_line(b, protocol, "dave", source)
    assert "method=EXTERNAL" in line
    assert ", TLS, " in line
    # without the certificate the backend refuses EXTERNAL
    bare = ps.start(proxyd, entries, ssl_ca=f"<{b.ca_path}")
    answer = ps.login(bare, protocol, "carol", "carolpw", source_ip=client_address(87))
    assert not answer.ok
