"""Password schemes against Debian's Dovecot: its hashes verify here, ours verify there."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import trio

from proxyd.auth import crypt_ffi, schemes

DOVEADM = shutil.which("doveadm")
USER = "alice@example.com"
PASSWORD = "secret"

needs_doveadm = pytest.mark.skipif(
    DOVEADM is None, reason="doveadm (Debian's dovecot-core) is not installed"
)

# every scheme the brief lists, plus the other ones Dovecot 2.3 knows and proxyd verifies
VERIFY_SCHEMES = [
    "PLAIN",
    "CLEAR",
    "CLEARTEXT",
    "CRYPT",
    "DES-CRYPT",
    "MD5-CRYPT",
    "SHA256-CRYPT",
    "SHA512-CRYPT",
    "BLF-CRYPT",
    "SSHA",
    "SSHA256",
    "SSHA512",
    "SHA",
    "SHA1",
    "SHA256",
    "SHA512",
    "SMD5",
    "PLAIN-MD5",
    "LDAP-MD5",
    "MD5",
    "PLAIN-MD4",
    "ARGON2I",
    "ARGON2ID",
    "PBKDF2",
    "CRAM-MD5",
    "HMAC-MD5",
    "DIGEST-MD5",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    # explicit encodings
    "SHA256.HEX",
    "SHA1.HEX",
    "PLAIN-MD5.B64",
    "CRAM-MD5.BASE64",
    "SSHA.HEX",
    "SSHA512.hex",
    "SHA512-CRYPT.HEX",
]


def doveadm_pw(scheme: str, password: str = PASSWORD, *extra: str) -> str:
    assert DOVEADM is not None
    result = subprocess.run(
        [DOVEADM, "-c", "/dev/null", "pw", "-s", scheme, "-p", password, "-u", USER, *extra],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def doveadm_accepts(hashed: str, password: str, user: str = USER) -> bool:
    """``doveadm pw -t``: Dovecot's own verdict on ``password`` against ``hashed``."""
    assert DOVEADM is not None
    result = subprocess.run(
        [DOVEADM, "-c", "/dev/null", "pw", "-t", hashed, "-p", password, "-u", user],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and "(verified)" in result.stdout


@needs_doveadm
@pytest.mark.parametrize("scheme", VERIFY_SCHEMES)
def test_dovecot_hash_verifies(scheme: str) -> None:
    hashed = doveadm_pw(scheme)
    assert hashed.upper().startswith("{" + scheme.upper() + "}")
    assert schemes.verify(PASSWORD, hashed, "PLAIN", USER) is True
    assert schemes.verify("Secret", hashed, "PLAIN", USER) is False
    assert schemes.verify("", hashed, "PLAIN", USER) is False


@needs_doveadm
@pytest.mark.parametrize(
    "scheme", ["SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "MD5-CRYPT", "SSHA"]
)
def test_dovecot_hash_verifies_as_default_scheme(scheme: str) -> None:
    """Stored without ``{SCHEME}``, the passdb's default scheme applies."""
    data = doveadm_pw(scheme).partition("}")[2]
    assert schemes.verify(PASSWORD, data, scheme, USER) is True
    assert schemes.verify("wrong", data, scheme, USER) is False


@needs_doveadm
def test_digest_md5_depends_on_user() -> None:
    hashed = doveadm_pw("DIGEST-MD5")
    assert schemes.verify(PASSWORD, hashed, "PLAIN", USER) is True
    assert schemes.verify(PASSWORD, hashed, "PLAIN", "bob@example.com") is False


@needs_doveadm
def test_sha512_crypt_with_rounds() -> None:
    hashed = doveadm_pw("SHA512-CRYPT", PASSWORD, "-r", "10000")
    assert "$rounds=10000$" in hashed
    assert schemes.verify(PASSWORD, hashed, "PLAIN", USER) is True
    assert schemes.verify("nope", hashed, "PLAIN", USER) is False


@needs_doveadm
def test_unicode_password() -> None:
    password = "pässwörd-日本"
    for scheme in ("SHA512-CRYPT", "SSHA256", "PLAIN-MD5", "CRAM-MD5", "PBKDF2"):
        hashed = doveadm_pw(scheme, password)
        assert schemes.verify(password, hashed, "PLAIN", USER) is True, scheme
        assert schemes.verify("passwörd", hashed, "PLAIN", USER) is False, scheme


@needs_doveadm
@pytest.mark.parametrize("tail", ["XYZ", "something else entirely", ""])
def test_bcrypt_long_password_matches_dovecot(tail: str) -> None:
    """bcrypt keys are 72 bytes: Dovecot ignores the rest, and so must we (never crash)."""
    base = "a" * 72
    hashed = doveadm_pw("BLF-CRYPT", base + "original tail")
    candidate = base + tail
    assert schemes.verify(candidate, hashed, "PLAIN", USER) is doveadm_accepts(hashed, candidate)
    assert schemes.verify("a" * 71, hashed, "PLAIN", USER) is doveadm_accepts(hashed, "a" * 71)
    # far beyond libxcrypt's 512-byte passphrase limit
    assert schemes.verify(base + "x" * 1000, hashed, "PLAIN", USER) is True


@needs_doveadm
@pytest.mark.parametrize("scheme", schemes.generatable_schemes())
def test_our_hash_verifies_in_dovecot(scheme: str) -> None:
    hashed = schemes.hash_password(PASSWORD, scheme, user=USER)
    assert hashed.startswith("{" + scheme + "}")
    assert doveadm_accepts(hashed, PASSWORD)
    assert not doveadm_accepts(hashed, "wrong")
    assert schemes.verify(PASSWORD, hashed, "PLAIN", USER) is True


@needs_doveadm
@pytest.mark.parametrize("scheme", ["SHA256.HEX", "SSHA.B64", "CRAM-MD5.BASE64", "PLAIN-MD5.B64"])
def test_our_hash_with_encoding_suffix_verifies_in_dovecot(scheme: str) -> None:
    hashed = schemes.hash_password(PASSWORD, scheme.lower())
    assert hashed.startswith("{" + scheme.upper() + "}")
    assert doveadm_accepts(hashed, PASSWORD)


@needs_doveadm
@pytest.mark.parametrize(
    ("scheme", "rounds", "marker"),
    [
        ("SHA512-CRYPT", 7000, "$rounds=7000$"),
        ("SHA256-CRYPT", 2000, "$rounds=2000$"),
        ("BLF-CRYPT", 6, "$2y$06$"),
        ("PBKDF2", 1234, "$1234$"),
    ],
)
def test_our_hash_with_rounds(scheme: str, rounds: int, marker: str) -> None:
    hashed = schemes.hash_password(PASSWORD, scheme, rounds=rounds)
    assert marker in hashed
    assert doveadm_accepts(hashed, PASSWORD)


def test_default_hashes_look_like_dovecots() -> None:
    assert schemes.hash_password("x", "SHA512-CRYPT").startswith("{SHA512-CRYPT}$6$")
    assert "rounds=" not in schemes.hash_password("x", "SHA512-CRYPT")
    assert schemes.hash_password("x", "BLF-CRYPT").startswith("{BLF-CRYPT}$2y$05$")
    assert schemes.hash_password("x", "CRYPT").startswith("{CRYPT}$2y$05$")
    assert schemes.hash_password("x", "ARGON2ID").startswith(
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$"
    )
    assert schemes.hash_password("x", "ARGON2I").startswith(
        "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$"
    )
    assert schemes.hash_password("x", "PBKDF2").startswith("{PBKDF2}$1$")
    assert schemes.hash_password("x", "plain") == "{PLAIN}x"


# -- behaviour without doveadm ------------------------------------------------------


def test_split_scheme() -> None:
    assert schemes.split_scheme("{SHA}abc") == ("SHA", "abc")
    assert schemes.split_scheme("$1$salt$hash") == ("MD5-CRYPT", "$1$salt$hash")
    assert schemes.split_scheme("$1$salt$hash$ignored") == ("MD5-CRYPT", "$1$salt$hash")
    assert schemes.split_scheme("$1$nohash") == (None, "$1$nohash")
    assert schemes.split_scheme("{broken") == (None, "{broken")
    assert schemes.split_scheme("plain") == (None, "plain")


def test_bare_md5_crypt_ignores_default_scheme() -> None:
    stored = schemes.hash_password(PASSWORD, "MD5-CRYPT").partition("}")[2]
    assert schemes.verify(PASSWORD, stored, "PLAIN", USER) is True


def test_scheme_names_are_case_insensitive() -> None:
    assert schemes.verify("x", "{plain}x", "CRYPT", USER) is True
    assert schemes.verify("x", "{Plain-Md5}9dd4e461268c8034f5c8564e155c67a6", "PLAIN", USER)


@pytest.mark.parametrize("stored", ["{FOO}x", "{SHA256.FOO}x", "{}x", "{PLAIN.ZIP}x"])
def test_unknown_scheme(stored: str) -> None:
    with pytest.raises(schemes.UnknownSchemeError):
        schemes.verify("x", stored, "PLAIN", USER)


def test_unknown_default_scheme() -> None:
    with pytest.raises(schemes.UnknownSchemeError):
        schemes.verify("x", "abc", "NOPE", USER)
    with pytest.raises(schemes.UnknownSchemeError):
        schemes.hash_password("x", "NOPE")
    with pytest.raises(schemes.UnknownSchemeError):
        schemes.hash_password("x", "PLAIN-TRUNC")  # verifiable, but Dovecot's generator is broken


def test_encoding_guess() -> None:
    md5_hex = "9dd4e461268c8034f5c8564e155c67a6"  # md5("x")
    md5_b64 = "ndTkYSaMgDT1yFZOFVxnpg=="
    assert schemes.verify("x", "{PLAIN-MD5}" + md5_b64, "PLAIN", USER) is True
    assert schemes.verify("x", "{LDAP-MD5}" + md5_hex, "PLAIN", USER) is True
    assert schemes.verify("x", "{LDAP-MD5}" + md5_b64.rstrip("="), "PLAIN", USER) is True
    with pytest.raises(schemes.InvalidPasswordDataError):
        schemes.verify("x", "{PLAIN-MD5.HEX}" + md5_b64, "PLAIN", USER)


@pytest.mark.parametrize(
    "stored",
    [
        "{SSHA}c2hvcnQ=",  # not longer than the digest
        "{SHA256}" + "z" * 64,  # hex length, neither hex nor base64 of 32 bytes
        "{SHA1}!!!!",
        "{BLF-CRYPT}$1$notblowfish",
        "{PBKDF2}$2$salt$5000$00",
        "{PBKDF2}$1$salt$x$" + "0" * 40,
        "{PBKDF2}$1$salt$5000$short",
        "{SCRAM-SHA-1}1,2,3",
        "{SCRAM-SHA-256}4096,c2FsdA==,bad,bad",
        "{PLAIN-TRUNC}nolength",
        "{MD5}not-md5-data",
    ],
)
def test_invalid_data_is_an_error_without_secrets(stored: str) -> None:
    with pytest.raises(schemes.InvalidPasswordDataError) as info:
        schemes.verify("hunter2", stored, "PLAIN", USER)
    assert "hunter2" not in str(info.value)
    assert stored.partition("}")[2] not in str(info.value)


def test_mismatch_cases_never_raise() -> None:
    assert schemes.verify("x", "{CRYPT}", "PLAIN", USER) is False
    assert schemes.verify("x", "{BLF-CRYPT}", "PLAIN", USER) is False
    assert schemes.verify("x", "{ARGON2ID}garbage", "PLAIN", USER) is False
    assert schemes.verify("x", "{MD5-CRYPT}abc", "PLAIN", USER) is False
    assert schemes.verify("x\0y", "{PLAIN}x\0y", "PLAIN", USER) is False
    assert schemes.verify("x", "{SHA512-CRYPT}$6$invalid", "PLAIN", USER) is False


def test_plain_trunc() -> None:
    assert schemes.verify("abcdef", "{PLAIN-TRUNC}3-abc", "PLAIN", USER) is True
    assert schemes.verify("abc", "{PLAIN-TRUNC}3-abc", "PLAIN", USER) is True
    assert schemes.verify("ab", "{PLAIN-TRUNC}3-abc", "PLAIN", USER) is False
    assert schemes.verify("abcdef", "{PLAIN-TRUNC}8-abc", "PLAIN", USER) is False


def test_crypt_ffi_refuses_safely() -> None:
    if not crypt_ffi.available():
        pytest.skip("libcrypt.so.1 is not installed")
    assert crypt_ffi.crypt(b"x", b"$9$unknown") is None
    assert crypt_ffi.crypt(b"x\0y", b"$6$salt") is None
    assert crypt_ffi.crypt(b"x" * 600, b"$6$salt") is None  # libxcrypt's passphrase limit
    hashed = crypt_ffi.crypt(b"x", b"$6$saltsalt")
    assert hashed is not None
    assert hashed.startswith(b"$6$saltsalt$")


@needs_doveadm
@pytest.mark.parametrize(
    "scheme", ["SHA512-CRYPT", "SHA256-CRYPT", "MD5-CRYPT", "BLF-CRYPT", "DES-CRYPT"]
)
def test_libpass_fallback_without_libcrypt(monkeypatch: pytest.MonkeyPatch, scheme: str) -> None:
    reference = doveadm_pw(scheme)
    monkeypatch.setattr(crypt_ffi, "available", lambda: False)
    assert schemes.verify(PASSWORD, reference, "PLAIN", USER) is True
    assert schemes.verify("wrong", reference, "PLAIN", USER) is False
    ours = schemes.hash_password(PASSWORD, scheme)
    assert doveadm_accepts(ours, PASSWORD)


async def test_verify_async_runs_in_threads() -> None:
    hashed = schemes.hash_password(PASSWORD, "SHA512-CRYPT")
    results: list[bool] = []

    async def one(password: str) -> None:
        results.append(await schemes.verify_async(password, hashed, "PLAIN", USER))

    async with trio.open_nursery() as nursery:
        for password in (PASSWORD, "wrong", PASSWORD, "wrong"):
            nursery.start_soon(one, password)
    assert sorted(results) == [False, False, True, True]
    with pytest.raises(schemes.UnknownSchemeError):
        await schemes.verify_async("x", "{NOPE}x", "PLAIN", USER)
