"""Connections to one LDAP server (ldap3 in threads); see ``passdb_drivers._pool.Connector``."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import ldap3
import trio
from ldap3.core import exceptions as ldap_errors

from passdb_drivers._pool import ConnectError, QueryError
from passdb_drivers.ldap.config import DEREFS, SCOPES, LdapConfig
from passdb_drivers.ldap.entry import Entry

#: LDAP result codes
_SUCCESS: Final = 0
_SIZE_LIMIT_EXCEEDED: Final = 4
_NO_SUCH_OBJECT: Final = 32
_INVALID_CREDENTIALS: Final = 49


def _decode(values: Sequence[bytes]) -> tuple[str, ...]:
    return tuple(value.decode("utf-8", "surrogateescape") for value in values if value)


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(
        exc,
        ldap_errors.LDAPCommunicationError
        | ldap_errors.LDAPSocketOpenError
        | ldap_errors.LDAPSessionTerminatedByServerError
        | ldap_errors.LDAPBindError
        | ldap_errors.LDAPStartTLSError
        | ldap_errors.LDAPSocketReceiveError
        | ldap_errors.LDAPSocketSendError
        | OSError,
    )


@dataclass(slots=True)
class _Conn:
    """A search connection (bound as ``dn``), used by one thread at a time."""

    connection: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: bool = False
    aborted: bool = False


class LdapConnector:
    """One LDAP server; see ``passdb_drivers._pool.Connector``."""

    def __init__(
        self, config: LdapConfig, server: tuple[bool, str, int], limiter: trio.CapacityLimiter
    ) -> None:
        use_ssl, host, port = server
        self.label = f"{'ldaps' if use_ssl else 'ldap'}://{host}:{port}"
        self._config = config
        self._limiter = limiter
        self._address = (host, port, use_ssl)

    def _new_connection(self, user: str | None, password: str | None) -> Any:
        host, port, use_ssl = self._address
        # a Server of its own each time: ldap3 remembers failed addresses in it
        # and would refuse them for minutes after the server is back
        server = ldap3.Server(
            host,
            port=port,
            use_ssl=use_ssl,
            tls=self._config.tls,
            get_info=ldap3.NONE,
            connect_timeout=self._config.connect_timeout,
        )
        return ldap3.Connection(
            server,
            user=user,
            password=password,
            client_strategy=ldap3.SAFE_SYNC,
            auto_bind=ldap3.AUTO_BIND_NONE,
            receive_timeout=self._config.receive_timeout,
            read_only=True,
            auto_referrals=False,
            auto_escape=False,
            raise_exceptions=False,
        )

    def _open(self, connection: Any) -> None:
        connection.open()
        if self._config.starttls and not self._address[2]:
            connection.start_tls()

    def _connect_sync(self) -> _Conn:
        config = self._config
        connection = self._new_connection(config.dn or None, config.dnpass.reveal() or None)
        try:
            self._open(connection)
            _, result, _, _ = connection.bind()
        except Exception as exc:
            _unbind(connection)
            raise ConnectError(f"{self.label}: {_describe(exc)}") from None
        if result["result"] != _SUCCESS:
            _unbind(connection)
            raise ConnectError(
                f"{self.label}: bind as '{config.dn}' failed: {result['description']}"
            )
        return _Conn(connection)

    async def connect(self) -> _Conn:
        return await trio.to_thread.run_sync(
            self._connect_sync, limiter=self._limiter, abandon_on_cancel=True
        )

    def _search_sync(self, conn: _Conn, base: str, search_filter: str) -> list[Entry]:
        config = self._config
        with conn.lock:
            if conn.aborted:
                raise ConnectError(f"{self.label}: connection was closed")
            conn.running = True
        try:
            _, result, response, _ = conn.connection.search(
                base,
                search_filter,
                search_scope=SCOPES[config.scope],
                dereference_aliases=DEREFS[config.deref],
                attributes=list(config.attributes) or [ldap3.NO_ATTRIBUTES],
            )
        except Exception as exc:
            if _is_connection_error(exc):
                raise ConnectError(f"{self.label}: {_describe(exc)}") from None
            raise QueryError(f"{self.label}: {_describe(exc)}") from None
        finally:
            with conn.lock:
                conn.running = False
                if conn.aborted:
                    _unbind(conn.connection)
        code = result["result"]
        entries = [
            Entry(
                dn=item["dn"],
                attributes={
                    name.lower(): _decode(values) for name, values in item["raw_attributes"].items()
                },
            )
            for item in response or ()
            if item.get("type") == "searchResEntry"
        ]
        if code == _NO_SUCH_OBJECT:
            return []
        if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED) or (
            code == _SIZE_LIMIT_EXCEEDED and not entries
        ):
            raise QueryError(
                f"{self.label}: ldap_search(base={base}, filter={search_filter}) failed: "
                f"{result['description']} ({code})"
            )
        return entries

    async def search(self, conn: _Conn, base: str, search_filter: str) -> list[Entry]:
        """Run the search on ``conn``; raises ``ConnectError`` or ``QueryError``."""
        return await trio.to_thread.run_sync(
            self._search_sync,
            conn,
            base,
            search_filter,
            limiter=self._limiter,
            abandon_on_cancel=True,
        )

    def _bind_sync(self, dn: str, password: str) -> int:
        connection = self._new_connection(dn, password)
        try:
            self._open(connection)
            _, result, _, _ = connection.bind()
        except Exception as exc:
            raise ConnectError(f"{self.label}: {_describe(exc)}") from None
        finally:
            _unbind(connection)
        code: int = result["result"]
        if code not in (_SUCCESS, _INVALID_CREDENTIALS):
            raise QueryError(
                f"{self.label}: ldap_bind({dn}) failed: {result['description']} ({code})"
            )
        return code

    async def bind(self, _conn: _Conn, dn: str, password: str) -> bool:
        """True if ``dn`` / ``password`` bind (on a connection of their own)."""
        code = await trio.to_thread.run_sync(
            self._bind_sync, dn, password, limiter=self._limiter, abandon_on_cancel=True
        )
        return code == _SUCCESS

    async def close(self, conn: _Conn) -> None:
        await trio.to_thread.run_sync(self.abort, conn, limiter=self._limiter)

    def abort(self, conn: _Conn) -> None:
        with conn.lock:
            conn.aborted = True
            if conn.running:
                return  # the thread unbinds when its search returns
        _unbind(conn.connection)


def _unbind(connection: Any) -> None:
    """Unbind and make sure the socket is closed, even when the connection is broken."""
    with contextlib.suppress(Exception):
        connection.unbind()
    sock = getattr(connection, "socket", None)
    if sock is not None:
        with contextlib.suppress(Exception):
            sock.close()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
