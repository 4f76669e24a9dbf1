"""The ``ldap`` passdb (Dovecot's ``db-ldap.c``, ``passdb-ldap.c``), with ldap3 in threads.

Configuration, exactly as for Dovecot::

    passdb {
      driver = ldap
      args = /etc/proxyd/dovecot-ldap.conf.ext
    }

Keys of the args file (Dovecot 2.3 names and defaults):

* ``uris`` (``ldap://host:port``, ``ldaps://...``, space separated) or
  ``hosts`` (``host[:port]`` list); tried in order, a failing one is skipped
  for a while (``passdb_drivers._pool.Failover``);
* ``dn`` / ``dnpass``: the account lookups bind as (anonymous when unset);
* ``tls = yes``: StartTLS; ``tls_ca_cert_file``, ``tls_ca_cert_dir``,
  ``tls_cert_file``, ``tls_key_file``, ``tls_cipher_suite``,
  ``tls_require_cert`` (never | allow | try | demand | hard; default demand);
* ``base`` (required), ``scope`` (base | onelevel | subtree, default subtree),
  ``deref`` (never | searching | finding | always, default never);
* ``pass_filter`` (default ``(&(objectClass=posixAccount)(uid=%u))``) and
  ``pass_attrs`` (default ``uid=user,userPassword=password``): a comma list of
  ``ldapAttr=field``, ``ldapAttr=field=template`` (``%$`` is the attribute's
  value, ``%{ldap:other}`` another attribute's; a template without ``%`` is a
  prefix), ``=field=value`` (a static field, e.g. ``=proxy=y``), ``!ldapAttr``
  (fetched for templates only) or a bare ``ldapAttr`` (same field name);
* ``auth_bind = yes``: the password is checked by binding as the user's DN
  (found with ``pass_filter``; ``pass_attrs`` still give the fields, any
  ``password`` field is ignored); ``auth_bind_userdn`` (a DN template) binds
  directly without a search, and then, as in Dovecot, no attributes are read;
* ``default_pass_scheme`` (default CRYPT);
* accepted and ignored (userdb and tuning settings a proxy has no use for):
  ``user_attrs``, ``user_filter``, ``iterate_attrs``, ``iterate_filter``,
  ``debug_level``, ``ldaprc_path``, ``blocking``, ``userdb_warning_disable``,
  ``ldap_version = 3``.  ``sasl_bind = yes``, ``@field=attr`` DN lookups and
  ``%{ldap_ptr:...}`` are not supported yet (configuration errors).

Values put into ``pass_filter`` are escaped as RFC 4515 demands
(``escape_filter_chars``), values put into DNs (``base``,
``auth_bind_userdn``) as RFC 4514 demands, so a user name cannot change a
filter or a DN.

Modules: ``config.py`` reads the args file, ``escaping.py`` escapes values
for filters and DNs, ``entry.py`` turns a search result into fields,
``connection.py`` talks to one server, ``passdb.py`` is the passdb.

ldap3 is synchronous: every operation runs in a worker thread from this
passdb's own ``CapacityLimiter`` (5 threads; at most that many connections
per server).  Connections use the ``SAFE_SYNC`` strategy and
``get_info=NONE`` (no schema download), a 5 s connect and a 5 s receive
timeout; the Trio side gives up one second after that, abandoning the thread,
whose connection is then closed.  Binds for ``auth_bind`` use a new
connection each (a bound identity is never shared).  One entry is a
success, none an unknown user, several a temporary failure ("pass_filter
matched multiple objects"); a server that cannot be reached, an error result
or a timeout is a temporary failure; a wrong password at bind (LDAP result
49) is a password mismatch.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Final

import trio

from passdb_drivers._pool import Failover, HostPool
from passdb_drivers.ldap.config import LdapConfig, parse_attrs, read_ldap_config
from passdb_drivers.ldap.connection import LdapConnector
from passdb_drivers.ldap.passdb import LdapBindPassdb, LdapPassdb
from proxyd.auth.passdb import Passdb
from proxyd.config.settings import PassdbSettings

#: threads (and connections per server) of one ldap passdb
THREADS: Final = 5


@contextlib.asynccontextmanager
async def _opened(config: LdapConfig) -> AsyncIterator[Passdb]:
    limiter = trio.CapacityLimiter(THREADS)
    pools: list[HostPool[LdapConnector]] = [
        HostPool(
            LdapConnector(config, server, limiter),
            maxconns=THREADS,
            connect_timeout=config.connect_timeout + 1,
            query_timeout=config.receive_timeout + 1,
        )
        for server in config.servers
    ]
    failover = Failover(pools)
    try:
        yield LdapBindPassdb(config, failover) if config.auth_bind else LdapPassdb(config, failover)
    finally:
        await failover.aclose()


def create(settings: PassdbSettings) -> AbstractAsyncContextManager[Passdb]:
    """The ldap passdb for ``settings.args`` (the LDAP file); raises ``ConfigError``.

    Reads and checks the file now; connects only when used.
    """
    return _opened(read_ldap_config(settings))


__all__ = [
    "LdapBindPassdb",
    "LdapConfig",
    "LdapPassdb",
    "create",
    "parse_attrs",
    "read_ldap_config",
]
