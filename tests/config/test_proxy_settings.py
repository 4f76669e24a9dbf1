"""The proxying settings: defaults, parsing, name resolution, errors and ``proxyd -n``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from proxyd.config import hosts
from proxyd.config.dump import HIDDEN, dump_non_default
from proxyd.config.load import load_settings_text
from proxyd.config.settings import HostList, LocalBackend, Settings
from proxyd.errors import ConfigError
from tests.config.conftest import CERT_PEM, KEY_PEM, Load, Write

NO_SSL = "ssl = no\n"


def error_of(load: Load, text: str) -> tuple[int | None, str]:
    with pytest.raises(ConfigError) as info:
        load(NO_SSL + text)
    location = info.value.location
    return (location.line if location else None), info.value.message


def test_defaults_are_dovecots(load: Load) -> None:
    settings = load(NO_SSL)
    assert settings.login_proxy_max_disconnect_delay == 0
    assert settings.login_source_ips == HostList("", ())
    assert settings.auth_proxy_self == HostList("", ())
    assert settings.auth_master_user_separator == ""
    assert settings.proxyd_local_backend is None
    assert settings.ssl_client_cert == ""
    assert settings.ssl_client_key.reveal() == ""
    assert settings.ssl_client_ca_file == ""
    assert settings.ssl_client_ca_dir == ""
    assert settings.ssl_require_crl is True
    # nothing of it shows up in proxyd -n
    assert dump_non_default(settings).splitlines()[1:] == ["ssl = no"]


def test_login_source_ips_resolve_names_and_keep_order(load: Load) -> None:
    settings = load(NO_SSL + "login_source_ips = 127.0.0.9, localhost 127.0.0.9 ::1\n")
    # localhost comes from /etc/hosts (127.0.0.1)
    assert settings.login_source_ips.addresses[:2] == ("127.0.0.9", "127.0.0.1")
    assert settings.login_source_ips.addresses.count("127.0.0.9") == 1
    assert "::1" in settings.login_source_ips.addresses
    assert settings.login_source_ips.text == "127.0.0.9, localhost 127.0.0.9 ::1"


def test_login_source_ips_question_mark_keeps_only_bindable_addresses(load: Load) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this host: bind() fails
    settings = load(NO_SSL + "login_source_ips = ?127.0.0.7 192.0.2.1 127.0.0.8\n")
    assert settings.login_source_ips.addresses == ("127.0.0.7", "127.0.0.8")
    # without "?" every address is kept
    settings = load(NO_SSL + "login_source_ips = 127.0.0.7 192.0.2.1\n")
    assert settings.login_source_ips.addresses == ("127.0.0.7", "192.0.2.1")


def test_login_source_ips_unknown_name_is_logged_and_skipped(
    load: Load, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="proxyd.config"):
        settings = load(NO_SSL + "login_source_ips = no-such-host.invalid 127.0.0.6\n")
    assert settings.login_source_ips.addresses == ("127.0.0.6",)
    assert any(
        "login_source_ips: gethostbyname(no-such-host.invalid) failed" in r.getMessage()
        for r in caplog.records
    )


def test_auth_proxy_self(load: Load) -> None:
    settings = load(NO_SSL + "auth_proxy_self = 10.1.2.3 localhost\n")
    assert settings.auth_proxy_self.addresses[:2] == ("10.1.2.3", "127.0.0.1")
    line, message = error_of(load, "auth_proxy_self = 10.0.0.1 no-such-host.invalid\n")
    assert line == 2
    assert message.startswith("auth_proxy_self_ips: gethostbyname(no-such-host.invalid) failed")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:10143", LocalBackend("127.0.0.1", 10143)),
        ("mail.example.org:143", LocalBackend("mail.example.org", 143)),
        ("[::1]:993", LocalBackend("::1", 993)),
        ("127.0.0.1", LocalBackend("127.0.0.1", 0)),
        ("mail.example.org", LocalBackend("mail.example.org", 0)),
        ("::1", LocalBackend("::1", 0)),
    ],
)
def test_proxyd_local_backend(load: Load, value: str, expected: LocalBackend) -> None:
    settings = load(NO_SSL + f"proxyd_local_backend = {value}\n")
    assert settings.proxyd_local_backend == expected
    assert hosts.format_local_backend(expected) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("127.0.0.1:0", "proxyd_local_backend: Invalid port number in '127.0.0.1:0'"),
        ("127.0.0.1:http", "proxyd_local_backend: Invalid port number in '127.0.0.1:http'"),
        (
            "fe80::1::143",
            "proxyd_local_backend: 'fe80::1::143' is not host[:port] (write IPv6 as [addr]:port)",
        ),
        ("[nonsense]:143", "proxyd_local_backend: Invalid IPv6 address in '[nonsense]:143'"),
    ],
)
def test_proxyd_local_backend_errors(load: Load, value: str, message: str) -> None:
    assert error_of(load, f"proxyd_local_backend = {value}\n") == (2, message)


def test_disconnect_delay_is_a_time(load: Load) -> None:
    assert (
        load(NO_SSL + "login_proxy_max_disconnect_delay = 30s\n").login_proxy_max_disconnect_delay
        == 30
    )
    assert (
        load(
            NO_SSL + "login_proxy_max_disconnect_delay = 2 mins\n"
        ).login_proxy_max_disconnect_delay
        == 120
    )
    assert error_of(load, "login_proxy_max_disconnect_delay = 30\n") == (
        2,
        "Time interval '30' is missing units (add e.g. 's' for seconds)",
    )


def test_client_tls_files(load: Load, write: Write, tmp_path: Path) -> None:
    cert = write("client.crt", CERT_PEM)
    key = write("client.key", KEY_PEM)
    ca = write("ca.pem", CERT_PEM)
    settings = load(
        NO_SSL
        + f"ssl_client_cert = <{cert}\nssl_client_key = <{key}\n"
        + f"ssl_client_ca_file = {ca}\nssl_client_ca_dir = {tmp_path}\nssl_require_crl = no\n"
    )
    assert settings.ssl_client_cert.strip() == CERT_PEM.strip()
    assert settings.ssl_client_key.reveal().strip() == KEY_PEM.strip()
    assert settings.ssl_client_cert_path == str(cert)
    assert settings.ssl_client_ca_file == str(ca)
    assert settings.ssl_client_ca_dir == str(tmp_path)
    assert settings.ssl_require_crl is False
    dumped = dump_non_default(settings)
    assert f"ssl_client_cert = <{cert}\n" in dumped
    assert f"ssl_client_key = {HIDDEN}\n" in dumped
    assert "TOPSECRET" not in dumped
    assert f"ssl_client_ca_file = {ca}\n" in dumped
    assert "ssl_require_crl = no\n" in dumped


def test_client_tls_errors(load: Load, tmp_path: Path) -> None:
    assert error_of(load, "ssl_client_key = /etc/key.pem\n") == (
        2,
        "ssl_client_key: There is no valid PEM private key. (You probably forgot '<' from ssl_client_key=<FILE)",
    )
    missing = tmp_path / "missing.pem"
    assert error_of(load, f"ssl_client_ca_file = {missing}\n") == (
        2,
        f"ssl_client_ca_file: {missing}: No such file",
    )
    assert error_of(load, f"ssl_client_ca_dir = {missing}\n") == (
        2,
        f"ssl_client_ca_dir: {missing}: No such directory",
    )


def test_dump_round_trip(load: Load) -> None:
    text = (
        NO_SSL
        + "auth_master_user_separator = *\n"
        + "auth_proxy_self = 10.9.9.9\n"
        + "login_proxy_max_disconnect_delay = 10 secs\n"
        + "login_source_ips = ?127.0.0.1, 127.0.0.2\n"
        + "proxyd_local_backend = 127.0.0.1:10143\n"
    )
    settings = load(text)
    dumped = dump_non_default(settings)
    for line in text.splitlines()[1:]:
        assert line in dumped.splitlines()
    again = load_settings_text(dumped, "again.conf")
    for name in (
        "auth_master_user_separator",
        "auth_proxy_self",
        "login_proxy_max_disconnect_delay",
        "login_source_ips",
        "proxyd_local_backend",
    ):
        assert getattr(again, name) == getattr(settings, name), name
    assert isinstance(again, Settings)


def test_oauth2_mechanisms_are_accepted(load: Load) -> None:
    settings = load(NO_SSL + "auth_mechanisms = plain LOGIN XOAUTH2 oauthbearer\n")
    assert settings.auth_mechanisms == ("plain", "login", "xoauth2", "oauthbearer")
    assert error_of(load, "auth_mechanisms = plain ntlm\n") == (
        2,
        "auth_mechanisms: mechanism 'ntlm' is not supported yet",
    )
