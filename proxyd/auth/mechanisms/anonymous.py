"""ANONYMOUS (RFC 4505), as Dovecot's ``mech-anonymous.c``: any trace string logs in as
``auth_anonymous_username``."""

from __future__ import annotations

from proxyd.auth.mechanisms.base import AnonymousLogin, Mechanism, Step
from proxyd.protocols.sasl import SaslFailed


class Anonymous(Mechanism):
    name = "ANONYMOUS"

    def __init__(self) -> None:
        self._done = False

    def step(self, response: bytes) -> Step:
        if self._done:
            return SaslFailed("Unexpected continuation")
        self._done = True
        # NULs are allowed (MECH_SEC_ALLOW_NULS); the trace is only logged
        return AnonymousLogin(response.decode("utf-8", "replace"))
