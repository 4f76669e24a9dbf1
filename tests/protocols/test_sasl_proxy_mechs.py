"""The SASL mechanisms proxying needs beyond PLAIN/LOGIN, as Dovecot 2.3 implements them.

Client side (``src/lib-sasl``): EXTERNAL, XOAUTH2, OAUTHBEARER, used with
``proxy_mech``.  Server side (``src/auth/mech-oauth2.c``): XOAUTH2 and
OAUTHBEARER, whose bearer token the passdb chain checks like a password.
The wire bytes are also checked against the backend engines.
"""

from __future__ import annotations

import base64

import pytest

from proxyd.protocols.backend_events import BackendFailed, BackendLoggedIn, ProxyFailure
from proxyd.protocols.imap.backend import ImapBackendLogin, ImapBackendParams
from proxyd.protocols.pop3.backend import Pop3BackendLogin, Pop3BackendParams
from proxyd.protocols.sasl import (
    CLIENT_MECHANISMS,
    Challenge,
    Credentials,
    SaslClient,
    SaslClientError,
    SaslFailed,
    SaslServer,
    oauth2_failure_challenge,
)

from .script import Script

# -- client side ------------------------------------------------------------------


def test_dovecot_client_mechanisms() -> None:
    assert set(CLIENT_MECHANISMS) == {"PLAIN", "LOGIN", "EXTERNAL", "XOAUTH2", "OAUTHBEARER"}


def test_external_sends_the_user_to_log_in_as() -> None:
    client = SaslClient.create("external", authzid="dave", authcid="carol", password="unused")
    assert client.output() == b"dave"
    with pytest.raises(SaslClientError, match="Server didn't finish authentication"):
        client.input(b"")
    # without an authzid the authcid is the identity
    assert SaslClient.create("EXTERNAL", authzid="", authcid="bob", password="").output() == b"bob"


def test_external_refuses_a_non_empty_first_challenge() -> None:
    client = SaslClient.create("EXTERNAL", authzid="dave", authcid="dave", password="")
    with pytest.raises(SaslClientError, match="Server sent non-empty initial response"):
        client.input(b"x")


def test_xoauth2_message_uses_the_password_as_token() -> None:
    client = SaslClient.create("XOAUTH2", authzid="bob", authcid="bob", password="ya29.tok")
    client.input(b"")  # the empty challenge of a server without SASL-IR
    assert client.output() == b"user=bob\x01auth=Bearer ya29.tok\x01\x01"


def test_oauthbearer_message_has_the_gs2_header() -> None:
    client = SaslClient.create("OAUTHBEARER", authzid="bob", authcid="bob", password="tok")
    assert client.output() == b"n,a=bob,\x01auth=Bearer tok\x01\x01"
    client.input(b"")  # empty: success follows


@pytest.mark.parametrize(
    ("challenge", "error"),
    [
        (b'{"status":"invalid_token"}', "Failed to authenticate: invalid_token"),
        (b'{"status":"401","schemes":"bearer","scope":"mail"}', "Failed to authenticate: 401"),
        (b'{"schemes":"bearer"}', "Error parsing JSON reply: Status value missing"),
        (b"not json", "Error parsing JSON reply: Status value missing"),
    ],
)
def test_oauth2_clients_report_the_servers_json_error(challenge: bytes, error: str) -> None:
    for mech in ("XOAUTH2", "OAUTHBEARER"):
        client = SaslClient.create(mech, authzid="bob", authcid="bob", password="tok")
        client.output()
        with pytest.raises(SaslClientError) as info:
            client.input(challenge)
        assert str(info.value) == error


def test_master_user_is_the_oauth_identity() -> None:
    # authid = the master user when there is one (Dovecot's sasl_set.authid)
    client = SaslClient.create("XOAUTH2", authzid="bob", authcid="master", password="tok")
    assert client.output().startswith(b"user=master\x01")


# -- server side ------------------------------------------------------------------


def test_xoauth2_server() -> None:
    server = SaslServer.create("XOAUTH2")
    assert server.start(None) == Challenge(b"")
    step = server.step(b"user=bob\x01auth=Bearer ya29.tok\x01\x01")
    assert step == Credentials("", "bob", "ya29.tok")
    assert SaslServer.create("xoauth2").start(b"auth=bearer T\x01user=eve\x01\x01") == Credentials(
        "", "eve", "T"
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"user=bob\x01\x01", "Username or token missing"),
        (b"auth=Bearer tok\x01\x01", "Username or token missing"),
        (b"user=bob\x01auth=Basic tok\x01\x01", "Invalid continued data"),
        (b"user=bob\x01auth=Bearer \x01\x01", "Invalid continued data"),
        (b"\xff", "invalid input (not UTF-8)"),
    ],
)
def test_xoauth2_server_refusals(data: bytes, reason: str) -> None:
    assert SaslServer.create("XOAUTH2").start(data) == SaslFailed(reason)


def test_oauthbearer_server() -> None:
    server = SaslServer.create("OAUTHBEARER")
    step = server.start(b"n,a=bob,\x01host=imap.example.org\x01port=143\x01auth=Bearer tok\x01\x01")
    assert step == Credentials("", "bob", "tok")
    # RFC 5801 escaping of the user name
    step = SaslServer.create("OAUTHBEARER").start(b"y,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01")
    assert step == Credentials("", "a,b=c", "t")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x01auth=Bearer t\x01\x01", "Invalid continued data"),
        (
            b"p=tls-unique,a=bob,\x01auth=Bearer t\x01\x01",
            "Client requested and used channel-binding",
        ),
        (b"F,n,a=bob,\x01auth=Bearer t\x01\x01", "Invalid gs2-header in request"),
        (b"f,a=bob,\x01auth=Bearer t\x01\x01", "Client requested non-standard mechanism"),
        (b"n,a=b=2Xob,\x01auth=Bearer t\x01\x01", "Invalid username escaping"),
        (b"n,,\x01auth=Bearer t\x01\x01", "Missing username or token"),
        (b"n,a=bob,\x01\x01", "Missing username or token"),
    ],
)
def test_oauthbearer_server_refusals(data: bytes, reason: str) -> None:
    assert SaslServer.create("OAUTHBEARER").start(data) == SaslFailed(reason)


def test_failure_challenges_are_dovecots_json() -> None:
    assert (
        oauth2_failure_challenge("XOAUTH2") == b'{"status":"401","schemes":"bearer","scope":"mail"}'
    )
    assert oauth2_failure_challenge("OAUTHBEARER") == b'{"status":"invalid_token"}'


# -- what the backend engines send -------------------------------------------------------

BANNER = b"* OK [CAPABILITY IMAP4rev1 SASL-IR ID AUTH=PLAIN AUTH=XOAUTH2] ready.\r\n"
BANNER_NO_IR = b"* OK [CAPABILITY IMAP4rev1 ID AUTH=PLAIN] ready.\r\n"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


@pytest.mark.parametrize(
    ("mech", "message"),
    [
        ("EXTERNAL", b"bob"),
        ("XOAUTH2", b"user=bob\x01auth=Bearer tok\x01\x01"),
        ("OAUTHBEARER", b"n,a=bob,\x01auth=Bearer tok\x01\x01"),
    ],
)
def test_imap_backend_sends_the_mechanism_with_sasl_ir(mech: str, message: bytes) -> None:
    s = Script(
        ImapBackendLogin(ImapBackendParams(user="bob", password="tok", mech=mech, client_tag="a"))
    )
    s.recv(BANNER).expect(b"L AUTHENTICATE " + mech.encode() + b" " + b64(message) + b"\r\n")
    s.recv(b"L OK Logged in\r\n").expect(
        BackendLoggedIn(
            b"a OK [CAPABILITY IMAP4rev1 SASL-IR ID AUTH=PLAIN AUTH=XOAUTH2] Logged in\r\n"
        )
    )


def test_imap_backend_without_sasl_ir_answers_the_empty_challenge() -> None:
    s = Script(
        ImapBackendLogin(
            ImapBackendParams(user="bob", password="tok", mech="XOAUTH2", client_tag="a")
        )
    )
    s.recv(BANNER_NO_IR).expect(b"L AUTHENTICATE XOAUTH2\r\n")
    s.recv(b"+ \r\n").expect(b64(b"user=bob\x01auth=Bearer tok\x01\x01") + b"\r\n")


def test_imap_backend_refusing_the_token_is_a_protocol_failure() -> None:
    # Dovecot's dsasl client fails on the JSON challenge: PROTOCOL, which is retried
    s = Script(
        ImapBackendLogin(
            ImapBackendParams(user="bob", password="bad", mech="OAUTHBEARER", client_tag="a")
        )
    )
    s.recv(BANNER).expect(
        b"L AUTHENTICATE OAUTHBEARER " + b64(b"n,a=bob,\x01auth=Bearer bad\x01\x01") + b"\r\n"
    )
    s.recv(b"+ " + b64(b'{"status":"invalid_token"}') + b"\r\n").expect(
        BackendFailed(
            ProxyFailure.PROTOCOL,
            "Invalid authentication data: Failed to authenticate: invalid_token",
        )
    )


def test_pop3_backend_sends_auth_with_the_mechanism() -> None:
    params = Pop3BackendParams(
        user="bob",
        password="tok",
        mech="XOAUTH2",
        not_trusted=True,
        remote_ip="192.0.2.1",
        remote_port=1,
        session_id="s",
        proxy_ttl=4,
    )
    s = Script(Pop3BackendLogin(params))
    s.recv(b"+OK ready.\r\n").expect(
        b"AUTH XOAUTH2 " + b64(b"user=bob\x01auth=Bearer tok\x01\x01") + b"\r\n"
    )
