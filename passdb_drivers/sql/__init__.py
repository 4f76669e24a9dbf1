"""The ``sql`` passdb (Dovecot's ``passdb-sql.c``), for PostgreSQL, MySQL/MariaDB and SQLite.

Configuration, exactly as for Dovecot::

    passdb {
      driver = sql
      args = /etc/proxyd/dovecot-sql.conf.ext
    }

The args file (``config.py``) names the ``driver`` (pgsql, mysql, sqlite), the
``connect`` string and the ``password_query``.  Modules:

* ``config.py`` reads the file and the connect strings;
* ``query.py`` turns the query into SQL with bound parameters (no %-variable is
  ever pasted into SQL);
* ``passdb_drivers/_pool.py`` (shared with the ldap driver) keeps connections
  per host, fails over between hosts, and puts a deadline on every wait;
* ``pgsql.py`` (asyncpg), ``mysql.py`` (asyncmy) and ``sqlite.py`` (sqlite3 in
  threads) talk to the databases.

A lookup runs the query for the request and maps the answer as Dovecot does:
no row is an unknown user; one row gives its columns as fields (column name →
field name, NULL columns skipped by the chain, so ``'Y' AS proxy`` /
``NULL AS proxy`` switch a flag on or off); more than one row ("Password query
returned multiple matches"), a result without a ``password`` or
``password_noscheme`` column, and every database or connection error are a
temporary failure.  The chain then applies the field rules (``user``,
``nopassword``, ...) and verifies the password with ``default_pass_scheme``.

Nothing is opened when the configuration is checked (``create()``); entering
the returned context manager makes the pools, which connect on first use, so
proxyd starts while a database is down and answers with temporary failures
until it is back.  The results are cached by the auth cache
(``auth_cache_size``) with the variables of ``password_query`` as the key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final

from passdb_drivers._pool import BackendError, Failover, SqlConnector, sql_query
from passdb_drivers.sql.config import SqlConfig, read_sql_config
from passdb_drivers.sql.query import (
    MYSQL,
    PGSQL,
    SQLITE,
    CompiledQuery,
    Dialect,
    QueryError,
    compile_query,
)
from proxyd.auth.expand import ExpandError, iter_variables, request_variables
from proxyd.auth.passdb import Passdb, PassdbReply, PassdbResult, PassdbTempFail
from proxyd.auth.request import AuthRequest
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError

_DIALECTS: Final[dict[str, Dialect]] = {"pgsql": PGSQL, "mysql": MYSQL, "sqlite": SQLITE}
_PASSWORD_COLUMNS: Final = ("password", "password_noscheme")


class SqlPassdb:
    """One opened sql passdb; see the package docstring."""

    def __init__(
        self, config: SqlConfig, query: CompiledQuery, backend: Failover[SqlConnector]
    ) -> None:
        self.default_pass_scheme: str = config.default_pass_scheme
        #: the auth cache key comes from the query's variables
        self.cache_key: str = config.password_query
        self._config = config
        self._query = query
        self._backend = backend
        # a query that sends the password (%w) must not have it echoed into the log
        self._sends_password = any(
            ref.name == "password" for t in query.templates for ref in iter_variables(t)
        )

    @property
    def backend(self) -> Failover[SqlConnector]:
        """The host pools (for tests and statistics)."""
        return self._backend

    async def lookup(self, request: AuthRequest) -> PassdbReply:
        """Run ``password_query`` for ``request``."""
        try:
            params = self._query.bind(request_variables(request))
        except ExpandError as exc:
            raise PassdbTempFail(f"Failed to expand password_query: {exc}") from None
        try:
            result = await sql_query(self._backend, self._query.sql, params)
        except BackendError as exc:
            suffix = (
                "" if self._config.query_location else " (using built-in default password_query)"
            )
            text = str(exc)
            if self._sends_password and request.password is not None and request.password.reveal():
                text = text.replace(request.password.reveal(), "<hidden>")
            raise PassdbTempFail(f"Password query failed: {text}{suffix}") from None
        if not result.rows:
            return PassdbReply(PassdbResult.USER_UNKNOWN)
        if not any(column in result.columns for column in _PASSWORD_COLUMNS):
            raise PassdbTempFail("Password query must return a field named 'password'")
        if len(result.rows) > 1:
            raise PassdbTempFail("Password query returned multiple matches")
        return PassdbReply(PassdbResult.OK, tuple(zip(result.columns, result.rows[0], strict=True)))


@asynccontextmanager
async def _opened(config: SqlConfig, query: CompiledQuery) -> AsyncIterator[Passdb]:
    if config.driver == "pgsql":
        from passdb_drivers.sql.pgsql import open_backend
    elif config.driver == "mysql":
        from passdb_drivers.sql.mysql import open_backend
    else:
        from passdb_drivers.sql.sqlite import open_backend
    async with open_backend(config) as backend:
        yield SqlPassdb(config, query, backend)


def create(settings: PassdbSettings) -> AbstractAsyncContextManager[Passdb]:
    """The sql passdb for ``settings.args`` (the SQL file); raises ``ConfigError``.

    Reads and checks the file and the query now; connects only when entered.
    """
    config = read_sql_config(settings)
    try:
        query = compile_query(config.password_query, _DIALECTS[config.driver])
    except QueryError as exc:
        raise ConfigError(
            config.query_location or settings.location, f"password_query: {exc}"
        ) from None
    return _opened(config, query)
