"""The system's crypt(3) through ctypes: ``crypt_rn``/``crypt_r`` from ``libcrypt.so.1``.

Why not a Python implementation: libpass verifies SHA512-CRYPT with its
pure-Python backend (about 40 ms at 5,000 rounds); libxcrypt does it in a few
milliseconds, and it is what Debian's Dovecot itself calls, so hashes and edge
cases (maximum passphrase length, unsupported settings) behave the same.

Thread safety: every call gets its own ``struct crypt_data`` buffer, so calls
may run in parallel worker threads; ctypes releases the GIL for the call.

* libxcrypt (Debian 10+, Fedora, ...) exports ``crypt_rn``, which takes the
  buffer size and returns NULL on failure.  Its ``struct crypt_data`` is 32,768
  bytes (checked with ``sizeof`` against libxcrypt 4.4.33's ``crypt.h``).
* The old glibc libcrypt has only ``crypt_r``; its ``struct crypt_data`` is
  131,232 bytes, and it may return NULL or a ``*0``-style failure token.  We give
  it 256 KiB to be safe.
"""

from __future__ import annotations

import ctypes
import functools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

_LIBXCRYPT_DATA_SIZE: Final = 32768
_GLIBC_DATA_SIZE: Final = 262144
_GENSALT_OUTPUT_SIZE: Final = 192  # CRYPT_GENSALT_OUTPUT_SIZE


@dataclass(frozen=True, slots=True)
class _Lib:
    crypt_rn: Callable[..., bytes | None] | None
    crypt_r: Callable[..., bytes | None]
    gensalt_rn: Callable[..., bytes | None] | None


@functools.cache
def _load() -> _Lib | None:
    try:
        lib = ctypes.CDLL("libcrypt.so.1", use_errno=True)
    except OSError:
        return None
    crypt_rn = getattr(lib, "crypt_rn", None)
    if crypt_rn is not None:
        crypt_rn.restype = ctypes.c_char_p
        crypt_rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    crypt_r = lib.crypt_r
    crypt_r.restype = ctypes.c_char_p
    crypt_r.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
    gensalt_rn = getattr(lib, "crypt_gensalt_rn", None)
    if gensalt_rn is not None:
        gensalt_rn.restype = ctypes.c_char_p
        gensalt_rn.argtypes = [
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_int,
        ]
    return _Lib(crypt_rn=crypt_rn, crypt_r=crypt_r, gensalt_rn=gensalt_rn)


def available() -> bool:
    """True when the system crypt library could be loaded."""
    return _load() is not None


def crypt(phrase: bytes, setting: bytes) -> bytes | None:
    """Hash ``phrase`` with ``setting`` (a full hash or a salt string).

    Returns None when the library refuses (unsupported method, invalid setting,
    phrase too long, a NUL byte in either argument) or is not available.
    """
    lib = _load()
    if lib is None or b"\0" in phrase or b"\0" in setting:
        return None
    if lib.crypt_rn is not None:
        data = ctypes.create_string_buffer(_LIBXCRYPT_DATA_SIZE)
        result = lib.crypt_rn(phrase, setting, data, _LIBXCRYPT_DATA_SIZE)
    else:
        data = ctypes.create_string_buffer(_GLIBC_DATA_SIZE)
        result = lib.crypt_r(phrase, setting, data)
    if not isinstance(result, bytes) or result.startswith(b"*"):
        # NULL, or a failure token such as "*0" / "*1"
        return None
    return result


def gensalt(prefix: bytes, count: int) -> bytes | None:
    """A setting string for ``prefix`` (e.g. ``b"$2y$"``) with ``count`` rounds, or None."""
    lib = _load()
    if lib is None or lib.gensalt_rn is None:
        return None
    out = ctypes.create_string_buffer(_GENSALT_OUTPUT_SIZE)
    rbytes = secrets.token_bytes(16)
    result = lib.gensalt_rn(prefix, count, rbytes, len(rbytes), out, _GENSALT_OUTPUT_SIZE)
    if not isinstance(result, bytes) or result.startswith(b"*"):
        return None
    return result
