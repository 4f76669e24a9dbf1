"""Passdb driver lookup through the ``proxyd.passdb`` entry-point group.

Every driver, built-in ones included, is found the same way: pyproject.toml
registers ``static = "passdb_drivers.static:create"`` and so on, and a plugin
package registers its own names.  Only the configured names are loaded.  A name
nobody registered, or a driver module that fails to import, is a configuration
error reported at the ``passdb`` block's FILE:LINE (never logged and skipped).
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Final

from proxyd.auth.passdb import PassdbFactory
from proxyd.config.settings import PassdbSettings, Settings
from proxyd.errors import ConfigError

GROUP: Final = "proxyd.passdb"


def available_drivers() -> tuple[str, ...]:
    """The names of every installed passdb driver, sorted."""
    return tuple(sorted({ep.name for ep in entry_points(group=GROUP)}))


def _find(name: str) -> EntryPoint | None:
    matches = entry_points(group=GROUP).select(name=name)
    return next(iter(matches), None)


def resolve(settings: PassdbSettings) -> PassdbFactory:
    """The factory of ``settings.driver``; raises ``ConfigError`` at the passdb's location."""
    entry_point = _find(settings.driver)
    if entry_point is None:
        known = ", ".join(available_drivers()) or "none installed"
        raise ConfigError(
            settings.location,
            f"Unknown passdb driver '{settings.driver}' (available: {known})",
        )
    try:
        factory = entry_point.load()
    except Exception as exc:  # any import-time failure of a plugin is a config problem
        raise ConfigError(
            settings.location,
            f"passdb driver '{settings.driver}' could not be loaded: {type(exc).__name__}: {exc}",
        ) from exc
    if not callable(factory):
        raise ConfigError(
            settings.location,
            f"passdb driver '{settings.driver}' ({entry_point.value}) is not a factory",
        )
    resolved: PassdbFactory = factory
    return resolved


def check_drivers(settings: Settings) -> None:
    """Resolve every configured passdb driver and let it check its ``args`` (for ``proxyd -n``).

    Drivers parse ``args`` when ``create()`` is called and open nothing until the
    returned context manager is entered, so this touches no file or server.
    Raises the first ``ConfigError``.
    """
    for passdb in settings.passdbs:
        resolve(passdb)(passdb)
