"""Settings per connection: Dovecot's ``protocol``/``local``/``remote`` filters resolved.

A login process asks, at accept time, for the settings of one connection:
``FilterResolver(settings).lookup(protocol, local_ip, remote_ip)``.  The
blocks that match are applied over the top-level settings, most specific
first, as Dovecot's ``config_filter_parsers_get`` does: more ``local`` bits
win, then more ``remote`` bits, then a ``protocol`` over none; a setting
one block sets is not changed by a less specific one.  Between blocks of
the same rank the later in the file wins.

The result depends only on which blocks match, so it is cached by that set
(a few entries, however many clients): the lookup costs a few network
containment checks.
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any, Final

from proxyd.config.settings import FilterBlock, IPAddress, Settings


def ordered(blocks: tuple[FilterBlock, ...]) -> list[FilterBlock]:
    """``blocks`` most specific first (later in the file first among equals)."""
    indexed = sorted(enumerate(blocks), key=lambda pair: (pair[1].precedence, pair[0]), reverse=True)
    return [block for _, block in indexed]


def apply(settings: Settings, blocks: list[FilterBlock]) -> Settings:
    """``settings`` with ``blocks`` (most specific first) applied."""
    changes: dict[str, Any] = {}
    for block in blocks:
        for attribute, value in block.values:
            changes.setdefault(attribute, value)
    if not changes:
        return settings
    return settings.with_values(changes)


#: settings that make a different TLS server context
TLS_FIELDS: Final = frozenset(
    {"ssl", "ssl_cert", "ssl_key", "ssl_ca", "ssl_min_protocol", "ssl_dh", "ssl_cipher_list",
     "ssl_cipher_suites", "ssl_curve_list", "ssl_prefer_server_ciphers", "ssl_options",
     "ssl_alt_cert", "ssl_alt_key", "ssl_key_password"}
)  # fmt: skip
#: more blocks with TLS settings than this would make too many combinations to prepare
MAX_TLS_BLOCKS: Final = 12


def _may_match_together(blocks: list[FilterBlock]) -> bool:
    """False when no connection can match all of ``blocks`` (a quick over-approximation)."""
    protocols = {
        block.protocol for block in blocks if block.protocol and not block.protocol.startswith("!")
    }
    if len(protocols) > 1:
        return False
    negated = {block.protocol[1:] for block in blocks if block.protocol.startswith("!")}
    if protocols & negated:
        return False
    for part in ("local", "remote"):
        networks = [getattr(block, part) for block in blocks if getattr(block, part) is not None]
        for first, second in itertools.combinations(networks, 2):
            if first.version != second.version or not first.overlaps(second):
                return False
    return True


def tls_candidates(settings: Settings) -> list[Settings]:
    """The settings of every combination of TLS-setting blocks a connection can match.

    Login processes need a ready TLS context for each, since they cannot read
    certificate files once chrooted.
    """
    blocks = [
        block
        for block in ordered(settings.filters)
        if any(attribute in TLS_FIELDS for attribute, _ in block.values)
    ][:MAX_TLS_BLOCKS]  # load.py refuses more
    found = [settings]
    for size in range(1, len(blocks) + 1):
        for combination in itertools.combinations(blocks, size):
            chosen = list(combination)  # combinations keep the precedence order
            if _may_match_together(chosen):
                found.append(apply(settings, chosen))
    return found


class FilterResolver:
    """The settings for each (protocol, local IP, remote IP), cached by the blocks that match."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._blocks = ordered(settings.filters)
        self._cache: dict[tuple[int, ...], Settings] = {}

    def lookup(self, protocol: str, local_ip: str | None = None, remote_ip: str | None = None) -> Settings:
        if not self._blocks:
            return self.settings
        local = _address(local_ip)
        remote = _address(remote_ip)
        key = tuple(
            index
            for index, block in enumerate(self._blocks)
            if block.matches(protocol, local, remote)
        )
        found = self._cache.get(key)
        if found is None:
            found = apply(self.settings, [self._blocks[index] for index in key])
            self._cache[key] = found
        return found


def _address(text: str | None) -> IPAddress | None:
    if not text:
        return None
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None  # a UNIX socket peer or the like: no address filter matches it
