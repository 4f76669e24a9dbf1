"""auth_cache_size / auth_cache_ttl / auth_cache_negative_ttl in proxyd.conf."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxyd.auth.opening import open_authenticator
from proxyd.config.dump import dump_non_default
from proxyd.config.load import load_settings_text
from proxyd.errors import ConfigError

BASE = "ssl = no\npassdb {\n  driver = static\n  args = nopassword=y\n}\n"


def test_defaults_are_dovecots() -> None:
    settings = load_settings_text(BASE, "/etc/proxyd/proxyd.conf")
    assert (
        settings.auth_cache_size,
        settings.auth_cache_ttl,
        settings.auth_cache_negative_ttl,
    ) == (
        0,
        3600.0,
        3600.0,
    )


def test_values_and_dump(tmp_path: Path) -> None:
    text = BASE + "auth_cache_size = 10M\nauth_cache_ttl = 5 mins\nauth_cache_negative_ttl = 0\n"
    settings = load_settings_text(text, str(tmp_path / "proxyd.conf"))
    assert settings.auth_cache_size == 10 * 1024 * 1024
    assert settings.auth_cache_ttl == 300.0
    assert settings.auth_cache_negative_ttl == 0.0
    dumped = dump_non_default(settings)
    assert "auth_cache_size = 10 M" in dumped
    assert "auth_cache_ttl = 5 mins" in dumped
    again = load_settings_text(dumped, str(tmp_path / "again.conf"))
    assert again.auth_cache_size == settings.auth_cache_size


def test_invalid_size_has_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings_text(BASE + "auth_cache_size = lots\n", "/etc/proxyd/proxyd.conf")
    assert str(info.value) == "/etc/proxyd/proxyd.conf:6: Invalid size: lots"


async def test_authenticator_has_a_cache_only_when_sized() -> None:
    without = load_settings_text(BASE, "/etc/proxyd/proxyd.conf")
    async with open_authenticator(without) as auth:
        assert auth.cache is None
        assert auth.flush_cache() == 0
    sized = load_settings_text(BASE + "auth_cache_size = 1M\n", "/etc/proxyd/proxyd.conf")
    async with open_authenticator(sized) as auth:
        assert auth.cache is not None
        stats = auth.cache.statistics()
        assert stats.max_size == 1024 * 1024
