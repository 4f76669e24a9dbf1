"""``proxyctl move --from OLD --to NEW``: drain a backend, user by user, as ``move`` moves one.

Theory of operation
-------------------
The users are those whose SQL passdb row names ``OLD`` in the ``host`` column
of the ``password_query``'s table, listed once at the start (by the column the
query compares with ``'%u'``).  They are taken in batches spread over
``--window`` seconds: batch *k* starts at ``start + k * window / batches``; each
user of it gets ``host = NEW`` and ``delay_until = <its start> + --delay`` in
one update (exactly what ``move`` does for one user), then the batch's auth
cache entries are flushed and its sessions kicked — on every node of
``proxyd_cluster_peers`` when that is set, else on this node.  So both the
kicks and the logins that follow them are spread over the window instead of
stampeding the new backend.

A journal under ``base_dir`` (``drain-OLD-NEW.json``) records the plan and,
after each step, how many users are updated and how many are kicked.  Run
again after an interruption (Ctrl-C, a lost connection, a reboot), the same
command resumes exactly: users updated but not yet kicked are kicked first,
then the rest of the list follows the original schedule (a batch whose time
has passed goes at once, its ``delay_until`` never in the past).  The journal
is removed when the drain is complete.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import math
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any, Final, TextIO

import trio

from proxyd.auth.expand import request_variables
from proxyd.cli import move
from proxyd.config.settings import Settings

DEFAULT_WINDOW: Final = 60.0
DEFAULT_BATCH: Final = 20
_USER_COLUMN: Final = re.compile(
    r"(?:^|[\s(])(?P<column>(?:[A-Za-z_][A-Za-z0-9_$]*\.)?[A-Za-z_][A-Za-z0-9_$]*|\"[^\"]+\"|`[^`]+`)"
    r"\s*=\s*'%(?:u|\{user\}|Lu|\{user\|lower\})'"
)


@dataclass(slots=True)
class Journal:
    """The plan and the progress of one drain (the JSON file's contents)."""

    source: str
    target: str
    started: float
    window: float
    delay: int
    batch: int
    users: list[str]
    #: users [0, updated) have host = target; [0, kicked) have been kicked too
    updated: int = 0
    kicked: int = 0
    sessions_kicked: int = 0

    def batch_time(self, index: int) -> float:
        batches = max(1, math.ceil(len(self.users) / self.batch))
        return self.started + (index // self.batch) * self.window / batches


def journal_path(settings: Settings, source: str, target: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9.:_-]", "_", f"{source}-{target}")
    return os.path.join(settings.base_dir, f"drain-{safe}.json")


def _load(path: str) -> Journal | None:
    try:
        with open(path, encoding="utf-8") as file:
            return Journal(**json.load(file))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise move.MoveImpossible(f"{path}: not a drain journal ({exc}); remove it to start over") from None


def _save(path: str, journal: Journal) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(asdict(journal), file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def user_column(where: str) -> str:
    """The column the ``password_query`` compares with the user name (``col = '%u'``)."""
    found = _USER_COLUMN.search(where)
    if found is None:
        raise move.MoveImpossible("draining needs the password_query to select by `COLUMN = '%u'`")
    return found.group("column")


# -- the database -----------------------------------------------------------------------------


class _Database:
    """One connection (pool) for the whole drain: hundreds of statements."""

    def __init__(self, target: Any, runner: Callable[[str, tuple[str, ...], bool], Any]) -> None:
        self.target = target
        self._run = runner

    async def run(self, sql: str, params: tuple[str, ...], *, write: bool) -> list[dict[str, str | None]]:
        result: list[dict[str, str | None]] = await self._run(sql, params, write)
        return result


@contextlib.asynccontextmanager
async def _open(target: Any) -> AsyncIterator[_Database]:
    config = target.config
    if config.driver == "sqlite":

        async def sqlite(sql: str, params: tuple[str, ...], write: bool) -> list[dict[str, str | None]]:
            return await trio.to_thread.run_sync(move.sqlite_statement, config.database_path, sql, params, write)

        yield _Database(target, sqlite)
        return
    from passdb_drivers._pool import sql_query

    if config.driver == "pgsql":
        from passdb_drivers.sql.pgsql import open_backend
    else:
        from passdb_drivers.sql.mysql import open_backend
    async with open_backend(config) as backend:

        async def server(sql: str, params: tuple[str, ...], write: bool) -> list[dict[str, str | None]]:
            result = await sql_query(backend, sql, params)
            return [dict(zip(result.columns, row, strict=True)) for row in result.rows]

        yield _Database(target, server)


async def _users_on(db: _Database, plan: move.UpdatePlan, column: str, source: str) -> list[str]:
    from passdb_drivers.sql.query import compile_query

    template = (
        f"SELECT {column} FROM {plan.table} "  # noqa: S608 - the administrator's own names
        f"WHERE {plan.host_column} = '%{{passdb:proxyd_drain_from}}' ORDER BY {column}"
    )
    compiled = compile_query(template, move.dialect(db.target.config.driver))
    variables = request_variables(move.request_for(""), passdb_fields={"proxyd_drain_from": source})
    rows = await db.run(compiled.sql, compiled.bind(variables), write=False)
    return [str(next(iter(row.values()))) for row in rows if next(iter(row.values())) is not None]


async def _update(db: _Database, plan: move.UpdatePlan, user: str, host: str, delay_until: str) -> None:
    from passdb_drivers.sql.query import compile_query

    compiled = compile_query(plan.template(), move.dialect(db.target.config.driver))
    variables = request_variables(
        move.request_for(user),
        passdb_fields={"proxyd_move_host": host, "proxyd_move_delay_until": delay_until},
    )
    await db.run(compiled.sql, compiled.bind(variables), write=True)


# -- kicking ------------------------------------------------------------------------------------


def _kick(settings: Settings, users: list[str], stderr: TextIO) -> tuple[int, bool]:
    """Flush and kick ``users`` on every node (or this one): (sessions kicked, every node did)."""
    masks = [glob.escape(user) for user in users]
    if settings.proxyd_cluster_peers:
        from proxyd.cli import cluster

        total, ok, _ = cluster.flush_and_kick(settings, users, stderr)
        return total, ok
    from proxyd.ipc.admin import AdminCacheFlush, AdminKick, admin_request

    try:
        admin_request(settings.base_dir, AdminCacheFlush(tuple(users)))
        return sum(admin_request(settings.base_dir, AdminKick(mask)).count for mask in masks), True
    except OSError:
        return 0, True  # proxyd is not running here: nobody to kick


# -- the command --------------------------------------------------------------------------------


class _Progress:
    def __init__(self, out: TextIO, total: int) -> None:
        self.out = out
        self.total = total
        self.tty = out.isatty()

    def show(self, journal: Journal, final: bool = False) -> None:
        done = journal.kicked
        text = f"{done}/{self.total} users moved, {journal.sessions_kicked} sessions kicked"
        if self.tty:
            width = 30
            filled = width * done // max(self.total, 1)
            print(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}", end="\n" if final else "", file=self.out, flush=True)
        else:
            print(text, file=self.out, flush=True)


def run(args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO) -> int:
    if args.window < 0 or args.batch < 1 or not 0 <= args.delay <= move.MAX_DELAY:
        print(f"proxyctl: --window must not be negative, --batch at least 1, --delay 0..{move.MAX_DELAY}", file=stderr)
        return move.EXIT_USAGE
    try:
        return trio.run(_drain, args, settings, stdout, stderr)
    except BaseException as raised:
        exc = _leaf(raised)
        if isinstance(exc, move.MoveImpossible):
            print(f"proxyctl: cannot drain {args.source} here: {exc}", file=stderr)
        elif isinstance(exc, KeyboardInterrupt):
            path = journal_path(settings, args.source, args.target)
            journal = _load(path)
            done = f"{journal.kicked}/{len(journal.users)} users moved; " if journal else ""
            print(f"\nproxyctl: interrupted: {done}the same command resumes the drain", file=stderr)
        elif isinstance(exc, OSError):
            print(f"proxyctl: drain failed: {exc.strerror or exc}", file=stderr)
        else:
            raise
        return move.EXIT_FAILED


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside nested groups (Trio nurseries wrap what they pass on);
    a KeyboardInterrupt anywhere in a group wins."""
    if isinstance(exc, BaseExceptionGroup):
        interrupt = exc.subgroup(KeyboardInterrupt)
        if interrupt is not None:
            return KeyboardInterrupt()
        if len(exc.exceptions) == 1:
            return _leaf(exc.exceptions[0])
    return exc


async def _drain(args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO) -> int:
    targets = move.sql_passdbs(settings)
    if not targets:
        raise move.MoveImpossible("no passdb uses the sql driver")
    target = targets[0]
    plan = move.plan_update(target.config.password_query)
    column = user_column(plan.where)
    path = journal_path(settings, args.source, args.target)
    async with _open(target) as db:
        journal = _load(path)
        if journal is None:
            users = await _users_on(db, plan, column, args.source)
            journal = Journal(
                source=args.source, target=args.target, started=time.time(), window=args.window,
                delay=args.delay, batch=args.batch, users=users,
            )  # fmt: skip
            _save(path, journal)
            print(f"draining {args.source}: {len(users)} users to {args.target} over {args.window:g} s", file=stdout)
        else:
            print(
                f"resuming the drain of {args.source}: {journal.kicked}/{len(journal.users)} users "
                f"done ({path})",
                file=stdout,
            )
        progress = _Progress(stdout, len(journal.users))
        began = time.monotonic()
        async with _interrupts() as interrupted:
            every_node = await _steps(db, plan, settings, journal, path, progress, interrupted, stderr)
    if progress.tty:
        progress.show(journal, final=True)
    nodes = len(settings.proxyd_cluster_peers) or 1
    last = journal.batch_time(max(len(journal.users) - 1, 0)) + journal.delay
    print(
        f"drained {journal.source}: {len(journal.users)} users moved to {journal.target} in "
        f"{time.monotonic() - began:.1f} s, {journal.sessions_kicked} sessions kicked on {nodes} "
        f"node{'s' if nodes != 1 else ''}; their logins are spread until "
        f"{time.strftime('%H:%M:%S', time.localtime(last))}",
        file=stdout,
    )
    os.unlink(path)
    return move.EXIT_OK if every_node else move.EXIT_FAILED


@contextlib.asynccontextmanager
async def _interrupts() -> AsyncIterator[trio.Event]:
    """SIGINT as an event: a step in flight (update, kick, journal) is finished first, so a
    kick that reached the nodes is always counted in the journal."""
    interrupted = trio.Event()

    async def watch(signals: AsyncIterator[int]) -> None:
        async for _ in signals:
            interrupted.set()

    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, signals)
            yield interrupted
            nursery.cancel_scope.cancel()


async def _steps(
    db: _Database, plan: move.UpdatePlan, settings: Settings, journal: Journal, path: str,
    progress: _Progress, interrupted: trio.Event, stderr: TextIO,
) -> bool:  # fmt: skip
    """The drain's batches from where the journal stands; True when every node answered."""
    every_node = True
    if journal.kicked < journal.updated:  # interrupted between an update and its kick
        kicked, ok = await trio.to_thread.run_sync(_kick, settings, journal.users[journal.kicked : journal.updated], stderr)
        journal.sessions_kicked += kicked
        every_node &= ok
        journal.kicked = journal.updated
        _save(path, journal)
    while journal.updated < len(journal.users):
        wait = journal.batch_time(journal.updated) - time.time()
        if wait > 0:
            with trio.move_on_after(wait):
                await interrupted.wait()
        if interrupted.is_set():
            raise KeyboardInterrupt
        batch = journal.users[journal.updated : journal.updated + journal.batch]
        stamp = int(max(journal.batch_time(journal.updated), time.time())) + journal.delay
        for user in batch:
            await _update(db, plan, user, journal.target, str(stamp))
        journal.updated += len(batch)
        _save(path, journal)
        kicked, ok = await trio.to_thread.run_sync(_kick, settings, batch, stderr)
        journal.sessions_kicked += kicked
        every_node &= ok
        journal.kicked = journal.updated
        _save(path, journal)
        progress.show(journal)
    return every_node


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", metavar="HOST", help="drain this backend: move all its users")
    parser.add_argument("--to", dest="target", metavar="HOST", help="where --from's users go")
    parser.add_argument(
        "--window", type=float, default=DEFAULT_WINDOW, metavar="S",
        help="spread the batches (kicks and delay_until) over S seconds (default %(default)g)",
    )  # fmt: skip
    parser.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, metavar="N",
        help="users per batch (default %(default)s)",
    )  # fmt: skip

