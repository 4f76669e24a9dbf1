"""``disable_plaintext_auth = yes``: LOGINDISABLED until STARTTLS, Dovecot's exact texts.

Dovecot counts a connection as secured when it is TLS, comes from
``login_trusted_networks``, or when the client's IP equals the IP it connected
to.  To see the insecure case the client connects from 127.0.0.1 to a proxyd
listening on 127.0.0.5.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import PasswdWriter
from tests.fixtures.net import PROXYD_ADDRESS, PROXYD_OTHER_ADDRESS
from tests.fixtures.proxyd import ProxydRunner
from tests.fixtures.tls import TlsFiles
from tests.helpers.clients import RawImapClient

pytestmark = pytest.mark.e2e

PLAINTEXT_ALERT = (
    "* BAD [ALERT] Plaintext authentication not allowed without SSL/TLS, but your client did it "
    "anyway. If anyone was listening, the password was exposed."
)
PLAINTEXT_REFUSED = (
    "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
)


def greeting_capabilities(greeting: str) -> list[str]:
    assert greeting.startswith("* OK [CAPABILITY "), greeting
    return greeting.removeprefix("* OK [CAPABILITY ").split("]", 1)[0].split()


def test_logindisabled_until_starttls(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, proxyd_tls: TlsFiles
) -> None:
    """Before TLS: LOGINDISABLED, no AUTH=PLAIN, LOGIN refused with the ALERT and
    PRIVACYREQUIRED texts.  After STARTTLS: AUTH=PLAIN, no LOGINDISABLED, LOGIN works."""
    config = proxyd.config(
        passwd_file(()), address=PROXYD_OTHER_ADDRESS, disable_plaintext_auth="yes"
    )
    running = proxyd.start(config)
    with RawImapClient(running.address(), running.port(), source_ip=PROXYD_ADDRESS) as client:
        for caps in (greeting_capabilities(client.greeting), client.capabilities()):
            assert "LOGINDISABLED" in caps
            assert "STARTTLS" in caps
            assert not [cap for cap in caps if cap.startswith("AUTH=")], caps

        reply = client.command("LOGIN alice alicepw")
        assert reply.untagged == (PLAINTEXT_ALERT,)
        assert reply.tagged == PLAINTEXT_REFUSED

        assert (
            client.starttls(proxyd_tls.client_context()).tagged == "OK Begin TLS negotiation now."
        )
        caps = client.capabilities()
        assert "LOGINDISABLED" not in caps
        assert "STARTTLS" not in caps
        assert "AUTH=PLAIN" in caps
        assert client.command("LOGIN alice alicepw").status == "OK"
        assert client.command("LOGOUT").status == "OK"


def test_same_ip_connection_counts_as_secured(
    proxyd: ProxydRunner, passwd_file: PasswdWriter
) -> None:
    """Client and proxyd both on 127.0.0.1: rip == lip, so plaintext LOGIN is allowed
    even with ``disable_plaintext_auth = yes`` (Dovecot's rule)."""
    running = proxyd.start(proxyd.config(passwd_file(()), disable_plaintext_auth="yes"))
    with RawImapClient(running.address(), running.port(), source_ip=PROXYD_ADDRESS) as client:
        caps = greeting_capabilities(client.greeting)
        assert "LOGINDISABLED" not in caps
        assert "AUTH=PLAIN" in caps
        assert client.command("LOGIN bob bobpw").status == "OK"
        assert client.command("LOGOUT").status == "OK"
