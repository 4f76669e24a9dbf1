"""SASL mechanisms that run in the auth process (Dovecot's ``src/auth/mech-*.c``).

Theory of operation
-------------------
A mechanism is a sans-IO state machine for one exchange.  The auth process
(``proxyd.auth.exchange``) drives it::

    step = mech.start(initial_response)
    loop:
        Challenge        -> relay to the client, feed its answer to mech.step()
        NeedCredentials  -> run the passdb chain for the credentials in ``scheme``,
                            feed the raw credentials to mech.credentials()
        Credentials      -> a plaintext password: the chain verifies it
        Success(final)   -> done; ``final`` (SCRAM's server signature, DIGEST-MD5's
                            rspauth) goes to the client as a last challenge first,
                            since IMAP and POP3 have no final-response field
        SaslFailed       -> done; the reason is logged

Password hashes stay here: a login process only relays base64 lines.
"""

from __future__ import annotations

from typing import Final

from proxyd.auth.mechanisms.anonymous import Anonymous
from proxyd.auth.mechanisms.apop import Apop
from proxyd.auth.mechanisms.base import AnonymousLogin, Mechanism, NeedCredentials, Step, Success
from proxyd.auth.mechanisms.cram_md5 import CramMD5
from proxyd.auth.mechanisms.digest_md5 import DigestMD5
from proxyd.auth.mechanisms.external import External
from proxyd.auth.mechanisms.scram import ScramSHA1, ScramSHA256

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
#: mechanisms whose exchange runs in the auth process
AUTH_MECHANISMS: Final = frozenset(_MECHANISMS)


def create(name: str) -> Mechanism:
    """A fresh exchange of mechanism ``name`` (upper case); KeyError when unknown."""
    return _MECHANISMS[name]()
