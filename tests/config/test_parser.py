"""Raw tree: sections, !include / !include_try with globs, <FILE, $variables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxyd.config.parser import (
    ARGS_FILE,
    ParseOptions,
    RawSection,
    RawSetting,
    RawTree,
    expand_braces,
    iter_settings,
    parse_file,
    parse_text,
)
from proxyd.errors import ConfigError, Location
from tests.config.conftest import Write


def settings(tree: RawTree | RawSection) -> dict[str, str]:
    return {item.key: item.value for item in iter_settings(tree.items)}


def parse_error(path: Path, options: ParseOptions | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_file(str(path), options or ParseOptions())
    return str(info.value)


def test_tree_keeps_order_and_locations() -> None:
    tree = parse_text(
        "a = 1\nservice imap-login {\n  inet_listener imap {\n    port = 1\n  }\n}\nb = 2\n",
        "/x/f.conf",
    )
    assert tree.path == "/x/f.conf"
    assert tree.files == ("/x/f.conf",)
    a, service, b = tree.items
    assert a == RawSetting("a", "1", Location("/x/f.conf", 1))
    assert b == RawSetting("b", "2", Location("/x/f.conf", 7))
    assert isinstance(service, RawSection)
    assert (service.name, service.label, service.location) == (
        "service",
        "imap-login",
        Location("/x/f.conf", 2),
    )
    (listener,) = service.items
    assert isinstance(listener, RawSection)
    assert listener.items == (RawSetting("port", "1", Location("/x/f.conf", 4)),)


def test_unexpected_close_and_missing_close() -> None:
    with pytest.raises(ConfigError) as info:
        parse_text("a = 1\n}\n", "f.conf")
    assert str(info.value) == "f.conf:2: Unexpected '}'"
    with pytest.raises(ConfigError) as info:
        parse_text("a = 1\npassdb {\n  driver = static\n", "f.conf")
    assert str(info.value) == "f.conf:2: Missing '}' (section 'passdb' started here)"


def test_include_relative_to_including_file(write: Write) -> None:
    main = write("main.conf", "a = 1\n!include conf.d/extra.conf\nc = 3\n")
    extra = write("conf.d/extra.conf", "b = 2\n!include more.conf\n")
    more = write("conf.d/more.conf", "d = 4\n")
    tree = parse_file(str(main))
    assert [(i.key, i.location) for i in iter_settings(tree.items)] == [
        ("a", Location(str(main), 1)),
        ("b", Location(str(extra), 1)),
        ("d", Location(str(more), 1)),
        ("c", Location(str(main), 3)),
    ]
    assert tree.files == (str(main), str(extra), str(more))


def test_include_absolute_path(write: Write, tmp_path: Path) -> None:
    other = write("elsewhere/x.conf", "x = 1\n")
    main = write("sub/main.conf", f"!include {other}\n")
    assert settings(parse_file(str(main))) == {"x": "1"}
    assert os.path.isabs(str(tmp_path))


def test_include_glob_sorted_and_braces(write: Write) -> None:
    write("conf.d/20-b.conf", "b = 2\n")
    write("conf.d/10-a.conf", "a = 1\n")
    write("conf.d/30-c.ext", "c = 3\n")
    write("conf.d/.hidden.conf", "hidden = 1\n")
    main = write("main.conf", "!include conf.d/*.conf\n!include conf.d/*.{ext,none}\n")
    tree = parse_file(str(main))
    assert [i.key for i in iter_settings(tree.items)] == ["a", "b", "c"]


def test_include_inside_section_goes_into_that_section(write: Write) -> None:
    write("listener.conf", "port = 1143\n")
    main = write(
        "main.conf",
        "service imap-login {\n  inet_listener imap {\n    !include listener.conf\n  }\n}\n",
    )
    (service,) = parse_file(str(main)).items
    assert isinstance(service, RawSection)
    (listener,) = service.items
    assert isinstance(listener, RawSection)
    assert settings(listener) == {"port": "1143"}


def test_section_may_span_files_as_in_dovecot(write: Write) -> None:
    write("open.conf", "passdb {\n  driver = static\n")
    main = write("main.conf", "!include open.conf\n  args = x\n}\n")
    (passdb,) = parse_file(str(main)).items
    assert isinstance(passdb, RawSection)
    assert settings(passdb) == {"driver": "static", "args": "x"}


def test_missing_include_is_an_error(write: Write) -> None:
    main = write("main.conf", "a = 1\n!include missing.conf\n")
    missing = os.path.join(os.path.dirname(main), "missing.conf")
    assert (
        parse_error(main)
        == f"{main}:2: Couldn't open include file {missing}: No such file or directory"
    )


def test_include_glob_without_match_is_an_error(write: Write) -> None:
    main = write("main.conf", "!include conf.d/*.conf\n")
    pattern = os.path.join(os.path.dirname(main), "conf.d/*.conf")
    assert parse_error(main) == f"{main}:1: No matches for include pattern {pattern}"


def test_include_try_missing_is_silent(write: Write) -> None:
    main = write("main.conf", "!include_try missing.conf\n!include_try nothing/*.conf\na = 1\n")
    assert settings(parse_file(str(main))) == {"a": "1"}


def test_include_directory_is_an_error(write: Write, tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    main = write("main.conf", "!include adir\n")
    assert (
        parse_error(main)
        == f"{main}:1: Couldn't open include file {tmp_path / 'adir'}: Is a directory"
    )


def test_include_without_name(write: Write) -> None:
    main = write("main.conf", "!include\n")
    assert parse_error(main) == f"{main}:1: !include needs a file name"


def test_include_loop_is_an_error(write: Write) -> None:
    main = write("main.conf", "a = 1\n!include b.conf\n")
    b = write("b.conf", "b = 1\n\n!include ./main.conf\n")
    assert parse_error(main) == f"{b}:3: Recursive include file: {os.path.dirname(b)}/./main.conf"


def test_include_self_through_glob_is_an_error(write: Write) -> None:
    main = write("main.conf", "!include_try *.conf\n")
    assert parse_error(main) == f"{main}:1: Recursive include file: {main}"


def test_error_inside_included_file_points_there(write: Write) -> None:
    main = write("main.conf", "a = 1\n!include inc.conf\n")
    inc = write("inc.conf", "ok = 1\n\nservice imap-login\n")
    assert parse_error(main) == f"{inc}:3: Expecting '{{'"


def test_invalid_utf8(write: Write, tmp_path: Path) -> None:
    path = tmp_path / "bad.conf"
    path.write_bytes(b"a = 1\nb = \xff\n")
    assert parse_error(path) == f"{path}:2: Line is not valid UTF-8"


def test_missing_main_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    assert parse_error(missing) == f"open({missing}) failed: No such file or directory"


def test_file_value(write: Write) -> None:
    write("greeting.txt", "Hello from a file\n")
    write("certs/cert.pem", "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n")
    main = write("main.conf", "login_greeting = <greeting.txt\nssl_cert = <certs/cert.pem\n")
    tree = parse_file(str(main))
    greeting, cert = tree.items
    assert isinstance(greeting, RawSetting)
    assert isinstance(cert, RawSetting)
    assert greeting.value == "Hello from a file"  # one trailing newline dropped
    assert greeting.source_file == os.path.join(os.path.dirname(main), "greeting.txt")
    assert cert.value == "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----"


def test_file_value_relative_to_included_file(write: Write) -> None:
    write("conf.d/value.txt", "inner\n\n")
    write("conf.d/inc.conf", "x = <value.txt\n")
    main = write("main.conf", "!include conf.d/inc.conf\n")
    assert settings(parse_file(str(main))) == {"x": "inner\n"}


def test_unreadable_file_value(write: Write) -> None:
    main = write("main.conf", "a = 1\nssl_cert = <missing.pem\n")
    missing = os.path.join(os.path.dirname(main), "missing.pem")
    assert (
        parse_error(main)
        == f"{main}:2: ssl_cert: Can't open file {missing}: No such file or directory"
    )


def test_file_value_not_read_in_args_files(write: Write) -> None:
    main = write("sql.conf", "password_query = <not a file\n")
    assert settings(parse_file(str(main), ARGS_FILE)) == {"password_query": "<not a file"}


def test_variables() -> None:
    options = ParseOptions(
        variable_defaults={"default_login_user": "dovenull", "protocols": "imap"}
    )
    tree = parse_text(
        "protocols = $protocols pop3\n"
        "user = x $default_login_user y\n"
        "joined = a$default_login_user\n"
        "spaces = a   $default_login_user   b\n"
        "again = $user\n"
        'quoted = "$user"\n',
        "f.conf",
        options,
    )
    assert settings(tree) == {
        "protocols": "imap pop3",
        "user": "x dovenull y",
        "joined": "a$default_login_user",
        "spaces": "a dovenull b",
        "again": "x dovenull y",
        "quoted": "$user",
    }


def test_variable_uses_latest_value() -> None:
    tree = parse_text("a = 1\na = 2\nb = $a\n", "f.conf")
    assert [i.value for i in iter_settings(tree.items)] == ["1", "2", "2"]


def test_variable_inside_section_sees_section_then_top_level() -> None:
    tree = parse_text("top = T\npassdb {\n  driver = D\n  args = $driver $top\n}\n", "f.conf")
    (passdb,) = (i for i in tree.items if isinstance(i, RawSection))
    assert settings(passdb)["args"] == "D T"


def test_env_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYD_TEST_VALUE", "from-env")
    monkeypatch.delenv("PROXYD_TEST_UNSET", raising=False)
    tree = parse_text("a = $ENV:PROXYD_TEST_VALUE x\nb = $ENV:PROXYD_TEST_UNSET\n", "f.conf")
    assert settings(tree) == {"a": "from-env x", "b": ""}


def test_unknown_and_invalid_variables() -> None:
    with pytest.raises(ConfigError) as info:
        parse_text("a = 1\nb = x $nope\n", "f.conf")
    assert str(info.value) == "f.conf:2: Unknown variable: $nope"
    with pytest.raises(ConfigError) as info:
        parse_text("b = $service\n", "f.conf", ParseOptions(section_names=frozenset({"service"})))
    assert str(info.value) == "f.conf:1: Invalid variable: $service"


def test_args_file_expands_only_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYD_TEST_PW", "s3cret")
    tree = parse_text(
        "connect = host=db  password=$ENV:PROXYD_TEST_PW\n"
        "c2 = host=db $ENV:PROXYD_TEST_PW\n"
        "password_query = SELECT $1, $nope\n",
        "sql.conf",
        ARGS_FILE,
    )
    assert settings(tree) == {
        "connect": "host=db  password=$ENV:PROXYD_TEST_PW",
        "c2": "host=db s3cret",
        "password_query": "SELECT $1, $nope",
    }


def test_args_file_with_continuations() -> None:
    tree = parse_text(
        "driver = pgsql\n"
        "password_query = SELECT username AS user, password \\\n"
        "  FROM users \\\n"
        "  WHERE username = '%n' # trailing comment\n",
        "sql.conf",
        ARGS_FILE,
    )
    assert (
        settings(tree)["password_query"]
        == "SELECT username AS user, password FROM users WHERE username = '%n'"
    )


@pytest.mark.parametrize(
    ("pattern", "expanded"),
    [
        ("a", ["a"]),
        ("a{b,c}d", ["abd", "acd"]),
        ("{a,b}{c,d}", ["ac", "ad", "bc", "bd"]),
        ("x{a,{b,c}}", ["xa", "xb", "xc"]),
        ("x{}y{1,2}", ["x{}y1", "x{}y2"]),
        ("x{a}", ["x{a}"]),
        ("x{a,b", ["x{a,b"]),
    ],
)
def test_expand_braces(pattern: str, expanded: list[str]) -> None:
    assert expand_braces(pattern) == expanded


def test_raw_values_hidden_from_repr() -> None:
    tree = parse_text("ssl_key_password = hunter2\n", "f.conf")
    assert "hunter2" not in repr(tree)
