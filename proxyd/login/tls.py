"""TLS contexts: the server side for clients, the client side for backends.

PEM material arrives as text (Dovecot's ``ssl_cert = <file`` reads the file at
load time).  ``ssl`` wants files, so the text is handed over through an
anonymous memfd: the private key never touches the disk again.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from proxyd import openssl_ctx
from proxyd.config.filters import tls_candidates
from proxyd.config.settings import Settings
from proxyd.errors import ConfigError

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


def server_key(settings: Settings) -> str:
    """What tells the server contexts of (filtered) settings apart: a digest of their TLS settings."""
    if settings.ssl == "no" or not settings.ssl_cert:
        return ""
    parts = (
        settings.ssl_cert, settings.ssl_key.reveal(), settings.ssl_ca, settings.ssl_min_protocol,
        settings.ssl_dh, settings.ssl_cipher_list, settings.ssl_cipher_suites,
        settings.ssl_curve_list, str(settings.ssl_prefer_server_ciphers), " ".join(settings.ssl_options),
        str(settings.ssl_verify_client_cert),
        settings.ssl_alt_cert, settings.ssl_alt_key.reveal(), settings.ssl_key_password.reveal(),
    )  # fmt: skip
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def server_contexts(settings: Settings) -> dict[str, ssl.SSLContext]:
    """A server context for every TLS configuration a connection can get, by :func:`server_key`.

    Built before the login processes start: they are chrooted and cannot read
    the PEM files (nor ``/proc``) later.
    """
    contexts: dict[str, ssl.SSLContext] = {}
    for candidate in tls_candidates(settings):
        key = server_key(candidate)
        if key and key not in contexts:
            ctx = server_context(candidate)
            assert ctx is not None
            contexts[key] = ctx
    return contexts


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The context for client connections, or None when ``ssl = no``."""
    if settings.ssl == "no" or not settings.ssl_cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _min_version(settings)
    password = settings.ssl_key_password.reveal() or None
    with _pem_file(settings.ssl_cert, "ssl_cert") as cert, _pem_file(settings.ssl_key.reveal(), "ssl_key") as key:
        ctx.load_cert_chain(cert, key, password)
    if settings.ssl_alt_cert:
        # OpenSSL keeps one certificate per key type and picks one the client supports
        with (
            _pem_file(settings.ssl_alt_cert, "ssl_alt_cert") as cert,
            _pem_file(settings.ssl_alt_key.reveal(), "ssl_alt_key") as key,
        ):
            ctx.load_cert_chain(cert, key, password)
    if settings.ssl_dh:
        with _pem_file(settings.ssl_dh, "ssl_dh") as dh:
            ctx.load_dh_params(dh)
    if settings.ssl_cipher_list:
        ctx.set_ciphers(settings.ssl_cipher_list)
    if settings.ssl_cipher_suites:
        openssl_ctx.set_ciphersuites(ctx, settings.ssl_cipher_suites)
    if settings.ssl_curve_list:
        openssl_ctx.set_groups(ctx, settings.ssl_curve_list)
    if settings.ssl_prefer_server_ciphers:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if "no_ticket" in settings.ssl_options:
        ctx.options |= ssl.OP_NO_TICKET
    if "compression" in settings.ssl_options:
        ctx.options &= ~ssl.OP_NO_COMPRESSION
    if settings.ssl_verify_client_cert:
        # ask for a client certificate and verify it against ssl_ca (SASL EXTERNAL, or
        # auth_ssl_require_client_cert); OpenSSL ends the handshake on an invalid one
        if not settings.ssl_ca:
            raise ConfigError(None, "ssl_verify_client_cert set, but ssl_ca not given")
        with _pem_file(settings.ssl_ca, "ssl_ca") as ca:
            ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_cert_user(tls: trio.SSLStream[Any], field: str) -> tuple[bool, str]:
    """``(valid client certificate, its ssl_cert_username_field)`` after the handshake."""
    try:
        cert = tls.getpeercert()
    except (ValueError, AttributeError):
        return False, ""
    if not cert:
        return False, ""
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == field:
                return True, str(value)
    return True, ""


def backend_context(settings: Settings, *, verify: bool) -> ssl.SSLContext:
    """The context for TLS towards a backend.

    Built before the login processes start (they are chrooted and cannot read
    files).  The certificate is verified against ``ssl_client_ca_file`` /
    ``ssl_client_ca_dir`` when set, else ``ssl_ca``, else the system store
    (interface.md: proxyd deliberately does better than Dovecot, which ignores
    the client CA settings in login processes).  A CRL is never demanded: with
    ``ssl_require_crl = yes`` the CRLs that come with the CA material are
    checked, and there is no CRL check when there are none.
    ``ssl_client_cert``/``ssl_client_key`` are presented when the backend asks.
    With ``verify=False`` (``any-cert``) nothing is checked.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = _min_version(settings)
    has_crl = False
    if settings.ssl_client_ca_file or settings.ssl_client_ca_dir:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # only the configured CAs, not the system's
        ctx.minimum_version = _min_version(settings)
        if settings.ssl_client_ca_file:
            ctx.load_verify_locations(cafile=settings.ssl_client_ca_file)
            has_crl = _pem_has_crl(_read_text(settings.ssl_client_ca_file))
        if settings.ssl_client_ca_dir:
            ctx.load_verify_locations(capath=settings.ssl_client_ca_dir)
            has_crl = has_crl or _dir_has_crl(settings.ssl_client_ca_dir)
    elif settings.ssl_ca:
        # through a file, so that CRLs in it are loaded too (cadata= takes certificates only)
        with _pem_file(settings.ssl_ca, "ssl_ca") as path:
            ctx.load_verify_locations(cafile=path)
        has_crl = _pem_has_crl(settings.ssl_ca)
    if settings.ssl_client_cert:
        # without ssl_client_key the key must be in the certificate file
        key_text = settings.ssl_client_key.reveal() or settings.ssl_client_cert
        with (
            _pem_file(settings.ssl_client_cert, "ssl_client_cert") as cert,
            _pem_file(key_text, "ssl_client_key") as key,
        ):
            ctx.load_cert_chain(cert, key)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif has_crl and settings.ssl_require_crl:
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def _pem_has_crl(text: str) -> bool:
    return "-----BEGIN X509 CRL-----" in text


def _read_text(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as file:
        return file.read()


def _dir_has_crl(path: str) -> bool:
    """OpenSSL's hashed directories name CRLs ``<hash>.r<n>``."""
    return any(
        len(name) > 10 and name[8:10] == ".r" and name[10:].isdigit() for name in os.listdir(path)
    )


@dataclass(frozen=True, slots=True)
class TlsContexts:
    """The contexts a login process uses, built before the fork (certificates are files)."""

    server: ssl.SSLContext | None
    backend_verify: ssl.SSLContext
    backend_any: ssl.SSLContext
    #: a server context for each TLS configuration protocol/local/remote blocks can give,
    #: by :func:`server_key`
    server_by_key: Mapping[str, ssl.SSLContext] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings) -> TlsContexts:
        by_key = server_contexts(settings)
        return cls(
            server=by_key.get(server_key(settings)),
            backend_verify=backend_context(settings, verify=True),
            backend_any=backend_context(settings, verify=False),
            server_by_key=by_key,
        )

    def backend(self, verify: bool) -> ssl.SSLContext:
        """The context towards a backend (``ssl=yes`` verifies, ``ssl=any-cert`` does not)."""
        return self.backend_verify if verify else self.backend_any
