"""CRAM-MD5 (RFC 2195), as Dovecot's ``mech-cram-md5.c``."""

from __future__ import annotations

import hmac
import secrets
import socket
import time

from proxyd.auth.mechanisms.base import (
    PASSWORD_MISMATCH,
    NeedCredentials,
    OneResponse,
    Step,
    Success,
)
from proxyd.auth.schemes import cram_md5_digest
from proxyd.protocols.sasl import Challenge, SaslFailed

_CONTEXT_LEN = 32


def new_challenge() -> bytes:
    """``<16 random digits.unix time@hostname>``."""
    digits = "".join(str(secrets.randbelow(10)) for _ in range(16))
    return f"<{digits}.{int(time.time())}@{socket.gethostname()}>".encode()


class CramMD5(OneResponse):
    name = "CRAM-MD5"

    def __init__(self) -> None:
        self._challenge = b""
        self._response = b""

    def start(self, initial_response: bytes | None) -> Step:
        # any initial response is ignored: the server speaks first
        self._challenge = new_challenge()
        return Challenge(self._challenge)

    def _answer(self, response: bytes) -> Step:
        if b"\0" in response:
            return SaslFailed("NULs in response")
        # the user name may contain spaces: the digest follows the last one
        space = response.rfind(b" ")
        if space <= 0:
            return SaslFailed("missing digest")
        try:
            user = response[:space].decode("utf-8")
        except UnicodeDecodeError:
            return SaslFailed("invalid input (not UTF-8)")
        self._response = response[space + 1 :]
        return NeedCredentials(user, "", self.name, user)

    def credentials(self, raw: bytes) -> Step:
        if len(raw) != _CONTEXT_LEN:
            return SaslFailed("invalid credentials length")
        expected = cram_md5_digest(raw, self._challenge).hex().encode()
        if not hmac.compare_digest(expected, self._response[:32].ljust(32, b"\0")):
            return SaslFailed(PASSWORD_MISMATCH)
        return Success()
