"""LMTP in the protocol registry: Dovecot's ``lmtp`` service, which is not a login service.

The MTA never logs in, so there are no login hooks: ``proxyd.lmtp`` brings its
own process and session.  The service defaults are Dovecot's for ``service
lmtp``: a UNIX socket ``lmtp`` under ``base_dir`` and no inet listener, one MTA
connection per process (``client_limit = 1``), processes reused
(``service_count = 0``); it runs as ``default_internal_user`` without a chroot
(it needs no root and reads no files once started).  A passdb without ``port``
or ``protocol`` sends a recipient to the port the MTA came in on; 24 is LMTP's
port with ``protocol=lmtp``.
"""

from __future__ import annotations

from proxyd.protocols.lmtp.settings import SETTINGS
from proxyd.protocols.spec import ProtocolSpec, ServiceDefaults

LMTP = ProtocolSpec(
    name="lmtp",
    service="lmtp",
    default_port=24,
    default_ssl_port=24,
    listeners=(),
    login=None,
    defaults=ServiceDefaults(
        service_count=0,
        client_limit=1,
        user="$default_internal_user",
        chroot="",
        unix_listeners=("lmtp",),
    ),
    settings=SETTINGS,
)
