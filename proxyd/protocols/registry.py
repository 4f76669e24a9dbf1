"""Every protocol proxyd serves: the one list the rest of the code derives from.

``protocols = ...`` accepts these names, the master binds these services'
listeners, ``proxyd -n`` knows their default listeners, the settings table
takes each protocol's own settings from its spec (``ProtocolSettings``) and a
login process finds its protocol here by service name.  Adding a protocol is a folder
``proxyd/protocols/<name>/`` whose ``plugin`` module exports a
:class:`~proxyd.protocols.spec.ProtocolSpec`, plus one line below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from proxyd.protocols.imap.plugin import IMAP
from proxyd.protocols.lmtp.plugin import LMTP
from proxyd.protocols.managesieve.plugin import SIEVE
from proxyd.protocols.pop3.plugin import POP3
from proxyd.protocols.spec import ProtocolSpec
from proxyd.protocols.submission.plugin import SUBMISSION

PROTOCOLS: Final[tuple[ProtocolSpec, ...]] = (
    IMAP,
    POP3,
    LMTP,
    SIEVE,
    SUBMISSION,
)

#: Dovecot protocol names proxyd does not serve yet: accepted words in ``protocols``
#: that are refused as not implemented (rather than as unknown); none left of Dovecot 2.3's
NOT_YET: Final[frozenset[str]] = frozenset()

BY_NAME: Final[Mapping[str, ProtocolSpec]] = {p.name: p for p in PROTOCOLS}
BY_SERVICE: Final[Mapping[str, ProtocolSpec]] = {p.service: p for p in PROTOCOLS}


def by_service(service: str) -> ProtocolSpec:
    """The protocol a service serves (``imap-login`` -> IMAP); KeyError for other services."""
    return BY_SERVICE[service]


def service_of(name: str) -> str:
    """The service of a protocol named in ``protocols`` (``imap`` -> ``imap-login``)."""
    return BY_NAME[name].service
