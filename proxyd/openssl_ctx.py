"""Two OpenSSL calls that Python's ``ssl`` module does not offer, through ctypes.

Dovecot's ``ssl_cipher_suites`` (TLS 1.3 suites) and ``ssl_curve_list`` (key
exchange groups, several of them) map to ``SSL_CTX_set_ciphersuites`` and
``SSL_CTX_set1_groups_list``; ``ssl.SSLContext`` has neither (its
``set_ecdh_curve`` takes one curve).  The ``SSL_CTX *`` is the first field
after ``PyObject_HEAD`` in CPython's ``PySSLContext`` (Modules/_ssl.c, unchanged
since 3.x), and the functions come from the libssl that ``_ssl`` itself is
linked against, so the pointer and the library always belong together.
"""

from __future__ import annotations

import _ssl
import ctypes
import functools
import ssl
from typing import Any, Final

_SSL_CTRL_SET_GROUPS_LIST: Final = 92


@functools.cache
def _lib() -> Any:
    lib = ctypes.CDLL(_ssl.__file__)
    lib.SSL_CTX_set_ciphersuites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.SSL_CTX_set_ciphersuites.restype = ctypes.c_int
    lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    lib.SSL_CTX_ctrl.restype = ctypes.c_long
    return lib


def _ssl_ctx(ctx: ssl.SSLContext) -> int:
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    assert pointer is not None
    return pointer


def set_ciphersuites(ctx: ssl.SSLContext, suites: str) -> None:
    """TLS 1.3 cipher suites (``TLS_AES_128_GCM_SHA256:...``); ``ssl.SSLError`` if none is valid."""
    if _lib().SSL_CTX_set_ciphersuites(_ssl_ctx(ctx), suites.encode()) != 1:
        raise ssl.SSLError(f"Failed to set ciphersuites to {suites}")


def set_groups(ctx: ssl.SSLContext, groups: str) -> None:
    """Key exchange groups (``X25519:P-256``); ``ssl.SSLError`` if one is unknown."""
    text = ctypes.c_char_p(groups.encode())
    if _lib().SSL_CTX_ctrl(_ssl_ctx(ctx), _SSL_CTRL_SET_GROUPS_LIST, 0, ctypes.cast(text, ctypes.c_void_p)) != 1:
        raise ssl.SSLError(f"Failed to set curve list to '{groups}'")
