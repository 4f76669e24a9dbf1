"""dovecot-sql.conf.ext: keys, connect strings, errors with FILE:LINE (no database needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from passdb_drivers import sql as sql_driver
from passdb_drivers.sql.config import (
    DEFAULT_PASSWORD_QUERY,
    parse_server_connect,
    read_sql_config,
    session_settings,
)
from proxyd.auth.registry import resolve
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError, Location

#: the "password forwarding" example of Dovecot's Proxying page, as written there
SEED_FORWARDING = """\
driver = mysql
connect = host=sqlhost1 host=sqlhost2 dbname=mail user=dovecot password=secret
password_query = SELECT NULL AS password, 'Y' as nopassword, host, destuser,
'Y' AS proxy FROM proxy WHERE user = '%u'
"""

#: the "proxy_maybe" example, as written there (it has no connect line)
SEED_MAYBE = """\
driver = mysql

password_query = \\
  SELECT concat(user, '@', domain) AS user, password, host, 'Y' AS proxy_maybe
\\
  FROM users WHERE user = '%n' AND domain = '%d'

user_query = SELECT user AS username, domain, home \\
  FROM users WHERE user = '%n' AND domain = '%d'
"""

WHERE = Location("/etc/proxyd/proxyd.conf", 7)


def passdb(path: Path, args: str | None = None) -> PassdbSettings:
    return PassdbSettings(
        driver="sql",
        args=args if args is not None else str(path),
        location=WHERE,
        config_dir=str(path.parent),
    )


def write(tmp_path: Path, text: str, name: str = "dovecot-sql.conf.ext") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_seed_forwarding_example_reads_as_meant(tmp_path: Path) -> None:
    config = read_sql_config(passdb(write(tmp_path, SEED_FORWARDING)))
    assert config.driver == "mysql"
    assert config.password_query == (
        "SELECT NULL AS password, 'Y' as nopassword, host, destuser, "
        "'Y' AS proxy FROM proxy WHERE user = '%u'"
    )
    assert config.server is not None
    assert config.server.hosts == ("sqlhost1", "sqlhost2")
    assert (config.server.database, config.server.user) == ("mail", "dovecot")
    assert config.server.password.reveal() == "secret"
    assert "secret" not in repr(config)
    assert config.server.maxconns == 5
    assert config.default_pass_scheme == "MD5"


def test_seed_proxy_maybe_example_with_a_connect_line(tmp_path: Path) -> None:
    path = write(tmp_path, SEED_MAYBE + "connect = host=db dbname=mail user=u password=p\n")
    config = read_sql_config(passdb(path))
    assert config.password_query == (
        "SELECT concat(user, '@', domain) AS user, password, host, 'Y' AS proxy_maybe "
        "FROM users WHERE user = '%n' AND domain = '%d'"
    )
    # the proxy has no userdb: user_query is accepted and ignored


def test_seed_proxy_maybe_example_alone_lacks_connect(tmp_path: Path) -> None:
    path = write(tmp_path, SEED_MAYBE)
    with pytest.raises(ConfigError) as info:
        read_sql_config(passdb(path))
    assert str(info.value) == f"{path}:0: sql: connect string not set in configuration file"


def test_create_checks_the_query_without_connecting(tmp_path: Path) -> None:
    path = write(
        tmp_path, "driver = pgsql\nconnect = host=192.0.2.1\npassword_query = SELECT x FROM t_%d\n"
    )
    with pytest.raises(ConfigError) as info:
        sql_driver.create(passdb(path))
    assert str(info.value).startswith(f"{path}:3: password_query: %-variable %d must stand alone")


def test_registered_under_the_sql_entry_point(tmp_path: Path) -> None:
    path = write(tmp_path, SEED_FORWARDING)
    factory = resolve(passdb(path))
    assert factory is sql_driver.create
    manager = factory(passdb(path))  # parses only
    assert hasattr(manager, "__aenter__")


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    write(tmp_path, "driver = sqlite\nconnect = data/mail.db\n", name="rel.conf.ext")
    config = read_sql_config(passdb(tmp_path / "rel.conf.ext", args="rel.conf.ext"))
    assert config.database_path == str(tmp_path / "data" / "mail.db")
    assert config.password_query == DEFAULT_PASSWORD_QUERY
    assert config.query_location is None


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "driver = oracle\nconnect = x\n",
            1,
            "sql: Unknown driver 'oracle' (supported: pgsql, mysql, sqlite)",
        ),
        ("driver = pgsql\nconnect = host=a\nfoo = bar\n", 3, "Unknown setting: foo"),
        ("driver = pgsql\nconnect = host=a bogus=1\n", 2, "connect: Unknown connect string: bogus"),
        (
            "driver = mysql\nconnect = host=a maxconns=0\n",
            2,
            "connect: maxconns must be a number (got '0')",
        ),
        (
            "driver = pgsql\nconnect = host=a sslmode=maybe\n",
            2,
            'connect: invalid sslmode value: "maybe"',
        ),
        (
            "driver = pgsql\nconnect = host=a\ndefault_pass_scheme = NOPE\n",
            3,
            "sql: Unknown default_pass_scheme: NOPE",
        ),
        ("connect = host=a\n", 0, "sql: driver not set in configuration file"),
    ],
)
def test_errors_carry_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        read_sql_config(passdb(path))
    assert str(info.value) == f"{path}:{line}: {message}"


def test_pgsql_connect_string() -> None:
    where = Location("f", 1)
    server = parse_server_connect(
        "pgsql",
        "host=db1 host=db2,db3 port=5433 dbname=mail user=dovecot password='p w\\'x' "
        "connect_timeout=2 maxconns=3 options='-c statement_timeout=1500 -c search_path=s'",
        where,
    )
    assert server.hosts == ("db1", "db2", "db3")
    assert (server.port, server.database, server.user) == (5433, "mail", "dovecot")
    assert server.password.reveal() == "p w'x"
    assert (server.maxconns, server.connect_timeout, server.query_timeout) == (3, 2.0, 2.5)
    assert session_settings(server, where) == {"statement_timeout": "1500", "search_path": "s"}


def test_mysql_connect_string() -> None:
    server = parse_server_connect(
        "mysql",
        "host=/run/mysqld/mysqld.sock dbname=mail user=dovecot password=secret read_timeout=7 "
        "client_flags=2 ssl_verify_server_cert=no",
        Location("f", 1),
    )
    assert server.hosts == ("/run/mysqld/mysqld.sock",)
    assert server.query_timeout == 7.0
    assert server.options == {"client_flags": "2", "ssl_verify_server_cert": "no"}
