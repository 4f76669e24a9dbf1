"""What one setting is: its name, where it may appear, how its text becomes a value.

Kept apart from :mod:`proxyd.config.schema` (the table of every setting) so that
a protocol plugin (``proxyd/protocols/<name>/plugin.py``) can declare its own
settings without importing the table that collects them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxyd.setting import values as v


class Scope(enum.Enum):
    """Where a setting may appear."""

    TOP = "top level"
    SERVICE = "service"
    INET_LISTENER = "inet_listener"
    UNIX_LISTENER = "unix_listener"
    PASSDB = "passdb"
    USERDB = "userdb"


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """One implemented setting."""

    name: str
    scope: Scope
    #: value text -> typed value; raises :class:`~proxyd.setting.values.InvalidValue`
    parse: Callable[[str], Any]
    #: typed value -> text in ``doveconf`` form (for ``proxyd -n``)
    format: Callable[[Any], str]
    #: Dovecot's default in ``doveconf`` form (also what ``$name`` gives when unset)
    default: str
    #: never printed or logged in clear
    secret: bool = False
    #: the value is PEM text that must come from ``name = <FILE``
    pem: bool = False
    #: the dataclass field it fills; ``None`` = same as ``name``
    field: str | None = None
    #: a protocol's own setting: the ``protocols`` name whose settings record holds it
    #: (``Settings.of(...)``); "" = a field of ``Settings`` itself
    protocol: str = ""

    @property
    def attribute(self) -> str:
        """Where the value lives: a ``Settings`` field, or ``PROTOCOL.FIELD`` for a protocol's own."""
        name = self.field or self.name
        return f"{self.protocol}.{name}" if self.protocol else name


def setting(
    name: str,
    scope: Scope,
    parse: Callable[[str], Any],
    format: Callable[[Any], str],  # noqa: A002 - the spec's field name
    default: str,
    **extra: Any,
) -> SettingSpec:
    return SettingSpec(name=name, scope=scope, parse=parse, format=format, default=default, **extra)


def _same(value: str) -> str:
    return value


def str_setting(name: str, scope: Scope = Scope.TOP, default: str = "", **extra: Any) -> SettingSpec:
    """A setting whose value is its text."""
    return setting(name, scope, _same, _same, default, **extra)


def bool_setting(name: str, scope: Scope = Scope.TOP, default: str = "no") -> SettingSpec:
    """A ``yes``/``no`` setting."""
    return setting(name, scope, v.parse_bool, v.format_bool, default)
