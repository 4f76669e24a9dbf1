"""proxyd as it is deployed: every password scheme and every passdb driver through
the unprivileged auth process.

The ``proxyd`` fixture runs proxyd the way an administrator does (see
tests/fixtures/proxyd.py): as root, the auth process dropping to ``dovecot``,
login processes to ``dovenull`` in the ``login`` chroot, HOME root's alone, and
any module imported after the drop failing the test.  The files the auth
process reads after the drop are ``0640 root:dovecot``; the ``conf.ext`` files
are read as root before it (``0600 root``), as Dovecot's auth process does.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trustme

from proxyd.auth.schemes import generatable_schemes, hash_password
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.mariadb import MariadbServer
from tests.fixtures.net import client_address, free_ports
from tests.fixtures.postgres import PostgresFactory, PostgresServer
from tests.fixtures.proxyd import (
    PasswdEntry,
    ProxydProcess,
    ProxydRunner,
    proxy_fields,
    readable_by_auth,
    write_passwd_file,
)
from tests.fixtures.slapd import PEOPLE, SERVICE_DN, SERVICE_PASSWORD, SlapdFactory, SlapdServer
from tests.fixtures.tls import issue_tls_files
from tests.helpers.clients import IMAP4, RawImapClient, fetch_subjects

pytestmark = [pytest.mark.e2e, pytest.mark.proxyd_only]

REPO_ROOT = Path(__file__).resolve().parents[2]
#: the demo query of sql/dovecot-sql-*.conf.ext
QUERY = (
    "SELECT username AS user, password, host, port, destuser, nologin, reason, "
    "CASE WHEN nologin IS NULL THEN 'Y' END AS proxy FROM proxy_accounts WHERE username = '%u'"
)
#: what a failed lookup must never be in these tests
TEMPFAIL = "Temporary authentication failure"


def root_only(path: Path) -> Path:
    """A file proxyd reads as root before the drop (a conf.ext with database credentials)."""
    path.chmod(0o600)
    return path


def login_ok(running: ProxydProcess, user: str, password: str, backend: DovecotBackend) -> None:
    """``user`` logs in with ``password`` and lands in alice's mailbox on ``backend``."""
    with IMAP4(running.address(), running.port()) as client:
        typ, data = client.login(user, password)
        assert typ == "OK", (user, data, running.log_text())
        assert fetch_subjects(client) == [backend.subject_for("alice")]
        client.logout()


def login_refused(running: ProxydProcess, user: str, password: str, source: int) -> None:
    """A wrong password is refused (from its own client address: no auth penalty delay)."""
    with RawImapClient(running.address(), running.port(), source_ip=client_address(source)) as client:
        reply = client.command(f"LOGIN {user} {password}")
        assert reply.tagged == "NO [AUTHENTICATIONFAILED] Authentication failed.", reply


def assert_no_auth_errors(running: ProxydProcess) -> None:
    log = running.log_text()
    for word in ("auth: Error", "auth: Panic", "Fatal"):
        assert word not in log, log


# -- every scheme ------------------------------------------------------------------


def test_every_password_scheme_verifies_in_the_unprivileged_auth_process(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    """One passwd-file user per scheme proxyd knows, each with alice's password hashed
    in it: each logs in (and is proxied as alice); a wrong password is refused."""
    schemes = [s for s in generatable_schemes() if s != "DIGEST-MD5"]
    entries = [
        PasswdEntry(
            f"s_{scheme.lower()}",
            hash_password("alicepw", scheme, user=f"s_{scheme.lower()}"),
            proxy_fields(backend_a.address, backend_a.imap_port, destuser="alice"),
        )
        for scheme in schemes
    ]
    # DIGEST-MD5's hash covers the user name the client typed: proxied as itself
    entries.append(
        PasswdEntry(
            "alice",
            hash_password("alicepw", "DIGEST-MD5", user="alice"),
            proxy_fields(backend_a.address, backend_a.imap_port),
        )
    )
    running = proxyd.start(proxyd.config(write_passwd_file(proxyd.workdir / "users", entries)))
    for entry in entries:
        login_ok(running, entry.user, "alicepw", backend_a)
    for number, entry in enumerate(entries):
        login_refused(running, entry.user, "wrongpw", 100 + number)
    assert_no_auth_errors(running)


# -- every passdb driver -------------------------------------------------------------


def sql_conf(proxyd: ProxydRunner, driver: str, connect: str) -> Path:
    """The demo's conf.ext (sql/dovecot-sql-*.conf.ext) for ``driver``, ``0600 root``."""
    path = proxyd.workdir / f"dovecot-sql-{driver}.conf.ext"
    path.write_text(
        f"driver = {driver}\nconnect = {connect}\ndefault_pass_scheme = SHA512-CRYPT\n"
        f"password_query = {QUERY}\n"
    )
    return root_only(path)


def account_row(user: str, password: str, backend: DovecotBackend) -> str:
    return (
        "INSERT INTO proxy_accounts (username, password, host, port, destuser) VALUES "
        f"('{user}', '{password}', '{backend.address}', {backend.imap_port}, 'alice')"
    )


def start_with_passdb(proxyd: ProxydRunner, driver: str, args: str) -> ProxydProcess:
    config = proxyd.config(None)
    config.passdbs.append({"driver": driver, "args": args})
    return proxyd.start(config)


def check_driver(running: ProxydProcess, user: str, backend: DovecotBackend) -> None:
    login_ok(running, user, "alicepw", backend)
    login_refused(running, user, "wrongpw", 150)
    assert_no_auth_errors(running)


def test_static_passdb(proxyd: ProxydRunner, backend_a: DovecotBackend) -> None:
    stored = hash_password("alicepw", "ARGON2ID")
    running = start_with_passdb(
        proxyd,
        "static",
        f"password={stored} proxy=y host={backend_a.address} port={backend_a.imap_port} destuser=alice",
    )
    check_driver(running, "d_static", backend_a)


def test_sqlite_passdb(proxyd: ProxydRunner, backend_a: DovecotBackend) -> None:
    """The database is ``0640 root:dovecot``: the auth process opens it after the drop."""
    database = proxyd.workdir / "mail.db"
    with sqlite3.connect(database) as db:
        db.executescript((REPO_ROOT / "sql" / "sqlite.sql").read_text())
        db.execute(account_row("d_sqlite", hash_password("alicepw", "ARGON2I"), backend_a))
    db.close()
    readable_by_auth(database)
    running = start_with_passdb(proxyd, "sql", str(sql_conf(proxyd, "sqlite", str(database))))
    check_driver(running, "d_sqlite", backend_a)


def test_pgsql_passdb_with_the_seed_connect_string(
    proxyd: ProxydRunner, postgres: PostgresServer, backend_a: DovecotBackend
) -> None:
    """No sslmode in the connect string (as in the seed): the client must not look for
    certificates in root's HOME, which it cannot read after the drop."""
    postgres.sql(account_row("d_pgsql", hash_password("alicepw", "SHA512-CRYPT"), backend_a))
    running = start_with_passdb(proxyd, "sql", str(sql_conf(proxyd, "pgsql", postgres.connect_string())))
    check_driver(running, "d_pgsql", backend_a)


def test_mysql_passdb(proxyd: ProxydRunner, mariadb: MariadbServer, backend_a: DovecotBackend) -> None:
    mariadb.sql(account_row("d_mysql", hash_password("alicepw", "BLF-CRYPT"), backend_a))
    running = start_with_passdb(proxyd, "sql", str(sql_conf(proxyd, "mysql", mariadb.connect_string())))
    check_driver(running, "d_mysql", backend_a)


def test_ldap_passdb(proxyd: ProxydRunner, slapd: SlapdServer, backend_a: DovecotBackend) -> None:
    slapd.add_user("d_ldap", "alicepw", host=backend_a.address, port=backend_a.imap_port)
    conf = proxyd.workdir / "dovecot-ldap.conf.ext"
    conf.write_text(
        f"uris = {slapd.uri}\ndn = {SERVICE_DN}\ndnpass = {SERVICE_PASSWORD}\nbase = {PEOPLE}\n"
        "pass_filter = (&(objectClass=inetOrgPerson)(uid=%u))\n"
        "pass_attrs = uid=user, userPassword=password, =proxy=y, =destuser=alice, "
        "=host=%{ldap:proxyMailHost}, proxyMailPort=port\n"
        "default_pass_scheme = SSHA\n"
    )
    running = start_with_passdb(proxyd, "ldap", str(root_only(conf)))
    check_driver(running, "d_ldap", backend_a)


# -- TLS and failure paths -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "ldaps"])
def test_ldap_passdb_over_tls(
    proxyd: ProxydRunner,
    slapd_factory: SlapdFactory,
    tls_ca: trustme.CA,
    backend_a: DovecotBackend,
    mode: str,
) -> None:
    """StartTLS and ldaps:// from the unprivileged auth process: the TLS code runs (and
    the CA file is read) after the drop; the CA file is world-readable, as in /etc/ssl."""
    files = issue_tls_files(tls_ca, proxyd.workdir / "slapd-tls", "127.0.0.1")
    server = slapd_factory.create(tls=files)
    server.add_user("d_ldaptls", "alicepw", host=backend_a.address, port=backend_a.imap_port)
    conf = proxyd.workdir / "dovecot-ldap.conf.ext"
    conf.write_text(
        f"uris = {server.uri if mode == 'starttls' else server.ldaps_uri}\n"
        + ("tls = yes\n" if mode == "starttls" else "")
        + f"tls_ca_cert_file = {files.ca_pem}\ntls_require_cert = demand\n"
        f"dn = {SERVICE_DN}\ndnpass = {SERVICE_PASSWORD}\nbase = {PEOPLE}\n"
        "pass_filter = (&(objectClass=inetOrgPerson)(uid=%u))\n"
        "pass_attrs = uid=user, userPassword=password, =proxy=y, =destuser=alice, "
        "=host=%{ldap:proxyMailHost}, proxyMailPort=port\n"
    )
    running = start_with_passdb(proxyd, "ldap", str(root_only(conf)))
    check_driver(running, "d_ldaptls", backend_a)


def test_pgsql_passdb_over_tls(
    proxyd: ProxydRunner,
    postgres_factory: PostgresFactory,
    tls_ca: trustme.CA,
    backend_a: DovecotBackend,
) -> None:
    """A PostgreSQL server with ``ssl = on`` (Debian's default): with the seed's connect
    string (sslmode prefer) the unprivileged auth process talks TLS to it, and with
    ``sslmode=verify-full sslrootcert=CA`` it verifies the server as well."""
    files = issue_tls_files(tls_ca, proxyd.workdir / "pg-tls", "127.0.0.1")
    server = postgres_factory.create(tls=files)
    server.sql(account_row("d_pgtls", hash_password("alicepw", "SHA512-CRYPT"), backend_a))
    ssl_sessions = (
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
        "WHERE ssl AND usename = 'dovecot'"
    )
    for extra in ({}, {"sslmode": "verify-full", "sslrootcert": str(files.ca_pem)}):
        conf = sql_conf(proxyd, "pgsql", server.connect_string(**extra))
        running = start_with_passdb(proxyd, "sql", str(conf))
        check_driver(running, "d_pgtls", backend_a)
        assert int(server.sql(ssl_sessions).strip()) >= 1  # the pool keeps its connection
        assert running.stop() == 0


def test_unreachable_databases_are_temporary_failures(proxyd: ProxydRunner) -> None:
    """The error paths of every network driver, after the drop: nothing listens where the
    database should be, and the client gets Dovecot's temporary failure."""
    closed = free_ports("127.0.0.1", 3)
    ldap_conf = proxyd.workdir / "dovecot-ldap.conf.ext"
    ldap_conf.write_text(
        f"uris = ldap://127.0.0.1:{closed[2]}\ndn = {SERVICE_DN}\ndnpass = {SERVICE_PASSWORD}\n"
        f"base = {PEOPLE}\npass_filter = (&(objectClass=inetOrgPerson)(uid=%u))\n"
    )
    config = proxyd.config(None)
    config.passdbs += [
        {"driver": "sql", "args": str(sql_conf(proxyd, "pgsql", f"host=127.0.0.1 port={closed[0]} dbname=mail"))},
        {"driver": "sql", "args": str(sql_conf(proxyd, "mysql", f"host=127.0.0.1 port={closed[1]} dbname=mail"))},
        {"driver": "ldap", "args": str(root_only(ldap_conf))},
    ]
    running = proxyd.start(config)
    with RawImapClient(running.address(), running.port(), source_ip=client_address(170)) as client:
        reply = client.command("LOGIN d_gone somepw")
        assert reply.tagged.startswith("NO [UNAVAILABLE] Temporary authentication failure."), reply
    log = running.log_text()
    for port in closed:  # each passdb was asked in turn, and failed at its connect
        assert f"127.0.0.1:{port}" in log, log
