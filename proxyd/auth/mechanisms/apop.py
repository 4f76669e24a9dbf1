"""APOP (RFC 1939), as Dovecot's ``mech-apop.c``: the POP3 login process sends the greeting's
challenge, the user and the client's digest; the digest is ``MD5(challenge password)``."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Final

from proxyd.auth.mechanisms.base import PASSWORD_MISMATCH, Mechanism, NeedCredentials, Step, Success
from proxyd.protocols.sasl import SaslFailed

#: challenges older than this auth process cannot be its login processes' (Dovecot's check)
_STARTED: Final = time.time()
_CHALLENGE: Final = re.compile(r"<([0-9a-fA-F]+)\.([0-9a-fA-F]+)\.([0-9a-fA-F]+)\.")


class Apop(Mechanism):
    name = "APOP"

    def __init__(self) -> None:
        self._challenge = b""
        self._digest = b""

    def start(self, initial_response: bytes | None) -> Step:
        if not initial_response:
            return SaslFailed("no initial response")
        parts = initial_response.split(b"\0", 2)
        if len(parts) != 3 or len(parts[2]) != 16:
            return SaslFailed("malformed data")
        challenge, user_raw, self._digest = parts
        match = _CHALLENGE.match(challenge.decode("ascii", "replace"))
        if match is None or int(match.group(3), 16) < int(_STARTED):
            return SaslFailed("invalid challenge")
        try:
            user = user_raw.decode("utf-8")
        except UnicodeDecodeError:
            return SaslFailed("invalid input (not UTF-8)")
        self._challenge = challenge
        return NeedCredentials(user, "", "PLAIN", user)

    def step(self, response: bytes) -> Step:
        return SaslFailed("Unexpected continuation")

    def credentials(self, raw: bytes) -> Step:
        digest = hashlib.md5(self._challenge + raw).digest()  # noqa: S324 - the RFC's hash
        if not hmac.compare_digest(digest, self._digest):
            return SaslFailed(PASSWORD_MISMATCH)
        return Success()
