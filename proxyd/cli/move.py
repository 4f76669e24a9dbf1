"""``proxyctl move USER HOST``: Dovecot's user-move procedure in one step.

Theory of operation
-------------------
The procedure (Dovecot's "Moving users between backends/clusters"): set
``delay_until`` a little into the future and the new ``host``, in one atomic
update; kick the user's sessions; new logins wait in the proxy until the
delay is over and then go to the new host, while the old backend's processes
finish.

Where the user's passdb is SQL and its ``password_query`` reads ``host`` and
``delay_until`` straight from columns of one table, proxyctl derives the
update from that query::

    SELECT ..., host, ..., delay_until ... FROM <table> WHERE <condition>
    -> UPDATE <table> SET <host column> = ?, <delay_until column> = ? WHERE <condition>

One statement sets both columns, so no login sees one without the other.  The
``WHERE`` condition keeps its %-variables; they are bound as parameters
(``passdb_drivers.sql.query``), like the new values.  SQLite files are opened
read-write with the standard library; PostgreSQL and MySQL go through the sql
driver's own connection code (``open_backend``, ``sql_query``).  Then:

* the user's auth cache entries are flushed and the sessions kicked, when
  proxyd is running (its admin socket);
* the passdb is read again to show what new logins get;
* with ``--wait N`` proxyctl watches ``who`` for up to N seconds and reports
  when the user's first new session lands on the new host.

Where none of this is possible (no SQL passdb with the user, a query that
joins tables or computes the fields, no ``delay_until`` column), the manual
steps are printed instead and the exit status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import ipaddress
import re
import socket
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Final, TextIO

import trio

from proxyd.auth.expand import ExpandError, request_variables
from proxyd.auth.request import AuthRequest, ConnectionInfo
from proxyd.auth.username import UsernameError, normalize_username, rules_from
from proxyd.config.settings import PassdbSettings, Settings
from proxyd.errors import ConfigError

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

#: Dovecot's documentation: "A bit over 30 seconds is likely a good value"
DEFAULT_DELAY: Final = 31
#: Dovecot refuses logins whose delay_until is further away (AUTH_REQUEST_MAX_DELAY_SECS)
MAX_DELAY: Final = 300

_IDENT: Final = r'(?:"[^"]+"|`[^`]+`|\[[^\]]+\]|[A-Za-z_][A-Za-z0-9_$]*)'
_COLUMN: Final = re.compile(rf"^(?:{_IDENT}\.)?({_IDENT})$")
_ITEM_ALIAS: Final = re.compile(
    rf"^(?P<expr>.+?)\s+(?:AS\s+)?(?P<alias>{_IDENT})$", re.IGNORECASE | re.DOTALL
)
_TABLE: Final = re.compile(rf"^(?:{_IDENT}\.)?{_IDENT}(?:\s+(?:AS\s+)?{_IDENT})?$", re.IGNORECASE)


class MoveImpossible(Exception):
    """This passdb cannot be updated by proxyctl; the text says why."""


@dataclass(frozen=True, slots=True)
class UpdatePlan:
    """The update derived from a password_query."""

    table: str
    host_column: str
    delay_column: str
    where: str

    def template(self) -> str:
        """The UPDATE as a Dovecot query template (new values as %{passdb:...}).

        Table, columns and condition come from the administrator's own
        password_query; every value is a bound parameter.
        """
        sets = (
            f"{self.host_column} = '%{{passdb:proxyd_move_host}}', "
            f"{self.delay_column} = '%{{passdb:proxyd_move_delay_until}}'"
        )
        return f"UPDATE {self.table} SET {sets} WHERE {self.where}"  # noqa: S608


# -- reading the password_query ------------------------------------------------------------------


def _top_level(query: str) -> list[tuple[int, str]]:
    """(position, upper-case word) of the words outside parentheses and quotes."""
    words: list[tuple[int, str]] = []
    depth = 0
    i = 0
    while i < len(query):
        char = query[i]
        if char in "'\"`":
            end = query.find(char, i + 1)
            i = len(query) if end < 0 else end + 1
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif (
            depth == 0
            and (char.isalpha() or char == "_")
            and (i == 0 or not _word_char(query[i - 1]))
        ):
            j = i
            while j < len(query) and _word_char(query[j]):
                j += 1
            words.append((i, query[i:j].upper()))
            i = j
            continue
        i += 1
    return words


def _word_char(char: str) -> bool:
    return char.isalnum() or char in "_$"


def _split_items(select_list: str) -> list[str]:
    items: list[str] = []
    depth = 0
    start = 0
    quote = ""
    for i, char in enumerate(select_list):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(select_list[start:i].strip())
            start = i + 1
    items.append(select_list[start:].strip())
    return items


def _unquote(name: str) -> str:
    if name[:1] in '"`[' and len(name) > 1:
        return name[1:-1]
    return name


def plan_update(password_query: str) -> UpdatePlan:
    """Derive the UPDATE from ``password_query``; raises :class:`MoveImpossible`."""
    query = " ".join(password_query.split())
    words = _top_level(query)
    positions = {word: pos for pos, word in reversed(words)}
    if (
        [w for _, w in words[:1]] != ["SELECT"]
        or "FROM" not in positions
        or "WHERE" not in positions
    ):
        raise MoveImpossible("the password_query is not SELECT ... FROM ... WHERE ...")
    select_end, from_pos, where_pos = positions["FROM"], positions["FROM"], positions["WHERE"]
    if where_pos < from_pos:
        raise MoveImpossible("the password_query is not SELECT ... FROM ... WHERE ...")
    table = query[from_pos + len("FROM") : where_pos].strip()
    if "JOIN" in {w for pos, w in words if from_pos < pos < where_pos} or not _TABLE.match(table):
        raise MoveImpossible(f"the password_query reads more than one table ({table})")
    where = query[where_pos + len("WHERE") :].strip()
    for pos, word in words:
        if pos > where_pos and word in ("ORDER", "LIMIT", "GROUP", "UNION", "HAVING"):
            where = query[where_pos + len("WHERE") : pos].strip()
            break
    columns: dict[str, str] = {}
    for item in _split_items(query[len("SELECT") : select_end]):
        alias_match = _ITEM_ALIAS.match(item)
        column_match = _COLUMN.match(item)
        if column_match:
            expr = item
            alias = _unquote(column_match.group(1))
        elif alias_match:
            expr, alias = alias_match.group("expr").strip(), _unquote(alias_match.group("alias"))
        else:
            continue
        columns[alias.lower()] = expr
    for field in ("host", "delay_until"):
        if field not in columns:
            raise MoveImpossible(f"the password_query returns no {field} field")
        if not _COLUMN.match(columns[field]):
            raise MoveImpossible(
                f"the password_query computes {field} ({columns[field]}), it is no column"
            )
    table_name = table.split()[0]
    return UpdatePlan(table_name, columns["host"], columns["delay_until"], where)


# -- talking to the database --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    settings: PassdbSettings
    config: Any  # passdb_drivers.sql.config.SqlConfig


def sql_passdbs(settings: Settings) -> list[_Target]:
    from passdb_drivers.sql.config import read_sql_config

    return [_Target(p, read_sql_config(p)) for p in settings.passdbs if p.driver == "sql"]


def request_for(user: str) -> AuthRequest:
    conn = ConnectionInfo(
        service="imap", local_ip="", local_port=0, remote_ip="", remote_port=0,
        real_local_ip="", real_local_port=0, real_remote_ip="", real_remote_port=0,
        secured=True, tls=False, session_id="",
    )  # fmt: skip
    return AuthRequest(conn=conn, mech="", user=user, password=None)


def dialect(driver: str) -> Any:
    from passdb_drivers.sql import query

    return {"pgsql": query.PGSQL, "mysql": query.MYSQL, "sqlite": query.SQLITE}[driver]


async def _run_sql(
    config: Any, sql: str, params: tuple[str, ...], *, write: bool
) -> list[dict[str, str | None]]:
    """Run one statement; rows as dicts (empty for an UPDATE)."""
    if config.driver == "sqlite":
        return await trio.to_thread.run_sync(sqlite_statement, config.database_path, sql, params, write)
    from passdb_drivers._pool import sql_query

    if config.driver == "pgsql":
        from passdb_drivers.sql.pgsql import open_backend
    else:
        from passdb_drivers.sql.mysql import open_backend
    async with open_backend(config) as backend:
        result = await sql_query(backend, sql, params)
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def sqlite_statement(
    path: str, sql: str, params: tuple[str, ...], write: bool
) -> list[dict[str, str | None]]:
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
        cursor = db.execute(sql, params)
        if write:
            db.commit()
            return [{"rowcount": str(cursor.rowcount)}]
        names = [column[0] for column in cursor.description or ()]
        return [
            {
                name: None if value is None else str(value)
                for name, value in zip(names, row, strict=True)
            }
            for row in cursor.fetchall()
        ]


async def _lookup(target: _Target, user: str) -> list[dict[str, str | None]]:
    from passdb_drivers.sql.query import compile_query

    compiled = compile_query(target.config.password_query, dialect(target.config.driver))
    params = compiled.bind(request_variables(request_for(user)))
    return await _run_sql(target.config, compiled.sql, params, write=False)


async def _update(
    target: _Target, plan: UpdatePlan, user: str, host: str, delay_until: str
) -> int | None:
    """Run the update; the number of rows changed where the driver tells (SQLite)."""
    from passdb_drivers.sql.query import compile_query

    compiled = compile_query(plan.template(), dialect(target.config.driver))
    variables = request_variables(
        request_for(user),
        passdb_fields={"proxyd_move_host": host, "proxyd_move_delay_until": delay_until},
    )
    rows = await _run_sql(target.config, compiled.sql, compiled.bind(variables), write=True)
    if rows and "rowcount" in rows[0]:
        return int(rows[0]["rowcount"] or 0)
    return None


# -- the command --------------------------------------------------------------------------------------


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``move`` with proxyctl's sub-command parser."""
    move: argparse.ArgumentParser = commands.add_parser(
        "move", help="move a user to another backend (SQL passdb: delay_until + host, then kick)"
    )
    move.add_argument("user", nargs="?", help="the user to move (or --from HOST to drain a backend)")
    move.add_argument("host", nargs="?", help="the new backend host (IP address or name)")
    move.add_argument(
        "--delay", type=int, default=DEFAULT_DELAY, metavar="S",
        help="hold new logins for S seconds (default %(default)s, at most 300)",
    )  # fmt: skip
    move.add_argument(
        "--spread", type=int, default=0, metavar="N",
        help="add 0..N-1 random seconds per login (delay_until=<ts>+N)",
    )  # fmt: skip
    move.add_argument(
        "--wait", type=float, default=0, metavar="SECONDS",
        help="watch for the user's first session on the new host for up to SECONDS",
    )  # fmt: skip
    return move


def manual_steps(config_path: str, user: str, host: str, stamp: int, spread: int) -> str:
    delay_until = f"{stamp}+{spread}" if spread else str(stamp)
    return (
        "Move the user by hand (Dovecot's procedure for moving users between backends):\n"
        f"  1. in the passdb, set for {user} in one atomic update: host={host} delay_until={delay_until}\n"
        f"     ({time.strftime('%H:%M:%S', time.localtime(stamp))}; a little over 30 s from now is usual)\n"
        f"  2. proxyctl -c {config_path} kick {user}\n"
        f"  3. flush the auth cache if it is on: proxyctl -c {config_path} auth cache flush {user}\n"
        f"  New logins then wait until delay_until and go to {host}.\n"
    )


def run(args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO) -> int:
    """``proxyctl move``; returns the exit code."""
    if args.user is None or args.host is None:
        print("proxyctl: move USER HOST, or move --from HOST --to HOST", file=stderr)
        return EXIT_USAGE
    if not 0 <= args.delay <= MAX_DELAY:
        print(f"proxyctl: --delay must be 0..{MAX_DELAY} seconds", file=stderr)
        return EXIT_USAGE
    if args.spread < 0:
        print("proxyctl: --spread must not be negative", file=stderr)
        return EXIT_USAGE
    try:
        user = normalize_username(args.user, rules_from(settings))
    except UsernameError as exc:
        print(f"proxyctl: {exc}", file=stderr)
        return EXIT_USAGE
    stamp = int(time.time()) + args.delay
    delay_until = f"{stamp}+{args.spread}" if args.spread else str(stamp)
    try:
        done = trio.run(_move, settings, user, args.host, delay_until, stdout)
    except MoveImpossible as exc:
        print(f"proxyctl: cannot move {user} here: {exc}", file=stderr)
        print(
            manual_steps(settings.config_path, user, args.host, stamp, args.spread),
            file=stdout,
            end="",
        )
        return EXIT_FAILED
    except (OSError, ExpandError, ConfigError, ValueError) as exc:
        print(f"proxyctl: move failed: {exc}", file=stderr)
        return EXIT_FAILED
    if not done:
        return EXIT_FAILED
    kicked_everywhere = _after_update(settings, user, args.host, stamp, stdout, stderr)
    if args.wait > 0:
        found = _wait_for_new_host(settings, user, args.host, args.wait, stdout)
        return found if kicked_everywhere else EXIT_FAILED
    return EXIT_OK if kicked_everywhere else EXIT_FAILED


async def _move(settings: Settings, user: str, host: str, delay_until: str, stdout: TextIO) -> bool:
    targets = sql_passdbs(settings)
    if not targets:
        raise MoveImpossible("no passdb uses the sql driver")
    for target in targets:
        if not await _lookup(target, user):
            continue
        try:
            plan = plan_update(target.config.password_query)
        except MoveImpossible as exc:
            raise MoveImpossible(f"{target.config.path}: {exc}") from None
        changed = await _update(target, plan, user, host, delay_until)
        if changed == 0:
            raise MoveImpossible(f"{target.config.path}: the update changed no row")
        rows = await _lookup(target, user)
        new = rows[0] if rows else {}
        if new.get("host") != host or (new.get("delay_until") or "") != delay_until:
            print(
                f"proxyctl: {target.config.path}: the passdb does not read back what was written",
                file=stdout,
            )
            return False
        print(
            f"{user}: host={host} delay_until={delay_until} set in one update of "
            f"{plan.table} ({target.config.driver}, {target.config.path})",
            file=stdout,
        )
        return True
    raise MoveImpossible("no sql passdb knows the user")


def _after_update(
    settings: Settings, user: str, host: str, stamp: int, stdout: TextIO, stderr: TextIO
) -> bool:
    """Flush the user's auth cache entries and kick the sessions: on every node of
    ``proxyd_cluster_peers`` when it is set, else on this one.  False: a peer failed."""
    if settings.proxyd_cluster_peers:
        ok = _after_update_cluster(settings, user, stdout, stderr)
    else:
        ok = _after_update_local(settings, user, stdout, stderr)
    when = time.strftime("%H:%M:%S", time.localtime(stamp))
    print(f"new logins of {user} wait until {when} and then go to {host}", file=stdout)
    return ok


def _after_update_cluster(settings: Settings, user: str, stdout: TextIO, stderr: TextIO) -> bool:
    from proxyd.cli import cluster

    try:
        total, ok, nodes = cluster.flush_and_kick(settings, [user], stderr)
    except cluster.ClusterConfigError as exc:
        print(f"proxyctl: {exc}; nothing kicked", file=stderr)
        return False
    print(f"{total} connections kicked ({nodes} nodes)", file=stdout)
    return ok


def _after_update_local(settings: Settings, user: str, stdout: TextIO, stderr: TextIO) -> bool:
    from proxyd.ipc.admin import AdminCacheFlush, AdminKick, admin_request

    try:
        admin_request(settings.base_dir, AdminCacheFlush((user,)))
        reply = admin_request(settings.base_dir, AdminKick(glob.escape(user)))
    except OSError as exc:
        print(
            f"proxyctl: proxyd is not running (base_dir {settings.base_dir}): {exc.strerror or exc}; nothing to kick",
            file=stderr,
        )
    else:
        print(f"{reply.count} connections kicked", file=stdout)
    return True


def _addresses(host: str) -> set[str]:
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except OSError:
        return set()


def _wait_for_new_host(
    settings: Settings, user: str, host: str, limit: float, stdout: TextIO
) -> int:
    """Until ``limit``: a session of ``user`` on ``host`` now, or a login sent there since
    the move (the auth process remembers where each user's last login went: a session
    may begin and end between two looks)."""
    from proxyd.ipc.admin import AdminLastLogin, AdminWho, admin_request

    wanted = _addresses(host) | {host}
    moved_at = time.time()
    started = time.monotonic()
    while time.monotonic() - started < limit:
        with contextlib.suppress(OSError):
            last = admin_request(settings.base_dir, AdminLastLogin(user))
            if last.ok and last.message in wanted and last.at >= moved_at - 1:
                print(
                    f"{user} logged in on {host} {max(0.0, last.at - moved_at):.0f} s after the move",
                    file=stdout,
                )
                return EXIT_OK
            reply = admin_request(settings.base_dir, AdminWho(glob.escape(user)))
            for row in reply.sessions:
                address = row.backend.rpartition(":")[0]
                if address in wanted:
                    print(
                        f"{user} logged in on {host} ({row.backend}) "
                        f"{time.monotonic() - started:.0f} s after the move",
                        file=stdout,
                    )
                    return EXIT_OK
        time.sleep(0.5)
    print(f"proxyctl: no new session of {user} on {host} within {limit:g} s", file=stdout)
    return EXIT_FAILED
