"""Dovecot's login session ids (``client_get_session_id()`` in ``client-common.c``)."""

from __future__ import annotations

import base64
import ipaddress

#: Dovecot's ``LOGIN_MAX_SESSION_ID_LEN``: longer ids forwarded by a trusted peer are ignored.
MAX_SESSION_ID_LEN = 64


def new_session_id(remote_ip: str, remote_port: int, now_us: int) -> str:
    """Base64 of the low 48 bits of ``now_us`` (little-endian), the port (LE, 2 bytes) and the raw IP.

    An empty ``remote_ip`` (no IP, e.g. a UNIX socket) counts as four zero bytes,
    as in Dovecot.  IPv4 gives 16 characters, IPv6 32.
    """
    if remote_ip:
        address = ipaddress.ip_address(remote_ip.strip("[]"))
        packed = address.packed
    else:
        packed = bytes(4)
    raw = (
        (now_us & 0xFFFF_FFFF_FFFF).to_bytes(6, "little")
        + (remote_port & 0xFFFF).to_bytes(2, "little")
        + packed
    )
    return base64.b64encode(raw).decode("ascii")
