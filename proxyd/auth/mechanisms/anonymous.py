"""ANONYMOUS (RFC 4505), as Dovecot's ``mech-anonymous.c``: any trace string logs in as
``auth_anonymous_username``."""

from __future__ import annotations

from proxyd.auth.mechanisms.base import AnonymousLogin, OneResponse, Step


class Anonymous(OneResponse):
    name = "ANONYMOUS"

    def _answer(self, response: bytes) -> Step:
        # NULs are allowed (MECH_SEC_ALLOW_NULS); the trace is only logged
        return AnonymousLogin(response.decode("utf-8", "replace"))
