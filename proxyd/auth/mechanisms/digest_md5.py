"""DIGEST-MD5 (RFC 2831) with qop=auth only, as Dovecot's ``mech-digest-md5.c``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from proxyd.auth.mechanisms.base import (
    PASSWORD_MISMATCH,
    NeedCredentials,
    OneResponse,
    Step,
    Success,
)
from proxyd.protocols.digest_md5 import DigestParseError, DigestResponse, challenge, parse_response
from proxyd.protocols.sasl import Challenge, SaslFailed

_MD5_LEN = 16


def _md5_hex(*parts: bytes) -> bytes:
    return hashlib.md5(b"".join(parts)).hexdigest().encode()  # noqa: S324 - the RFC's hash


def response_value(
    credentials: bytes, nonce: str, reply: DigestResponse, *, a2_prefix: bytes
) -> bytes:
    """``HEX(KD(HEX(H(A1)), nonce:nc:cnonce:qop:HEX(H(A2))))``; A2 starts ``AUTHENTICATE:`` or ``:``."""
    a1 = [credentials, b":", nonce.encode(), b":", reply.cnonce.encode()]
    if reply.authzid:
        a1 += [b":", reply.authzid.encode()]
    a1_hex = _md5_hex(*a1)
    a2 = [a2_prefix, (reply.digest_uri or "").encode()]
    if reply.qop.lower() in ("auth-int", "auth-conf"):  # pragma: no cover - never offered
        a2.append(b":" + b"0" * 32)
    a2_hex = _md5_hex(*a2)
    fields = (nonce, reply.nonce_count, reply.cnonce, reply.qop)
    return _md5_hex(a1_hex, b":", ":".join(fields).encode(), b":", a2_hex)


class DigestMD5(OneResponse):
    name = "DIGEST-MD5"

    def __init__(self, realms: tuple[str, ...] = ()) -> None:
        self._realms = realms
        self._nonce = base64.b64encode(secrets.token_bytes(16)).decode("ascii")
        self._reply: DigestResponse | None = None

    def start(self, initial_response: bytes | None) -> Step:
        # no subsequent authentication: an initial response is ignored
        return Challenge(challenge(self._nonce, self._realms))

    def _answer(self, response: bytes) -> Step:
        try:
            reply = parse_response(response, self._nonce)
        except DigestParseError as exc:
            return SaslFailed(str(exc))
        self._reply = reply
        user = reply.username
        if reply.realm and "@" not in user:
            user = f"{user}@{reply.realm}"
            scheme_user = user
        else:
            # the domain is not the realm: hash as user@domain with an empty realm
            scheme_user = f"{user}@{reply.realm}" if "@" in user else user
        return NeedCredentials(user, reply.authzid, self.name, scheme_user)

    def credentials(self, raw: bytes) -> Step:
        reply = self._reply
        assert reply is not None
        if len(raw) != _MD5_LEN:
            return SaslFailed("invalid credentials length")
        expected = response_value(raw, self._nonce, reply, a2_prefix=b"AUTHENTICATE:")
        if not hmac.compare_digest(expected, reply.response.encode().ljust(32, b"\0")):
            return SaslFailed(PASSWORD_MISMATCH)
        rspauth = response_value(raw, self._nonce, reply, a2_prefix=b":")
        return Success(b"rspauth=" + rspauth)
