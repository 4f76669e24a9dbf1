"""Dovecot %-variable expansion."""

from __future__ import annotations

import os

import pytest

from proxyd.auth.expand import (
    ExpandError,
    Variables,
    expand,
    has_variables,
    request_variables,
    str_escape,
)
from tests.auth.util import make_request


def variables(user: str = "John.Doe@Example.COM", **kw: object) -> Variables:
    return request_variables(make_request(user, "pw", **kw))


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("%u", "John.Doe@Example.COM"),
        ("%{user}", "John.Doe@Example.COM"),
        ("%n", "John.Doe"),
        ("%{username}", "John.Doe"),
        ("%d", "Example.COM"),
        ("%{domain}", "Example.COM"),
        ("%Lu", "john.doe@example.com"),
        ("%Ud", "EXAMPLE.COM"),
        ("%L{user}", "john.doe@example.com"),
        ("%s", "imap"),
        ("%r", "192.0.2.10"),
        ("%{rip}", "192.0.2.10"),
        ("%{remote_ip}", "192.0.2.10"),
        ("%l", "127.0.0.1"),
        ("%{real_rip}", "192.0.2.10"),
        ("%a", "143"),
        ("%b", "50000"),
        ("%m", "PLAIN"),
        ("%c", "TLS"),
        ("%w", "pw"),
        ("%{session}", "sess1"),
        ("%{orig_user}", "John.Doe@Example.COM"),
        ("%h", ""),
        ("100%%", "100%"),
        ("/home/%Ld/%Ln", "/home/example.com/john.doe"),
        ("%1.2n", "oh"),
        ("%.3n", "Joh"),
        ("%-3.n", "Doe"),
        ("%Rn", "eoD.nhoJ"),
        ("%Dd", "Example,dc=COM"),
        ("%{env:PROXYD_TEST_VAR}", "from-env"),
        ("%{passdb:host}", "10.1.1.1"),
        ("%{passdb:port:143}", "143"),
        ("%{passdb:missing}", ""),
        ("x%", "x"),
    ],
)
def test_expand(monkeypatch: pytest.MonkeyPatch, template: str, expected: str) -> None:
    monkeypatch.setenv("PROXYD_TEST_VAR", "from-env")
    base = variables()
    with_fields = Variables(short=base.short, long=base.long, passdb_fields={"host": "10.1.1.1"})
    assert expand(template, with_fields) == expected


def test_md5_modifier_matches_hashlib() -> None:
    import hashlib

    assert expand("%Mu", variables()) == hashlib.md5(b"John.Doe@Example.COM").hexdigest()


def test_hash_modifier_with_width() -> None:
    value = expand("%2Hu", variables())
    assert value in {"0", "1"}
    assert expand("%4.Hu", variables()) == expand("%4.Hu", variables())
    assert len(expand("%4.Hu", variables())) >= 4


def test_zero_padding_and_hex() -> None:
    assert expand("%05Xa", variables()) == "0008f"
    assert expand("%Xr", variables()) == "0"  # not a number


def test_user_without_domain() -> None:
    v = variables("plainuser")
    assert expand("%u|%n|%d|%{domain_first}", v) == "plainuser|plainuser||"


def test_domain_first_and_last() -> None:
    v = variables("u@a@b")
    assert expand("%d %{domain_first} %{domain_last}", v) == "a@b a b"


def test_unsecured_connection() -> None:
    assert expand("[%c]", variables(secured=False, tls=False)) == "[]"
    assert expand("%c", variables(secured=True, tls=False)) == "secured"


def test_escape_applies_before_modifiers() -> None:
    v = variables("o'Brien")
    assert expand("%u", v, str_escape) == "o\\'Brien"
    assert expand("%Lu", v, str_escape) == "o\\'brien"
    # constants are never escaped
    assert expand("'%u'", v, str_escape) == "'o\\'Brien'"


@pytest.mark.parametrize("template", ["%q", "%{nosuchvar}", "%{foo:bar}", "%Lz"])
def test_unknown_variable(template: str) -> None:
    with pytest.raises(ExpandError, match="Unknown variable"):
        expand(template, variables())


def test_builtin_long_variables() -> None:
    assert expand("%{pid}", variables()) == str(os.getpid())
    assert expand("%{hostname}", variables())


def test_has_variables() -> None:
    assert has_variables("/etc/%d/users")
    assert not has_variables("/etc/users")
    assert not has_variables("/etc/100%%/users")
    assert has_variables("/etc/100%%%d")


def test_user_override_and_original() -> None:
    request = make_request("Alice", "pw")
    v = request_variables(request, user="alice", original_user="Alice")
    assert expand("%u %{orig_user} %{original_user}", v) == "alice Alice Alice"
