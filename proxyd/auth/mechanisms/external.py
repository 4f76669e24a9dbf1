"""EXTERNAL (RFC 4422 appendix A), as Dovecot's ``mech-external.c``: the user is the one the
TLS client certificate names (``auth_ssl_username_from_cert``); the client may only name an
authorization identity.  The passdb is then asked as for an empty password, so it must
have ``nopassword``."""

from __future__ import annotations

from proxyd.auth.mechanisms.base import OneResponse, Step
from proxyd.protocols.sasl import Credentials, SaslFailed


class External(OneResponse):
    name = "EXTERNAL"

    def _answer(self, response: bytes) -> Step:
        try:
            authzid = response.split(b"\0", 1)[0].decode("utf-8")
        except UnicodeDecodeError:
            return SaslFailed("invalid input (not UTF-8)")
        # the authentication identity is the certificate's: filled in by the auth process
        return Credentials(authzid, "", "")
