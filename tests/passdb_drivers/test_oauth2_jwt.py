"""Local JWT validation of the oauth2 passdb (``introspection_mode = local``): tokens signed
here with keys made here, checked against a ``fs:posix:prefix=DIR`` key directory, and an
XOAUTH2 / OAUTHBEARER login through proxyd whose token only the proxy checks."""

from __future__ import annotations

import base64
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from passdb_drivers.oauth2 import create
from passdb_drivers.oauth2_jwt import JwtChecks, JwtError, parse
from passdb_drivers.oauth2_keydict import FsKeyDict
from proxyd.auth.passdb import PassdbResult
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError
from proxyd.secret import Secret
from tests.auth.util import make_request
from tests.fixtures.dovecot import MASTER_PASSWORD, MASTER_USER, DovecotBackend
from tests.fixtures.proxyd import ProxydRunner, readable_by_auth
from tests.helpers.clients import IMAP4, fetch_subjects

HS_KEY = b"a shared secret of thirty-two b!"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def sign(
    claims: dict[str, Any],
    alg: str = "HS256",
    kid: str | None = None,
    key: Any = None,
) -> str:
    """A JWS compact token, signed the way RFC 7518 says."""
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    data = signing_input.encode()
    if alg in ("HS256", "HS384", "HS512"):
        signature = hmac.digest(key or HS_KEY, data, "sha" + alg[2:])
    elif alg == "RS256":
        signature = (key or RSA_KEY).sign(data, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "PS256":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        signature = (key or RSA_KEY).sign(data, pss, hashes.SHA256())
    elif alg == "ES256":
        r, s = decode_dss_signature((key or EC_KEY).sign(data, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = b""  # alg none
    return f"{signing_input}.{_b64(signature)}"


#: token lifetimes in the parametrize lists are fixed at collection, minutes before the
#: test runs in a full suite: a day, so no token meant valid expires on the way
DAY = 86400


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "email": "alice@example.com", "iat": now - 10, "exp": now + DAY, **extra}


def key_dir(root: Path) -> Path:
    """DIR/<azp>/<alg>/<kid>, as Dovecot's fs dict reads shared/<azp>/<alg>/<kid>."""
    keys = root / "keys"
    files = {
        "default/HS256/default": base64.b64encode(HS_KEY).decode() + "\n",
        "default/HS512/default": base64.b64encode(HS_KEY).decode(),
        "default/RS256/default": _pem(RSA_KEY),
        "default/PS256/default": _pem(RSA_KEY),
        "default/ES256/ec-1": _pem(EC_KEY),
        "mail%2fclient/HS256/k%25ey": base64.b64encode(b"per client key").decode(),
        "default/HS384/empty": "!!!\n",
        "default/RS256/broken": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n",
    }
    for name, text in files.items():
        path = keys / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return keys


def local_conf(tmp_path: Path, extra: str = "") -> PassdbSettings:
    path = tmp_path / "dovecot-oauth2.conf.ext"
    path.write_text(
        f"introspection_mode = local\nlocal_validation_key_dict = fs:posix:prefix={key_dir(tmp_path)}/\n"
        "pass_attrs = proxy=y sub=%{oauth2:sub}\n" + extra
    )
    return PassdbSettings(driver="oauth2", args=str(path))


async def check(settings: PassdbSettings, token: str, user: str = "alice@example.com") -> Any:
    async with create(settings) as passdb:
        return await passdb.verify_plain(make_request(user, token), Secret(token))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("alg", "kid"),
    [("HS256", None), ("HS512", None), ("RS256", None), ("PS256", None), ("ES256", "ec-1")],
)
async def test_signed_tokens_are_accepted(tmp_path: Path, alg: str, kid: str | None) -> None:
    token = sign(claims(), alg, kid)
    reply = await check(local_conf(tmp_path), token)
    assert reply.result is PassdbResult.OK
    assert dict(reply.fields) == {"proxy": "y", "sub": "alice", "token": token}


async def test_azp_and_kid_are_escaped_into_one_path_segment(tmp_path: Path) -> None:
    token = sign(claims(azp="mail/client"), "HS256", "k%ey", key=b"per client key")
    assert (await check(local_conf(tmp_path), token)).result is PassdbResult.OK


async def test_username_attribute_and_issuers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxyd.auth")
    settings = local_conf(tmp_path, "username_attribute = preferred_username\nissuers = https://a https://b\n")
    good = sign(claims(preferred_username="Bob", iss="https://b"))
    assert (await check(settings, good, "bob")).result is PassdbResult.OK
    assert (await check(settings, good, "alice@example.com")).result is PassdbResult.USER_UNKNOWN
    assert "Local validation failed: Username 'alice@example.com' did not match 'bob'" in caplog.text
    for token, message in [
        (sign(claims(preferred_username="bob")), "Token is missing 'iss' field"),
        (sign(claims(preferred_username="bob", iss="https://evil\x01")), "Issuer 'https://evil?' is not allowed"),
    ]:
        assert (await check(settings, token, "bob")).result is PassdbResult.PASSWORD_MISMATCH
        assert f"oauth2 failed: Local validation failed: {message}" in caplog.text


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (sign(claims(exp=int(time.time()) - 5)), "Token has expired"),
        (sign(claims(nbf=int(time.time()) + DAY, exp=int(time.time()) + 2 * DAY)), "Token is not valid yet"),
        (sign(claims(iat=int(time.time()) + DAY, exp=int(time.time()) + 2 * DAY)), "Token is issued in future"),
        (sign(claims(exp="yesterday")), "Malformed 'exp' field"),
        (sign({"email": "alice@example.com", "exp": int(time.time()) + DAY}), "Missing 'sub' field"),
        (sign(claims(exp=None)), "Missing 'exp' field"),
        (sign(claims(), key=b"the wrong secret"), "Incorrect JWT signature"),
        (sign(claims(), "RS256", key=OTHER_RSA_KEY), "Bad signature"),
        (sign(claims(), "ES256", "ec-1", key=ec.generate_private_key(ec.SECP256R1())), "Bad signature"),
        (sign(claims(), "HS256", "unknown"), "HS256 key 'unknown' not found"),
        (sign(claims(azp="other"), "RS256"), "RS256 key 'default' not found"),
        (sign(claims(), "none"), "Unsupported algorithm 'NONE'"),
        (sign(claims(), "HS999"), "unsupported algorithm 'HS999'"),
        (sign(claims(), "HS384", "empty"), "Invalid base64 encoded key"),
        (sign(claims(), "RS256", "broken"), "Cannot load key: "),
        (sign(claims(), "HS256", ""), "'kid' field is empty"),
        (sign(claims(), "HS256", ".."), "HS256 key '..' not found"),
        ("not-a-jwt", "Not a JWT token"),
        (_b64(b'{"alg": "HS256"}') + "." + _b64(b"[" * 100000) + ".x", "Invalid JSON"),
        ("a.b", "Not a JWT token"),
    ],
)
async def test_refused_tokens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, token: str, message: str
) -> None:
    caplog.set_level(logging.INFO, logger="proxyd.auth")
    reply = await check(local_conf(tmp_path), token)
    assert reply.result is PassdbResult.PASSWORD_MISMATCH
    assert f"oauth2 failed: Local validation failed: {message}" in caplog.text


async def test_client_id_and_scope(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxyd.auth")
    settings = local_conf(tmp_path, "client_id = proxyd\nscope = mail imap\n")
    assert (await check(settings, sign(claims(aud=["web", "proxyd"], scope="imap mail openid")))).result is (
        PassdbResult.OK
    )
    # the JWT check splits on blanks and commas, ignoring case; the passdb's own scope check
    # after it (db_oauth2_token_in_scope) splits on blanks only and compares exactly
    odd = await check(settings, sign(claims(aud="proxyd", scope="IMAP,MAIL")))
    assert odd.result is PassdbResult.USER_DISABLED
    assert "Local validation failed: Token is not valid for scope 'mail imap'" in caplog.text
    for token, message in [
        (sign(claims(scope="mail imap")), "client_id set but aud is missing"),
        (sign(claims(aud="web", scope="mail imap")), "client_id not found in aud field"),
        (sign(claims(aud="proxyd")), "scope set but not found in token"),
        (sign(claims(aud="proxyd", scope="mail")), "configured scope 'mail imap' missing from token scope 'mail'"),
    ]:
        assert (await check(settings, token)).result is PassdbResult.PASSWORD_MISMATCH
        assert f"Local validation failed: {message}" in caplog.text


async def test_keys_are_cached(tmp_path: Path) -> None:
    """Dovecot keeps a key once loaded; a removed file does not refuse the next login."""
    settings = local_conf(tmp_path)
    async with create(settings) as passdb:
        token = sign(claims(), "RS256")
        first = await passdb.verify_plain(make_request("alice@example.com", token), Secret(token))  # type: ignore[attr-defined]
        (tmp_path / "keys/default/RS256/default").unlink()
        second = await passdb.verify_plain(make_request("alice@example.com", token), Secret(token))  # type: ignore[attr-defined]
    assert first.result is second.result is PassdbResult.OK


def test_key_paths() -> None:
    keys = FsKeyDict.from_uri("fs:posix:prefix=/etc/keys/")
    assert keys.path("default", "HS256", "default") == "/etc/keys/default/HS256/default"
    assert keys.path("..", "HS256", ".") == "/etc/keys/..../HS256/..."
    with pytest.raises(ValueError, match="not supported yet"):
        FsKeyDict.from_uri("redis:host=127.0.0.1")
    with pytest.raises(ValueError, match="not supported yet"):
        FsKeyDict.from_uri("fs:posix:prefix=/x/:mode=0600")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("introspection_mode = local\n", "local_validation_key_dict is required for local introspection."),
        ("introspection_url = http://x/\nissuers = a\n", "need introspection_mode = local"),
        ("introspection_mode = local\nlocal_validation_key_dict = proxy::keys\n", "Cannot initialize key dict"),
    ],
)
def test_configuration_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "dovecot-oauth2.conf.ext"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        create(PassdbSettings(driver="oauth2", args=str(path)))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@given(
    st.one_of(
        st.text(max_size=200),
        st.tuples(_json_values, _json_values, st.binary(max_size=40)).map(
            lambda parts: ".".join(_b64(json.dumps(part).encode()) for part in parts[:2]) + "." + _b64(parts[2])
        ),
        st.dictionaries(st.sampled_from(["sub", "exp", "nbf", "iat", "iss", "aud", "scope", "azp"]), _json_values).map(
            lambda body: sign(body, "HS256")
        ),
    )
)
def test_fuzz_parser(token: str) -> None:
    """Any token: claims that passed, or a refusal with one of Dovecot's texts."""
    try:
        jwt = parse(token, JwtChecks(issuers=("i",), client_id="c", scope="mail"))
    except JwtError as exc:
        refusal = str(exc)
    else:
        refusal = ""
        assert jwt.alg == jwt.alg.upper()
        assert "/" not in jwt.kid
        assert "/" not in jwt.azp
        assert all(isinstance(value, str) for value in jwt.fields.values())
    if refusal:
        assert refusal.isprintable()


@pytest.mark.e2e
@pytest.mark.parametrize(("mech", "alg"), [("XOAUTH2", "RS256"), ("OAUTHBEARER", "HS256")])
def test_jwt_login_validated_by_the_proxy(
    proxyd: ProxydRunner, backend_a: DovecotBackend, mech: str, alg: str
) -> None:
    """The auth process validates the JWT with the key directory alone (no server runs) and
    logs in to the backend with the master user; an expired token is refused."""
    keys = key_dir(proxyd.workdir)
    for path in [keys, *keys.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
        else:
            readable_by_auth(path)
    conf = proxyd.workdir / "dovecot-oauth2.conf.ext"
    conf.write_text(
        f"introspection_mode = local\nlocal_validation_key_dict = fs:posix:prefix={keys}/\n"
        "issuers = https://idp.example\n"
        f"pass_attrs = proxy=y host={backend_a.address} port={backend_a.imap_port} "
        f"master={MASTER_USER} pass={MASTER_PASSWORD}\n"
    )
    readable_by_auth(conf)
    config = proxyd.config(None, auth_mechanisms="plain xoauth2 oauthbearer")
    config.passdbs = [{"driver": "oauth2", "args": str(conf)}]
    running = proxyd.start(config)

    def message(token: str) -> bytes:
        if mech == "XOAUTH2":
            return f"user=alice\x01auth=Bearer {token}\x01\x01".encode()
        return f"n,a=alice,\x01auth=Bearer {token}\x01\x01".encode()

    good = sign(claims(email="alice", iss="https://idp.example"), alg)
    with IMAP4(running.address(), running.port()) as client:
        assert client.authenticate(mech, lambda _challenge: message(good))[0] == "OK"
        assert fetch_subjects(client) == [backend_a.subject_for("alice")]
        client.logout()

    expired = sign(claims(email="alice", iss="https://idp.example", exp=int(time.time()) - 60), alg)
    challenges: list[bytes] = []

    def refused(challenge: bytes) -> bytes:
        challenges.append(challenge)
        return message(expired) if len(challenges) == 1 else b""

    with IMAP4(running.address(), running.port()) as client, pytest.raises(IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.authenticate(mech, refused)
    assert b'"status"' in challenges[-1]
    running.wait_for_log(r"oauth2\(alice,.*\): oauth2 failed: Local validation failed: Token has expired")



@pytest.mark.parametrize(
    ("exp", "outcome"),
    [
        ("9" * 5000, "Malformed 'exp' field"),
        ("9" * 20, "Malformed 'exp' field"),
        ("4102444800", "accepted"),
        ("2999-01-01T00:00:00+00:00", "accepted"),
        (1.5e9, "Malformed 'exp' field"),
        (-1, "Malformed 'exp' field"),
        (True, "Malformed 'exp' field"),
    ],
)
def test_time_fields(exp: object, outcome: str) -> None:
    """Integers (also as strings) or ISO 8601 dates, as Dovecot 2.3's get_time_field()."""
    token = sign({"sub": "a", "exp": exp})
    if outcome == "accepted":
        assert parse(token, JwtChecks()).fields["sub"] == "a"
    else:
        with pytest.raises(JwtError, match=outcome):
            parse(token, JwtChecks())
