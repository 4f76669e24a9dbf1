"""SASL PLAIN and LOGIN as Dovecot's auth process and lib-sasl client implement them, plus base64."""

from __future__ import annotations

import pytest

from proxyd.protocols.sasl import (
    Challenge,
    Credentials,
    SaslClient,
    SaslClientError,
    SaslFailed,
    SaslServer,
    UnsupportedMechanism,
    decode_base64,
    encode_base64,
    is_base64_text,
    plain_client_response,
)

# -- base64 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "decoded"),
    [
        (b"", b""),
        (b"AGJvYgBzZWNyZXQ=", b"\0bob\0secret"),
        (b" AGJvYgBz ZWNy\r\nZXQ=\t", b"\0bob\0secret"),  # white space is skipped anywhere
        (b"YQ==", b"a"),
        (b"YWI=", b"ab"),
        (b"YQ= =", b"a"),  # even inside the padding
        (b"YR==", b"a"),  # stray low bits are ignored, as in Dovecot
    ],
)
def test_decode_base64_accepts_what_dovecot_accepts(text, decoded):
    assert decode_base64(text) == decoded


@pytest.mark.parametrize(
    "text", [b"=", b"A", b"AB", b"ABC", b"YQ=", b"YQ===", b"YWJj=", b"!!!!", b"YQ==YQ==", b"YQ==x"]
)
def test_decode_base64_rejects_what_dovecot_rejects(text):
    assert decode_base64(text) is None


def test_base64_text_check():
    assert is_base64_text(b"AGJvYg==")
    assert is_base64_text(b"=")
    assert is_base64_text(b"")
    assert not is_base64_text(b"AGJv Yg==")
    assert not is_base64_text(b"AGJv\tYg==")


def test_encode_base64():
    assert encode_base64(b"\0bob\0secret") == b"AGJvYgBzZWNyZXQ="


# -- PLAIN server -----------------------------------------------------------------


def test_plain_with_initial_response():
    assert SaslServer.create("plain").start(b"\0bob\0secret") == Credentials("", "bob", "secret")


def test_plain_without_initial_response_asks_with_an_empty_challenge():
    server = SaslServer.create("PLAIN")
    assert server.start(None) == Challenge(b"")
    assert server.step(b"admin\0bob\0pw") == Credentials("admin", "bob", "pw")


def test_plain_authzid_equal_to_authcid_counts_as_none():
    assert SaslServer.create("PLAIN").start(b"bob\0bob\0pw") == Credentials("", "bob", "pw")


def test_plain_empty_initial_response_is_invalid():
    assert SaslServer.create("PLAIN").start(b"") == SaslFailed("invalid input")


@pytest.mark.parametrize("response", [b"bob", b"\0bob", b"\0bob\0pw\0", b"a\0b\0c\0d"])
def test_plain_needs_exactly_two_nuls(response):
    assert isinstance(SaslServer.create("PLAIN").start(response), SaslFailed)


def test_plain_empty_user():
    assert SaslServer.create("PLAIN").start(b"\0\0pw") == SaslFailed("Empty username")


def test_plain_must_be_utf8():
    assert isinstance(SaslServer.create("PLAIN").start(b"\0b\xffob\0pw"), SaslFailed)
    assert SaslServer.create("PLAIN").start("\0jöe\0pä".encode()) == Credentials("", "jöe", "pä")


def test_plain_refuses_a_second_response():
    server = SaslServer.create("PLAIN")
    server.start(b"\0a\0b")
    assert server.step(b"\0a\0b") == SaslFailed("Unexpected continuation")


# -- LOGIN server -----------------------------------------------------------------


def test_login_prompts_username_then_password():
    server = SaslServer.create("LOGIN")
    assert server.start(None) == Challenge(b"Username:")
    assert server.step(b"bob") == Challenge(b"Password:")
    assert server.step(b"secret") == Credentials("", "bob", "secret")


def test_login_initial_response_is_the_username():
    server = SaslServer.create("LOGIN")
    assert server.start(b"bob") == Challenge(b"Password:")
    assert server.step(b"secret") == Credentials("", "bob", "secret")


def test_login_empty_initial_response_still_prompts():
    assert SaslServer.create("LOGIN").start(b"") == Challenge(b"Username:")


def test_login_refuses_nul_bytes():
    server = SaslServer.create("LOGIN")
    server.start(None)
    assert server.step(b"bo\0b") == SaslFailed("Unexpected NUL in auth data")


def test_login_empty_username():
    server = SaslServer.create("LOGIN")
    server.start(None)
    assert server.step(b"") == SaslFailed("Empty username")


def test_unsupported_server_mechanism():
    with pytest.raises(UnsupportedMechanism):
        SaslServer.create("CRAM-MD5")


def test_credentials_repr_hides_the_password():
    text = repr(Credentials("", "bob", "hunter2"))
    assert "hunter2" not in text
    assert "bob" in text


# -- clients ----------------------------------------------------------------------


def test_plain_client_response_keeps_equal_authzid():
    assert plain_client_response("bob", "bob", "pw") == b"bob\0bob\0pw"


def test_plain_client_with_ir():
    client = SaslClient.create("PLAIN", authzid="bob", authcid="master", password="pw")
    assert client.output() == b"bob\0master\0pw"
    with pytest.raises(SaslClientError, match="Server didn't finish authentication"):
        client.input(b"")


def test_plain_client_without_ir():
    client = SaslClient.create("PLAIN", authzid="bob", authcid="bob", password="pw")
    client.input(b"")
    assert client.output() == b"bob\0bob\0pw"


def test_plain_client_refuses_a_nonempty_first_challenge():
    client = SaslClient.create("PLAIN", authzid="bob", authcid="bob", password="pw")
    with pytest.raises(SaslClientError, match="non-empty initial response"):
        client.input(b"hello")


def test_login_client():
    client = SaslClient.create("login", authzid="bob", authcid="bob", password="pw")
    assert client.output() == b""
    client.input(b"Username:")
    assert client.output() == b"bob"
    client.input(b"Password:")
    assert client.output() == b"pw"
    with pytest.raises(SaslClientError):
        client.input(b"more?")


def test_client_repr_hides_the_password():
    assert "pw" not in repr(SaslClient.create("PLAIN", authzid="a", authcid="a", password="pw"))


def test_unsupported_client_mechanism():
    with pytest.raises(UnsupportedMechanism):
        SaslClient.create("SCRAM-SHA-1", authzid="a", authcid="a", password="b")
