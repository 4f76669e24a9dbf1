"""proxyd -n: non-default settings in doveconf -n form, secrets never shown."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from proxyd import __version__
from proxyd.config.dump import HIDDEN, dump_non_default, mask_secret_fields, quote
from proxyd.config.load import load_settings_text
from proxyd.config.settings import ServiceSettings, Settings
from tests.config.conftest import Load, Write


def without_locations(settings: Settings) -> Settings:
    """Settings with everything that depends on where lines were removed."""
    services = {
        name: ServiceSettings(
            name=name,
            listeners=tuple(dataclasses.replace(item, location=None) for item in service.listeners),
        )
        for name, service in settings.services.items()
    }
    passdbs = tuple(dataclasses.replace(p, location=None, config_dir=".") for p in settings.passdbs)
    return dataclasses.replace(
        settings, config_path="", explicit={}, services=services, passdbs=passdbs
    )


def test_minimal(load: Load) -> None:
    settings = load("ssl = no\n")
    assert (
        dump_non_default(settings) == f"# proxyd {__version__}: {settings.config_path}\nssl = no\n"
    )


def test_only_changed_values_are_printed(load: Load) -> None:
    # explicitly set to the default: not printed, like doveconf -n
    settings = load("ssl = no\nlogin_greeting = Dovecot ready.\nauth_failure_delay = 2s\n")
    assert dump_non_default(settings).splitlines()[1:] == ["ssl = no"]


def test_full_dump(load: Load, pems: tuple[Path, Path]) -> None:
    cert, _ = pems
    settings = load(
        "protocols = imap\n"
        "listen = 127.0.0.1 ::1\n"
        "ssl = required\n"
        "ssl_cert = <cert.pem\n"
        "ssl_key = <key.pem\n"
        "auth_mechanisms = plain login\n"
        "auth_failure_delay = 0\n"
        "login_proxy_timeout = 90s\n"
        'login_greeting = "Hi #1"\n'
        "login_trusted_networks = 10.0.0.0/8\n"
        "auth_debug = yes\n"
        "service imap-login {\n"
        "  inet_listener imap {\n"
        "    port = 1143\n"
        "  }\n"
        "  inet_listener imaps {\n"
        "    address = 127.0.0.1\n"
        "  }\n"
        "  inet_listener extra {\n"
        "    port = 2000\n"
        "  }\n"
        "}\n"
        "passdb static {\n"
        "  driver = static\n"
        "  args = nopassword=y\n"
        "  result_failure = return-fail\n"
        "}\n"
        "passdb {\n"
        "  driver = passwd-file\n"
        "  args = /etc/users\n"
        "}\n"
    )
    assert dump_non_default(settings) == (
        f"# proxyd {__version__}: {settings.config_path}\n"
        "auth_debug = yes\n"
        "auth_failure_delay = 0\n"
        "auth_mechanisms = plain login\n"
        "auth_verbose = yes\n"
        "listen = 127.0.0.1, ::1\n"
        'login_greeting = "Hi #1"\n'
        "login_proxy_timeout = 90 secs\n"
        "login_trusted_networks = 10.0.0.0/8\n"
        "passdb {\n"
        "  args = nopassword=y\n"
        "  driver = static\n"
        "  name = static\n"
        "  result_failure = return-fail\n"
        "}\n"
        "passdb {\n"
        "  args = /etc/users\n"
        "  driver = passwd-file\n"
        "}\n"
        "service imap-login {\n"
        "  inet_listener extra {\n"
        "    port = 2000\n"
        "  }\n"
        "  inet_listener imap {\n"
        "    port = 1143\n"
        "  }\n"
        "  inet_listener imaps {\n"
        "    address = 127.0.0.1\n"
        "  }\n"
        "}\n"
        "ssl = required\n"
        f"ssl_cert = <{cert}\n"
        f"ssl_key = {HIDDEN}\n"
    )


def test_secrets_never_printed(load: Load, pems: tuple[Path, Path]) -> None:
    settings = load(
        "ssl_cert = <cert.pem\n"
        "ssl_key = <key.pem\n"
        "passdb {\n"
        "  driver = static\n"
        "  args = password=hunter2 allow_nets=127.0.0.1/32\n"
        "  default_fields = proxy=y pass=backendsecret\n"
        "  override_fields = dnpass=ldapsecret\n"
        "}\n"
        "passdb {\n"
        "  driver = static\n"
        "  args = nopassword=y\n"
        "  default_fields = proxy=y pass=%w\n"
        "}\n"
    )
    out = dump_non_default(settings)
    for secret in ("TOPSECRETKEYMATERIAL", "hunter2", "backendsecret", "ldapsecret"):
        assert secret not in out
    assert f"ssl_key = {HIDDEN}" in out
    assert "args = password=<hidden> allow_nets=127.0.0.1/32" in out
    assert "default_fields = proxy=y pass=<hidden>" in out
    assert "override_fields = dnpass=<hidden>" in out
    assert "default_fields = proxy=y pass=%w" in out  # a template, not a secret
    assert "nopassword=y" in out


def test_mask_secret_fields() -> None:
    assert mask_secret_fields("password=a pass=b dnpass=c nopassword=y xpass=d") == (
        "password=<hidden> pass=<hidden> dnpass=<hidden> nopassword=y xpass=d"
    )


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain", "plain"),
        ("two words", "two words"),
        ("", ""),
        (" lead", '" lead"'),
        ("trail ", '"trail "'),
        ("a # b", '"a # b"'),
        ("$var", '"$var"'),
        ('say "x"', '"say \\"x\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("<file", '"<file"'),
    ],
)
def test_quote_round_trips(tmp_path: Path, value: str, written: str) -> None:
    assert quote(value) == written
    settings = load_settings_text(
        f"ssl = no\nlogin_greeting = {written}\n", str(tmp_path / "q.conf")
    )
    assert settings.login_greeting == value


def test_dump_loads_back_to_the_same_settings(
    load: Load, write: Write, pems: tuple[Path, Path]
) -> None:
    original = load(
        'protocols = " imap"\n'
        "listen = 127.0.0.1\n"
        "base_dir = /tmp/proxyd-run\n"
        "log_path = /tmp/proxyd.log\n"
        "ssl_cert = <cert.pem\n"
        "ssl_key = <key.pem\n"
        "ssl_min_protocol = TLSv1.3\n"
        "disable_plaintext_auth = no\n"
        "auth_mechanisms = login plain\n"
        "auth_failure_delay = 1 min\n"
        "login_greeting = 'Welcome, #1 proxy'\n"
        "imap_capability = +XPROXY\n"
        "imap_id_retain = yes\n"
        "login_trusted_networks = 10.0.0.0/8 ::1\n"
        "login_proxy_timeout = 1500 ms\n"
        "login_proxy_max_reconnects = 0\n"
        "service imap-login {\n  inet_listener imap {\n    port = 0\n  }\n"
        "  inet_listener more {\n    address = ::1\n    port = 1993\n    ssl = yes\n  }\n}\n"
        "passdb one {\n  driver = passwd-file\n  args = users\n  skip = unauthenticated\n}\n"
        "passdb {\n  driver = static\n  args = nopassword=y\n  result_internalfail = return-fail\n}\n"
    )
    dumped = dump_non_default(original)
    # the key is hidden, so give it back the way an administrator would
    dumped = dumped.replace(f"ssl_key = {'# hidden, use -P to show it'}", f"ssl_key = <{pems[1]}")
    again = load_settings_text(dumped, str(write("dumped.conf", "")))
    assert without_locations(again) == without_locations(original)
