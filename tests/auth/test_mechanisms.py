"""The auth-process SASL mechanisms, sans-IO, against credentials made by Debian's ``doveadm pw``."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import subprocess
import time
from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st
from puresasl.client import SASLClient

from proxyd.auth import schemes
from proxyd.auth.mechanisms import AnonymousLogin, NeedCredentials, Success, create
from proxyd.auth.mechanisms.scram import ScramSHA256
from proxyd.auth.opening import open_authenticator
from proxyd.config.settings import PassdbSettings, Settings
from proxyd.errors import ConfigError
from proxyd.protocols.digest_md5 import DigestParseError, directives, parse_response
from proxyd.protocols.sasl import Challenge, SaslFailed
from proxyd.protocols.scram import ScramParseError, parse_client_final, parse_client_first
from tests.helpers.scram_client import ScramClient


@cache
def doveadm_pw(scheme: str, password: str, user: str = "") -> str:
    args = ["doveadm", "-c", "/dev/null", "pw", "-s", scheme, "-p", password]
    if user:
        args += ["-u", user]
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def raw_credentials(scheme: str, password: str, user: str = "") -> bytes:
    return schemes.credentials(doveadm_pw(scheme, password, user), "PLAIN", scheme, user)


# -- credentials from stored passwords ------------------------------------------------------


@pytest.mark.parametrize("scheme", ["CRAM-MD5", "DIGEST-MD5"])
def test_plaintext_gives_the_same_credentials_as_doveadm(scheme: str) -> None:
    from_plain = schemes.credentials("{PLAIN}s3cret", "PLAIN", scheme, "alice")
    assert from_plain == raw_credentials(scheme, "s3cret", "alice")


def test_clear_is_plain_for_credentials() -> None:
    assert schemes.credentials("{CLEAR}x", "PLAIN", "CRAM-MD5", "") == raw_credentials("CRAM-MD5", "x")


def test_a_hash_cannot_give_other_credentials() -> None:
    with pytest.raises(schemes.CredentialsUnavailableError) as info:
        schemes.credentials(doveadm_pw("SHA512-CRYPT", "x"), "PLAIN", "CRAM-MD5", "")
    assert str(info.value) == "Requested CRAM-MD5 scheme, but we have only SHA512-CRYPT"


def test_scram_credentials_from_plaintext_verify_like_doveadm_ones() -> None:
    made = schemes.credentials("{PLAIN}pw", "PLAIN", "SCRAM-SHA-256", "")
    assert schemes.verify("pw", "{SCRAM-SHA-256}" + made.decode(), "PLAIN", "")


# -- CRAM-MD5 ---------------------------------------------------------------------------------


def _cram(password: str, challenge: bytes) -> bytes:
    return hmac.new(password.encode(), challenge, hashlib.md5).hexdigest().encode()


def test_cram_md5_exchange() -> None:
    mech = create("CRAM-MD5")
    challenge = mech.start(b"ignored")
    assert isinstance(challenge, Challenge)
    assert challenge.data.startswith(b"<")
    assert challenge.data.endswith(b">")
    need = mech.step(b"alice smith " + _cram("pw", challenge.data))
    assert need == NeedCredentials("alice smith", "", "CRAM-MD5", "alice smith")
    assert mech.credentials(raw_credentials("CRAM-MD5", "pw")) == Success()


def test_cram_md5_wrong_password_and_replay() -> None:
    mech = create("CRAM-MD5")
    first = mech.start(None)
    assert isinstance(first, Challenge)
    mech.step(b"alice " + _cram("wrong", first.data))
    assert mech.credentials(raw_credentials("CRAM-MD5", "pw")) == SaslFailed("Password mismatch")
    # a response captured from one exchange is worthless in the next: the challenge differs
    captured = b"alice " + _cram("pw", first.data)
    replay = create("CRAM-MD5")
    replay.start(None)
    replay.step(captured)
    assert replay.credentials(raw_credentials("CRAM-MD5", "pw")) == SaslFailed("Password mismatch")


@pytest.mark.parametrize(
    ("response", "reason"),
    [(b"alice", "missing digest"), (b" abc", "missing digest"), (b"al\0ice abc", "NULs in response")],
)
def test_cram_md5_bad_responses(response: bytes, reason: str) -> None:
    mech = create("CRAM-MD5")
    mech.start(None)
    assert mech.step(response) == SaslFailed(reason)


def test_cram_md5_invalid_credentials_length() -> None:
    mech = create("CRAM-MD5")
    mech.start(None)
    mech.step(b"alice 0123")
    assert mech.credentials(b"short") == SaslFailed("invalid credentials length")


# -- SCRAM ------------------------------------------------------------------------------------


def _scram_exchange(client: ScramClient, raw: bytes, *, mech: str = "SCRAM-SHA-256") -> tuple[object, bytes]:
    server = create(mech)
    assert server.start(None) == Challenge(b"")
    need = server.step(client.first())
    assert isinstance(need, NeedCredentials)
    first = server.credentials(raw)
    assert isinstance(first, Challenge)
    final = client.final(first.data)
    return server.step(final), final


@pytest.mark.parametrize(("mech", "hash_name"), [("SCRAM-SHA-1", "sha1"), ("SCRAM-SHA-256", "sha256")])
def test_scram_exchange_and_server_signature(mech: str, hash_name: str) -> None:
    client = ScramClient(hash_name, "bob", "pw")
    result, _final = _scram_exchange(client, raw_credentials(mech, "pw"), mech=mech)
    assert isinstance(result, Success)
    assert result.final is not None
    assert client.verify(result.final)


def test_scram_wrong_proof() -> None:
    client = ScramClient("sha256", "bob", "wrong")
    result, _ = _scram_exchange(client, raw_credentials("SCRAM-SHA-256", "pw"))
    assert result == SaslFailed("Password mismatch")


def test_scram_replayed_final_message_fails_on_the_nonce() -> None:
    """The server nonce is new in every exchange: a captured client-final is refused."""
    raw = raw_credentials("SCRAM-SHA-256", "pw")
    client = ScramClient("sha256", "bob", "pw")
    result, captured = _scram_exchange(client, raw)
    assert isinstance(result, Success)
    server = ScramSHA256()
    server.step(client.first())  # the same client-first, same client nonce
    assert isinstance(server.credentials(raw), Challenge)
    assert server.step(captured) == SaslFailed("Wrong nonce")


def test_scram_authzid_and_escaping() -> None:
    server = create("SCRAM-SHA-1")
    need = server.step(b"n,a=al=2Cice,n=ad=3Dmin,r=abc")
    assert need == NeedCredentials("ad=min", "al,ice", "SCRAM-SHA-1", "ad=min")


def test_scram_channel_binding_must_match() -> None:
    client = ScramClient("sha256", "bob", "pw")
    server = create("SCRAM-SHA-256")
    server.step(b"y,," + client.first_bare.encode())
    first = server.credentials(raw_credentials("SCRAM-SHA-256", "pw"))
    assert isinstance(first, Challenge)
    # the client claims "n,," in c= but sent "y,,"
    assert server.step(client.final(first.data)) == SaslFailed("Invalid channel binding data")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"n", "Invalid initial client message: Missing first ',' in GS2 header"),
        (b"n,", "Invalid initial client message: Missing second ',' in GS2 header"),
        (b"n,,n=bob", "Invalid initial client message: Missing nonce field"),
        (b"p=tls-unique,,n=bob,r=x", "Channel binding not supported"),
        (b"x,,n=bob,r=x", "Invalid GS2 header"),
        (b"n,b=x,n=bob,r=x", "Invalid authzid field"),
        (b"n,a=x=1,n=bob,r=x", "authzid escaping is invalid"),
        (b"n,,m=ext,n=bob,r=x", "Mandatory extension(s) not supported"),
        (b"n,,u=bob,r=x", "Invalid username field"),
        (b"n,,n=b=b,r=x", "Username escaping is invalid"),
        (b"n,,n=bob,x=x", "Invalid client nonce"),
    ],
)
def test_scram_client_first_errors(message: bytes, reason: str) -> None:
    assert create("SCRAM-SHA-256").step(message) == SaslFailed(reason)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"4096,c2FsdA==", "Invalid SCRAM-SHA-256 passdb entry format"),
        (b"100,c2FsdA==,a,b", "Invalid SCRAM-SHA-256 iteration count in passdb"),
        (b"4096,c2FsdA==,!!,b", "Invalid SCRAM-SHA-256 StoredKey in passdb"),
    ],
)
def test_scram_bad_stored_credentials(raw: bytes, reason: str) -> None:
    server = create("SCRAM-SHA-256")
    server.step(b"n,,n=bob,r=abc")
    assert server.credentials(raw) == SaslFailed(reason)


# -- DIGEST-MD5 -------------------------------------------------------------------------------


def _digest_client(password: str) -> SASLClient:
    return SASLClient("mail.example", "imap", mechanism="DIGEST-MD5", username="carol", password=password)


def test_digest_md5_with_pure_sasl_and_rspauth() -> None:
    server = create("DIGEST-MD5")
    challenge = server.start(None)
    assert isinstance(challenge, Challenge)
    assert b'qop="auth",charset="utf-8",algorithm="md5-sess"' in challenge.data
    client = _digest_client("carolpw")
    need = server.step(client.process(challenge.data))
    assert need == NeedCredentials("carol", "", "DIGEST-MD5", "carol")
    success = server.credentials(raw_credentials("DIGEST-MD5", "carolpw", "carol"))
    assert isinstance(success, Success)
    assert success.final is not None
    client.process(success.final)
    assert client.complete  # pure-sasl checked rspauth


def test_digest_md5_wrong_password_and_replay() -> None:
    server = create("DIGEST-MD5")
    challenge = server.start(None)
    assert isinstance(challenge, Challenge)
    response = _digest_client("wrong").process(challenge.data)
    server.step(response)
    raw = raw_credentials("DIGEST-MD5", "carolpw", "carol")
    assert server.credentials(raw) == SaslFailed("Password mismatch")
    replay = create("DIGEST-MD5")
    replay.start(None)
    assert replay.step(response) == SaslFailed("Invalid nonce")


def test_digest_md5_challenge_offers_auth_realms() -> None:
    """``auth_realms``: one ``realm="..."`` each, in order; none: one empty realm (for Cyrus)."""
    offered = create("DIGEST-MD5", ("example.com", "other.org")).start(None)
    assert isinstance(offered, Challenge)
    assert offered.data.startswith(b'realm="example.com",realm="other.org",nonce="')
    plain = create("DIGEST-MD5").start(None)
    assert isinstance(plain, Challenge)
    assert plain.data.startswith(b'realm="",nonce="')


def test_digest_md5_realm_joins_the_user() -> None:
    response = b'username="carol",realm="example.com",nonce="N",cnonce="c",nc=00000001,qop=auth,digest-uri="imap/x",response=' + b"0" * 32
    server = create("DIGEST-MD5")
    server._nonce = "N"  # type: ignore[attr-defined]
    assert server.step(response) == NeedCredentials(
        "carol@example.com", "", "DIGEST-MD5", "carol@example.com"
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"", "Client sent no input"),
        (b'username="a",username="b"', "username must not exist more than once"),
        (b'username=""', "empty username"),
        (b'nonce="other"', "Invalid nonce"),
        (b"nc=00000002", "re-auth not supported currently"),
        (b"nc=x", "nonce-count value invalid"),
        (b"qop=bogus", "Unknown QoP value: bogus"),
        (b"qop=auth-int", "Nonallowed QoP requested"),
        (b"digest-uri=imap", "Invalid digest-uri"),
        (b"maxbuf=0", "Invalid maxbuf value"),
        (b"charset=latin1", "Only utf-8 charset is allowed"),
        (b"response=abc", "Invalid response value"),
        (b'authzid=""', "empty authzid"),
        (b'nonce="N"', "Missing cnonce parameter"),
        (b'nonce="N",cnonce="c"', "Missing username parameter"),
        (b'cnonce="c"', "Missing nonce parameter"),
    ],
)
def test_digest_md5_response_errors(text: bytes, reason: str) -> None:
    with pytest.raises(DigestParseError) as info:
        parse_response(text, "N")
    assert str(info.value) == reason


def test_digest_directives_quoting_and_spaces() -> None:
    assert directives('  a = "x\\"y" , b=  z  ,junk, c="q,r"') == [("a", 'x"y'), ("b", "z"), ("c", "q,r")]


# -- fuzzing ----------------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_fuzz_scram_parsers_raise_only_parse_errors(data: bytes) -> None:
    for parse in (parse_client_first, lambda d: parse_client_final(d, 32)):
        with contextlib.suppress(ScramParseError):
            parse(data)


@given(st.binary(max_size=300), st.text(max_size=30))
def test_fuzz_digest_parser_raises_only_parse_errors(data: bytes, nonce: str) -> None:
    with contextlib.suppress(DigestParseError):
        parse_response(data, nonce)


@given(st.text(max_size=200))
def test_fuzz_directives_total(text: str) -> None:
    for key, value in directives(text):
        assert "=" not in key or key == ""
        assert isinstance(value, str)


@given(
    st.sampled_from(["APOP", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"]),
    st.lists(st.binary(max_size=200), max_size=4),
    st.binary(max_size=64),
)
def test_fuzz_mechanisms_never_raise(name: str, responses: list[bytes], raw: bytes) -> None:
    """Any client input and any stored data: a step, never an exception."""
    mech = create(name)
    step = mech.start(responses[0] if responses else None)
    for response in responses:
        if isinstance(step, NeedCredentials):
            step = mech.credentials(raw)
        if isinstance(step, Challenge):
            step = mech.step(response)
        else:
            break
    assert isinstance(step, Challenge | NeedCredentials | Success | SaslFailed)


@given(st.text(min_size=1, max_size=40).filter(lambda s: "\0" not in s), st.text(max_size=20).filter(lambda s: "\0" not in s))
def test_fuzz_scram_names_round_trip(user: str, authzid: str) -> None:
    client = ScramClient("sha256", user, "pw", authzid)
    parsed = parse_client_first(client.first())
    assert (parsed.username, parsed.authzid) == (user, authzid)


# -- APOP -------------------------------------------------------------------------------------


def _apop_data(challenge: bytes, user: bytes, password: bytes) -> bytes:
    return challenge + b"\0" + user + b"\0" + hashlib.md5(challenge + password).digest()


def test_apop_exchange_and_failures() -> None:
    challenge = f"<1a.2b.{int(time.time()):x}.abc=@host>".encode()
    mech = create("APOP")
    assert mech.start(_apop_data(challenge, b"dave", b"pw")) == NeedCredentials("dave", "", "PLAIN", "dave")
    assert mech.credentials(b"pw") == Success()
    wrong = create("APOP")
    wrong.start(_apop_data(challenge, b"dave", b"nope"))
    assert wrong.credentials(b"pw") == SaslFailed("Password mismatch")
    assert create("APOP").start(_apop_data(b"<1.2.3.x@old>", b"dave", b"pw")) == SaslFailed("invalid challenge")
    assert create("APOP").start(_apop_data(b"no challenge", b"dave", b"pw")) == SaslFailed("invalid challenge")
    assert create("APOP").start(challenge + b"\0dave\0short") == SaslFailed("malformed data")
    assert create("APOP").start(None) == SaslFailed("no initial response")


def test_anonymous_takes_any_trace() -> None:
    assert create("ANONYMOUS").start(None) == Challenge(b"")
    assert create("ANONYMOUS").start(b"me@example\0x") == AnonymousLogin("me@example\0x")
    mech = create("ANONYMOUS")
    mech.step(b"")
    assert mech.step(b"again") == SaslFailed("Unexpected continuation")


async def test_anonymous_needs_a_username() -> None:
    settings = Settings(
        auth_mechanisms=("plain", "anonymous"),
        auth_anonymous_username="",
        passdbs=(PassdbSettings(driver="static", args="nopassword"),),
    )
    with pytest.raises(ConfigError, match="ANONYMOUS listed in mechanisms, but anonymous_username not set"):
        async with open_authenticator(settings):
            pass
