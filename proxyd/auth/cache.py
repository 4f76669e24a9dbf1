"""The auth cache (Dovecot's ``auth-cache.c`` and ``passdb-cache.c``).

Theory of operation:

* A passdb driver that wants caching exposes ``cache_key``: the templates its
  lookup depends on (an SQL ``password_query``, an LDAP ``base`` plus
  ``pass_filter``).  :func:`parse_cache_key` keeps only the %-variables of
  that text, in a fixed order, one per tab: ``%{user}``, ``%{rip}``, ...  When
  both ``%n`` and ``%d`` appear they collapse into ``%{user}``.  Function-like
  variables (``%{env:X}``, ``%{ldap:attr}``) are not part of the key, except
  ``%{passdb:field}``.  Modifiers are dropped: ``%Lu`` and ``%u`` give the
  same key.  A text without variables gives no key, and the passdb is not
  cached.
* The key of one request is ``P<passdb number>\\t`` followed by that key
  template expanded for the request (after ``auth_username_format`` and earlier
  ``user=`` rewrites), each value tab-escaped (:func:`expand_cache_key`).
* A value is either *negative* (the user was unknown) or a
  :class:`CachedPassdb`: the stored password with its ``{SCHEME}`` (None for
  a ``nopassword`` user) and the fields the lookup set.
* Entries expire ``auth_cache_ttl`` seconds after they were stored, negative
  ones after ``auth_cache_negative_ttl`` (0 = negative entries are not stored).
  An expired entry is still used when the passdb itself fails temporarily.
* ``auth_cache_size`` bounds the memory: every entry costs its key, its
  serialised value and a fixed overhead, as Dovecot counts it; the least
  recently used entries go first.
* The "password changed" rule is in the chain (``chain/cached.py``): a wrong password
  against an entry whose last check succeeded, or whose age passed the negative
  TTL, is treated as a miss and looked up again.

Flushing (:meth:`AuthCache.flush`) removes every entry, or those of some users:
an entry belongs to a user when its key, after the ``P<n>\\t`` prefix, starts
with the user name followed by a tab or the end, which is the case for the
usual ``%u`` keys (Dovecot's rule; a ``%n`` key matches the user name without
its domain).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from proxyd.auth.expand import SHORT_NAMES, Variables, expand, iter_variables, tab_escape

#: what Dovecot's ``struct auth_cache_node`` costs on a 64-bit build, besides key and value
NODE_OVERHEAD: Final = 40

_SHORT_ORDER: Final = tuple(SHORT_NAMES.values())


def parse_cache_key(text: str) -> str | None:
    """The cache key template of a query or filter, or None when it has no variables."""
    seen: list[str] = []
    extra: list[str] = []
    for ref in iter_variables(text):
        name = ref.name
        if not name:
            continue
        if ":" in name and not name.startswith(("passdb:", "userdb:")):
            continue  # %{env:X}, %{ldap:attr}, %{sha256:...}: not inputs of the lookup
        target = extra if ":" in name or name not in _SHORT_ORDER else seen
        if name not in target:
            target.append(name)
    if "username" in seen and "domain" in seen:
        seen = [name for name in seen if name not in ("username", "domain")]
        if "user" not in seen:
            seen.append("user")
    ordered = [name for name in _SHORT_ORDER if name in seen] + extra
    if not ordered:
        return None
    return "\t".join(f"%{{{name}}}" for name in ordered)


def expand_cache_key(passdb_number: int, key_template: str, variables: Variables) -> str:
    """The cache key of one request: ``P<n>\\t`` and the expanded, tab-escaped variables."""
    return f"P{passdb_number}\t" + expand(key_template, variables, tab_escape)


@dataclass(frozen=True, slots=True)
class CachedPassdb:
    """A positive entry: what one passdb lookup gave.

    ``password`` is the stored password with its ``{SCHEME}``, or None when the
    passdb returned none (``nopassword``; any password is accepted).
    ``fields`` are the fields the lookup set, in order, replayed through the
    chain's field rules on a hit.
    """

    password: str | None = field(repr=False)
    fields: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def serialized_size(self) -> int:
        """The length of Dovecot's tab-separated form of this value."""
        size = len(tab_escape(self.password)) if self.password is not None else 0
        for name, value in self.fields:
            size += 1 + len(tab_escape(name)) + 1 + len(tab_escape(value))
        return size


@dataclass(slots=True)
class CacheNode:
    """One entry; ``value`` None is a negative entry (user unknown)."""

    key: str
    value: CachedPassdb | None
    created: float
    size: int
    #: the last password check against this entry succeeded
    last_success: bool

    @property
    def negative(self) -> bool:
        return self.value is None


@dataclass(frozen=True, slots=True)
class CacheHit:
    """What :meth:`AuthCache.lookup` found.

    ``expired``: older than its TTL (only usable as a fallback when the passdb
    fails).  ``negative_expired``: older than the negative TTL, which makes a
    password mismatch a miss too.
    """

    node: CacheNode
    expired: bool
    negative_expired: bool


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    """Counters, as Dovecot logs them on SIGUSR2."""

    hits: int
    misses: int
    entries: int
    negative_entries: int
    size_used: int
    max_size: int


class AuthCache:
    """A size-bounded LRU of passdb results with a TTL.  Not thread-safe: one per Trio run."""

    def __init__(
        self,
        max_size: int,
        ttl: float,
        negative_ttl: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_size <= 0:
            raise ValueError("auth cache size must be positive")
        self.max_size = max_size
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._clock = clock
        self._nodes: OrderedDict[str, CacheNode] = OrderedDict()  # least recently used first
        self._used = 0
        self._hits = 0
        self._misses = 0

    def __len__(self) -> int:
        return len(self._nodes)

    def lookup(self, key: str) -> CacheHit | None:
        """The entry for ``key`` (even an expired one), or None.

        A live entry becomes the most recently used; an expired one counts as a miss.
        """
        node = self._nodes.get(key)
        if node is None:
            self._misses += 1
            return None
        age = self._clock() - node.created
        ttl = self.negative_ttl if node.negative else self.ttl
        expired = age > ttl
        if expired:
            self._misses += 1
        else:
            self._nodes.move_to_end(key)
            self._hits += 1
        return CacheHit(node, expired=expired, negative_expired=age > self.negative_ttl)

    def insert(self, key: str, value: CachedPassdb | None, *, last_success: bool) -> None:
        """Store ``value`` (None: negative) under ``key``, replacing any old entry."""
        if value is None and self.negative_ttl <= 0:
            return  # negative caching is off
        size = NODE_OVERHEAD + len(key) + 1 + (value.serialized_size() if value else 0) + 1
        self.remove(key)
        if size > self.max_size:
            return  # would never fit
        while self._used + size > self.max_size and self._nodes:
            _, oldest = self._nodes.popitem(last=False)
            self._used -= oldest.size
        self._nodes[key] = CacheNode(
            key=key, value=value, created=self._clock(), size=size, last_success=last_success
        )
        self._used += size

    def remove(self, key: str) -> bool:
        """Drop the entry for ``key``; True if there was one."""
        node = self._nodes.pop(key, None)
        if node is None:
            return False
        self._used -= node.size
        return True

    def flush(self, users: Iterable[str] | None = None) -> int:
        """Remove every entry (``users`` None) or those of ``users``; returns how many."""
        if users is None:
            count = len(self._nodes)
            self._nodes.clear()
            self._used = 0
            return count
        names = [tab_escape(user) for user in users]
        doomed = [key for key in self._nodes if _key_is_one_of_users(key, names)]
        for key in doomed:
            self.remove(key)
        return len(doomed)

    def statistics(self) -> CacheStatistics:
        """Hit and miss counters, entry counts and memory use."""
        negative = sum(1 for node in self._nodes.values() if node.negative)
        return CacheStatistics(
            hits=self._hits,
            misses=self._misses,
            entries=len(self._nodes),
            negative_entries=negative,
            size_used=self._used,
            max_size=self.max_size,
        )


def _key_is_one_of_users(key: str, users: Sequence[str]) -> bool:
    if not key.startswith("P"):
        return False
    prefix, tab, rest = key.partition("\t")
    if not tab or not prefix[1:].split("+", 1)[0].isdigit():
        return False
    for user in users:
        if rest.startswith(user) and (len(rest) == len(user) or rest[len(user)] == "\t"):
            return True
    return False
