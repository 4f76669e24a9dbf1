"""Parsers and formatters for Dovecot's setting value types.

Each ``parse_*`` function takes the value text of one setting and returns the
typed value, or raises :class:`InvalidValue` with Dovecot's own wording
(``Invalid boolean value: x (use yes or no)``, ``Invalid time interval: x`` ...).
The caller adds ``FILE:LINE``.  The ``format_*`` functions do the reverse, in
the form ``doveconf`` prints (``30 secs``, ``256 M``), so that ``proxyd -n``
output reads like ``doveconf -n`` and loads again unchanged.

The rules follow Dovecot 2.3's ``src/lib-settings/settings-parser.c`` and
``src/config/config-request.c``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Final

#: the type of a parsed network (proxyd.config.settings has the same)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_UINT_MAX: Final = 2**32 - 1
_UOFF_MAX: Final = 2**64 - 1
_DIGITS = re.compile(r"[0-9]+")
# A DNS name as ``listen`` / ``address`` may give it (Dovecot resolves it at bind time).
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


class InvalidValue(ValueError):
    """A setting's value does not parse; ``str()`` is the message without location."""


def _leading_uint(text: str, error: str) -> tuple[int, str]:
    """Split ``text`` into its leading decimal number and the rest (``str_parse_uintmax``)."""
    match = _DIGITS.match(text)
    if match is None:
        raise InvalidValue(error)
    return int(match.group()), text[match.end() :]


def parse_bool(value: str) -> bool:
    """Dovecot booleans: ``yes``, ``y`` (any case) and ``1`` are true, ``no`` (any case) is false."""
    lowered = value.lower()
    if lowered in ("yes", "y") or value == "1":
        return True
    if lowered == "no":
        return False
    raise InvalidValue(f"Invalid boolean value: {value} (use yes or no)")


def format_bool(value: bool) -> str:
    return "yes" if value else "no"


def parse_uint(value: str) -> int:
    """An unsigned 32-bit decimal number (``SET_UINT``)."""
    if not value.isascii() or not value.isdigit():
        if value.startswith("-") and value[1:].isascii() and value[1:].isdigit():
            raise InvalidValue(f"Invalid number {value}: Number too small")
        raise InvalidValue(f"Invalid number {value}: Not a valid number")
    number = int(value)
    if number > _UINT_MAX:
        raise InvalidValue(f"Invalid number {value}: Number too large")
    return number


def parse_port(value: str) -> int:
    """A port number 0..65535; 0 means "do not listen" for an ``inet_listener``."""
    if not value.isascii() or not value.isdigit() or int(value) > 65535:
        raise InvalidValue(f"Invalid port number {value}")
    return int(value)


# Unit words: the value's unit must be a prefix (any case) of one of these.
# The first letter alone picks the multiplier, as in Dovecot ("m" is minutes).
_TIME_UNITS: Final[dict[str, tuple[int, tuple[str, ...]]]] = {
    "s": (1, ("secs", "seconds")),
    "m": (60, ("mins", "minutes")),
    "h": (3600, ("hours",)),
    "d": (86400, ("days",)),
    "w": (604800, ("weeks",)),
}
_MSEC_WORDS: Final = ("msecs", "mseconds", "millisecs", "milliseconds")


def _is_prefix_of(unit: str, words: Sequence[str]) -> bool:
    lowered = unit.lower()
    return any(word.startswith(lowered) for word in words)


def parse_time(value: str, *, milliseconds: bool = False) -> float:
    """A time interval, returned in seconds.

    ``milliseconds=False`` is Dovecot's ``SET_TIME`` (whole seconds; ``ms`` only
    when divisible by 1000), ``True`` is ``SET_TIME_MSECS``.  As in Dovecot a
    number other than 0 needs a unit: ``30`` is an error, ``30s`` / ``30 secs``
    / ``1 min`` / ``500ms`` are fine.
    """
    invalid = f"Invalid time interval: {value}"
    number, rest = _leading_uint(value, invalid)
    unit = rest.lstrip(" ")
    if unit == "" and number != 0:
        raise InvalidValue(f"Time interval '{value}' is missing units (add e.g. 's' for seconds)")
    if unit == "":
        return 0.0
    # Everything is counted in the setting's own base unit (ms or s), like Dovecot,
    # so that the "too large" limit applies to the same numbers.
    base = 1000 if milliseconds else 1
    first = unit[0].lower()
    if (
        first == "m"
        and not _is_prefix_of(unit, ("mins", "minutes"))
        and _is_prefix_of(unit, _MSEC_WORDS)
    ):
        if milliseconds:
            total = number
        elif number % 1000 == 0:
            total = number // 1000
        else:
            raise InvalidValue(f"Milliseconds not supported for this setting: {value}")
    elif first in _TIME_UNITS:
        multiplier, words = _TIME_UNITS[first]
        if not _is_prefix_of(unit, words):
            raise InvalidValue(invalid)
        total = number * multiplier * base
    else:
        raise InvalidValue(invalid)
    if total > _UINT_MAX:
        raise InvalidValue(f"Time interval is too large: {value}")
    return total / 1000 if milliseconds else float(total)


def format_time(seconds: float, *, milliseconds: bool = False) -> str:
    """The ``doveconf`` spelling of a time: ``0``, ``300 ms``, ``30 secs``, ``2 mins``, ``1 weeks``."""
    if milliseconds:
        msecs = round(seconds * 1000)
        if msecs % 1000 != 0:
            return f"{msecs} ms"
        whole = msecs // 1000
    else:
        whole = round(seconds)
    if whole == 0:
        return "0"
    suffix = "secs"
    for step, name in ((60, "mins"), (60, "hours"), (24, "days"), (7, "weeks")):
        if whole % step != 0:
            break
        whole //= step
        suffix = name
    return f"{whole} {suffix}"


_SIZE_UNITS: Final = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(value: str) -> int:
    """A size in bytes: a number with an optional ``B``, ``k``, ``M``, ``G``, ``T`` (also ``kB``, ``KiB``)."""
    invalid = f"Invalid size: {value}"
    number, rest = _leading_uint(value, invalid)
    rest = rest.lstrip(" ")
    multiplier = 1
    if rest and rest[0].lower() in _SIZE_UNITS:
        multiplier = _SIZE_UNITS[rest[0].lower()]
        rest = rest[1:]
        if multiplier > 1:
            if rest[:1].lower() == "i":
                rest = rest[1:]
            if rest[:1].lower() == "b":
                rest = rest[1:]
    if rest:
        raise InvalidValue(invalid)
    if number * multiplier > _UOFF_MAX:
        raise InvalidValue(f"Size is too large: {value}")
    return number * multiplier


def format_size(size: int) -> str:
    """The ``doveconf`` spelling of a size: ``0``, ``100 B``, ``256 M``."""
    if size == 0:
        return "0"
    suffix = "B"
    for name in ("k", "M", "G", "T"):
        if size % 1024 != 0:
            break
        size //= 1024
        suffix = name
    return f"{size} {suffix}"


def parse_enum(value: str, allowed: Sequence[str]) -> str:
    """One of ``allowed``, compared case-sensitively as Dovecot does."""
    if value not in allowed:
        raise InvalidValue(f"Invalid value: {value}")
    return value


def parse_plain_path(name: str, value: str) -> str:
    """A directory the lmtp process uses: absolute, without the %-variables Dovecot would
    expand per user (a proxy's LMTP has no user there)."""
    if "%" in value:
        raise InvalidValue(f"{name}: %-variables are not supported here: {value}")
    if not value.startswith("/"):
        raise InvalidValue(f"{name}: must be an absolute path: {value}")
    return value


def split_list(value: str) -> list[str]:
    """Split a list that Dovecot separates with spaces and/or commas (``t_strsplit_spaces(v, ", ")``)."""
    return [item for item in re.split(r"[ ,\t]+", value) if item]


def parse_address(item: str) -> str:
    """One listen address: ``*``, ``::``, an IPv4/IPv6 address (``[v6]`` allowed) or a host name."""
    if item in ("*", "::"):
        return item
    bracketed = item.startswith("[") and item.endswith("]")
    try:
        return str(ipaddress.ip_address(item[1:-1] if bracketed else item))
    except ValueError:
        pass
    if not bracketed and _HOSTNAME.fullmatch(item) and not item.replace(".", "").isdigit():
        return item
    raise InvalidValue(f"Invalid listen address: {item}")


def parse_addresses(value: str) -> tuple[str, ...]:
    """``listen`` / ``inet_listener { address }``: addresses separated by commas and/or spaces."""
    return tuple(parse_address(item) for item in split_list(value))


def format_addresses(addresses: Sequence[str]) -> str:
    return ", ".join(addresses)


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """``login_trusted_networks``: CIDR networks or plain addresses (host bits allowed, as ``net_parse_range``)."""
    networks: list[IPNetwork] = []
    for item in split_list(value):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise InvalidValue(f"Invalid network '{item}'") from None
    return tuple(networks)


def format_networks(networks: Sequence[IPNetwork]) -> str:
    return " ".join(str(network) for network in networks)
