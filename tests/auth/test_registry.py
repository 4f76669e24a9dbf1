"""Driver lookup through the proxyd.passdb entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint, EntryPoints

import pytest

from passdb_drivers import passwd_file, static
from proxyd.auth import registry
from proxyd.config.settings import PassdbSettings, Settings
from proxyd.errors import ConfigError, Location

WHERE = Location("/etc/proxyd/conf.d/10-auth.conf", 12)


def test_builtin_drivers_are_registered() -> None:
    assert {"static", "passwd-file"} <= set(registry.available_drivers())
    assert registry.resolve(PassdbSettings(driver="static")) is static.create
    assert registry.resolve(PassdbSettings(driver="passwd-file")) is passwd_file.create


def test_unknown_driver_names_file_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        registry.resolve(PassdbSettings(driver="ldapp", location=WHERE))
    assert str(info.value).startswith(
        "/etc/proxyd/conf.d/10-auth.conf:12: Unknown passdb driver 'ldapp'"
    )
    assert "static" in str(info.value)


def _fake_entry_points(*eps: EntryPoint):
    def fake(*, group: str) -> EntryPoints:
        assert group == registry.GROUP
        return EntryPoints(eps)

    return fake


def test_driver_that_fails_to_import(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = EntryPoint(
        name="broken", value="passdb_drivers.does_not_exist:create", group=registry.GROUP
    )
    monkeypatch.setattr(registry, "entry_points", _fake_entry_points(broken))
    with pytest.raises(ConfigError) as info:
        registry.resolve(PassdbSettings(driver="broken", location=WHERE))
    assert str(info.value).startswith(f"{WHERE}: passdb driver 'broken' could not be loaded")


def test_driver_that_is_not_callable(monkeypatch: pytest.MonkeyPatch) -> None:
    odd = EntryPoint(
        name="odd", value="passdb_drivers.static:DEFAULT_PASS_SCHEME", group=registry.GROUP
    )
    monkeypatch.setattr(registry, "entry_points", _fake_entry_points(odd))
    with pytest.raises(ConfigError, match="is not a factory"):
        registry.resolve(PassdbSettings(driver="odd", location=WHERE))


def test_check_drivers_validates_args_without_opening() -> None:
    good = Settings(
        passdbs=(
            PassdbSettings(driver="static", args="nopassword"),
            PassdbSettings(driver="passwd-file", args="/nonexistent/users"),
        )
    )
    registry.check_drivers(good)  # the missing file is a lookup-time problem, not a config error
    bad = Settings(
        passdbs=(PassdbSettings(driver="passwd-file", args="bogus=1 /x", location=WHERE),)
    )
    with pytest.raises(ConfigError, match="Unknown setting: bogus"):
        registry.check_drivers(bad)
