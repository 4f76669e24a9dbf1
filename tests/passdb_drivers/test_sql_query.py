"""Query templates become SQL with bound parameters; values never reach the SQL text."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from passdb_drivers.sql.query import MYSQL, PGSQL, SQLITE, QueryError, compile_query
from proxyd.auth.expand import request_variables
from tests.auth.util import make_request

SEED_FORWARDING = (
    "SELECT NULL AS password, 'Y' as nopassword, host, destuser, "
    "'Y' AS proxy FROM proxy WHERE user = '%u'"
)
SEED_MAYBE = (
    "SELECT concat(user, '@', domain) AS user, password, host, 'Y' AS proxy_maybe "
    "FROM users WHERE user = '%n' AND domain = '%d'"
)


def variables(user: str) -> object:
    return request_variables(make_request(user, "pw"))


@pytest.mark.parametrize(("dialect", "placeholder"), [(PGSQL, "$1"), (MYSQL, "%s"), (SQLITE, "?")])
def test_quoted_variable_becomes_one_placeholder(dialect: object, placeholder: str) -> None:
    query = compile_query(SEED_FORWARDING, dialect)  # type: ignore[arg-type]
    assert query.sql == SEED_FORWARDING.replace("'%u'", placeholder)
    assert query.templates == ("%u",)


def test_each_quoted_variable_is_its_own_parameter() -> None:
    query = compile_query(SEED_MAYBE, PGSQL)
    assert query.sql.endswith("WHERE user = $1 AND domain = $2")
    assert "concat(user, '@', domain)" in query.sql  # literals without variables stay
    vars_ = request_variables(make_request("joe@example.com", "pw"))
    assert query.bind(vars_) == ("joe", "example.com")


def test_literal_with_text_around_variables_is_one_parameter() -> None:
    query = compile_query("SELECT x FROM t WHERE a = '%n@%d' AND b LIKE '%Lu%%'", PGSQL)
    assert query.sql == "SELECT x FROM t WHERE a = $1 AND b LIKE $2"
    vars_ = request_variables(make_request("Joe@Example.com", "pw"))
    assert query.bind(vars_) == ("Joe@Example.com", "joe@example.com%")


def test_doubled_quotes_inside_a_literal_are_unescaped_for_the_value() -> None:
    query = compile_query("SELECT x FROM t WHERE a = 'it''s %u'", SQLITE)
    assert query.sql == "SELECT x FROM t WHERE a = ?"
    assert query.bind(request_variables(make_request("bob", "pw"))) == ("it's bob",)


def test_mysql_backslash_escapes_and_double_quoted_strings() -> None:
    query = compile_query("SELECT x FROM t WHERE a = \"%u\" AND b = '\\'%n'", MYSQL)
    assert query.sql == "SELECT x FROM t WHERE a = %s AND b = %s"
    assert query.bind(request_variables(make_request("bob", "pw"))) == ("bob", "'bob")


def test_percent_signs() -> None:
    """``%%`` is a literal %; mysql's format paramstyle needs it doubled again."""
    template = "SELECT 100%%, 'a%%b' AS c FROM t WHERE u = '%u'"
    assert compile_query(template, PGSQL).sql == "SELECT 100%, 'a%b' AS c FROM t WHERE u = $1"
    assert compile_query(template, MYSQL).sql == "SELECT 100%%, 'a%%b' AS c FROM t WHERE u = %s"


def test_unquoted_standalone_variable_is_bound() -> None:
    query = compile_query("SELECT x FROM t WHERE uid = %{passdb:uid:5} LIMIT 1", PGSQL)
    assert query.sql == "SELECT x FROM t WHERE uid = $1 LIMIT 1"
    assert query.templates == ("%{passdb:uid:5}",)


@pytest.mark.parametrize(
    "template",
    ["SELECT x FROM users_%d WHERE a = '%u'", "SELECT x FROM t WHERE a = %ux"],
)
def test_variable_inside_a_name_is_rejected(template: str) -> None:
    with pytest.raises(QueryError, match="must stand alone"):
        compile_query(template, PGSQL)


def test_variable_inside_quoted_identifier_is_rejected() -> None:
    with pytest.raises(QueryError, match="quoted name"):
        compile_query('SELECT "%u" FROM t', PGSQL)
    # in MySQL "..." is a string, `...` a name
    assert compile_query('SELECT "%u" FROM t', MYSQL).sql == "SELECT %s FROM t"
    with pytest.raises(QueryError, match="quoted name"):
        compile_query("SELECT `%u` FROM t", MYSQL)


def test_comments_keep_their_text_but_lose_variables() -> None:
    query = compile_query("SELECT x -- user %u's\nFROM t /* '%n' */ WHERE u = '%u'", SQLITE)
    assert query.sql == "SELECT x -- user 's\nFROM t /* '' */ WHERE u = ?"
    assert query.templates == ("%u",)


def test_unterminated_literal_is_an_error() -> None:
    with pytest.raises(QueryError, match="unterminated"):
        compile_query("SELECT x FROM t WHERE u = '%u", PGSQL)


_HOSTILE = st.text(alphabet=st.sampled_from(list("ab'\"\\;-%*()@ =\n1OR")), min_size=0, max_size=24)


@settings(max_examples=200, deadline=None)
@given(user=_HOSTILE)
def test_no_user_name_changes_the_sqlite_query(user: str) -> None:
    """Whatever the user name, the query finds exactly the row whose name it is, or none."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE proxy (user TEXT PRIMARY KEY, host TEXT)")
    db.executemany("INSERT INTO proxy VALUES (?, ?)", [("alice", "a"), ("bob", "b")])
    query = compile_query("SELECT host FROM proxy WHERE user = '%u'", SQLITE)
    rows = db.execute(query.sql, query.bind(request_variables(make_request(user, "pw")))).fetchall()
    expected = {"alice": [("a",)], "bob": [("b",)]}.get(user, [])
    assert rows == expected
    db.close()
