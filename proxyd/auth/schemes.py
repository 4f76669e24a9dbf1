"""Dovecot password schemes: verify a plaintext password against ``{SCHEME}data``, and make hashes.

Theory of operation (Dovecot's ``src/auth/password-scheme*.c``):

1. ``split_scheme()`` takes the scheme off a stored password: ``{SCHEME}data``,
   or a bare ``$1$salt$hash`` which is always MD5-CRYPT.  Without either, the
   passdb's default scheme applies.
2. The scheme name is case-insensitive and may carry an encoding suffix
   ``.HEX``, ``.B64`` or ``.BASE64``; any other suffix makes the scheme unknown.
3. The data is decoded to raw bytes.  Schemes with a fixed raw length and a
   hex/base64 default encoding guess the encoding when no suffix was given:
   exactly twice the raw length means hex (falling back to base64 when it is not
   valid hex), anything else base64.  The decoded length must then match.
4. The scheme verifies the plaintext against the raw bytes.

Outcomes: ``True`` (match), ``False`` (mismatch), ``UnknownSchemeError``
(Dovecot: "Unknown scheme", passdb result SCHEME_NOT_AVAILABLE) or
``InvalidPasswordDataError`` (Dovecot: "Password data is not valid for scheme"
/ "Invalid password in passdb", an internal failure).  No error message ever
contains the plaintext or the stored data.

The CPU-heavy schemes (SHA*-CRYPT, BLF-CRYPT, ARGON2*, PBKDF2, SCRAM) go through
``verify_async``, which runs ``verify`` in a worker thread under a limiter sized
to the CPU count.  crypt(3) schemes call the system libcrypt through ctypes
(``crypt_ffi``); libpass is the fallback when libcrypt is missing.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import math
import os
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import trio

from proxyd.auth import crypt_ffi
from proxyd.errors import ProxydError

__all__ = [
    "CredentialsUnavailableError",
    "InvalidPasswordDataError",
    "SchemeError",
    "UnknownSchemeError",
    "credentials",
    "generatable_schemes",
    "hash_password",
    "is_known_scheme",
    "known_schemes",
    "split_scheme",
    "verify",
    "verify_async",
]


class SchemeError(ProxydError):
    """A stored password could not be checked. Never carries the password or the hash."""


class UnknownSchemeError(SchemeError):
    """The scheme (or its encoding suffix) is not known: Dovecot's SCHEME_NOT_AVAILABLE."""

    def __init__(self, scheme: str) -> None:
        super().__init__(f"Unknown scheme {scheme}")
        self.scheme = scheme


class CredentialsUnavailableError(SchemeError):
    """The stored password cannot give the credentials a mechanism needs (Dovecot's text)."""


class InvalidPasswordDataError(SchemeError):
    """The stored data is not valid for its scheme: an internal failure in Dovecot."""


class _Enc(enum.Enum):
    NONE = "none"
    HEX = "hex"
    BASE64 = "base64"


#: ``(plaintext, raw stored bytes, user) -> match``; raises InvalidPasswordDataError
_Verifier = Callable[[bytes, bytes, str], bool]
#: ``(plaintext, user, rounds) -> raw bytes``; rounds 0 = the scheme's default
_Generator = Callable[[bytes, str, int], bytes]


@dataclass(frozen=True, slots=True)
class _Scheme:
    name: str
    encoding: _Enc
    raw_len: int  # 0 = variable
    verify: _Verifier | None  # None: generate and compare (deterministic schemes)
    generate: _Generator | None  # None: proxyd cannot produce this scheme


# Dovecot's salt alphabet (password_generate_salt)
_SALT_CHARS: Final = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BCRYPT_MAX_KEY: Final = 72


def _salt(length: int) -> bytes:
    return "".join(secrets.choice(_SALT_CHARS) for _ in range(length)).encode("ascii")


def _to_bytes(text: str) -> bytes:
    # surrogateescape: bytes a client sent that are not UTF-8 round-trip unchanged
    return text.encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------
# crypt(3) family


def _passlib_hash() -> Any:
    """libpass's handlers, only needed when libcrypt is missing."""
    from passlib import hash as handlers

    return handlers


def _passlib_handler(stored: bytes) -> Any | None:
    text = stored.decode("ascii", "replace")
    handlers = _passlib_hash()
    if text.startswith("$1$"):
        return handlers.md5_crypt
    if text.startswith("$5$"):
        return handlers.sha256_crypt
    if text.startswith("$6$"):
        return handlers.sha512_crypt
    if text[:4] in ("$2a$", "$2b$", "$2y$"):
        return handlers.bcrypt
    if len(text) == 13 and not text.startswith("$"):
        return handlers.des_crypt
    return None


def _crypt_equal(plaintext: bytes, stored: bytes) -> bool:
    """crypt(plaintext, stored) == stored, in constant time."""
    if crypt_ffi.available():
        result = crypt_ffi.crypt(plaintext, stored)
        return result is not None and hmac.compare_digest(result, stored)
    handler = _passlib_handler(stored)
    if handler is None or b"\0" in plaintext:
        return False
    try:
        return bool(handler.verify(plaintext, stored.decode("ascii")))
    except (ValueError, TypeError, UnicodeDecodeError):
        return False


def _crypt_hash(plaintext: bytes, setting: bytes, fallback: Callable[[Any], Any]) -> bytes:
    """crypt(plaintext, setting); ``fallback(passlib.hash)`` gives the handler to use without libcrypt."""
    if crypt_ffi.available():
        result = crypt_ffi.crypt(plaintext, setting)
        if result is None:
            raise SchemeError("crypt() failed to generate a hash")
        return result
    return str(fallback(_passlib_hash()).hash(plaintext)).encode("ascii")


def _verify_blowfish(plaintext: bytes, raw: bytes, _user: str) -> bool:
    if not raw:
        return False
    if (
        len(raw) < 30
        or not raw.startswith(b"$2")
        or not (0x61 <= raw[2] <= 0x7A)
        or raw[3:4] != b"$"
    ):
        raise InvalidPasswordDataError("Password is not blowfish password")
    # bcrypt uses only the first 72 key bytes; Dovecot's own crypt_blowfish
    # takes any length, while libxcrypt refuses phrases over 512 bytes.
    # Truncating first keeps long passwords matching as they do in Dovecot.
    return _crypt_equal(plaintext[:_BCRYPT_MAX_KEY], raw)


def _verify_crypt(plaintext: bytes, raw: bytes, user: str) -> bool:
    if len(raw) > 4 and raw.startswith(b"$2") and raw[3:4] == b"$":
        return _verify_blowfish(plaintext, raw, user)
    if not raw:
        return False  # crypt() with an empty setting would "match"
    return _crypt_equal(plaintext, raw)


def _verify_md5_crypt(plaintext: bytes, raw: bytes, _user: str) -> bool:
    if not raw.startswith(b"$1$"):
        # Dovecot's md5_crypt() always yields "$1$...", which cannot equal this
        return False
    return _crypt_equal(plaintext, raw)


def _generate_des(plaintext: bytes, _user: str, _rounds: int) -> bytes:
    salt = _salt(2)
    return _crypt_hash(plaintext, salt, lambda h: h.des_crypt.using(salt=salt.decode()))


def _generate_md5_crypt(plaintext: bytes, _user: str, _rounds: int) -> bytes:
    salt = _salt(8)
    return _crypt_hash(plaintext, b"$1$" + salt, lambda h: h.md5_crypt.using(salt=salt.decode()))


def _sha_crypt_generator(magic: bytes, handler_name: str) -> _Generator:
    def generate(plaintext: bytes, _user: str, rounds: int) -> bytes:
        rounds = min(max(rounds or 5000, 1000), 999_999_999)
        salt = _salt(16)
        # Dovecot leaves "rounds=" out at the default, as crypt(3) does
        prefix = magic if rounds == 5000 else magic + b"rounds=%d$" % rounds
        return _crypt_hash(
            plaintext,
            prefix + salt,
            lambda h: getattr(h, handler_name).using(salt=salt.decode(), rounds=rounds),
        )

    return generate


def _generate_blowfish(plaintext: bytes, _user: str, rounds: int) -> bytes:
    rounds = min(max(rounds or 5, 4), 31)
    setting = crypt_ffi.gensalt(b"$2y$", rounds) or b"$2y$%02d$" % rounds + _bcrypt_salt()
    return _crypt_hash(
        plaintext[:_BCRYPT_MAX_KEY], setting, lambda h: h.bcrypt.using(ident="2y", rounds=rounds)
    )


def _bcrypt_salt() -> bytes:
    # 22 characters of bcrypt's base64 alphabet; the last one carries only 4 bits
    alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    chars = [secrets.choice(alphabet) for _ in range(21)]
    chars.append(secrets.choice(alphabet[::16]))
    return "".join(chars).encode("ascii")


# ---------------------------------------------------------------------------
# plain digests and salted digests


def _digest_generator(name: str) -> _Generator:
    def generate(plaintext: bytes, _user: str, _rounds: int) -> bytes:
        return hashlib.new(name, plaintext).digest()

    return generate


def _md4_generate(plaintext: bytes, _user: str, _rounds: int) -> bytes:
    try:
        return hashlib.new("md4", plaintext).digest()  # noqa: S324 - the scheme is MD4
    except ValueError:
        # OpenSSL 3 dropped MD4 from the default provider; libpass has one
        from passlib.crypto.digest import lookup_hash

        digest: bytes = lookup_hash("md4").const(plaintext).digest()
        return digest


def _salted_generator(name: str) -> _Generator:
    def generate(plaintext: bytes, _user: str, _rounds: int) -> bytes:
        salt = secrets.token_bytes(4)
        return hashlib.new(name, plaintext + salt).digest() + salt

    return generate


def _salted_verifier(name: str, scheme: str) -> _Verifier:
    size = hashlib.new(name).digest_size

    def verify(plaintext: bytes, raw: bytes, _user: str) -> bool:
        if len(raw) <= size:
            raise InvalidPasswordDataError(f"{scheme} password is too short")
        digest = hashlib.new(name, plaintext + raw[size:]).digest()
        return hmac.compare_digest(digest, raw[:size])

    return verify


def _plain_generate(plaintext: bytes, _user: str, _rounds: int) -> bytes:
    return plaintext


def _plain_verify(plaintext: bytes, raw: bytes, _user: str) -> bool:
    return hmac.compare_digest(plaintext, raw)


def _plain_trunc_verify(plaintext: bytes, raw: bytes, _user: str) -> bool:
    # format: <length>-<password>; a longer input matches if its prefix does
    digits = len(raw) - len(raw.lstrip(b"0123456789"))
    if digits == len(raw) or raw[digits : digits + 1] != b"-":
        raise InvalidPasswordDataError("PLAIN-TRUNC missing length: prefix")
    trunc_len = int(raw[:digits]) if digits else 0
    stored = raw[digits + 1 :]
    if len(stored) == trunc_len and len(plaintext) >= trunc_len:
        return hmac.compare_digest(stored, plaintext[:trunc_len])
    return hmac.compare_digest(stored, plaintext)


def _md5_verify(plaintext: bytes, raw: bytes, user: str) -> bool:
    # MD5 = MD5-CRYPT when the data looks like one, else PLAIN-MD5
    if raw.startswith(b"$1$"):
        return _crypt_equal(plaintext, raw)
    try:
        decoded = _decode(raw.decode("ascii"), _SCHEMES["PLAIN-MD5"], _Enc.HEX, guess=True)
    except (InvalidPasswordDataError, UnicodeDecodeError):
        raise InvalidPasswordDataError("Not a valid MD5-CRYPT or PLAIN-MD5 password") from None
    return hmac.compare_digest(hashlib.md5(plaintext).digest(), decoded)  # noqa: S324


def _digest_md5_generate(plaintext: bytes, user: str, _rounds: int) -> bytes:
    # user@realm; "user@domain@realm" keeps the domain in the user part
    name, sep, realm = user.rpartition("@")
    if not sep:
        name, realm = user, ""
    return hashlib.md5(_to_bytes(f"{name}:{realm}:") + plaintext).digest()  # noqa: S324


# ---------------------------------------------------------------------------
# CRAM-MD5: the HMAC-MD5 inner and outer states after one key block


_MD5_INIT: Final = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
_MD5_S: Final = (7, 12, 17, 22) * 4 + (5, 9, 14, 20) * 4 + (4, 11, 16, 23) * 4 + (6, 10, 15, 21) * 4
_MD5_K: Final = tuple(int(abs(math.sin(i + 1)) * 2**32) & 0xFFFFFFFF for i in range(64))


def _md5_compress(
    block: bytes, state: tuple[int, int, int, int] = _MD5_INIT
) -> tuple[int, int, int, int]:
    """MD5's compression function on one 64-byte block from ``state``."""
    x = struct.unpack("<16I", block)
    a, b, c, d = state
    for i in range(64):
        if i < 16:
            f, g = (b & c) | (~b & d), i
        elif i < 32:
            f, g = (d & b) | (~d & c), (5 * i + 1) % 16
        elif i < 48:
            f, g = b ^ c ^ d, (3 * i + 5) % 16
        else:
            f, g = c ^ (b | ~d), (7 * i) % 16
        f = (f + a + _MD5_K[i] + x[g]) & 0xFFFFFFFF
        a, d, c = d, c, b
        b = (b + ((f << _MD5_S[i]) | (f >> (32 - _MD5_S[i])))) & 0xFFFFFFFF
    return (
        (a + state[0]) & 0xFFFFFFFF,
        (b + state[1]) & 0xFFFFFFFF,
        (c + state[2]) & 0xFFFFFFFF,
        (d + state[3]) & 0xFFFFFFFF,
    )


def _md5_resume(state: tuple[int, int, int, int], data: bytes) -> bytes:
    """MD5 of one 64-byte block (already folded into ``state``) followed by ``data``."""
    length = 64 + len(data)
    padded = data + b"\x80" + b"\0" * ((55 - len(data)) % 64) + struct.pack("<Q", length * 8)
    for offset in range(0, len(padded), 64):
        state = _md5_compress(padded[offset : offset + 64], state)
    return struct.pack("<4I", *state)


def cram_md5_digest(context: bytes, challenge: bytes) -> bytes:
    """HMAC-MD5 of ``challenge`` from stored ``{CRAM-MD5}`` credentials (Dovecot's ``hmac_md5_set_cram_context``)."""
    w = struct.unpack("<8I", context)
    outer, inner = (w[0], w[1], w[2], w[3]), (w[4], w[5], w[6], w[7])
    return _md5_resume(outer, _md5_resume(inner, challenge))


def _cram_md5_generate(plaintext: bytes, _user: str, _rounds: int) -> bytes:
    key = hashlib.md5(plaintext).digest() if len(plaintext) > 64 else plaintext  # noqa: S324
    key = key.ljust(64, b"\0")
    inner = _md5_compress(bytes(k ^ 0x36 for k in key))
    outer = _md5_compress(bytes(k ^ 0x5C for k in key))
    return struct.pack("<8I", *outer, *inner)


# ---------------------------------------------------------------------------
# PBKDF2, SCRAM, Argon2


def _parse_uint(text: bytes) -> int | None:
    return int(text) if text.isdigit() and len(text) < 11 else None


def _pbkdf2_verify(plaintext: bytes, raw: bytes, _user: str) -> bool:
    # $1$<salt>$<rounds>$<40 hex digits>
    if not raw.startswith(b"$1$"):
        raise InvalidPasswordDataError("Invalid PBKDF2 passdb entry prefix")
    fields = raw[3:].split(b"$")
    rounds = _parse_uint(fields[1]) if len(fields) == 3 else None
    if rounds is None:
        raise InvalidPasswordDataError("Invalid PBKDF2 passdb entry format")
    try:
        if len(fields[2]) != 40:
            raise ValueError
        expected = binascii.unhexlify(fields[2])
    except (ValueError, binascii.Error):
        raise InvalidPasswordDataError("PBKDF2 hash not 160bit hex-encoded") from None
    if rounds == 0:
        return False  # pbkdf2 with zero iterations yields no key in Dovecot
    key = hashlib.pbkdf2_hmac("sha1", plaintext, fields[0], rounds, 20)
    return hmac.compare_digest(key, expected)


def _pbkdf2_generate(plaintext: bytes, _user: str, rounds: int) -> bytes:
    rounds = rounds or 5000
    salt = _salt(16)
    key = hashlib.pbkdf2_hmac("sha1", plaintext, salt, rounds, 20)
    return b"$1$%s$%d$%s" % (salt, rounds, key.hex().encode("ascii"))


def _b64decode_lenient(data: bytes) -> bytes:
    """Dovecot's base64 decoder: whitespace skipped, padding optional."""
    compact = b"".join(data.split())
    compact += b"=" * (-len(compact) % 4)
    return base64.b64decode(compact, validate=True)


def _scram_verifier(name: str, scheme: str) -> _Verifier:
    size = hashlib.new(name).digest_size

    def verify(plaintext: bytes, raw: bytes, _user: str) -> bool:
        fields = raw.split(b",")
        if len(fields) != 4:
            raise InvalidPasswordDataError(f"Invalid {scheme} passdb entry format")
        iterations = _parse_uint(fields[0])
        if iterations is None or not 4096 <= iterations <= 2**31 - 1:
            raise InvalidPasswordDataError(f"Invalid {scheme} iteration count in passdb")
        try:
            stored_key = _b64decode_lenient(fields[2])
            server_key = _b64decode_lenient(fields[3])
        except (ValueError, binascii.Error):
            raise InvalidPasswordDataError(f"Invalid {scheme} StoredKey in passdb") from None
        if len(stored_key) != size or len(server_key) != size:
            raise InvalidPasswordDataError(f"Invalid {scheme} StoredKey in passdb")
        try:
            salt = _b64decode_lenient(fields[1])
        except (ValueError, binascii.Error):
            salt = b""
        salted = hashlib.pbkdf2_hmac(name, plaintext, salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", name)
        return hmac.compare_digest(hashlib.new(name, client_key).digest(), stored_key)

    return verify


def _scram_generator(name: str) -> _Generator:
    def generate(plaintext: bytes, _user: str, _rounds: int) -> bytes:
        iterations = 4096
        salt = secrets.token_bytes(16)
        salted = hashlib.pbkdf2_hmac(name, plaintext, salt, iterations)
        stored_key = hashlib.new(name, hmac.digest(salted, b"Client Key", name)).digest()
        server_key = hmac.digest(salted, b"Server Key", name)
        parts = (base64.b64encode(v) for v in (salt, stored_key, server_key))
        return b"%d,%s" % (iterations, b",".join(parts))

    return generate


def _argon2_verify(plaintext: bytes, raw: bytes, _user: str) -> bool:
    # libsodium's crypto_pwhash_str_verify: anything unverifiable is a mismatch
    from passlib.hash import argon2

    try:
        return bool(argon2.verify(plaintext, raw.decode("ascii")))
    except (ValueError, TypeError, UnicodeDecodeError):
        return False


# libsodium's OPSLIMIT/MEMLIMIT tables, as Dovecot picks them from the rounds
_MIB: Final = 1024
_ARGON2I_LIMITS: Final = ((8, 512 * _MIB), (6, 128 * _MIB), (0, 32 * _MIB))
_ARGON2ID_LIMITS: Final = ((4, 1024 * _MIB), (3, 256 * _MIB), (0, 64 * _MIB))


def _argon2_generator(kind: str) -> _Generator:
    def generate(plaintext: bytes, _user: str, rounds: int) -> bytes:
        from passlib.hash import argon2

        if kind == "I":
            rounds = rounds or 4
            limits = _ARGON2I_LIMITS
        else:
            rounds = rounds or 2
            limits = _ARGON2ID_LIMITS
        memory = next(mem for ops, mem in limits if rounds >= ops)
        if kind == "ID":
            rounds = max(rounds, 3)  # Dovecot works around a libsodium 1.0.13 bug
        handler = argon2.using(
            type=kind,
            rounds=rounds,
            memory_cost=memory,
            parallelism=1,
            salt_size=16,
            digest_size=32,
        )
        return str(handler.hash(plaintext)).encode("ascii")

    return generate


# ---------------------------------------------------------------------------
# the registry


def _build() -> dict[str, _Scheme]:
    n, h, b = _Enc.NONE, _Enc.HEX, _Enc.BASE64
    sha256_crypt = _sha_crypt_generator(b"$5$", "sha256_crypt")
    sha512_crypt = _sha_crypt_generator(b"$6$", "sha512_crypt")
    table = [
        _Scheme("PLAIN", n, 0, _plain_verify, _plain_generate),
        _Scheme("CLEAR", n, 0, _plain_verify, _plain_generate),
        _Scheme("CLEARTEXT", n, 0, _plain_verify, _plain_generate),
        _Scheme("PLAIN-TRUNC", n, 0, _plain_trunc_verify, None),
        _Scheme("CRYPT", n, 0, _verify_crypt, _generate_blowfish),
        _Scheme("DES-CRYPT", n, 0, _verify_crypt, _generate_des),
        _Scheme("MD5-CRYPT", n, 0, _verify_md5_crypt, _generate_md5_crypt),
        _Scheme("SHA256-CRYPT", n, 0, _verify_crypt, sha256_crypt),
        _Scheme("SHA512-CRYPT", n, 0, _verify_crypt, sha512_crypt),
        _Scheme("BLF-CRYPT", n, 0, _verify_blowfish, _generate_blowfish),
        _Scheme("MD5", n, 0, _md5_verify, _generate_md5_crypt),
        _Scheme("PLAIN-MD5", h, 16, None, _digest_generator("md5")),
        _Scheme("LDAP-MD5", b, 16, None, _digest_generator("md5")),
        _Scheme("PLAIN-MD4", h, 16, None, _md4_generate),
        _Scheme("SHA", b, 20, None, _digest_generator("sha1")),
        _Scheme("SHA1", b, 20, None, _digest_generator("sha1")),
        _Scheme("SHA256", b, 32, None, _digest_generator("sha256")),
        _Scheme("SHA512", b, 64, None, _digest_generator("sha512")),
        _Scheme("SMD5", b, 0, _salted_verifier("md5", "SMD5"), _salted_generator("md5")),
        _Scheme("SSHA", b, 0, _salted_verifier("sha1", "SSHA"), _salted_generator("sha1")),
        _Scheme(
            "SSHA256", b, 0, _salted_verifier("sha256", "SSHA256"), _salted_generator("sha256")
        ),
        _Scheme(
            "SSHA512", b, 0, _salted_verifier("sha512", "SSHA512"), _salted_generator("sha512")
        ),
        _Scheme("CRAM-MD5", h, 32, None, _cram_md5_generate),
        _Scheme("HMAC-MD5", h, 32, None, _cram_md5_generate),
        _Scheme("DIGEST-MD5", h, 16, None, _digest_md5_generate),
        _Scheme("PBKDF2", n, 0, _pbkdf2_verify, _pbkdf2_generate),
        _Scheme(
            "SCRAM-SHA-1", n, 0, _scram_verifier("sha1", "SCRAM-SHA-1"), _scram_generator("sha1")
        ),
        _Scheme(
            "SCRAM-SHA-256",
            n,
            0,
            _scram_verifier("sha256", "SCRAM-SHA-256"),
            _scram_generator("sha256"),
        ),
        _Scheme("ARGON2I", n, 0, _argon2_verify, _argon2_generator("I")),
        _Scheme("ARGON2ID", n, 0, _argon2_verify, _argon2_generator("ID")),
    ]
    return {s.name: s for s in table}


_SCHEMES: Final = _build()


def _lookup(scheme: str) -> tuple[_Scheme, _Enc, bool]:
    """Scheme, encoding and whether the encoding was given by a suffix."""
    name, dot, suffix = scheme.partition(".")
    found = _SCHEMES.get(name.upper())
    if found is None:
        raise UnknownSchemeError(scheme)
    if not dot:
        return found, found.encoding, False
    lowered = suffix.lower()
    if lowered in ("b64", "base64"):
        return found, _Enc.BASE64, True
    if lowered == "hex":
        return found, _Enc.HEX, True
    raise UnknownSchemeError(scheme)


def _decode(data: str, scheme: _Scheme, encoding: _Enc, *, guess: bool) -> bytes:
    raw_data = _to_bytes(data)
    if encoding is _Enc.NONE:
        return raw_data
    if guess and scheme.raw_len:
        encoding = _Enc.HEX if len(raw_data) == scheme.raw_len * 2 else _Enc.BASE64
    else:
        guess = False
    decoded: bytes | None = None
    if encoding is _Enc.HEX:
        try:
            decoded = binascii.unhexlify(raw_data)
        except (binascii.Error, ValueError):
            if not guess:
                raise InvalidPasswordDataError("Input isn't valid HEX encoded data") from None
            # some lengths look like hex but are base64 after all
    if decoded is None:
        try:
            decoded = _b64decode_lenient(raw_data)
        except (binascii.Error, ValueError):
            raise InvalidPasswordDataError("Input isn't valid base64 encoded data") from None
    if scheme.raw_len and len(decoded) != scheme.raw_len:
        raise InvalidPasswordDataError(
            f"Input length isn't valid ({len(decoded)} instead of {scheme.raw_len})"
        )
    return decoded


def split_scheme(stored: str) -> tuple[str | None, str]:
    """Dovecot's ``password_get_scheme()``: ``(scheme or None, data)``.

    A bare ``$1$salt$hash[$ignored]`` is MD5-CRYPT (anything after the hash is
    dropped); ``{SCHEME}data`` gives SCHEME; anything else has no scheme.
    """
    if stored.startswith("$1$"):
        second = stored.find("$", 3)
        if second != -1:
            third = stored.find("$", second + 1)
            return "MD5-CRYPT", stored if third == -1 else stored[:third]
    if stored.startswith("{"):
        end = stored.find("}")
        if end != -1:
            return stored[1:end], stored[end + 1 :]
    return None, stored


def is_known_scheme(scheme: str) -> bool:
    """True if ``scheme`` (with an optional encoding suffix) can be verified."""
    try:
        _lookup(scheme)
    except UnknownSchemeError:
        return False
    return True


def known_schemes() -> tuple[str, ...]:
    """Every scheme name ``verify`` understands."""
    return tuple(_SCHEMES)


def generatable_schemes() -> tuple[str, ...]:
    """Every scheme name ``hash_password`` can produce."""
    return tuple(name for name, s in _SCHEMES.items() if s.generate is not None)


def verify(password: str, stored: str, default_scheme: str, user: str) -> bool:
    """Check ``password`` against a stored password, Dovecot style.

    ``stored`` is ``{SCHEME}data`` or bare data in ``default_scheme``.  ``user``
    is the login name as the client gave it (DIGEST-MD5 hashes include it).
    Returns True on match, False on mismatch; raises ``UnknownSchemeError`` or
    ``InvalidPasswordDataError``.  Synchronous and CPU-bound: async code calls
    ``verify_async``.
    """
    scheme_name, data = split_scheme(stored)
    if scheme_name is None:
        scheme_name = default_scheme
    scheme, encoding, explicit = _lookup(scheme_name)
    raw = _decode(data, scheme, encoding, guess=not explicit)
    plaintext = _to_bytes(password)
    if b"\0" in plaintext:
        return False  # Dovecot's C strings could never carry it
    if scheme.verify is not None:
        return scheme.verify(plaintext, raw, user)
    if scheme.generate is None:  # pragma: no cover - every table entry has one of the two
        raise UnknownSchemeError(scheme_name)
    return hmac.compare_digest(scheme.generate(plaintext, user, 0), raw)


#: schemes that are the same as another (Dovecot's ``password_scheme_is_alias()``)
_ALIASES: Final = {"CLEAR": "PLAIN", "CLEARTEXT": "PLAIN", "HMAC-MD5": "CRAM-MD5", "SHA1": "SHA"}


def _canonical(name: str) -> str:
    return _ALIASES.get(name, name)


def credentials(stored: str, default_scheme: str, wanted: str, user: str) -> bytes:
    """The raw credentials in scheme ``wanted`` from a stored password (``passdb_get_credentials()``).

    A password stored in ``wanted`` (or an alias) gives its decoded data; a
    plaintext one is hashed into ``wanted`` (``user`` for DIGEST-MD5); any
    other raises ``CredentialsUnavailableError`` with Dovecot's log text.
    Also raises ``UnknownSchemeError`` / ``InvalidPasswordDataError`` as ``verify``.
    """
    scheme_name, data = split_scheme(stored)
    if scheme_name is None:
        scheme_name = default_scheme
    scheme, encoding, explicit = _lookup(scheme_name)
    raw = _decode(data, scheme, encoding, guess=not explicit)
    target, _encoding, _explicit = _lookup(wanted)
    if _canonical(scheme.name) == _canonical(target.name):
        return raw
    if _canonical(scheme.name) != "PLAIN" or target.generate is None:
        raise CredentialsUnavailableError(
            f"Requested {wanted} scheme, but we have only {scheme_name}"
        )
    return target.generate(raw, user, 0)


_LIMITER: Final[trio.lowlevel.RunVar[trio.CapacityLimiter]] = trio.lowlevel.RunVar(
    "schemes_limiter"
)


def _limiter() -> trio.CapacityLimiter:
    try:
        return _LIMITER.get()
    except LookupError:
        return set_worker_limit(_DEFAULT_WORKERS)


#: Dovecot's auth_worker_max_count default
_DEFAULT_WORKERS: Final = 30


def set_worker_limit(count: int) -> trio.CapacityLimiter:
    """``auth_worker_max_count``: at most this many hashing jobs at a time, and one per CPU.

    Dovecot runs its blocking password checks in up to this many auth worker
    processes; here they are threads of the auth process, and more of them than
    CPUs would only queue inside the kernel instead of here.
    """
    limiter = trio.CapacityLimiter(max(1, min(count, len(os.sched_getaffinity(0)))))
    _LIMITER.set(limiter)
    return limiter


async def verify_async(password: str, stored: str, default_scheme: str, user: str) -> bool:
    """``verify`` in a worker thread, at most one thread per CPU at a time."""
    return await trio.to_thread.run_sync(
        verify, password, stored, default_scheme, user, limiter=_limiter()
    )


async def credentials_async(stored: str, default_scheme: str, wanted: str, user: str) -> bytes:
    """``credentials`` in a worker thread (SCRAM credentials from a plaintext password cost PBKDF2)."""
    return await trio.to_thread.run_sync(
        credentials, stored, default_scheme, wanted, user, limiter=_limiter()
    )


#: the cheapest ``rounds`` of the schemes that take them: ``preload`` only needs the code paths
_PRELOAD_ROUNDS: Final = {"BLF-CRYPT": 4, "CRYPT": 4, "SHA256-CRYPT": 1000, "SHA512-CRYPT": 1000, "PBKDF2": 1}


def preload() -> None:
    """Hash and verify once in every scheme, so that everything they use is loaded now:
    libcrypt, libpass's handlers and their backends (argon2-cffi), OpenSSL's digests and
    whatever those import lazily.  Called before the processes drop privileges: afterwards
    those files can be out of reach (a chroot; a Python under root's 0700 HOME)."""
    from passlib.hash import argon2

    for name, scheme in _SCHEMES.items():
        if scheme.generate is None:
            continue
        if name.startswith("ARGON2"):
            # the smallest Argon2 there is: the default memory costs would take 32-64 MiB here
            cheap = argon2.using(type=name[len("ARGON2"):], rounds=1, memory_cost=8, parallelism=1)
            stored = f"{{{name}}}{cheap.hash('x')}"
        else:
            stored = hash_password("x", name, user="x", rounds=_PRELOAD_ROUNDS.get(name, 0))
        if not verify("x", stored, "PLAIN", "x"):
            raise SchemeError(f"{name}: a fresh hash does not verify")


def hash_password(password: str, scheme: str, *, user: str = "", rounds: int = 0) -> str:
    """A new hash of ``password`` in Dovecot's ``{SCHEME}data`` form (``doveadm pw``).

    ``scheme`` may carry ``.HEX``/``.B64`` to choose the encoding.  ``user`` is
    needed by DIGEST-MD5; ``rounds`` (0 = Dovecot's default) applies to the
    crypt, PBKDF2 and Argon2 schemes.  Raises ``UnknownSchemeError`` for a
    scheme proxyd cannot produce.
    """
    found, encoding, _explicit = _lookup(scheme)
    if found.generate is None:
        raise UnknownSchemeError(scheme)
    raw = found.generate(_to_bytes(password), user, rounds)
    if encoding is _Enc.HEX:
        text = raw.hex()
    elif encoding is _Enc.BASE64:
        text = base64.b64encode(raw).decode("ascii")
    else:
        text = raw.decode("utf-8", "surrogateescape")
    return f"{{{scheme.upper()}}}{text}"
