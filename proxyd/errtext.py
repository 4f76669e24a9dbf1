"""System and TLS errors in the words Dovecot's logs use, without Python's reprs.

Trio's connect errors carry ``Error connecting to ('10.0.0.1', 143): ...`` and
Python's ``ssl`` errors ``[SSL: WRONG_VERSION_NUMBER] wrong version number
(_ssl.c:1006)``; Dovecot logs ``connect(10.0.0.1, 143) failed: Connection
refused`` and OpenSSL's own reason text.
"""

from __future__ import annotations

import os
import re
import ssl
from typing import Final

_SSL_NOISE: Final = re.compile(r"^\[[A-Z0-9_]+: [A-Z0-9_]+\] |\s*\(_ssl\.c:\d+\)$")


def os_error(exc: OSError) -> str:
    """``Connection refused``: the errno's text, never the message Trio or Python built."""
    if exc.errno:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__


def ssl_error(exc: BaseException) -> str:
    """An ``ssl`` error as OpenSSL words it (``wrong version number``, ``certificate verify
    failed: self-signed certificate``)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = getattr(exc, "verify_message", None) or ""
        return f"certificate verify failed: {detail}" if detail else "certificate verify failed"
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None)  # set by OpenSSL, absent on a hand-made error
        if reason:
            return str(reason).lower().replace("_", " ")
        return _SSL_NOISE.sub("", exc.strerror or str(exc)) or "handshake failed"
    if isinstance(exc, OSError):
        return os_error(exc)
    return _SSL_NOISE.sub("", str(exc)) or type(exc).__name__


def cause_text(exc: BaseException, default: str = "Connection lost") -> str:
    """What a Trio ``BrokenResourceError`` wraps, in those words."""
    cause = exc.__cause__ or exc.__context__
    if cause is None:
        return default
    if isinstance(cause, ssl.SSLError):
        return ssl_error(cause)
    if isinstance(cause, OSError):
        return os_error(cause)
    return _SSL_NOISE.sub("", str(cause)) or default
