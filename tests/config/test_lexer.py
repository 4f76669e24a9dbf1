"""Line syntax: comments, quotes, continuations, sections, and their error texts."""

from __future__ import annotations

import logging

import pytest

from proxyd.config.lexer import (
    Include,
    KeyValue,
    SectionEnd,
    SectionStart,
    Token,
    ValueKind,
    tokenize,
    unescape,
)
from proxyd.errors import ConfigError, Location


def tokens(text: str) -> list[Token]:
    return list(tokenize(text, "f.conf"))


def kv(text: str) -> tuple[str, str, ValueKind, int]:
    (token,) = tokens(text)
    assert isinstance(token, KeyValue)
    return token.key, token.value, token.kind, token.location.line


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        tokens(text)
    return str(info.value)


@pytest.mark.parametrize(
    "line",
    [
        "key = value",
        "key=value",
        "key =value",
        "key= value",
        "  key  =  value  ",
        "\tkey\t=\tvalue\t",
        "key = value\r",
    ],
)
def test_key_value_spacing(line: str) -> None:
    assert kv(line) == ("key", "value", ValueKind.PLAIN, 1)


def test_value_is_the_rest_of_the_line() -> None:
    assert kv("login_greeting = Hello  there, world") == (
        "login_greeting",
        "Hello  there, world",
        ValueKind.PLAIN,
        1,
    )
    assert kv("key =") == ("key", "", ValueKind.PLAIN, 1)
    assert kv("key = a = b") == ("key", "a = b", ValueKind.PLAIN, 1)


def test_quotes() -> None:
    assert kv('key = "a b"') == ("key", "a b", ValueKind.QUOTED, 1)
    assert kv("key = 'a b'") == ("key", "a b", ValueKind.QUOTED, 1)
    assert kv(r'key = "say \"hi\" \\ \x"') == ("key", 'say "hi" \\ x', ValueKind.QUOTED, 1)
    assert kv('key = " imap pop3"') == ("key", " imap pop3", ValueKind.QUOTED, 1)
    assert kv('key = ""') == ("key", "", ValueKind.QUOTED, 1)
    # only quotes that enclose the whole value are removed
    assert kv('key = "a" b') == ("key", '"a" b', ValueKind.PLAIN, 1)
    assert kv("key = 'a\"") == ("key", "'a\"", ValueKind.PLAIN, 1)


def test_unescape() -> None:
    assert unescape(r"a\\b\"c\n") == 'a\\b"cn'
    assert unescape("trailing\\") == "trailing"


def test_comments() -> None:
    assert tokens("# comment\n   # indented comment\n\n") == []
    assert kv("key = value # comment") == ("key", "value", ValueKind.PLAIN, 1)
    assert kv('key = "a # not a comment" # comment') == (
        "key",
        "a # not a comment",
        ValueKind.QUOTED,
        1,
    )
    assert kv("key = 'a # b'") == ("key", "a # b", ValueKind.QUOTED, 1)
    assert kv(r'key = "a \" # b"') == ("key", 'a " # b', ValueKind.QUOTED, 1)


def test_ambiguous_hash_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="proxyd.config"):
        assert kv("key = a#b") == ("key", "a", ValueKind.PLAIN, 1)
    assert "f.conf:1: Ambiguous '#' character in line, treating it as comment" in caplog.text


def test_continuation() -> None:
    assert kv("key = a \\\n   b \\\n c") == ("key", "a b c", ValueKind.PLAIN, 1)
    assert kv("key = \\\n  value") == ("key", "value", ValueKind.PLAIN, 1)
    (start,) = tokens("service imap-login \\\n{")
    assert start == SectionStart("service", "imap-login", Location("f.conf", 1))


def test_continuation_location_is_first_line() -> None:
    toks = tokens("a = 1\nkey = x \\\n  y\nb = 2")
    assert [t.location.line for t in toks] == [1, 2, 4]


def test_continuation_ended_by_comment_or_end_of_file() -> None:
    # Dovecot drops such a line silently; proxyd keeps it
    assert tokens("key = a \\\n# comment\nother = b") == [
        KeyValue("key", "a", ValueKind.PLAIN, Location("f.conf", 1)),
        KeyValue("other", "b", ValueKind.PLAIN, Location("f.conf", 3)),
    ]
    assert kv("key = a \\") == ("key", "a", ValueKind.PLAIN, 1)


def test_file_and_variable_values() -> None:
    assert kv("ssl_cert = <cert.pem") == ("ssl_cert", "cert.pem", ValueKind.FILE, 1)
    assert kv("ssl_cert = <  /etc/cert.pem") == ("ssl_cert", "/etc/cert.pem", ValueKind.FILE, 1)
    assert kv("protocols = $protocols imap") == (
        "protocols",
        "$protocols imap",
        ValueKind.VARIABLE,
        1,
    )
    # quoted values are never expanded
    assert kv('key = "$x"') == ("key", "$x", ValueKind.QUOTED, 1)


def test_sections() -> None:
    assert tokens("service imap-login {\n  inet_listener imap {\n  }\n}\npassdb {\n}") == [
        SectionStart("service", "imap-login", Location("f.conf", 1)),
        SectionStart("inet_listener", "imap", Location("f.conf", 2)),
        SectionEnd(Location("f.conf", 3)),
        SectionEnd(Location("f.conf", 4)),
        SectionStart("passdb", "", Location("f.conf", 5)),
        SectionEnd(Location("f.conf", 6)),
    ]


def test_quoted_section_label() -> None:
    (start,) = tokens('passdb "my db" {')
    assert start == SectionStart("passdb", "my db", Location("f.conf", 1))
    (start,) = tokens("passdb sql   {   # comment")
    assert start == SectionStart("passdb", "sql", Location("f.conf", 1))


def test_includes() -> None:
    assert tokens("!include conf.d/*.conf\n!include_try /x/y.conf") == [
        Include("conf.d/*.conf", False, Location("f.conf", 1)),
        Include("/x/y.conf", True, Location("f.conf", 2)),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("service imap-login { port = 1 }", "f.conf:1: Garbage after '{'"),
        ("service {}", "f.conf:1: Garbage after '{'"),
        ("service imap-login", "f.conf:1: Expecting '{'"),
        ("foo", "f.conf:1: Expecting '{'"),
        ("} foo", "f.conf:1: Expecting '{'"),
        ('passdb "unterminated {', "f.conf:1: Expecting '{'"),
        ("a = 1\n\nkey value", "f.conf:3: Expecting '{'"),
        ("a = 1\nb = x\0y", "f.conf:2: NUL character in line"),
    ],
)
def test_errors(text: str, message: str) -> None:
    assert error(text) == message


def test_errors_are_raised_lazily_in_order() -> None:
    stream = tokenize("a = 1\nbad\n", "f.conf")
    assert next(stream) == KeyValue("a", "1", ValueKind.PLAIN, Location("f.conf", 1))
    with pytest.raises(ConfigError, match=r"f\.conf:2"):
        next(stream)


def test_value_hidden_from_repr() -> None:
    (token,) = tokens("password = hunter2")
    assert "hunter2" not in repr(token)
