"""``auth_username_chars`` / ``_translation`` / ``_format`` / ``auth_default_realm`` (auth_request_fix_username)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxyd.auth.expand import request_variables
from proxyd.auth.request import AuthStatus
from proxyd.auth.username import (
    RulesByProtocol,
    UsernameError,
    UsernameRules,
    check_username_settings,
    normalize_username,
)
from proxyd.config.load import load_settings_text
from proxyd.errors import ConfigError
from tests.auth.fakes import FakePassdb, make_chain
from tests.auth.util import make_request


@pytest.mark.parametrize(
    ("rules", "user", "expected"),
    [
        (UsernameRules(), "Alice@Example.COM", "alice@example.com"),
        (UsernameRules(format="%n"), "Alice@example.com", "Alice"),
        (UsernameRules(format="%Ln"), "Alice@example.com", "alice"),
        (UsernameRules(format="%Ld"), "alice@Example.COM", "example.com"),
        (UsernameRules(format="%u"), "Alice", "Alice"),
        (UsernameRules(format=""), "Alice", "Alice"),
        (UsernameRules(format="%Lu", default_realm="example.org"), "Bob", "bob@example.org"),
        (UsernameRules(default_realm="example.org"), "bob@other.net", "bob@other.net"),
        # translation first, then the character check
        (UsernameRules(translation="#@/@", format="%u"), "bob#example.org", "bob@example.org"),
        (UsernameRules(chars="", format="%u"), "al ice/x", "al ice/x"),
    ],
)
def test_rules(rules: UsernameRules, user: str, expected: str) -> None:
    assert rules.apply(user) == expected


@pytest.mark.parametrize(
    ("rules", "user", "message"),
    [
        (
            UsernameRules(),
            "al ice",
            "Username character disallowed by auth_username_chars: 0x20 (username: al ice)",
        ),
        (
            UsernameRules(chars="abc"),
            "abd",
            "Username character disallowed by auth_username_chars: 0x64 (username: abd)",
        ),
        (UsernameRules(format="%{nosuch}"), "alice", "Failed to expand username_format=%{nosuch}: "),
        (UsernameRules(format="%d"), "alice", "Empty username"),
    ],
)
def test_rule_failures(rules: UsernameRules, user: str, message: str) -> None:
    with pytest.raises(UsernameError) as info:
        rules.apply(user)
    assert str(info.value).startswith(message)


def test_format_sees_the_request_variables() -> None:
    request = make_request("alice", "pw", service="pop3")
    rules = UsernameRules(format="%u-%s")
    assert normalize_username("alice", rules, lambda name: request_variables(request, user=name)) == (
        "alice-pop3"
    )


async def test_the_chain_applies_the_rules_of_the_request_protocol() -> None:
    settings = load_settings_text(
        "ssl = no\nauth_username_format = %Ln\nprotocol pop3 {\n  auth_username_format = %Lu\n}\n",
        "/x/proxyd.conf",
    )
    passdb = FakePassdb({"alice": [("nopassword", "")], "alice@example.com": [("nopassword", "")]})
    chain = make_chain(passdb, username_rules=RulesByProtocol(settings))
    imap = (await chain.authenticate(make_request("Alice@Example.com", "pw"))).reply
    pop3 = (await chain.authenticate(make_request("Alice@Example.com", "pw", service="pop3"))).reply
    assert (imap.status, imap.user) == (AuthStatus.OK, "alice")
    assert (pop3.status, pop3.user) == (AuthStatus.OK, "alice@example.com")
    assert passdb.calls == ["alice", "alice@example.com"]


def test_a_bad_format_is_a_config_error(tmp_path: Path) -> None:
    settings = load_settings_text("ssl = no\nauth_username_format = %{nosuch}\n", str(tmp_path / "p.conf"))
    with pytest.raises(ConfigError) as info:
        check_username_settings(settings)
    assert info.value.location is not None
    assert info.value.location.line == 2
