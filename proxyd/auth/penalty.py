"""The per-IP auth penalty (Dovecot's ``auth-penalty.c`` with anvil's ``penalty.c``).

Theory of operation
-------------------
Every failed authentication from an IP raises that IP's penalty by one (up to
4); before the auth process even starts on a new request from an IP with a
penalty it waits ``2 * 2**penalty`` seconds, at most 15: 4, 8, 15, 15 s.  A
success resets the penalty.  The client sees only the wait.

Details kept from Dovecot:

* the IP is the (possibly forwarded) client IP; IPv6 addresses count per /48;
* a penalty fades: looking at it, each step is dropped once the last failure
  is at least ``penalty_to_secs(step)`` old, counting down from the top step
  (so after 15 quiet seconds it is gone);
* the same user+password failing again (a client retrying a stored wrong
  password) does not raise the penalty: anvil remembers a few checksums of
  ``crc32(password)`` continued with the user name per IP;
* a passdb ``nodelay`` failure neither waits nor counts;
* records are forgotten 29 s (2+4+8+15) after their last change.

``AuthPenalty`` keeps the records in this (the auth) process; times come from
``trio.current_time()`` so tests can use a mock clock.
"""

from __future__ import annotations

import functools
import ipaddress
import zlib
from dataclasses import dataclass, field
from typing import Final

import trio

INIT_SECS: Final = 2  # AUTH_PENALTY_INIT_SECS
MAX_SECS: Final = 15  # AUTH_PENALTY_MAX_SECS
MAX_PENALTY: Final = 4  # AUTH_PENALTY_MAX_PENALTY
#: AUTH_PENALTY_TIMEOUT, which the auth process gives anvil as PENALTY-SET-EXPIRE-SECS
EXPIRE_SECS: Final = INIT_SECS + 4 + 8 + MAX_SECS
#: PENALTY_IPV6_MASK_BITS
IPV6_MASK_BITS: Final = 48
#: how many user+password checksums anvil remembers per IP (CHECKSUM_VALUE_PTR_COUNT)
CHECKSUMS_KEPT: Final = 10


def penalty_to_secs(penalty: int) -> int:
    """``auth_penalty_to_secs()``: 2 s doubled per step, at most 15 s."""
    return min(INIT_SECS << penalty, MAX_SECS)


@functools.lru_cache(maxsize=4096)
def penalty_ident(remote_ip: str) -> str | None:
    """The key a client IP is counted under (IPv6 masked to /48); None without an IP.
    (Cached: ipaddress parsing costs ~30 Python calls, and clients come back.)"""
    try:
        address = ipaddress.ip_address(remote_ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_MASK_BITS), strict=False).network_address)
    return str(address)


def userpass_checksum(user: str, password: str | None) -> int:
    """``crc32(password)`` continued over the user name (Dovecot's ``get_userpass_checksum``)."""
    if password is None:
        return 0
    return zlib.crc32(user.encode("utf-8"), zlib.crc32(password.encode("utf-8")))


@dataclass(slots=True)
class _Record:
    penalty: int = 0
    last_penalty: float = 0.0  # when the penalty last rose
    last_update: float = 0.0  # when the record last changed
    checksums: list[int] = field(default_factory=list)


class AuthPenalty:
    """Penalty records by client IP, for one auth process."""

    def __init__(self) -> None:
        self._records: dict[str, _Record] = {}

    def __len__(self) -> int:
        self._expire()
        return len(self._records)

    def current(self, ident: str | None) -> int:
        """The penalty to wait for now (anvil's PENALTY-GET with the auth side's fading)."""
        if ident is None or not self._records:  # nobody has a penalty: nothing to expire either
            return 0
        self._expire()
        record = self._records.get(ident)
        if record is None:
            return 0
        now = trio.current_time()
        penalty = record.penalty
        drop = MAX_PENALTY
        while penalty > 0 and now - record.last_penalty >= penalty_to_secs(drop):
            drop -= 1
            penalty -= 1
        return penalty

    def delay(self, ident: str | None) -> tuple[int, float]:
        """``(penalty, seconds to wait)`` before a new request from ``ident`` is started."""
        penalty = self.current(ident)
        return penalty, float(penalty_to_secs(penalty)) if penalty else 0.0

    def failed(self, ident: str | None, last_penalty: int, checksum: int) -> None:
        """A failure: raise the penalty to ``last_penalty + 1`` (anvil's PENALTY-INC)."""
        if ident is None:
            return
        self._set(ident, checksum, min(last_penalty + 1, MAX_PENALTY))

    def succeeded(self, ident: str | None, last_penalty: int) -> None:
        """A success after a penalty: reset it."""
        if ident is None or last_penalty == 0:
            return
        self._set(ident, 0, 0)

    def _set(self, ident: str, checksum: int, value: int) -> None:
        now = trio.current_time()
        record = self._records.pop(ident, None) or _Record()
        if checksum == 0:
            record.penalty = value
            record.last_penalty = now
        elif checksum in record.checksums:
            # the same user+password again: don't punish a misconfigured client further
            record.checksums.remove(checksum)
            record.checksums.insert(0, checksum)
            record.penalty = value - 1
        else:
            record.checksums.insert(0, checksum)
            del record.checksums[CHECKSUMS_KEPT:]
            record.penalty = value
            record.last_penalty = now
        record.last_update = now
        self._records[ident] = record  # re-inserted: the dict stays ordered by last change

    def _expire(self) -> None:
        cutoff = trio.current_time() - EXPIRE_SECS
        while self._records:
            ident, record = next(iter(self._records.items()))
            if record.last_update > cutoff:
                break
            del self._records[ident]
