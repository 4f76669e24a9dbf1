"""``protocol``/``local``/``remote`` blocks: parsing, nesting rules and Dovecot's precedence."""

from __future__ import annotations

import ipaddress

import pytest

from proxyd.config.filters import FilterResolver, tls_candidates
from proxyd.config.hosts import resolve_name
from proxyd.errors import ConfigError
from tests.config.conftest import Load

NO_SSL = "ssl = no\n"

FILTERS = """\
login_greeting = top
protocol imap {
  login_greeting = imap
}
local 127.0.0.0/8 {
  login_greeting = local8
  protocol pop3 {
    disable_plaintext_auth = no
  }
}
local 127.0.0.5 {
  login_greeting = local5
}
remote 10.0.0.0/8 {
  disable_plaintext_auth = no
  remote 10.1.0.0/16 {
    login_greeting = remote16
  }
}
protocol !imap {
  auth_mechanisms = plain login
}
"""


@pytest.mark.parametrize(
    ("protocol", "local", "remote", "greeting", "plaintext_disabled", "mechanisms"),
    [
        ("imap", "192.0.2.1", "192.0.2.9", "imap", True, ("plain",)),
        ("pop3", "192.0.2.1", "192.0.2.9", "top", True, ("plain", "login")),
        # local beats protocol; the more local bits, the stronger
        ("imap", "127.0.0.1", "192.0.2.9", "local8", True, ("plain",)),
        ("imap", "127.0.0.5", "192.0.2.9", "local5", True, ("plain",)),
        ("pop3", "127.0.0.1", "192.0.2.9", "local8", False, ("plain", "login")),
        # remote beats protocol, local beats remote
        ("imap", "192.0.2.1", "10.1.2.3", "remote16", False, ("plain",)),
        ("imap", "192.0.2.1", "10.2.0.1", "imap", False, ("plain",)),
        ("imap", "127.0.0.5", "10.1.2.3", "local5", False, ("plain",)),
        ("imap", "192.0.2.1", "::ffff:10.1.2.3", "remote16", False, ("plain",)),
    ],
)
def test_precedence(
    load: Load,
    protocol: str,
    local: str,
    remote: str,
    greeting: str,
    plaintext_disabled: bool,
    mechanisms: tuple[str, ...],
) -> None:
    settings = load(NO_SSL + FILTERS)
    resolved = FilterResolver(settings).lookup(protocol, local, remote)
    assert resolved.login_greeting == greeting
    assert resolved.disable_plaintext_auth is plaintext_disabled
    assert resolved.auth_mechanisms == mechanisms
    assert settings.login_greeting == "top"  # the top level itself is unchanged


def test_results_are_cached_by_the_blocks_that_match(load: Load) -> None:
    resolver = FilterResolver(load(NO_SSL + FILTERS))
    first = resolver.lookup("imap", "127.0.0.1", "192.0.2.1")
    assert resolver.lookup("imap", "127.0.0.2", "192.0.2.77") is first
    assert resolver.lookup("imap", "127.0.0.5", "192.0.2.1") is not first


def test_no_filters_gives_the_settings_themselves(load: Load) -> None:
    settings = load(NO_SSL)
    assert FilterResolver(settings).lookup("imap", "127.0.0.1", "127.0.0.1") is settings


def test_a_later_setting_at_the_top_does_not_override_a_block(load: Load) -> None:
    settings = load(NO_SSL + "protocol imap {\n  login_greeting = imap\n}\nlogin_greeting = later\n")
    assert FilterResolver(settings).lookup("imap").login_greeting == "imap"
    assert FilterResolver(settings).lookup("pop3").login_greeting == "later"


def test_variables_inside_blocks(load: Load) -> None:
    settings = load(
        NO_SSL + "login_greeting = hi\nprotocol imap {\n  login_greeting = $login_greeting imap\n}\n"
    )
    assert FilterResolver(settings).lookup("imap").login_greeting == "hi imap"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "protocol imap {\n  protocol pop3 {\n  }\n}\n",
            3,
            "Nested protocol { protocol { .. } } block not allowed",
        ),
        (
            "protocol imap {\n  local 1.2.3.4 {\n  }\n}\n",
            3,
            "protocol { local { .. } } not allowed (use local { protocol { .. } } instead)",
        ),
        (
            "remote 10.0.0.0/8 {\n  local 1.2.3.4 {\n  }\n}\n",
            3,
            "remote { local { .. } } not allowed (use local { remote { .. } } instead)",
        ),
        (
            "protocol imap {\n  remote 1.2.3.4 {\n  }\n}\n",
            3,
            "protocol { remote { .. } } not allowed (use remote { protocol { .. } } instead)",
        ),
        (
            "local 10.0.0.0/8 {\n  local 11.0.0.1 {\n  }\n}\n",
            3,
            "local net1 { local net2 { .. } } requires net2 to be inside net1",
        ),
        (
            "remote 10.1.0.0/16 {\n  remote 10.0.0.0/8 {\n  }\n}\n",
            3,
            "remote net1 { remote net2 { .. } } requires net2 to be inside net1",
        ),
        ("local 10.0.0.0/99 {\n}\n", 2, "Invalid network mask: 99"),
        ("protocol imap {\n  listen = 127.0.0.1\n}\n", 3, "setting 'listen' can't be set inside a 'protocol' block"),
        (
            "local 127.0.0.1 {\n  auth_mechanisms = login\n}\n",
            3,
            "setting 'auth_mechanisms' can't be set inside a 'local' block",
        ),
        ("protocol imap {\n  foo = 1\n}\n", 3, "Unknown setting: foo"),
        ("protocol imap {\n  passdb {\n  }\n}\n", 3, "section 'passdb' inside 'protocol' is not supported yet"),
    ],
)
def test_errors(load: Load, text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(NO_SSL + text)
    assert info.value.location is not None
    assert (info.value.location.line, info.value.message) == (line, message)


def test_local_block_certificates_are_resolved_per_local_address(load: Load, write: object) -> None:
    from tests.config.conftest import CERT_PEM, KEY_PEM

    assert callable(write)
    cert_a, key_a = write("a.pem", CERT_PEM), write("a.key", KEY_PEM)
    cert_b = write("b.pem", CERT_PEM.replace("fake", "other"))
    settings = load(
        f"ssl_cert = <{cert_a}\nssl_key = <{key_a}\n"
        f"local 127.0.0.5 {{\n  ssl_cert = <{cert_b}\n}}\n"
        "protocol pop3 {\n  ssl_min_protocol = TLSv1.3\n}\n"
    )
    resolver = FilterResolver(settings)
    assert resolver.lookup("imap", "127.0.0.1").ssl_cert == settings.ssl_cert
    five = resolver.lookup("imap", "127.0.0.5")
    assert "other" in five.ssl_cert
    assert five.ssl_cert_path == str(cert_b)
    # every combination a connection can meet: top, local, protocol, local + protocol
    candidates = {(c.ssl_cert_path, c.ssl_min_protocol) for c in tls_candidates(settings)}
    assert candidates == {
        (str(cert_a), "TLSv1.2"),
        (str(cert_b), "TLSv1.2"),
        (str(cert_a), "TLSv1.3"),
        (str(cert_b), "TLSv1.3"),
    }


def test_disjoint_local_blocks_are_never_combined(load: Load) -> None:
    settings = load(
        NO_SSL
        + "local 127.0.0.1 {\n  ssl_min_protocol = TLSv1.3\n}\n"
        + "local 127.0.0.5 {\n  ssl_cipher_list = HIGH\n}\n"
    )
    assert len(tls_candidates(settings)) == 3


def test_host_names_give_their_first_address(load: Load) -> None:
    """Dovecot's config_parse_net: a name is resolved when the file is read."""
    first = ipaddress.ip_address(resolve_name("localhost")[0])
    settings = load(
        NO_SSL
        + "local localhost {\n  login_greeting = by name\n}\n"
        + "remote localhost/8 {\n  disable_plaintext_auth = no\n}\n"
    )
    local, remote = settings.filters
    assert local.local == ipaddress.ip_network(first)
    assert remote.remote == ipaddress.ip_network(f"{first}/8", strict=False)
    assert FilterResolver(settings).lookup("imap", str(first)).login_greeting == "by name"



def test_proxyd_n_shows_the_blocks_and_they_load_again(load: Load) -> None:
    from proxyd.config.dump import dump_non_default
    from proxyd.config.load import load_settings_text

    settings = load(NO_SSL + FILTERS)
    dumped = dump_non_default(settings)
    assert "local 127.0.0.0/8 {\n  protocol pop3 {\n    disable_plaintext_auth = no\n  }\n}\n" in dumped
    assert "remote 10.0.0.0/8 {\n  remote 10.1.0.0/16 {\n" not in dumped  # nested: the inner net only
    assert "remote 10.1.0.0/16 {\n  login_greeting = remote16\n}\n" in dumped
    assert "protocol !imap {\n  auth_mechanisms = plain login\n}\n" in dumped
    again = load_settings_text(dumped, settings.config_path)
    for case in (("imap", "127.0.0.5", "10.1.2.3"), ("pop3", "127.0.0.1", "192.0.2.1")):
        first = FilterResolver(settings).lookup(*case)
        second = FilterResolver(again).lookup(*case)
        assert (first.login_greeting, first.disable_plaintext_auth, first.auth_mechanisms) == (
            second.login_greeting,
            second.disable_plaintext_auth,
            second.auth_mechanisms,
        )
