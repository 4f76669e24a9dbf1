"""The drain's reading of the password_query and its schedule (no database)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxyd.cli import drain, move


@pytest.mark.parametrize(
    ("where", "column"),
    [("username = '%u'", "username"), ("a.user_name='%Lu' AND active = 1", "a.user_name"),
     ('"login" = \'%{user}\'', '"login"')],
)  # fmt: skip
def test_user_column(where: str, column: str) -> None:
    assert drain.user_column(where) == column


def test_a_query_by_local_part_and_domain_cannot_be_drained() -> None:
    with pytest.raises(move.MoveImpossible):
        drain.user_column("userid = '%n' AND domain = '%d'")


@given(st.text(max_size=60))
def test_user_column_any_text(where: str) -> None:
    try:
        column = drain.user_column(where)
    except move.MoveImpossible:
        return
    assert column in where


def test_batches_are_spread_over_the_window() -> None:
    journal = drain.Journal(
        source="a", target="b", started=1000.0, window=10.0, delay=2, batch=20, users=[f"u{n}" for n in range(200)]
    )
    assert [journal.batch_time(i) for i in (0, 19, 20, 199)] == [1000.0, 1000.0, 1001.0, 1009.0]
