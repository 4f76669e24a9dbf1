"""load_settings: names, values, merge rules, cross-checks, and every error's FILE:LINE."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyd.config import hosts
from proxyd.config.dump import dump_non_default
from proxyd.config.filters import FilterResolver
from proxyd.config.load import load_settings, load_settings_text
from proxyd.config.settings import (
    InetListener,
    PassdbSettings,
    Settings,
    UnixListener,
    effective_service,
    unix_listener,
)
from proxyd.errors import ConfigError, Location
from proxyd.protocols.imap.settings import ImapSettings
from proxyd.protocols.lmtp.settings import LmtpSettings
from proxyd.protocols.submission.settings import SubmissionSettings
from proxyd.secret import Secret
from proxyd.setting.values import InvalidValue
from tests.config.conftest import CERT_PEM, KEY_PEM, Load, Write

NO_SSL = "ssl = no\n"


def load_error(load: Load, text: str) -> tuple[int | None, str]:
    """(line, message) of the ConfigError that loading ``text`` as proxyd.conf raises."""
    with pytest.raises(ConfigError) as info:
        load(text)
    location = info.value.location
    return (location.line if location else None), info.value.message


def test_defaults_are_dovecots(load: Load) -> None:
    settings = load(NO_SSL)
    defaults = Settings()
    assert settings.protocols == ("imap",)
    assert settings.listen == ("*", "::")
    assert settings.login_greeting == "Dovecot ready."
    assert settings.auth_failure_delay == 2.0
    assert settings.login_proxy_timeout == 30.0
    assert settings.login_proxy_max_reconnects == 3
    assert settings.disable_plaintext_auth is True
    assert settings.auth_mechanisms == ("plain",)
    assert settings.ssl_min_protocol == "TLSv1.2"
    assert settings.passdbs == ()
    assert settings.services == defaults.services
    assert settings.services["imap-login"].listeners == (
        InetListener(name="imap", port=143),
        InetListener(name="imaps", port=993, ssl=True),
    )
    assert settings.services["pop3-login"].listeners == (
        InetListener(name="pop3", port=110),
        InetListener(name="pop3s", port=995, ssl=True),
    )
    for name in (
        "base_dir",
        "log_path",
        "auth_verbose",
        "auth_debug",
        "imap.imap_capability",
        "imap.imap_id_retain",
    ):
        assert settings.value(name) == defaults.value(name)


def test_config_path_and_explicit(load: Load, write: Write) -> None:
    settings = load("# comment\nssl = no\nlogin_greeting = Hi\nlogin_greeting = Hello\n")
    path = str(write("x", "")).replace("/x", "/proxyd.conf")
    assert settings.config_path == path
    assert settings.explicit == {"ssl": Location(path, 2), "login_greeting": Location(path, 4)}
    assert settings.login_greeting == "Hello"  # the later line wins


def test_all_top_level_settings(load: Load, pems: tuple[Path, Path], write: Write) -> None:
    write("ca.pem", CERT_PEM)
    settings = load(
        "protocols = imap\n"
        "listen = 127.0.0.1, ::1\n"
        "base_dir = /run/proxyd/\n"
        "log_path = /var/log/proxyd.log\n"
        "auth_verbose = yes\n"
        "ssl = required\n"
        "ssl_cert = <cert.pem\n"
        "ssl_key = <key.pem\n"
        "ssl_ca = <ca.pem\n"
        "ssl_min_protocol = tlsv1.3\n"
        "disable_plaintext_auth = no\n"
        "auth_mechanisms = PLAIN login\n"
        "auth_failure_delay = 0\n"
        'login_greeting = "Welcome  to proxyd"\n'
        "imap_capability = +XFOO\n"
        "imap_id_retain = yes\n"
        "login_trusted_networks = 10.0.0.0/8, 192.168.0.1\n"
        "login_proxy_timeout = 1500ms\n"
        "login_proxy_max_reconnects = 5\n"
    )
    cert, key = pems
    assert settings.protocols == ("imap",)
    assert settings.listen == ("127.0.0.1", "::1")
    assert settings.base_dir == "/run/proxyd"
    assert settings.log_path == "/var/log/proxyd.log"
    assert settings.auth_verbose is True
    assert settings.auth_debug is False
    assert settings.ssl == "required"
    assert settings.ssl_cert == CERT_PEM.rstrip("\n")
    assert settings.ssl_cert_path == str(cert)
    assert settings.ssl_key == Secret(KEY_PEM.rstrip("\n"))
    assert settings.ssl_key_path == str(key)
    assert settings.ssl_ca == CERT_PEM.rstrip("\n")
    assert settings.ssl_ca_path == str(cert.parent / "ca.pem")
    assert settings.ssl_min_protocol == "TLSv1.3"
    assert settings.disable_plaintext_auth is False
    assert settings.auth_mechanisms == ("plain", "login")
    assert settings.auth_failure_delay == 0.0
    assert settings.login_greeting == "Welcome  to proxyd"
    assert settings.of(ImapSettings) == ImapSettings(imap_capability="+XFOO", imap_id_retain=True)
    assert settings.login_trusted_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.0.1/32"),
    )
    assert settings.login_proxy_timeout == 1.5
    assert settings.login_proxy_max_reconnects == 5


def test_ssl_key_never_in_repr(load: Load, pems: tuple[Path, Path]) -> None:
    settings = load("ssl_cert = <cert.pem\nssl_key = <key.pem\n")
    assert "TOPSECRETKEYMATERIAL" not in repr(settings)
    assert isinstance(settings.ssl_key, Secret)


def test_auth_debug_implies_auth_verbose(load: Load) -> None:
    settings = load(NO_SSL + "auth_debug = yes\n")
    assert settings.auth_debug is True
    assert settings.auth_verbose is True


def test_load_settings_text(tmp_path: Path) -> None:
    (tmp_path / "inc.conf").write_text("login_greeting = included\n")
    name = str(tmp_path / "virtual.conf")
    settings = load_settings_text("ssl = no\n!include inc.conf\n", name)
    assert settings.login_greeting == "included"
    assert settings.config_path == name


# --- ssl cross-checks -----------------------------------------------------------


def test_ssl_default_yes_needs_cert(load: Load, write: Write) -> None:
    path = str(write("proxyd.conf", ""))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.location is None
    assert (
        str(info.value) == f"{path}: ssl enabled, but ssl_cert not set (ssl = yes is the default)"
    )


def test_ssl_required_needs_key(load: Load, pems: tuple[Path, Path]) -> None:
    assert load_error(load, "ssl_cert = <cert.pem\nssl = required\n") == (
        2,
        "ssl enabled, but ssl_key not set",
    )


def test_ssl_no_needs_nothing(load: Load) -> None:
    assert load("ssl = no\n").ssl == "no"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("ssl = maybe\n", 1, "Invalid value: maybe"),
        ("ssl = YES\n", 1, "Invalid value: YES"),
        (
            "ssl = no\nssl_cert = /etc/ssl/cert.pem\n",
            2,
            "ssl_cert: There is no valid PEM certificate. (You probably forgot '<' from ssl_cert=</etc/ssl/cert.pem)",
        ),
        (
            "ssl = no\nssl_key = /etc/ssl/key.pem\n",
            2,
            "ssl_key: There is no valid PEM private key. (You probably forgot '<' from ssl_key=<FILE)",
        ),
        ("ssl = no\nssl_min_protocol = TLSv9\n", 2, "Unknown ssl_min_protocol setting 'TLSv9'"),
    ],
)
def test_ssl_value_errors(load: Load, text: str, line: int, message: str) -> None:
    assert load_error(load, text) == (line, message)


def test_pem_file_without_pem(load: Load, write: Write) -> None:
    notpem = write("notpem.txt", "hello\n")
    assert load_error(load, "ssl = no\nssl_ca = <notpem.txt\n") == (
        2,
        f"ssl_ca: There is no valid PEM certificate in {notpem}",
    )


def test_pem_can_be_reset(load: Load, pems: tuple[Path, Path]) -> None:
    settings = load("ssl = no\nssl_cert = <cert.pem\nssl_cert =\n")
    assert settings.ssl_cert == ""
    assert settings.ssl_cert_path == ""


# --- protocols, mechanisms, lists ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("imap", ("imap",)),
        ('" imap"', ("imap",)),
        ("none", ()),
        ("$protocols imap", ("imap",)),
        # $protocols starts empty, as in Debian (its protocols.d files build the list)
        ("$protocols", ()),
        ("imap pop3", ("imap", "pop3")),
        ("$protocols pop3", ("pop3",)),
        ("pop3", ("pop3",)),
        ("pop3 imap pop3", ("pop3", "imap")),
    ],
)
def test_protocols(load: Load, value: str, expected: tuple[str, ...]) -> None:
    assert load(f"{NO_SSL}protocols = {value}\n").protocols == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lmtp", "protocols = lmtp needs lmtp_proxy = yes: proxyd delivers no mail itself"),
        ("imap foo", "protocols: Unknown protocol: foo"),
        ("none imap", "protocols: Unknown protocol: none"),
    ],
)
def test_protocols_errors(load: Load, value: str, message: str) -> None:
    assert load_error(load, f"{NO_SSL}protocols = {value}\n") == (2, message)


def test_lmtp_with_lmtp_proxy(load: Load) -> None:
    settings = load(f"{NO_SSL}protocols = imap lmtp\nlmtp_proxy = yes\nhostname = mx.test\n")
    assert (settings.protocols, settings.of(LmtpSettings).lmtp_proxy, settings.hostname) == (
        ("imap", "lmtp"), True, "mx.test")


def test_lmtp_settings(load: Load) -> None:
    settings = load(
        f"{NO_SSL}lmtp_hdr_delivery_address = original\nlmtp_client_workarounds = whitespace-before-path,mailbox-for-path\n"
        "lmtp_add_received_header = no\n"
    )
    own = settings.of(LmtpSettings)
    assert own.lmtp_hdr_delivery_address == "original"
    assert own.lmtp_client_workarounds == ("whitespace-before-path", "mailbox-for-path")
    assert own.lmtp_add_received_header is False
    assert load_error(load, f"{NO_SSL}lmtp_client_workarounds = foo\n") == (
        2, "lmtp_client_workarounds: Unknown workaround: foo")
    assert load_error(load, f"{NO_SSL}lmtp_hdr_delivery_address = all\n") == (2, "Invalid value: all")
    settings = load(f"{NO_SSL}lmtp_verbose_replies = yes\nlmtp_rawlog_dir = /var/log/lmtp\nmail_temp_dir = /var/tmp\n")
    own = settings.of(LmtpSettings)
    assert own.lmtp_verbose_replies is True
    assert own.lmtp_rawlog_dir == "/var/log/lmtp"
    assert own.lmtp_proxy_rawlog_dir == ""
    assert settings.mail_temp_dir == "/var/tmp"
    assert load_error(load, f"{NO_SSL}lmtp_proxy_rawlog_dir = tcp:127.0.0.1:4000\n") == (
        2, "lmtp_proxy_rawlog_dir: rawlogs to tcp: targets are not supported: tcp:127.0.0.1:4000")
    assert load_error(load, f"{NO_SSL}lmtp_rawlog_dir = /var/log/%u\n") == (
        2, "lmtp_rawlog_dir: %-variables are not supported here: /var/log/%u")
    assert load_error(load, f"{NO_SSL}mail_temp_dir = tmp\n") == (
        2, "mail_temp_dir: must be an absolute path: tmp")
    # read once by the lmtp process: protocol lmtp { } may set them, local/remote may not
    settings = load(f"{NO_SSL}protocol lmtp {{\n  lmtp_verbose_replies = yes\n  mail_temp_dir = /var/tmp\n}}\n")
    process = FilterResolver(settings).lookup("lmtp")
    assert process.of(LmtpSettings).lmtp_verbose_replies is True
    assert process.mail_temp_dir == "/var/tmp"
    assert settings.of(LmtpSettings).lmtp_verbose_replies is False
    assert load_error(load, f"{NO_SSL}remote 10.0.0.0/8 {{\n  protocol lmtp {{\n    lmtp_verbose_replies = yes\n  }}\n}}\n") == (
        4, "setting 'lmtp_verbose_replies' can't be set inside a 'protocol' block")
    assert load_error(load, f"{NO_SSL}protocol imap {{\n  mail_temp_dir = /var/tmp\n}}\n") == (
        3, "setting 'mail_temp_dir' can't be set inside a 'protocol' block")


def test_submission_settings(load: Load, caplog: pytest.LogCaptureFixture) -> None:
    settings = load(
        f"{NO_SSL}protocols = submission\n"
        "submission_backend_capabilities = 8bitmime, BINARYMIME dsn\n"
        "submission_max_mail_size = 40M\n"
        "submission_client_workarounds = exotic-backend,Whitespace-Before-Path\n"
    )
    own = settings.of(SubmissionSettings)
    assert own.submission_backend_capabilities == ("8BITMIME", "BINARYMIME", "DSN", "CHUNKING")
    assert own.submission_max_mail_size == 40 * 1024 * 1024
    assert own.submission_client_workarounds == ("exotic-backend", "whitespace-before-path")
    # unset is Dovecot's "8BITMIME only"; empty is no capability at all
    def capabilities(text: str) -> tuple[str, ...]:
        return load(text).of(SubmissionSettings).submission_backend_capabilities

    assert capabilities(NO_SSL) == ("8BITMIME",)
    assert capabilities(f"{NO_SSL}submission_backend_capabilities =\n") == ()
    with caplog.at_level(logging.WARNING, logger="proxyd.config"):
        assert capabilities(f"{NO_SSL}submission_backend_capabilities = SMTPUTF8 DSN\n") == ("DSN",)
    assert "Unknown SMTP capability in submission_backend_capabilities: SMTPUTF8" in caplog.text
    assert load_error(load, f"{NO_SSL}submission_client_workarounds = foo\n") == (
        2, "submission_client_workarounds: Unknown workaround: foo")
    assert load_error(load, f"{NO_SSL}submission_client_workarounds = implicit-auth-external\n") == (
        2, "submission_client_workarounds: workaround 'implicit-auth-external' is not supported yet")
    blocks = load(f"{NO_SSL}protocols = submission\nprotocol submission {{\n  submission_max_mail_size = 1k\n}}\n")
    assert blocks.of(SubmissionSettings).submission_max_mail_size == 0
    assert [block.values for block in blocks.filters] == [(("submission.submission_max_mail_size", 1024),)]
    # hostname: per connection in submission-login only (the LMTP service reads it once)
    named = load(f"{NO_SSL}protocols = submission lmtp\nlmtp_proxy = yes\nprotocol submission {{\n  hostname = smtp.test\n}}\n")
    assert [block.values for block in named.filters] == [(("hostname", "smtp.test"),)]
    assert load_error(load, f"{NO_SSL}protocols = lmtp\nlmtp_proxy = yes\nprotocol lmtp {{\n  hostname = mx.test\n}}\n") == (
        5, "setting 'hostname' can't be set inside a 'protocol' block")


def test_protocols_judged_on_the_final_value(load: Load) -> None:
    """Debian's protocols.d: each file adds one with ``$protocols``; the last value counts."""
    text = "protocols = imap\nprotocols = $protocols sieve\nprotocols = $protocols submission lmtp\n"
    assert load(NO_SSL + text + "lmtp_proxy = yes\n").protocols == ("imap", "sieve", "submission", "lmtp")
    text = "protocols = $protocols imap sieve\nprotocols = imap pop3\n"
    assert load(NO_SSL + text).protocols == ("imap", "pop3")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("plain ntlm", "auth_mechanisms: mechanism 'ntlm' is not supported yet"),
        ("GSSAPI", "auth_mechanisms: mechanism 'gssapi' is not supported yet"),
        ("plain bogus", "Unknown authentication mechanism 'bogus'"),
        ("", "No authentication mechanisms configured"),
    ],
)
def test_auth_mechanisms_errors(load: Load, value: str, message: str) -> None:
    assert load_error(load, f"{NO_SSL}auth_mechanisms = {value}\n") == (2, message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listen =\n", "listen can't be set empty"),
        ("listen = 300.1.1.1\n", "Invalid listen address: 300.1.1.1"),
        ("login_trusted_networks = 10.0.0.0/8 bogus\n", "Invalid network 'bogus'"),
        (
            "auth_failure_delay = 3\n",
            "Time interval '3' is missing units (add e.g. 's' for seconds)",
        ),
        ("auth_failure_delay = 300ms\n", "Milliseconds not supported for this setting: 300ms"),
        ("login_proxy_timeout = soon\n", "Invalid time interval: soon"),
        ("login_proxy_max_reconnects = -1\n", "Invalid number -1: Number too small"),
        ("auth_verbose = maybe\n", "Invalid boolean value: maybe (use yes or no)"),
        ("imap_id_retain = 0\n", "Invalid boolean value: 0 (use yes or no)"),
    ],
)
def test_value_errors_have_location(load: Load, text: str, message: str) -> None:
    assert load_error(load, NO_SSL + text) == (2, message)


def test_variable_of_a_setting_a_proxy_does_not_run(load: Load) -> None:
    # Debian's 20-lmtp.conf and 20-imap.conf, uncommented as admins do
    settings = load(
        NO_SSL + "protocol lmtp {\n  mail_plugins = $mail_plugins sieve\n}\n"
        "protocol imap {\n  mail_plugins = $mail_plugins imap_quota\n}\n"
    )
    assert [(item.location.line, item.what) for item in settings.unused] == [
        (3, "protocol lmtp { mail_plugins }"),
        (6, "protocol imap { mail_plugins }"),
    ]


def test_variable_with_roadmap_default(load: Load) -> None:
    settings = load(NO_SSL + "login_greeting = proxy for $default_login_user\n")
    assert settings.login_greeting == "proxy for dovenull"


# --- unknown, not-yet, and allow-listed names ----------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo = bar\n", "Unknown setting: foo"),
        (
            "login_log_format = %$ %u\n",
            "login_log_format: unknown variable %u (only %$, %s and %%)",
        ),
        (
            "mail_max_userip_connections = 3\n",
            "setting 'mail_max_userip_connections' is not supported yet",
        ),
        ("ssl_crypto_device = x\n", "setting 'ssl_crypto_device' is not supported yet"),
        ("instance_name = x\n", "setting 'instance_name' is not supported yet"),
        ("local_name mail.example.com {\n}\n", "section 'local_name' is not supported yet"),
        ("port = 143\n", "Unknown setting: port"),
        ("foo {\n}\n", "Unknown section: foo"),
    ],
)
def test_unknown_and_unsupported(load: Load, text: str, message: str) -> None:
    assert load_error(load, NO_SSL + text) == (2, message)


def test_error_in_included_file_has_its_location(load: Load, write: Write) -> None:
    inc = write("conf.d/10-auth.conf", "# auth\n\nauth_mechanisms = plain\ninstance_name = x\n")
    with pytest.raises(ConfigError) as info:
        load(NO_SSL + "!include conf.d/*.conf\n")
    assert str(info.value) == f"{inc}:4: setting 'instance_name' is not supported yet"


def test_sockets_of_the_services_proxyd_runs(load: Load) -> None:
    settings = load(
        NO_SSL
        + "service auth {\n  user = nobody\n  unix_listener login/login {\n    mode = 0660\n"
        + "    group = mail\n  }\n  unix_listener auth-master {\n  }\n}\n"
        + "service tcpwrap {\n  unix_listener login/tcpwrap {\n    mode = 0\n  }\n}\n"
    )
    assert unix_listener(settings, "auth", "login/login") == UnixListener(
        "login/login", 0o660, "", "mail", Location(settings.config_path, 4)
    )
    assert effective_service(settings, "auth").user == "nobody"
    assert unix_listener(settings, "tcpwrap", "login/tcpwrap").mode == 0
    # defaults: Dovecot's
    defaults = load(NO_SSL)
    assert unix_listener(defaults, "auth", "login/login") == UnixListener("login/login", 0o666)
    assert unix_listener(defaults, "tcpwrap", "login/tcpwrap") == UnixListener(
        "login/tcpwrap", 0o600, "dovenull"
    )
    assert [item.what for item in settings.unused] == [
        "service auth { unix_listener auth-master { } }"
    ]
    dumped = dump_non_default(settings)
    assert (
        "service auth {\n  user = nobody\n  unix_listener login/login {\n    group = mail\n    mode = 0660\n  }\n}\n"
        in dumped
    )
    assert "service tcpwrap {\n  unix_listener login/tcpwrap {\n    mode = 00\n  }\n}\n" in dumped


def test_settings_of_services_a_proxy_does_not_run_are_listed(load: Load) -> None:
    settings = load(
        NO_SSL
        + "mail_location = maildir:~/Maildir\n"
        + "mail_privileged_group = mail\n"
        + "first_valid_uid = 1000\n"
        + "namespace inbox {\n  inbox = yes\n  mailbox Drafts {\n    special_use = \\Drafts\n  }\n}\n"
        + "plugin {\n  quota = maildir\n}\n"
        + "dict {\n}\n"
        + "service imap {\n  process_limit = 1024\n}\n"
        + "service lmtp {\n  unix_listener lmtp {\n  }\n}\n"
        + "service submission {\n}\n"
        + "service auth {\n  unix_listener auth-userdb {\n    mode = 0666\n  }\n}\n"
        + "protocol lda {\n  mail_plugins = sieve\n}\n"
        + "protocol !indexer-worker {\n  mail_vsize_bg_after_count = 0\n}\n"
        + "protocol imap {\n}\n"
        + "local 127.0.0.1 {\n}\n"
        + "remote 10.0.0.0/8 {\n}\n"
    )
    # proxyd runs the lmtp service (the LMTP proxy): its block applies
    assert settings.explicit.keys() == {"ssl", "service/auth", "service/lmtp"}
    assert settings.filters == ()
    assert [(item.location.line, item.what) for item in settings.unused] == [
        (2, "mail_location"),
        (3, "mail_privileged_group"),
        (4, "first_valid_uid"),
        (5, "namespace inbox { }"),
        (11, "plugin { }"),
        (14, "dict { }"),
        (16, "service imap { }"),
        (23, "service submission { }"),
        (26, "service auth { unix_listener auth-userdb { } }"),
        (30, "protocol lda { }"),
        (34, "protocol !indexer-worker { mail_vsize_bg_after_count }"),
    ]


def test_userdb_is_accepted_silently(load: Load, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="proxyd.config"):
        settings = load(NO_SSL + "userdb {\n  driver = static\n  args = uid=vmail gid=vmail\n}\n")
    assert settings.passdbs == ()
    assert caplog.records == []


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("userdb {\n  args = x\n}\n", 2, "userdb is missing driver"),
        ("userdb {\n  driver = static\n  foo = 1\n}\n", 4, "Unknown setting: userdb { foo"),
        ("userdb {\n  driver = static\n  x {\n  }\n}\n", 4, "Unknown section: userdb { x"),
    ],
)
def test_userdb_errors(load: Load, text: str, line: int, message: str) -> None:
    assert load_error(load, NO_SSL + text) == (line, message)


# --- services and listeners ------------------------------------------------------


def test_listener_merges_with_default_by_name(load: Load) -> None:
    settings = load(
        NO_SSL
        + "service imap-login {\n"
        + "  inet_listener imap {\n"
        + "    port = 1143\n"
        + "    address = 127.0.0.1, ::1\n"
        + "  }\n"
        + "  inet_listener imaps {\n"
        + "    port = 0\n"
        + "  }\n"
        + "}\n"
    )
    service = settings.service("imap-login")
    path = settings.config_path
    assert service.location == Location(path, 2)
    assert service.listeners == (
        InetListener(
            name="imap", port=1143, addresses=("127.0.0.1", "::1"), location=Location(path, 3)
        ),
        InetListener(name="imaps", port=0, ssl=True, location=Location(path, 7)),
    )
    assert settings.explicit["service/imap-login/inet_listener/imap/port"] == Location(path, 4)


def test_pop3_login_service_overrides_the_builtin_listeners(load: Load) -> None:
    """Dovecot's ``service pop3-login`` with its default ``pop3`` (110) and ``pop3s`` (995, ssl) listeners."""
    settings = load(
        NO_SSL
        + "protocols = imap pop3\n"
        + "service pop3-login {\n"
        + "  inet_listener pop3 {\n"
        + "    port = 1110\n"
        + "  }\n"
        + "  inet_listener pop3s {\n"
        + "    address = 127.0.0.1\n"
        + "  }\n"
        + "}\n"
    )
    path = settings.config_path
    assert settings.protocols == ("imap", "pop3")
    assert settings.service("pop3-login").listeners == (
        InetListener(name="pop3", port=1110, location=Location(path, 4)),
        InetListener(
            name="pop3s", port=995, ssl=True, addresses=("127.0.0.1",), location=Location(path, 7)
        ),
    )
    assert settings.explicit["service/pop3-login/inet_listener/pop3/port"] == Location(path, 5)
    # the IMAP listeners keep their defaults
    assert settings.service("imap-login").listeners[0] == InetListener(name="imap", port=143)


def test_new_listener_and_repeated_service_blocks(load: Load) -> None:
    settings = load(
        NO_SSL
        + "service imap-login {\n  inet_listener extra {\n    port = 10143\n  }\n}\n"
        + "service imap-login {\n  inet_listener extra {\n    ssl = yes\n    haproxy = no\n    reuse_port = no\n  }\n}\n"
    )
    listeners = {listener.name: listener for listener in settings.service("imap-login").listeners}
    assert list(listeners) == ["imap", "imaps", "extra"]
    assert listeners["extra"] == InetListener(
        name="extra", port=10143, ssl=True, location=Location(settings.config_path, 3)
    )
    assert listeners["imap"] == InetListener(name="imap", port=143)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("service nonsense {\n}\n", 2, "Unknown service: nonsense"),
        (
            "service auth {\n  chroot = /x\n}\n",
            3,
            "setting 'service auth { chroot' is not supported yet",
        ),
        (
            "service auth {\n  unix_listener login/login {\n    mode = 0999\n  }\n}\n",
            4,
            "Invalid number 0999: Not a valid octal number",
        ),
        (
            "service auth {\n  unix_listener login/login {\n    path = elsewhere\n  }\n}\n",
            4,
            "path: proxyd keeps this socket at login/login",
        ),
        (
            "service tcpwrap {\n  unix_listener other {\n  }\n}\n",
            3,
            "service tcpwrap: proxyd creates only unix_listener login/tcpwrap, not unix_listener other",
        ),
        (
            "service tcpwrap {\n  fifo_listener login/tcpwrap {\n  }\n}\n",
            3,
            "service tcpwrap: proxyd creates only unix_listener login/tcpwrap, "
            "not fifo_listener login/tcpwrap",
        ),
        (
            "service tcpwrap {\n  unix_listener login/tcpwrap {\n    owner = x\n  }\n}\n",
            4,
            "Unknown setting: service { unix_listener { owner",
        ),
        (
            "service auth {\n  inet_listener x {\n  }\n}\n",
            3,
            "Unknown section: service { inet_listener",
        ),
        ("service {\n}\n", 2, "service is missing name"),
        (
            "service imap-login {\n  process_limit = ten\n}\n",
            3,
            "Invalid number ten: Not a valid number",
        ),
        (
            "service imap-login {\n  executable = x\n}\n",
            3,
            "setting 'executable' is not supported yet",
        ),
        ("service imap-login {\n  foo = 1\n}\n", 3, "Unknown setting: service { foo"),
        (
            "service imap-login {\n  unix_listener x {\n  }\n}\n",
            3,
            "section 'unix_listener' is not supported yet",
        ),
        ("service imap-login {\n  passdb {\n  }\n}\n", 3, "Unknown section: service { passdb"),
        (
            "service imap-login {\n  inet_listener imap {\n    port = 70000\n  }\n}\n",
            4,
            "Invalid port number 70000",
        ),
        (
            "service imap-login {\n  inet_listener imap {\n    foo = 1\n  }\n}\n",
            4,
            "Unknown setting: service { inet_listener { foo",
        ),
        (
            "service imap-login {\n  inet_listener imap {\n    haproxy = maybe\n  }\n}\n",
            4,
            "Invalid boolean value: maybe (use yes or no)",
        ),
        (
            "service imap-login {\n  inet_listener imap {\n    ssl = sure\n  }\n}\n",
            4,
            "Invalid boolean value: sure (use yes or no)",
        ),
    ],
)
def test_service_errors(load: Load, text: str, line: int, message: str) -> None:
    assert load_error(load, NO_SSL + text) == (line, message)


def test_inet_listener_outside_service(load: Load) -> None:
    assert load_error(load, NO_SSL + "inet_listener imap {\n}\n") == (
        2,
        "Unknown section: inet_listener",
    )


# --- passdbs ----------------------------------------------------------------------


def test_passdbs_in_order(load: Load, write: Write) -> None:
    write(
        "conf.d/auth-sql.conf.ext",
        "passdb sql {\n  driver = sql\n  args = dovecot-sql.conf.ext\n}\n",
    )
    settings = load(
        NO_SSL
        + "passdb {\n"
        + "  driver = static\n"
        + "  args = nopassword=y\n"
        + "  result_success = continue-ok\n"
        + "  result_failure = return-fail\n"
        + "  result_internalfail = return\n"
        + "  skip = authenticated\n"
        + "  default_fields = proxy=y host=127.0.0.1\n"
        + "  override_fields = port=143\n"
        + "  master = no\n"
        + "  deny = no\n"
        + "  pass = no\n"
        + "}\n"
        + "!include conf.d/auth-sql.conf.ext\n"
    )
    path = settings.config_path
    first, second = settings.passdbs
    assert first == PassdbSettings(
        driver="static",
        args="nopassword=y",
        name="",
        result_success="continue-ok",
        result_failure="return-fail",
        result_internalfail="return",
        skip="authenticated",
        default_fields="proxy=y host=127.0.0.1",
        override_fields="port=143",
        location=Location(path, 2),
        config_dir=os.path.dirname(path),
    )
    sql_file = os.path.join(os.path.dirname(path), "conf.d/auth-sql.conf.ext")
    assert second == PassdbSettings(
        driver="sql",
        args="dovecot-sql.conf.ext",
        name="sql",
        location=Location(sql_file, 1),
        config_dir=os.path.dirname(sql_file),
    )
    assert settings.explicit["passdb/0/driver"] == Location(path, 3)
    assert settings.explicit["passdb/1"] == Location(sql_file, 1)


def test_passdb_name_setting(load: Load) -> None:
    settings = load(NO_SSL + "passdb {\n  driver = static\n  name = users\n}\n")
    assert settings.passdbs[0].name == "users"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("passdb {\n  args = x\n}\n", 2, "passdb is missing driver"),
        ("passdb {\n  driver =\n}\n", 2, "passdb is missing driver"),
        ("passdb {\n  driver = static\n  result_success = maybe\n}\n", 4, "Invalid value: maybe"),
        ("passdb {\n  driver = static\n  skip = found\n}\n", 4, "Invalid value: found"),
        (
            "passdb {\n  driver = static\n  deny = yes\n}\n",
            4,
            "setting 'deny = yes' is not supported yet",
        ),
        (
            "passdb {\n  driver = static\n  mechanisms = plain\n}\n",
            4,
            "setting 'mechanisms' is not supported yet",
        ),
        (
            "passdb {\n  driver = static\n  username_filter = *@x\n}\n",
            4,
            "setting 'username_filter' is not supported yet",
        ),
        ("passdb {\n  driver = static\n  bogus = 1\n}\n", 4, "Unknown setting: passdb { bogus"),
        ("passdb {\n  driver = static\n  x {\n  }\n}\n", 4, "Unknown section: passdb { x"),
        (
            "passdb a {\n  driver = static\n}\npassdb a {\n  driver = static\n}\n",
            5,
            "passdb/a already exists",
        ),
    ],
)
def test_passdb_errors(load: Load, text: str, line: int, message: str) -> None:
    assert load_error(load, NO_SSL + text) == (line, message)


def test_debian_style_config_loads(load: Load, write: Write, pems: tuple[Path, Path]) -> None:
    """The shape of a Debian dovecot.conf with conf.d/ and protocols.d/ fragments."""
    write("protocols.d/imapd.protocol", "protocols = $protocols imap\n")
    write("conf.d/10-ssl.conf", "ssl = yes\nssl_cert = <../cert.pem\nssl_key = <../key.pem\n")
    write(
        "conf.d/10-auth.conf",
        "disable_plaintext_auth = yes\nauth_mechanisms = plain\n!include auth-static.conf.ext\n",
    )
    write(
        "conf.d/auth-static.conf.ext",
        "passdb {\n  driver = static\n  args = nopassword=y\n}\nuserdb {\n  driver = static\n  args = uid=x\n}\n",
    )
    write(
        "conf.d/10-master.conf",
        "service imap-login {\n  inet_listener imap {\n    #port = 143\n  }\n  inet_listener imaps {\n    #port = 993\n    #ssl = yes\n  }\n}\n",
    )
    settings = load(
        "!include_try protocols.d/*.protocol\n"
        "listen = *, ::\n"
        "!include conf.d/*.conf\n"
        "!include_try local.conf\n"
    )
    assert settings.protocols == ("imap",)
    assert settings.ssl == "yes"
    assert settings.passdbs[0].driver == "static"
    listeners = settings.service("imap-login").listeners
    assert [dataclasses.replace(item, location=None) for item in listeners] == list(
        Settings().service("imap-login").listeners
    )


def test_service_doveadm_http_listener(load: Load) -> None:
    """The doveadm HTTP API's listener and credentials; the doveadm server's other
    sockets and process settings are listed as unused (proxyd runs no doveadm server)."""
    settings = load(
        NO_SSL
        + "doveadm_api_key = key-Z9q\ndoveadm_password = pw-Z9q\n"
        + "service doveadm {\n  process_limit = 2\n  unix_listener doveadm-server {\n  }\n"
        + "  inet_listener {\n    port = 2425\n  }\n"
        + "  inet_listener http {\n    address = 127.0.0.1\n    port = 8080\n  }\n}\n"
    )
    assert settings.doveadm_api_key == Secret("key-Z9q")
    assert settings.doveadm_password == Secret("pw-Z9q")
    assert settings.service("doveadm").listeners == (
        InetListener(
            name="http",
            port=8080,
            addresses=("127.0.0.1",),
            location=Location(settings.config_path, 11),
        ),
    )
    assert [item.what for item in settings.unused] == [
        "service doveadm { process_limit }",
        "service doveadm { unix_listener doveadm-server { } }",
        "service doveadm { inet_listener { } }",
    ]
    assert "Z9q" not in repr(settings)


def test_service_doveadm_http_tls_needs_ssl(load: Load) -> None:
    text = (
        NO_SSL
        + "service doveadm {\n  inet_listener http {\n    port = 8080\n    ssl = yes\n  }\n}\n"
    )
    assert load_error(load, text) == (3, "ssl = yes on this listener, but ssl = no")
    text = (
        NO_SSL
        + "service doveadm {\n  inet_listener http {\n    port = 8080\n    haproxy = yes\n  }\n}\n"
    )
    assert load_error(load, text) == (5, "service doveadm: haproxy is not supported here")


def test_cluster_peers(load: Load) -> None:
    settings = load(NO_SSL + "proxyd_cluster_peers = 10.0.0.5:8080 [2001:db8::1]:8080 node3.example:8080 10.0.0.5:8080\n")
    assert settings.proxyd_cluster_peers == ("10.0.0.5:8080", "[2001:db8::1]:8080", "node3.example:8080")
    for bad, text in (("10.0.0.5", "is not IP:PORT"), ("2001:db8::1:80", "is not IP:PORT"),
                      ("[zz]:80", "Invalid IPv6"), ("10.0.0.5:0", "Invalid port"), ("a:99999", "Invalid port")):  # fmt: skip
        line, message = load_error(load, NO_SSL + f"proxyd_cluster_peers = {bad}\n")
        assert line == 2
        assert text in message, message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_cluster_peers_any_text(text: str) -> None:
    try:
        peers = hosts.parse_cluster_peers(text)
    except InvalidValue:
        return
    assert all(":" in peer for peer in peers)


def test_lmtp_unix_listener(load: Load) -> None:
    settings = load(
        NO_SSL
        + "service lmtp {\n  unix_listener /var/spool/postfix/private/dovecot-lmtp {\n"
        + "    mode = 0600\n    user = postfix\n    group = postfix\n  }\n  client_limit = 4\n}\n"
    )
    service = settings.services["lmtp"]
    assert service.client_limit == 4
    listeners = {u.name: (u.mode, u.user, u.group) for u in service.unix_listeners}
    assert listeners == {"lmtp": (0o666, "", ""), "/var/spool/postfix/private/dovecot-lmtp": (0o600, "postfix", "postfix")}
    assert load_error(load, NO_SSL + "service lmtp {\n  unix_listener lmtp {\n    mode = 9\n  }\n}\n") == (
        4, "Invalid number 9: Not a valid octal number")


def test_ssl_alt_cert_needs_its_key(load: Load, write: Write) -> None:
    cert, key = write("cert.pem", CERT_PEM), write("key.pem", KEY_PEM)
    text = f"ssl_cert = <{cert}\nssl_key = <{key}\nssl_alt_cert = <{cert}\n"
    assert load_error(load, text) == (3, "ssl_alt_cert and ssl_alt_key go together")
    settings = load(text + f"ssl_alt_key = <{key}\nssl_key_password = pw\n")
    assert settings.ssl_alt_key.reveal() == KEY_PEM.rstrip("\n")
    assert settings.ssl_key_password.reveal() == "pw"
    assert "ssl_key_password = # hidden, use -P to show it" in dump_non_default(settings)


def test_auth_realms(load: Load) -> None:
    """DIGEST-MD5's offered realms: space separated; a quote or backslash would break the challenge."""
    assert load(NO_SSL + "auth_realms = example.com  other.org\n").auth_realms == ("example.com", "other.org")
    assert load(NO_SSL).auth_realms == ()
    assert load_error(load, NO_SSL + 'auth_realms = a "b"\n') == (2, "auth_realms: invalid realm '\"b\"'")


def test_hostdomain_is_dovecots_my_hostdomain(load: Load, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset ``hostname`` means the host's canonical name, looked up when the file is loaded."""
    from proxyd.config import hosts

    monkeypatch.setattr(hosts.socket, "gethostname", lambda: "mail1")
    monkeypatch.setattr(hosts.socket, "gethostbyname_ex", lambda name: (f"{name}.example.org", [], ["192.0.2.1"]))
    hosts.my_hostdomain.cache_clear()
    try:
        assert load(NO_SSL).hostdomain == "mail1.example.org"
        hosts.my_hostdomain.cache_clear()

        def unknown(name: str) -> tuple[str, list[str], list[str]]:
            raise OSError("unknown host")

        monkeypatch.setattr(hosts.socket, "gethostbyname_ex", unknown)
        assert load(NO_SSL).hostdomain == "mail1"
    finally:
        hosts.my_hostdomain.cache_clear()
