"""Dovecot's login session ids (``client_get_session_id()`` in ``client-common.c``)."""

from __future__ import annotations

import binascii
import functools
import ipaddress

#: Dovecot's ``LOGIN_MAX_SESSION_ID_LEN``: longer ids forwarded by a trusted peer are ignored.
MAX_SESSION_ID_LEN = 64


def new_session_id(remote_ip: str, remote_port: int, now_us: int) -> str:
    """Base64 of the low 48 bits of ``now_us`` (little-endian), the port (LE, 2 bytes) and the raw IP.

    An empty ``remote_ip`` (no IP, e.g. a UNIX socket) counts as four zero bytes,
    as in Dovecot.  IPv4 gives 16 characters, IPv6 32.
    """
    raw = (
        (now_us & 0xFFFF_FFFF_FFFF).to_bytes(6, "little")
        + (remote_port & 0xFFFF).to_bytes(2, "little")
        + _packed(remote_ip)
    )
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


@functools.lru_cache(maxsize=4096)
def _packed(remote_ip: str) -> bytes:
    """The raw address (cached: ipaddress parsing costs ~25 Python calls, clients come back)."""
    if not remote_ip:
        return bytes(4)
    return ipaddress.ip_address(remote_ip.strip("[]")).packed
