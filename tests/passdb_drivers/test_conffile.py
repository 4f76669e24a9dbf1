"""Reading Dovecot's driver args files (dovecot-sql.conf.ext, dovecot-ldap.conf.ext)."""

from __future__ import annotations

from pathlib import Path

import pytest

from passdb_drivers._conffile import read_args_file
from proxyd.errors import ConfigError, Location


def settings_of(path: Path) -> list[tuple[str, str, int]]:
    return [(s.key, s.value, s.location.line) for s in read_args_file(str(path))]


def test_key_values_comments_and_quotes(tmp_path: Path) -> None:
    conf = tmp_path / "a.conf.ext"
    conf.write_text(
        "# comment\n"
        "\n"
        "driver = pgsql\n"
        "  connect=host=a dbname=b   # trailing comment\n"
        'dnpass = "se#cr\\"et"\n'
        "base = 'ou=x'\n"
        "empty =\n"
    )
    assert settings_of(conf) == [
        ("driver", "pgsql", 3),
        ("connect", "host=a dbname=b", 4),
        ("dnpass", 'se#cr"et', 5),
        ("base", "ou=x", 6),
        ("empty", "", 7),
    ]


def test_backslash_continuation_joins_with_one_space(tmp_path: Path) -> None:
    conf = tmp_path / "a.conf.ext"
    conf.write_text(
        "password_query = \\\n"
        "  SELECT a,   \\\n"
        "\n"
        "# a comment does not end the continued line\n"
        "  b FROM t\n"
        "driver = mysql\n"
    )
    assert settings_of(conf) == [
        ("password_query", "SELECT a, b FROM t", 1),
        ("driver", "mysql", 6),
    ]


def test_wrapped_line_continues_the_previous_value(tmp_path: Path) -> None:
    """Dovecot says "Expecting '='"; proxyd appends the line (wiki examples are wrapped)."""
    conf = tmp_path / "a.conf.ext"
    conf.write_text(
        "password_query = SELECT NULL AS password, 'Y' as nopassword, host, destuser,\n"
        "'Y' AS proxy FROM proxy WHERE user = '%u'\n"
    )
    assert settings_of(conf) == [
        (
            "password_query",
            "SELECT NULL AS password, 'Y' as nopassword, host, destuser, "
            "'Y' AS proxy FROM proxy WHERE user = '%u'",
            1,
        )
    ]


def test_lone_backslash_line_then_wrapped_text(tmp_path: Path) -> None:
    conf = tmp_path / "a.conf.ext"
    conf.write_text(
        "password_query = \\\n  SELECT a, 'Y' AS proxy_maybe\n\\\n  FROM users WHERE user = '%n'\n"
    )
    assert settings_of(conf) == [
        ("password_query", "SELECT a, 'Y' AS proxy_maybe FROM users WHERE user = '%n'", 1)
    ]


def test_include_and_include_try(tmp_path: Path) -> None:
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "b.conf").write_text("dn = cn=b\n")
    (tmp_path / "inc" / "a.conf").write_text("dnpass = x\n")
    conf = tmp_path / "main.conf"
    conf.write_text("base = o=x\n!include inc/*.conf\n!include_try missing.conf\nscope = base\n")
    assert [(k, v) for k, v, _ in settings_of(conf)] == [
        ("base", "o=x"),
        ("dnpass", "x"),
        ("dn", "cn=b"),
        ("scope", "base"),
    ]


def test_include_missing_is_an_error(tmp_path: Path) -> None:
    conf = tmp_path / "main.conf"
    conf.write_text("!include nothere.conf\n")
    with pytest.raises(ConfigError) as info:
        read_args_file(str(conf))
    assert str(info.value).startswith(f"{conf}:1: ")


def test_recursive_include_is_an_error(tmp_path: Path) -> None:
    conf = tmp_path / "main.conf"
    conf.write_text("!include main.conf\n")
    with pytest.raises(ConfigError, match="Recursive include"):
        read_args_file(str(conf))


def test_missing_file_reports_the_passdb_location(tmp_path: Path) -> None:
    where = Location("/etc/proxyd/proxyd.conf", 12)
    with pytest.raises(ConfigError) as info:
        read_args_file(str(tmp_path / "nope.conf.ext"), where)
    assert str(info.value).startswith("/etc/proxyd/proxyd.conf:12: Can't open configuration file ")


def test_garbage_before_any_setting_is_an_error(tmp_path: Path) -> None:
    conf = tmp_path / "a.conf"
    conf.write_text("# x\nSELECT something\n")
    with pytest.raises(ConfigError) as info:
        read_args_file(str(conf))
    assert str(info.value) == f"{conf}:2: Expecting '='"
