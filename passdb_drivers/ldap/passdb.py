"""The ldap passdbs: the stored password (``auth_bind = no``) or a bind as the user."""

from __future__ import annotations

import logging

from passdb_drivers._pool import ConnectError, Failover, HostPool, QueryError
from passdb_drivers.ldap.config import LdapConfig
from passdb_drivers.ldap.connection import LdapConnector
from passdb_drivers.ldap.entry import Entry, entry_fields
from passdb_drivers.ldap.escaping import dn_escape, filter_escape
from proxyd.auth.expand import ExpandError, Variables, expand, request_variables
from proxyd.auth.passdb import PassdbReply, PassdbResult, PassdbTempFail
from proxyd.auth.request import AuthRequest
from proxyd.log import MAX_LOG_USERNAME_LEN, sanitize
from proxyd.secret import Secret

log = logging.getLogger("proxyd.auth.ldap")


class LdapPassdb:
    """An ldap passdb that returns the stored password (``auth_bind = no``)."""

    def __init__(self, config: LdapConfig, failover: Failover[LdapConnector]) -> None:
        self.default_pass_scheme: str = config.default_pass_scheme
        #: the auth cache key comes from these variables
        self.cache_key: str = config.auth_bind_userdn or (config.base + config.pass_filter)
        self._config = config
        self._failover = failover

    async def _search(self, variables: Variables) -> Entry | None:
        config = self._config
        try:
            search_filter = expand(config.pass_filter, variables, filter_escape)
            base = expand(config.base, variables, dn_escape)
        except ExpandError as exc:
            raise PassdbTempFail(f"Failed to expand pass_filter or base: {exc}") from None

        async def search(pool: HostPool[LdapConnector]) -> list[Entry]:
            connector = pool.connector
            return await pool.run(lambda conn: connector.search(conn, base, search_filter))

        try:
            entries = await self._failover.run(search)
        except (ConnectError, QueryError) as exc:
            raise PassdbTempFail(f"ldap: {exc}") from None
        if not entries:
            return None
        if len(entries) > 1:
            raise PassdbTempFail(
                f"pass_filter matched multiple objects, aborting: {', '.join(e.dn for e in entries[:3])}"
            )
        return entries[0]

    def _fields(self, entry: Entry, variables: Variables) -> tuple[tuple[str, str | None], ...]:
        try:
            return tuple(entry_fields(entry, self._config.fields, variables))
        except ExpandError as exc:
            raise PassdbTempFail(f"Failed to expand pass_attrs: {exc}") from None

    async def lookup(self, request: AuthRequest) -> PassdbReply:
        """Search ``pass_filter`` and return the entry's ``pass_attrs`` fields."""
        variables = request_variables(request)
        entry = await self._search(variables)
        if entry is None:
            return PassdbReply(PassdbResult.USER_UNKNOWN)
        return PassdbReply(PassdbResult.OK, self._fields(entry, variables))


class LdapBindPassdb(LdapPassdb):
    """``auth_bind = yes``: the password is checked by binding as the user."""

    async def _bind(self, dn: str, password: str) -> bool:
        async def bind(pool: HostPool[LdapConnector]) -> bool:
            connector = pool.connector
            return await pool.run(lambda conn: connector.bind(conn, dn, password))

        try:
            return await self._failover.run(bind)
        except (ConnectError, QueryError) as exc:
            raise PassdbTempFail(f"ldap: {exc}") from None

    async def lookup(self, request: AuthRequest) -> PassdbReply:
        """Without a password: the entry's fields (none with ``auth_bind_userdn``)."""
        if self._config.auth_bind_userdn is not None:
            return PassdbReply(PassdbResult.OK)
        return await super().lookup(request)

    async def verify_plain(self, request: AuthRequest, password: Secret) -> PassdbReply:
        """Bind as the user's DN with ``password``."""
        if not password.reveal():
            # an empty password would be an anonymous bind, which always succeeds
            log.info(
                "ldap(%s): Login attempt with empty password", sanitize(request.user, MAX_LOG_USERNAME_LEN)
            )
            return PassdbReply(PassdbResult.PASSWORD_MISMATCH)
        variables = request_variables(request)
        userdn = self._config.auth_bind_userdn
        if userdn is not None:
            try:
                dn = expand(userdn, variables, dn_escape)
            except ExpandError as exc:
                raise PassdbTempFail(f"Failed to expand auth_bind_userdn: {exc}") from None
            fields: tuple[tuple[str, str | None], ...] = ()
        else:
            entry = await self._search(variables)
            if entry is None:
                return PassdbReply(PassdbResult.USER_UNKNOWN)
            dn = entry.dn
            fields = self._fields(entry, variables)
        if not await self._bind(dn, password.reveal()):
            return PassdbReply(PassdbResult.PASSWORD_MISMATCH)
        return PassdbReply(PassdbResult.OK, fields)
