"""TLS contexts: the server side for clients, the client side for backends.

PEM material arrives as text (Dovecot's ``ssl_cert = <file`` reads the file at
load time).  ``ssl`` wants files, so the text is handed over through an
anonymous memfd: the private key never touches the disk again.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from proxyd.config.settings import Settings

_MIN_VERSIONS: Final = {
    "ANY": ssl.TLSVersion.MINIMUM_SUPPORTED,
    "SSLV3": ssl.TLSVersion.MINIMUM_SUPPORTED,
    "TLSV1": ssl.TLSVersion.TLSv1,
    "TLSV1.1": ssl.TLSVersion.TLSv1_1,
    "TLSV1.2": ssl.TLSVersion.TLSv1_2,
    "TLSV1.3": ssl.TLSVersion.TLSv1_3,
    "LATEST": ssl.TLSVersion.TLSv1_3,
}


@contextmanager
def _pem_file(text: str, name: str) -> Iterator[str]:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.write(fd, text.encode())
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _min_version(settings: Settings) -> ssl.TLSVersion:
    return _MIN_VERSIONS.get(settings.ssl_min_protocol.upper(), ssl.TLSVersion.TLSv1_2)


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The context for client connections, or None when ``ssl = no``."""
    if settings.ssl == "no" or not settings.ssl_cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _min_version(settings)
    with _pem_file(settings.ssl_cert, "ssl_cert") as cert, _pem_file(settings.ssl_key.reveal(), "ssl_key") as key:
        ctx.load_cert_chain(cert, key)
    # clients are not asked for certificates (auth_ssl_require_client_cert comes later)
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def backend_context(settings: Settings, *, verify: bool) -> ssl.SSLContext:
    """The context for TLS towards a backend.

    Verification uses ``ssl_ca`` when set, else the system store, and never demands
    a CRL (interface.md: proxyd deliberately does better than Dovecot here).
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = _min_version(settings)
    if settings.ssl_ca:
        ctx.load_verify_locations(cadata=settings.ssl_ca)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
