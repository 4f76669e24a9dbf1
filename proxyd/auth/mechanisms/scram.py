"""SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802/7677) without channel binding, as Dovecot's ``mech-scram.c``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import string

from proxyd.auth.mechanisms.base import PASSWORD_MISMATCH, Mechanism, NeedCredentials, Step, Success
from proxyd.protocols.sasl import Challenge, SaslFailed
from proxyd.protocols.scram import (
    ClientFirst,
    ScramParseError,
    channel_binding,
    parse_client_final,
    parse_client_first,
    server_final,
    server_first,
)

#: Dovecot's SCRAM_SERVER_NONCE_LEN: printable characters, never ','
_SERVER_NONCE_LEN = 64
_NONCE_CHARS = "".join(c for c in string.printable if "!" <= c <= "~" and c != ",")
#: Dovecot's SCRAM_MIN_ITERATE_COUNT / SCRAM_MAX_ITERATE_COUNT
_MIN_ITERATIONS = 4096
_MAX_ITERATIONS = 2**31 - 1


def _b64(data: str) -> bytes | None:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


class _Scram(Mechanism):
    hash_name = ""

    def __init__(self) -> None:
        self._digest_size = hashlib.new(self.hash_name).digest_size
        self._first: ClientFirst | None = None
        self._server_first = ""
        self._nonce = ""
        self._stored_key = b""
        self._server_key = b""
        self._done = False

    def step(self, response: bytes) -> Step:
        if self._done:
            return SaslFailed("Unexpected continuation")
        try:
            if self._first is None:
                self._first = parse_client_first(response)
                return NeedCredentials(self._first.username, self._first.authzid, self.name, self._first.username)
            self._done = True
            return self._final(response)
        except ScramParseError as exc:
            self._done = True
            return SaslFailed(str(exc))

    def credentials(self, raw: bytes) -> Step:
        """``scram_scheme_parse()``: ``iterations,salt,StoredKey,ServerKey``, then server-first."""
        assert self._first is not None
        fields = raw.decode("ascii", "replace").split(",")
        if len(fields) != 4:
            return SaslFailed(f"Invalid {self.name} passdb entry format")
        iterations_text, salt, stored, server = fields
        if not iterations_text.isascii() or not iterations_text.isdigit() or not (
            _MIN_ITERATIONS <= int(iterations_text) <= _MAX_ITERATIONS
        ):
            return SaslFailed(f"Invalid {self.name} iteration count in passdb")
        stored_key, server_key = _b64(stored), _b64(server)
        if stored_key is None or len(stored_key) != self._digest_size:
            return SaslFailed(f"Invalid {self.name} StoredKey in passdb")
        if server_key is None or len(server_key) != self._digest_size:
            return SaslFailed(f"Invalid {self.name} ServerKey in passdb")
        self._stored_key, self._server_key = stored_key, server_key
        snonce = "".join(secrets.choice(_NONCE_CHARS) for _ in range(_SERVER_NONCE_LEN))
        self._nonce = self._first.cnonce + snonce
        message = server_first(self._nonce, salt, int(iterations_text))
        self._server_first = message.decode()
        return Challenge(message)

    def _final(self, response: bytes) -> Step:
        first = self._first
        assert first is not None
        if not self._server_first:
            return SaslFailed("Unexpected continuation")  # pragma: no cover - credentials come first
        final = parse_client_final(response, self._digest_size)
        if final.channel_binding != channel_binding(first.gs2_header):
            return SaslFailed("Invalid channel binding data")
        if final.nonce != "r=" + self._nonce:
            return SaslFailed("Wrong nonce")
        auth_message = f"{first.bare},{self._server_first},{final.without_proof}".encode()
        signature = hmac.digest(self._stored_key, auth_message, self.hash_name)
        client_key = bytes(a ^ b for a, b in zip(final.proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.new(self.hash_name, client_key).digest(), self._stored_key):
            return SaslFailed(PASSWORD_MISMATCH)
        return Success(server_final(hmac.digest(self._server_key, auth_message, self.hash_name)))


class ScramSHA1(_Scram):
    name = "SCRAM-SHA-1"
    hash_name = "sha1"


class ScramSHA256(_Scram):
    name = "SCRAM-SHA-256"
    hash_name = "sha256"
