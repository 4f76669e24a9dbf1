"""The steps a mechanism returns, and the mechanism interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from proxyd.protocols.sasl import Challenge, Credentials, SaslFailed

#: Dovecot's AUTH_LOG_MSG_PASSWORD_MISMATCH
PASSWORD_MISMATCH = "Password mismatch"  # noqa: S105 - a log text


@dataclass(frozen=True, slots=True)
class NeedCredentials:
    """Look the user up and hand back its credentials in ``scheme``.

    ``authcid`` is the user whose credentials are wanted, ``authzid`` the user
    to log in as ("" for the same one).  ``scheme_user`` is the name a
    plaintext password is hashed with (DIGEST-MD5's ``user@realm``).
    """

    authcid: str
    authzid: str
    scheme: str
    scheme_user: str


@dataclass(frozen=True, slots=True)
class Success:
    """The client proved it knows the password; ``final`` is data it must still see."""

    final: bytes | None = None


@dataclass(frozen=True, slots=True)
class AnonymousLogin:
    """ANONYMOUS: log in as ``auth_anonymous_username``; ``trace`` is what the client sent."""

    trace: str


Step: TypeAlias = Challenge | NeedCredentials | Credentials | Success | SaslFailed | AnonymousLogin


class Mechanism(ABC):
    """Server side of one exchange."""

    name: ClassVar[str]

    def start(self, initial_response: bytes | None) -> Step:
        """``mech_generic_auth_initial()``: an empty challenge without SASL-IR."""
        if initial_response is None:
            return Challenge(b"")
        return self.step(initial_response)

    @abstractmethod
    def step(self, response: bytes) -> Step:
        """The client's decoded answer to the last challenge."""

    def credentials(self, raw: bytes) -> Step:
        """The raw credentials asked for with ``NeedCredentials``."""
        return SaslFailed("invalid credentials length")  # pragma: no cover - only asked by those that ask


class OneResponse(Mechanism):
    """A mechanism the client answers once (ANONYMOUS, EXTERNAL, CRAM-MD5, DIGEST-MD5):
    a further response fails the exchange."""

    _answered = False

    def step(self, response: bytes) -> Step:
        if self._answered:
            return SaslFailed("Unexpected continuation")
        self._answered = True
        return self._answer(response)

    @abstractmethod
    def _answer(self, response: bytes) -> Step:
        """The one response."""
