"""PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER in the auth process: the parsers of
``proxyd.protocols.sasl`` give the typed password (or bearer token), which the passdb
chain then verifies like Dovecot's ``auth_request_verify_plain()``."""

from __future__ import annotations

from proxyd.auth.mechanisms.base import Mechanism, Step
from proxyd.protocols.sasl import SaslServer


class Plaintext(Mechanism):
    """One of :data:`proxyd.protocols.sasl.SERVER_MECHANISMS`."""

    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]
        self._server = SaslServer.create(name)

    def start(self, initial_response: bytes | None) -> Step:
        return self._server.start(initial_response)

    def step(self, response: bytes) -> Step:
        return self._server.step(response)
