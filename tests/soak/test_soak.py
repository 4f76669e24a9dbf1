"""Soak and fault scenarios: what survives which failure (docs/failures.md), measured.

Every scenario runs the same way against a real proxyd in front of a real
Dovecot backend (tests/soak/stack.py):

1. ``SESSIONS`` clients log in and stay idle (proxied sessions);
2. *before*: a few logins of a real user;
3. *during*: the disturbance (a flood, a kill -9, a restart, ...) while the real user
   logs in every 0.2 s;
4. *after*: once logins work again (bounded wait), a few more logins;
5. the idle sessions are probed with NOOP: each must be alive unless the failure's
   blast radius, worked out from /proc before the failure, says it ends.

The report (tests/soak/report.py) counts logins lost, sessions lost, login times
before/during/after, and proxyd's RSS and open descriptors before and after.
Logins lost *during* a fault are reported, not asserted, except where the
documented blast radius says none may be lost.
"""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import wait_until
from tests.fixtures.proxyd import ProxydRunner, readable_by_auth
from tests.fixtures.slapd import PEOPLE, SERVICE_DN, SERVICE_PASSWORD
from tests.soak.conftest import LONG
from tests.soak.load import (
    FloodStats,
    IdleSessions,
    LoginSeries,
    flood,
    imap_login,
    read_line,
    real_user,
)
from tests.soak.procs import peer_ports_held, resources, titled
from tests.soak.report import SoakReport
from tests.soak.stack import (
    PASSWORD,
    USER,
    Stack,
    kill_backend,
    proxy_stack,
    restart_backend,
)

pytestmark = [pytest.mark.e2e, pytest.mark.proxyd_only]

SESSIONS = 20
#: how long a disturbance runs while the real user logs in
DURING = 20.0 if LONG else 3.0
RECOVERY_TIMEOUT = 20.0


@dataclass
class Context:
    stack: Stack
    idle: IdleSessions
    notes: list[str] = field(default_factory=list)

    def session_ports(self) -> dict[int, int]:
        """Client port -> index of each idle session."""
        return {s.socket.getsockname()[1]: i for i, s in enumerate(self.idle.streams)}

    def doomed_by(self, pid: int) -> set[int]:
        """The idle sessions whose server side process ``pid`` holds."""
        held = peer_ports_held(pid, self.stack.port)
        return {i for port, i in self.session_ports().items() if port in held}


#: a disturbance: does its thing, returns the indexes of the sessions it is expected to end
Disturbance = Callable[[Context], Awaitable[set[int]]]


async def _series(stack: Stack, count: int, interval: float) -> LoginSeries:
    series = LoginSeries()
    await real_user(stack.address, stack.port, USER, PASSWORD, interval=interval, count=count, series=series)
    return series


async def _wait_for_logins(stack: Stack) -> None:
    with trio.fail_after(RECOVERY_TIMEOUT):
        while True:
            try:
                await imap_login(stack.address, stack.port, USER, PASSWORD)
                return
            except (OSError, TimeoutError, trio.BrokenResourceError):
                await trio.sleep(0.2)


async def _alive(idle: IdleSessions) -> set[int]:
    """Indexes of the idle sessions that still answer a NOOP."""
    alive: set[int] = set()
    for index, stream in enumerate(idle.streams):
        try:
            await stream.send_all(b"n NOOP\r\n")
            buf = bytearray()
            with trio.fail_after(5):
                while (line := await read_line(stream, buf)) and not line.startswith(b"n "):
                    pass
            if line.startswith(b"n OK"):
                alive.add(index)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, TimeoutError):
            continue
    return alive


def run_scenario(
    stack: Stack, name: str, disturb: Disturbance, reports: list[SoakReport], *, sessions: int = SESSIONS
) -> tuple[SoakReport, set[int], set[int]]:
    """Run one scenario; returns its report, the sessions expected to end and those that did."""

    async def main() -> tuple[SoakReport, set[int], set[int]]:
        idle = IdleSessions()
        ctx = Context(stack, idle)
        try:
            if sessions > SESSIONS:
                await _wait_for_logins(stack)  # the login processes are up
                empty = resources(stack.proxy.pid)
                with trio.fail_after(600):
                    await idle.open(
                        stack.address, stack.port, sessions, login=(USER, PASSWORD), parallel=50
                    )
                ctx.notes.append(f"before the sessions: {empty.text()}")
            else:
                await idle.open(stack.address, stack.port, sessions, login=(USER, PASSWORD))
            res_before = resources(stack.proxy.pid)
            before = await _series(stack, 3, 0.2)
            during = LoginSeries()
            expected: set[int] = set()

            async def disturbance() -> None:
                nonlocal expected
                expected = await disturb(ctx)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(disturbance)
                await real_user(
                    stack.address, stack.port, USER, PASSWORD,
                    interval=0.2, count=int(DURING / 0.2), series=during,
                )
            await _wait_for_logins(stack)
            after = await _series(stack, 3, 0.2)
            alive = await _alive(idle)
            lost = set(range(sessions)) - alive
            res_after = resources(stack.proxy.pid)
        finally:
            await idle.close()
        report = SoakReport(
            name, before, during, after, sessions, len(lost), len(expected), res_before, res_after, ctx.notes
        )
        reports.append(report)
        return report, expected, lost

    return trio.run(main)


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


# -- floods and slow clients ------------------------------------------------------------


def test_flood_at_capacity_displaces_only_clients_logging_in(
    hp_stack: Stack, soak_reports: list[SoakReport]
) -> None:
    """High-performance mode full to its limits and flooded: proxied sessions are never
    displaced; every new connection is greeted; the real user logs in throughout."""
    stats = FloodStats()

    async def disturb(ctx: Context) -> set[int]:
        await flood(
            ctx.stack.address, ctx.stack.port, rate=200 if LONG else 100, duration=DURING,
            stats=stats, hold=2.0, sources=tuple(f"127.0.1.{n}" for n in range(1, 51)),
        )
        ctx.notes.append(
            f"{stats.opened} flood connections, {stats.never_greeted} not greeted in 3 s, "
            f"greeting p99 {stats.greeting_percentile(99) * 1000:.0f} ms"
        )
        return set()

    report, expected, lost = run_scenario(hp_stack, "HP: flood at capacity", disturb, soak_reports)
    assert lost == expected == set()
    assert report.logins_lost == 0
    assert stats.never_greeted == 0


def test_flood_below_capacity(hp_stack: Stack, soak_reports: list[SoakReport]) -> None:
    stats = FloodStats()

    async def disturb(ctx: Context) -> set[int]:
        # 20 new idle connections a second, each closed after a second: about 20 at a time
        await flood(ctx.stack.address, ctx.stack.port, rate=20, duration=DURING, stats=stats, hold=1.0)
        ctx.notes.append(f"{stats.opened} flood connections, {stats.displaced} displaced")
        return set()

    report, expected, lost = run_scenario(hp_stack, "HP: flood below capacity", disturb, soak_reports)
    assert lost == expected == set()
    assert report.logins_lost == 0
    assert stats.never_greeted == 0
    assert stats.displaced == 0


def test_slowloris_does_not_hold_up_other_clients(hp_stack: Stack, soak_reports: list[SoakReport]) -> None:
    """Clients that send a login command a byte at a time keep their slot (until the
    absolute 180 s login timeout) but hold up nobody else."""

    async def disturb(ctx: Context) -> set[int]:
        async def slow() -> None:
            stream = await trio.open_tcp_stream(ctx.stack.address, ctx.stack.port)
            async with stream:
                with trio.move_on_after(DURING):
                    for byte in b"a LOGIN alice alicepw-but-never-finished":
                        await stream.send_all(bytes([byte]))
                        await trio.sleep(0.5)

        async with trio.open_nursery() as nursery:
            for _ in range(40):
                nursery.start_soon(slow)
        ctx.notes.append("40 clients sending a byte every 0.5 s")
        return set()

    report, expected, lost = run_scenario(hp_stack, "HP: slowloris", disturb, soak_reports)
    assert lost == expected == set()
    assert report.logins_lost == 0


# -- kill -9 of each process kind -------------------------------------------------------


def test_kill_login_process_high_performance(hp_stack: Stack, soak_reports: list[SoakReport]) -> None:
    """HP: a login process relays the sessions it logged in; kill -9 ends exactly those
    (as Dovecot's login processes), the other process's sessions live on."""

    async def disturb(ctx: Context) -> set[int]:
        logins = titled(ctx.stack.proxy.pid, "proxyd: imap-login")
        victim = max(logins, key=lambda p: len(ctx.doomed_by(p.pid)))
        doomed = ctx.doomed_by(victim.pid)
        _kill(victim.pid)
        ctx.notes.append(f"{len(logins)} login processes; the killed one held {len(doomed)} sessions")
        return doomed

    _report, expected, lost = run_scenario(hp_stack, "HP: kill -9 a login process", disturb, soak_reports)
    assert expected
    assert lost == expected


def test_kill_auth_process(hp_stack: Stack, soak_reports: list[SoakReport]) -> None:
    """The auth process holds no session: kill -9 costs at most the logins it was
    answering at that moment; a new one is started at once."""

    async def disturb(ctx: Context) -> set[int]:
        await trio.sleep(DURING / 3)
        (auth,) = titled(ctx.stack.proxy.pid, "proxyd: auth")
        _kill(auth.pid)
        return set()

    report, expected, lost = run_scenario(hp_stack, "HP: kill -9 the auth process", disturb, soak_reports)
    assert lost == expected == set()
    assert not report.after.failures


def test_kill_relay_process_high_security(hs_stack: Stack, soak_reports: list[SoakReport]) -> None:
    """HS: plaintext sessions live in the relay processes; kill -9 of one ends its share
    (and only that); a new relay process takes its place."""

    async def disturb(ctx: Context) -> set[int]:
        relays = titled(ctx.stack.proxy.pid, "proxyd: relay")
        victim = max(relays, key=lambda p: len(ctx.doomed_by(p.pid)))
        doomed = ctx.doomed_by(victim.pid)
        _kill(victim.pid)
        ctx.notes.append(f"{len(relays)} relay processes; the killed one held {len(doomed)} sessions")
        return doomed

    _report, expected, lost = run_scenario(hs_stack, "HS: kill -9 a relay process", disturb, soak_reports)
    assert expected
    assert lost == expected


def test_kill_login_process_high_security(hs_stack: Stack, soak_reports: list[SoakReport]) -> None:
    """HS: a login process holds one client while it logs in: kill -9 ends that client
    only; the proxied sessions (in the relay processes) live on."""

    async def disturb(ctx: Context) -> set[int]:
        waiting = await trio.open_tcp_stream(ctx.stack.address, ctx.stack.port)
        async with waiting:
            await read_line(waiting, bytearray())
            holders = [
                p for p in titled(ctx.stack.proxy.pid, "proxyd: imap-login")
                if waiting.socket.getsockname()[1] in peer_ports_held(p.pid, ctx.stack.port)
            ]
            assert len(holders) == 1
            _kill(holders[0].pid)
            with trio.fail_after(5):
                assert await waiting.receive_some(100) == b""
        ctx.notes.append("the killed process's pre-login client was closed")
        return set()

    _report, expected, lost = run_scenario(hs_stack, "HS: kill -9 a login process", disturb, soak_reports)
    assert lost == expected == set()


def test_kill_tcpwrap_process(soak_reports: list[SoakReport], tmp_path: Path) -> None:
    """``login_access_sockets = tcpwrap``: kill -9 of the tcpwrap process costs at most the
    connections it was checking at that moment (refused, as on any error of the access
    service); a new one is started at once and refuses what hosts.deny says again."""
    denied = "127.0.1.9"
    root = tmp_path / "tcpwrap-root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts.allow").write_text("")
    (root / "etc/hosts.deny").write_text(f"imap: {denied}\n")
    for path in (tmp_path, root, root / "etc", root / "etc/hosts.allow", root / "etc/hosts.deny"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    killed: list[int] = []

    async def disturb(ctx: Context) -> set[int]:
        await trio.sleep(DURING / 3)
        (tcpwrap,) = titled(ctx.stack.proxy.pid, "proxyd: tcpwrap")
        _kill(tcpwrap.pid)
        killed.append(tcpwrap.pid)
        return set()

    with proxy_stack(
        settings={"login_access_sockets": "tcpwrap"},
        extra=f"service tcpwrap {{\n  chroot = {root}\n  user = root\n}}",
    ) as stack:
        report, expected, lost = run_scenario(stack, "HP: kill -9 the tcpwrap process", disturb, soak_reports)

        async def refused() -> bytes:
            with trio.socket.socket() as sock:
                await sock.bind((denied, 0))
                await sock.connect((stack.address, stack.port))
                with trio.fail_after(10):
                    return await sock.recv(100)

        assert trio.run(refused) == b""  # the new tcpwrap process applies hosts.deny
        (successor,) = titled(stack.proxy.pid, "proxyd: tcpwrap")
        assert successor.pid not in killed
    assert lost == expected == set()
    assert not report.before.failures
    assert len(report.during.failures) <= 1  # the real user logs in one connection at a time
    assert not report.after.failures


# -- the backend, reloads ---------------------------------------------------------------


def test_backend_killed_and_restarted(hp_stack: Stack, soak_reports: list[SoakReport]) -> None:
    """Every session proxied to a backend ends with it; logins fail while it is down
    (Dovecot's temporary failure) and work again once it is back."""

    async def disturb(ctx: Context) -> set[int]:
        kill_backend(ctx.stack.backend)
        await trio.sleep(DURING / 2)
        await trio.to_thread.run_sync(restart_backend, ctx.stack.backend)
        return set(range(SESSIONS))

    report, expected, lost = run_scenario(hp_stack, "backend kill -9 and restart", disturb, soak_reports)
    assert lost == expected
    # logins meanwhile fail or wait for proxyd's reconnect attempts (1 s apart)
    assert report.during.failures or report.during.worst > 1
    assert not report.after.failures


#: the reload storm: at least this many logins, two at a time, with a SIGHUP every
#: RELOAD_INTERVAL, and on until at least STORM_RELOADS reloads (at most STORM_MAX logins)
STORM_LOGINS = 200
STORM_RELOADS = 5
STORM_MAX = 1000
RELOAD_INTERVAL = 0.3


@pytest.mark.parametrize("mode", ["hp", "hs"])
@pytest.mark.timeout(300)  # HS: every reload starts an auth and the relay processes anew
def test_sighup_storm_loses_no_login(
    mode: str, hp_stack: Stack, hs_stack: Stack, soak_reports: list[SoakReport]
) -> None:
    """Reloads in the middle of logins lose neither a login nor a session (Dovecot loses
    none either).  Each reload hands the auth socket to a new auth process; the old one
    serves the requests it has (it used to drop them: about one login in 150 failed with
    ``Temporary authentication failure``) and exits once its login processes let go."""
    stack = hp_stack if mode == "hp" else hs_stack
    storm = LoginSeries()
    reloads = 0

    async def disturb(ctx: Context) -> set[int]:
        async def logins() -> None:
            while (len(storm.times) + len(storm.failures) < STORM_LOGINS or reloads < STORM_RELOADS) and (
                len(storm.times) + len(storm.failures) < STORM_MAX
            ):
                try:
                    with trio.fail_after(20):
                        storm.times.append(await imap_login(ctx.stack.address, ctx.stack.port, USER, PASSWORD))
                except (OSError, TimeoutError, trio.TooSlowError, trio.BrokenResourceError) as exc:
                    storm.failures.append(f"{type(exc).__name__}: {exc}")

        async def reload_every(interval: float) -> None:
            nonlocal reloads
            while True:
                await trio.sleep(interval)
                os.kill(ctx.stack.proxy.pid, signal.SIGHUP)
                reloads += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reload_every, RELOAD_INTERVAL)
            async with trio.open_nursery() as clients:
                clients.start_soon(logins)
                clients.start_soon(logins)
            nursery.cancel_scope.cancel()
        ctx.notes.append(
            f"{reloads} reloads during {len(storm.times) + len(storm.failures)} more logins "
            f"(median {storm.median * 1000:.0f} ms, worst {storm.worst * 1000:.0f} ms), "
            f"{len(storm.failures)} failed"
        )
        return set()

    report, expected, lost = run_scenario(stack, f"{mode.upper()}: SIGHUP every 0.3 s during logins", disturb, soak_reports)
    assert lost == expected == set()
    assert storm.failures == []
    assert report.logins_lost == 0
    assert reloads >= STORM_RELOADS
    # every old auth process has gone: the old login processes that relay on let go of it
    wait_until(
        lambda: len(titled(stack.proxy.pid, "proxyd: auth")) == 1, timeout=10,
        what="the old auth processes to exit",
    )


# -- long form only -----------------------------------------------------------------------

long_only = pytest.mark.skipif(not LONG, reason="long form: PROXYD_SOAK=long (scripts/soak.sh long)")


@dataclass
class PassdbEngine:
    """A passdb engine the soak suite stops and starts: how proxyd is pointed at it."""

    name: str
    #: writes the driver's args file; returns the passdb block's settings
    passdb: Callable[[ProxydRunner, DovecotBackend], dict[str, str]]
    stop: Callable[[], None]
    start: Callable[[], None]


def _sql_args(runner: ProxydRunner, backend: DovecotBackend, driver: str, connect: str) -> dict[str, str]:
    """sql/{pgsql,mysql}.sql have alice / alicepw (SHA512-CRYPT); every login goes to the stack's backend."""
    conf = runner.workdir / f"dovecot-sql-{driver}.conf.ext"
    conf.write_text(
        f"driver = {driver}\n"
        f"connect = {connect}\n"
        "password_query = SELECT username AS user, password, 'Y' AS proxy, \\\n"
        f"  '{backend.address}' AS host, {backend.imap_port} AS port \\\n"
        "  FROM proxy_accounts WHERE username = '%u'\n"
    )
    return {"driver": "sql", "args": str(readable_by_auth(conf))}


def _engine(name: str, request: pytest.FixtureRequest) -> PassdbEngine:
    if name == "PostgreSQL":
        pg = request.getfixturevalue("postgres_factory").create()
        return PassdbEngine(
            name,
            lambda runner, backend: _sql_args(runner, backend, "pgsql", pg.connect_string(connect_timeout="1")),
            lambda: pg.stop("immediate"),
            pg.start,
        )
    if name == "MariaDB":
        my = request.getfixturevalue("mariadb_factory").create()
        return PassdbEngine(
            name,
            lambda runner, backend: _sql_args(runner, backend, "mysql", my.connect_string()),
            my.stop,
            my.start,
        )
    ldap = request.getfixturevalue("slapd_factory").create()

    def ldap_passdb(runner: ProxydRunner, backend: DovecotBackend) -> dict[str, str]:
        ldap.add_user(USER, PASSWORD, host=backend.address, port=backend.imap_port)
        conf = runner.workdir / "dovecot-ldap.conf.ext"
        conf.write_text(
            f"uris = {ldap.uri}\ndn = {SERVICE_DN}\ndnpass = {SERVICE_PASSWORD}\nbase = {PEOPLE}\n"
            "pass_filter = (&(objectClass=inetOrgPerson)(uid=%u))\n"
            "pass_attrs = uid=user, userPassword=password, =proxy=y, "
            "=host=%{ldap:proxyMailHost}, proxyMailPort=port\n"
            "default_pass_scheme = SSHA\n"
        )
        return {"driver": "ldap", "args": str(readable_by_auth(conf))}

    return PassdbEngine(name, ldap_passdb, ldap.stop, ldap.start)


@long_only
@pytest.mark.parametrize("engine", ["PostgreSQL", "MariaDB", "slapd"])
def test_passdb_engine_stopped_and_started(
    engine: str, request: pytest.FixtureRequest, soak_reports: list[SoakReport]
) -> None:
    """The passdb engine goes away: logins fail with the temporary-failure text, no
    proxied session ends (sessions never touch the passdb), logins work once it is back."""
    passdb = _engine(engine, request)

    async def disturb(ctx: Context) -> set[int]:
        await trio.to_thread.run_sync(passdb.stop)
        await trio.sleep(DURING / 2)
        await trio.to_thread.run_sync(passdb.start)
        return set()

    with proxy_stack(passdb=passdb.passdb) as stack:
        report, expected, lost = run_scenario(
            stack, f"{engine} passdb stopped and started", disturb, soak_reports
        )
    assert lost == expected == set()
    assert not report.before.failures
    assert report.during.failures
    assert all("Temporary authentication failure" in failure for failure in report.during.failures)
    assert not report.after.failures


@long_only
@pytest.mark.timeout(900)  # opening the 10,000 sessions alone is bounded at 600 s below
def test_ten_thousand_idle_sessions(soak_reports: list[SoakReport]) -> None:
    """10,000 proxied idle sessions on one machine (high-performance mode, two login
    processes): all alive after a minute, logins as fast as with few sessions."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 30_000 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (30_000, hard))

    async def disturb(ctx: Context) -> set[int]:
        await trio.sleep(DURING)
        return set()

    with proxy_stack(
        service_count=0, client_limit=6000, process_limit=2, service_extra={"process_min_avail": "2"},
        backend_extra="service imap {\n  service_count = 0\n  client_limit = 1000\n  process_limit = 100\n}\n",
    ) as stack:
        report, expected, lost = run_scenario(
            stack, "10,000 proxied idle sessions (HP)", disturb, soak_reports, sessions=10_000
        )
    assert lost == expected == set()
    assert report.logins_lost == 0


@long_only
def test_kill_zygote(soak_reports: list[SoakReport]) -> None:
    """Without the zygote no process can be started: the master stops proxyd (exit 1)."""
    with proxy_stack() as stack:

        async def disturb(ctx: Context) -> set[int]:
            (zygote,) = titled(ctx.stack.proxy.pid, "proxyd: zygote")
            _kill(zygote.pid)
            await trio.to_thread.run_sync(ctx.stack.proxy.process.wait, 30)
            return set(range(SESSIONS))

        async def main() -> set[int]:
            idle = IdleSessions()
            try:
                await idle.open(stack.address, stack.port, SESSIONS, login=(USER, PASSWORD))
                expected = await disturb(Context(stack, idle))
                return expected - await _alive(idle)
            finally:
                await idle.close()

        lost = trio.run(main)
        assert stack.proxy.stop() == 1  # (already exited) and the runner's teardown accepts it
        assert "died: no new processes can be started, shutting down" in stack.proxy.log_text()
    # every session ended with proxyd: no login process is left relaying as an orphan
    assert lost == set(range(SESSIONS))
