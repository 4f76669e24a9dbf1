"""SASL mechanisms that run in the auth process (Dovecot's ``src/auth/mech-*.c``).

Theory of operation
-------------------
A mechanism is a sans-IO state machine for one exchange.  The auth process
(``Authenticator.sasl``) drives it::

    step = mech.start(initial_response)
    loop:
        Challenge        -> relay to the client, feed its answer to mech.step()
        NeedCredentials  -> run the passdb chain for the credentials in ``scheme``,
                            feed the raw credentials to mech.credentials()
        Credentials      -> a plaintext password: the chain verifies it
        Success(final)   -> done; ``final`` (SCRAM's server signature, DIGEST-MD5's
                            rspauth) goes to the client as a last challenge first,
                            since IMAP and POP3 have no final-response field
        AnonymousLogin   -> the anonymous user, routed by its passdb entry
        SaslFailed       -> done; the reason is logged

Every mechanism runs here, PLAIN and LOGIN too: a login process only relays
base64 lines, and password hashes never leave the auth process.
"""

from __future__ import annotations

from typing import Final

from proxyd.auth.mechanisms.anonymous import Anonymous
from proxyd.auth.mechanisms.apop import Apop
from proxyd.auth.mechanisms.base import AnonymousLogin, Mechanism, NeedCredentials, Step, Success
from proxyd.auth.mechanisms.cram_md5 import CramMD5
from proxyd.auth.mechanisms.digest_md5 import DigestMD5
from proxyd.auth.mechanisms.external import External
from proxyd.auth.mechanisms.plaintext import Plaintext
from proxyd.auth.mechanisms.scram import ScramSHA1, ScramSHA256
from proxyd.protocols.sasl import SERVER_MECHANISMS

__all__ = [
    "AUTH_MECHANISMS", "AnonymousLogin", "Mechanism", "NeedCredentials", "Step", "Success", "create",
]  # fmt: skip

_MECHANISMS: Final[dict[str, type[Mechanism]]] = {
    "ANONYMOUS": Anonymous,
    "APOP": Apop,
    "CRAM-MD5": CramMD5,
    "DIGEST-MD5": DigestMD5,
    "EXTERNAL": External,
    "SCRAM-SHA-1": ScramSHA1,
    "SCRAM-SHA-256": ScramSHA256,
}
#: the mechanisms that verify a typed password (or bearer token) through the passdbs
PLAINTEXT: Final = frozenset(SERVER_MECHANISMS)
#: every mechanism the auth process runs
AUTH_MECHANISMS: Final = frozenset(_MECHANISMS) | PLAINTEXT


def create(name: str, realms: tuple[str, ...] = ()) -> Mechanism:
    """A fresh exchange of mechanism ``name`` (upper case); KeyError when unknown.
    ``realms`` (``auth_realms``) are what DIGEST-MD5's challenge offers."""
    if name in PLAINTEXT:
        return Plaintext(name)
    if name == DigestMD5.name:
        return DigestMD5(realms)
    return _MECHANISMS[name]()
