"""The settings table agrees with itself, with Settings' defaults, and with Dovecot's names."""

from __future__ import annotations

import dataclasses
import re

import pytest

from proxyd.config import schema
from proxyd.config.settings import InetListener, PassdbSettings, Settings
from proxyd.secret import Secret


@pytest.mark.parametrize("spec", list(schema.TOP.values()), ids=lambda spec: spec.name)
def test_top_default_text_parses_to_settings_default(spec: schema.SettingSpec) -> None:
    default = Settings().value(spec.attribute)
    parsed = spec.parse(spec.default)
    assert (Secret(parsed) if spec.secret else parsed) == default
    if not spec.pem and not spec.secret:
        assert spec.format(default) == spec.default or spec.parse(spec.format(default)) == default


@pytest.mark.parametrize("spec", list(schema.PASSDB.values()), ids=lambda spec: spec.name)
def test_passdb_defaults(spec: schema.SettingSpec) -> None:
    if spec.attribute in PassdbSettings.__dataclass_fields__ and spec.name != "driver":
        assert spec.parse(spec.default) == getattr(PassdbSettings(driver="x"), spec.attribute)
    else:
        assert spec.parse(spec.default) in ("", False)


@pytest.mark.parametrize("spec", list(schema.INET_LISTENER.values()), ids=lambda spec: spec.name)
def test_listener_defaults(spec: schema.SettingSpec) -> None:
    blank = InetListener(name="x", port=0)
    expected = (
        getattr(blank, spec.attribute)
        if spec.attribute in InetListener.__dataclass_fields__
        else False
    )
    assert spec.parse(spec.default) == expected


def test_every_top_spec_has_a_settings_field() -> None:
    fields = {field.name for field in dataclasses.fields(Settings)}
    for spec in schema.TOP.values():
        if spec.protocol:  # in its protocol's record
            record = type(Settings().protocol_settings[spec.protocol])
            assert spec.attribute.partition(".")[2] in {field.name for field in dataclasses.fields(record)}
        else:
            assert spec.attribute in fields
        if spec.pem:
            assert f"{spec.name}_path" in fields


def test_groups_do_not_overlap() -> None:
    groups = {
        "implemented": set(schema.TOP),
        "roadmap": set(schema.ROADMAP_TOP),
        "honoured": set(schema.HONOURED_TOP),
        "unused": set(schema.UNUSED_TOP),
        "sections": set(schema.DOVECOT_SECTIONS),
    }
    names = list(groups)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            assert not groups[first] & groups[second], (first, second)
    assert not schema.ROADMAP_SERVICE & schema.DOVECOT_SERVICE
    assert not set(schema.PASSDB) & schema.DOVECOT_PASSDB
    # every Dovecot name is either honoured by a process proxyd has, or unused by a proxy
    assert schema.DOVECOT_TOP <= schema.HONOURED_TOP | schema.UNUSED_TOP
    assert schema.HONOURED_TOP <= schema.DOVECOT_TOP


def test_variable_defaults_cover_roadmap_and_implemented() -> None:
    defaults = schema.variable_defaults()
    assert defaults["default_login_user"] == "dovenull"
    assert defaults["default_internal_user"] == "dovecot"
    assert defaults["protocols"] == ""  # Debian's: protocols.d files build on it
    assert defaults["login_proxy_timeout"] == "30 secs"
    assert set(schema.TOP) <= set(defaults)
    assert set(schema.ROADMAP_TOP) <= set(defaults)
    assert set(schema.UNUSED_TOP) <= set(defaults)
    assert defaults["mail_plugins"] == ""
    assert defaults["state_dir"] == "/var/lib/dovecot"


def test_only_the_private_keys_and_the_doveadm_credentials_are_secret() -> None:
    assert {spec.name for spec in schema.TOP.values() if spec.secret} == {
        "ssl_key",
        "ssl_alt_key",
        "ssl_key_password",
        "ssl_client_key",
        "doveadm_api_key",
        "doveadm_password",
    }
    assert {spec.name for spec in schema.TOP.values() if spec.pem} == {
        "ssl_dh",
        "ssl_alt_cert",
        "ssl_alt_key",
        "ssl_cert",
        "ssl_key",
        "ssl_ca",
        "ssl_client_cert",
        "ssl_client_key",
    }


def test_protocol_settings_come_from_the_plugins() -> None:
    """Each protocol's own settings are declared in its folder and nowhere in proxyd/config."""
    from pathlib import Path

    import proxyd.config
    from proxyd.protocols import registry

    mine = {p.name: {spec.name for spec in p.settings.specs} for p in registry.PROTOCOLS}
    assert mine["sieve"] == {
        "managesieve_implementation_string", "managesieve_sieve_capability", "managesieve_notify_capability"
    }
    assert {"lmtp_proxy", "lmtp_client_workarounds"} <= mine["lmtp"]
    for protocol, names in mine.items():
        for name in names:
            assert schema.TOP[name].protocol == protocol
            assert schema.TOP[name].attribute == f"{protocol}.{name}"
    # no two protocols claim a name, and none claims a core one
    claimed = [
        name for p in registry.PROTOCOLS
        for name in (*mine[p.name], *p.settings.not_yet, *p.settings.unused)
    ]
    assert len(claimed) == len(set(claimed))
    config_dir = Path(proxyd.config.__file__).parent
    code = "\n".join(  # comments may name them
        line.split("#", 1)[0] for path in config_dir.glob("*.py") for line in path.read_text().splitlines()
    )
    for name in claimed:
        assert re.search(rf"\b{name}\b", code) is None, name


def test_a_protocol_block_sets_a_protocols_own_setting() -> None:
    from proxyd.config.dump import dump_non_default
    from proxyd.config.filters import FilterResolver
    from proxyd.config.load import load_settings_text
    from proxyd.protocols.managesieve.settings import ManageSieveSettings

    text = (
        "ssl = no\nprotocols = imap sieve\nmanagesieve_notify_capability = mailto xmpp\n"
        "protocol sieve {\n  managesieve_implementation_string = Cluster\n}\n"
    )
    settings = load_settings_text(text, "/etc/proxyd/proxyd.conf")
    resolver = FilterResolver(settings)
    sieve = resolver.lookup("sieve", "127.0.0.1", "127.0.0.2").of(ManageSieveSettings)
    assert (sieve.managesieve_implementation_string, sieve.managesieve_notify_capability) == (
        "Cluster", "mailto xmpp"
    )
    imap = resolver.lookup("imap", "127.0.0.1", "127.0.0.2").of(ManageSieveSettings)
    assert imap.managesieve_implementation_string == "Dovecot Pigeonhole"
    # proxyd -n shows both where they were set, and its output loads to the same settings
    dumped = dump_non_default(settings)
    assert "managesieve_notify_capability = mailto xmpp\n" in dumped
    assert "protocol sieve {\n  managesieve_implementation_string = Cluster\n}\n" in dumped
    again = load_settings_text(dumped, "/etc/proxyd/again.conf")
    assert again.of(ManageSieveSettings) == settings.of(ManageSieveSettings)
    assert [block.values for block in again.filters] == [block.values for block in settings.filters]
