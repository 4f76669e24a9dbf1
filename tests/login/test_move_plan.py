"""proxyctl move: deriving the UPDATE from a password_query (proxyd.cli.move.plan_update)."""

from __future__ import annotations

from pathlib import Path

import pytest

from passdb_drivers.sql.query import PGSQL, SQLITE, compile_query
from proxyd.cli.move import MoveImpossible, UpdatePlan, manual_steps, plan_update

REPO = Path(__file__).resolve().parents[2]


def test_plain_columns() -> None:
    plan = plan_update(
        "SELECT username AS user, password, host, port, delay_until, 'Y' AS proxy "
        "FROM accounts WHERE username = '%u'"
    )
    assert plan == UpdatePlan("accounts", "host", "delay_until", "username = '%u'")


def test_aliases_quotes_and_a_trailing_limit() -> None:
    plan = plan_update(
        "SELECT concat(u.name, '@', u.domain) AS user, u.pw AS password, u.\"mail_host\" host,\n"
        "  u.move_at AS delay_until, CASE WHEN u.off IS NULL THEN 'Y' END AS proxy\n"
        "  FROM mail.users u WHERE u.name = '%n' AND u.domain = '%d' LIMIT 1"
    )
    assert plan.table == "mail.users"
    assert plan.host_column == 'u."mail_host"'
    assert plan.delay_column == "u.move_at"
    assert plan.where == "u.name = '%n' AND u.domain = '%d'"


def test_the_update_binds_every_value() -> None:
    plan = plan_update("SELECT password, host, delay_until FROM t WHERE user = '%u'")
    compiled = compile_query(plan.template(), PGSQL)
    assert compiled.sql == "UPDATE t SET host = $1, delay_until = $2 WHERE user = $3"
    assert compiled.templates == (
        "%{passdb:proxyd_move_host}",
        "%{passdb:proxyd_move_delay_until}",
        "%u",
    )
    assert compile_query(plan.template(), SQLITE).sql.count("?") == 3


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("SELECT password, host FROM t WHERE u = '%u'", "returns no delay_until field"),
        (
            "SELECT password, coalesce(h, 'x') AS host, d AS delay_until FROM t WHERE u = '%u'",
            "computes host",
        ),
        (
            "SELECT p AS password, a.host, a.delay_until FROM a JOIN b ON a.id = b.id WHERE u = '%u'",
            "reads more than one table",
        ),
        ("SELECT p AS password, host, delay_until FROM a, b WHERE u = '%u'", "more than one table"),
        ("SELECT host, delay_until FROM t", "is not SELECT ... FROM ... WHERE"),
    ],
)
def test_what_cannot_be_updated(query: str, reason: str) -> None:
    with pytest.raises(MoveImpossible, match=reason):
        plan_update(query)


def test_the_demo_query_has_no_delay_until_column() -> None:
    conf = (REPO / "sql" / "dovecot-sql-sqlite.conf.ext").read_text()
    query = conf.split("password_query =", 1)[1].replace("\\\n", " ")
    with pytest.raises(MoveImpossible, match="no delay_until field"):
        plan_update(query)


def test_manual_steps_follow_the_seed() -> None:
    text = manual_steps("/etc/proxyd/proxyd.conf", "alice", "10.0.0.2", 1700000031, 5)
    assert "host=10.0.0.2 delay_until=1700000031+5" in text
    assert "proxyctl -c /etc/proxyd/proxyd.conf kick alice" in text
