"""The master process: supervises login processes and the auth process; never serves a client.

Theory of operation
-------------------
Before Trio starts, ``proxyd.cli.proxyd`` binds every listener and the auth
socket, makes this process a child subreaper and forks the zygote.  Here, in
Trio, ``Master`` keeps Dovecot's accounting for each login service:

* a child reports ``status`` messages (clients, accepting, the oldest pre-login
  client) over its control socketpair;
* the pool keeps ``process_min_avail`` processes *available* (still accepting)
  while under ``process_limit``; when none is, the master watches the listeners
  itself and forks one for a waiting connection (``process_min_avail = 0``, the
  default, leaves no idle login process); with ``service_count = 1`` that is
  Dovecot's high-security mode, with ``service_count = 0`` and ``client_limit``
  its high-performance mode;
* at ``process_limit`` with nobody accepting, a waiting connection makes the
  pool tell the process with the oldest pre-login client to destroy it
  ("Connection queue full"); proxied sessions are never chosen;
* processes idle longer than ``idle_kill`` beyond ``process_min_avail`` are
  told to stop; dead children (reaped by the zygote, which reports their exit
  status) are replaced.

SIGHUP (or ``proxyctl reload``): re-read the config in the master and the
zygote, tell the old processes to stop accepting (their proxied sessions go on),
start a new auth process, and new login processes once the old auth process has
said it takes no more connections on the shared auth socket (it answers the
requests it has and exits when its login processes let go).  SIGTERM: stop
everything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, assert_never

import trio

from proxyd import counters
from proxyd.config.load import load_settings
from proxyd.config.settings import EffectiveService, Settings, effective_service
from proxyd.errors import ConfigError
from proxyd.ipc.channel import Channel, encode
from proxyd.ipc.inherited import BoundSocket
from proxyd.ipc.messages import (
    CacheFlush,
    Command,
    CountReply,
    IpLimit,
    Kick,
    LastLogin,
    LastLoginReply,
    PreloginCount,
    Question,
    QueueFull,
    Reply,
    Report,
    ServiceFull,
    Status,
    Stop,
    Who,
    WhoReply,
    WhoRow,
    read_report,
)
from proxyd.master.admin import serve_admin
from proxyd.master.http import serve_master_http
from proxyd.master.listeners import (
    enabled_services,
    handoff_services,
    waiting_connections,
)
from proxyd.master.perip import LimitChange, PreloginPerIp
from proxyd.master.zygote import ZygoteHandle
from proxyd.sdnotify import Notifier
from proxyd.sockstream import SockStream
from proxyd.stats.metrics import Snapshot
from proxyd.wakeup import Wakeup

log = logging.getLogger("proxyd")

_STOP_TIMEOUT = 5.0
#: IpLimit messages written to a new login process's control socket before its fork
#: (~60 bytes each: far below a Unix socket's buffer, so the write never blocks)
_IP_LIMITS_BEFORE_FORK = 1000
#: how long a fork request to the zygote may take before the spawn counts as failed
_SPAWN_TIMEOUT = 10.0
#: relay processes in high-security mode (see ``support_services``)
RELAY_PROCESSES = min(4, os.cpu_count() or 1)
#: the children that hold proxied sessions (``proxyctl who`` / ``kick``)
_SESSION_HOLDERS = ("login", "relay")
#: how long an admin command waits for a child (proxyctl itself waits 30 s)
_REPLY_TIMEOUT = 15
#: how long a /metrics scrape waits for the processes' session lists
_SCRAPE_TIMEOUT = 3.0
#: how long start-up waits for a process per service before READY=1 anyway
_READY_TIMEOUT = 30
#: how long a process whose client was displaced (it exits at once) does not count
#: toward process_limit: its successor is forked without waiting for its exit; one still
#: alive after this (its client logged in meanwhile) counts again
_EVICTION_GRACE = 1.0
#: how long the listener watch waits for a process forked for a waiting client to report
_DEMAND_SETTLE = 0.1
#: how long new login processes wait after a reload for the old auth process to say it
#: accepts no more (it answers at once; a hung one is not waited for longer)
_AUTH_HANDOVER_TIMEOUT = 2.0


@dataclass(slots=True)
class Child:
    """One supervised process, as the master sees it."""

    pid: int
    kind: str  # "login" | "auth"
    service: str
    control: Channel[Command, Report]
    generation: int
    clients: int = 0
    accepting: bool = False
    stopping: bool = False
    started: float = field(default_factory=time.monotonic)
    idle_since: float = field(default_factory=time.monotonic)
    #: its longest-waiting pre-login client connected then (``Status``; service_count only)
    prelogin_since: float | None = None
    #: when the master displaced its client (``QueueFull``), making room
    evicted_at: float | None = None
    replies: dict[int, trio.MemorySendChannel[Reply | None]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Derived:
    """The accounting's view of one configuration (see ``Master._derived``)."""

    settings: Settings
    services: tuple[EffectiveService, ...]
    by_name: dict[str, EffectiveService]
    #: some login service hands its plaintext sessions to the relay processes
    handoff: bool


class Master:
    """All supervision state; one instance per proxyd."""

    def __init__(self, settings: Settings, zygote: ZygoteHandle, bound: list[BoundSocket]) -> None:
        self.settings = settings
        self.zygote = zygote
        self.bound = bound
        self.children: dict[int, Child] = {}
        self.generation = 0
        self.changed = Wakeup()
        self.shutting_down = False
        self._request_id = 0
        self._nursery: trio.Nursery | None = None
        self._limit_logged: set[str] = set()
        #: what the login processes of each service were last told (``ServiceFull``)
        self._told_full: dict[str, bool] = {}
        #: proxyd_prelogin_per_ip_limit's counts (``perip.limit_reached`` is the metrics hook)
        self.perip = PreloginPerIp(limit=settings.proxyd_prelogin_per_ip_limit)
        self.stop_requested = trio.Event()
        self.tcpwrap_bound = False
        #: the master's own HTTP listeners (doveadm API), bound by proxyd.cli.proxyd
        self.http_bound: list[BoundSocket] = []
        #: their TLS context (ssl_cert/ssl_key, as the login processes'), from start-up
        self.http_tls: ssl.SSLContext | None = None
        #: systemd's readiness protocol (proxyd.cli.proxyd takes $NOTIFY_SOCKET before any fork)
        self.notifier = Notifier(None)
        #: READY=1 has gone out (until then a new login process may be what it waits for)
        self.announced_ready = False
        self.relay_bound = False
        #: stopped because of an error (the exit status says so)
        self.failed = False
        #: old auth processes told to stop that have not yet said they accept no more,
        #: and until when they are waited for (see ``_auth_handing_over``)
        self._auth_releasing: dict[int, float] = {}
        self._derived_cache: _Derived | None = None

    # ------------------------------------------------------------------ helpers
    def _derived(self) -> _Derived:
        """What every accounting round reads of the settings, worked out once per
        configuration (in high-security mode the rounds come with every login)."""
        derived = self._derived_cache
        if derived is None or derived.settings is not self.settings:
            services = tuple(effective_service(self.settings, name) for name in enabled_services(self.settings))
            derived = self._derived_cache = _Derived(
                settings=self.settings,
                services=services,
                by_name={svc.name: svc for svc in services},
                handoff=bool(handoff_services(self.settings)),
            )
        return derived

    def services(self) -> tuple[EffectiveService, ...]:
        return self._derived().services

    def _service(self, name: str) -> EffectiveService:
        found = self._derived().by_name.get(name)
        return found if found is not None else effective_service(self.settings, name)

    def support_services(self) -> dict[str, int]:
        """The non-login processes and how many of each: one auth process, one tcpwrap
        process when login_access_sockets names it, and when a high-security login service
        hands its plaintext sessions off, a relay process per CPU (at most four): they
        share the relay socket, spread the relaying over the cores, and one that dies
        takes only its share of the sessions with it."""
        kinds = {"auth": 1}
        if "tcpwrap" in self.settings.login_access_sockets and self.tcpwrap_bound:
            kinds["tcpwrap"] = 1
        if self.relay_bound and self._derived().handoff:
            kinds["relay"] = RELAY_PROCESSES
        return kinds

    def _pool(self, service: str) -> list[Child]:
        return [c for c in self.children.values() if c.kind == "login" and c.service == service]

    def _counted(self, service: str) -> list[Child]:
        """The processes that hold a slot of the service's process_limit: not those of an
        older configuration finishing their sessions (Dovecot's old services neither),
        nor those whose client was just displaced (they are on their way out)."""
        now = time.monotonic()
        return [
            c for c in self._pool(service)
            if not c.stopping and (c.evicted_at is None or now - c.evicted_at > _EVICTION_GRACE)
        ]

    # ------------------------------------------------------------------ spawning
    async def spawn(self, kind: str, service: str) -> Child | None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        told = self._tell_before_fork(ours, kind, service)
        # shielded (the zygote answers at once): a child the zygote forked is always
        # registered below, so a stop that lands mid-spawn still finds and ends it
        pid: int | None = None
        with trio.CancelScope(shield=True, deadline=trio.current_time() + _SPAWN_TIMEOUT):
            try:
                pid = await self.zygote.spawn(kind, service, theirs.fileno())
            except OSError as exc:
                log.error("service(%s): fork() failed: %s", service or kind, exc)
                pid = None
            finally:
                theirs.close()
        if pid is None:
            if not self.shutting_down:
                log.error("service(%s): fork() failed: the zygote did not answer", service or kind)
            ours.close()
            return None
        # not Channel[...](...): calling the subscripted alias runs typing's machinery (per
        # fork, so per login in high-security mode)
        control: Channel[Command, Report] = Channel(SockStream(ours), read_report)
        child = Child(pid=pid, kind=kind, service=service, control=control, generation=self.generation)
        # a fresh login process accepts at once; count it as available until it says otherwise
        child.accepting = kind == "login"
        self.children[pid] = child
        if not self.announced_ready:
            # _announce_ready() waits for a process in every pool; a fresh one reports no
            # change of ``accepting``, so only this says so (the auth process's report may
            # have come before this last pool got its process).  Not after start-up: in
            # high-security mode that would wake every waiter once per login.
            self.changed.notify()
        assert self._nursery is not None
        self._nursery.start_soon(self._watch, child)
        if kind == "login":  # what changed while the fork was under way
            over = self.perip.over_limit(service)
            for ip in sorted(over - told):
                await self.tell(child, IpLimit(ip, over=True))
            for ip in sorted(told - over):
                await self.tell(child, IpLimit(ip, over=False))
        return child

    def _tell_before_fork(self, control: socket.socket, kind: str, service: str) -> set[str]:
        """Queue what a new login process must know before its first accept (the addresses
        at proxyd_prelogin_per_ip_limit) in its control socket before it exists: it reads
        them before it accepts, so a connection already waiting is judged by them.  At most
        what fits in the socket's buffer at once; any others follow after the fork."""
        told: set[str] = set()
        if kind != "login":
            return told
        for ip in sorted(self.perip.over_limit(service))[:_IP_LIMITS_BEFORE_FORK]:
            control.sendall(encode(IpLimit(ip, over=True).wire()))
            told.add(ip)
        return told

    async def _watch(self, child: Child) -> None:
        """Read the child's reports until it exits, then reap it.

        One task per child, not a reader beside a waiter: the zygote's exit report
        cancels the reading (in high-security mode this runs for every login)."""
        read = functools.partial(child.control.each, functools.partial(self._on_report, child))
        with trio.CancelScope() as reading:
            self.zygote.when_exited(child.pid, reading.cancel)
            await read()
        status = await self.zygote.wait_exit(child.pid)
        if status is None:  # the zygote died first: its orphans are ours (subreaper)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)  # its reports are read for as long as it lives
                await _wait_exit(child.pid, lambda status: self._reaped(child, status))
                nursery.cancel_scope.cancel()
        else:
            self._reaped(child, status)

    def _reaped(self, child: Child, status: int) -> None:
        self.children.pop(child.pid, None)
        self._auth_releasing.pop(child.pid, None)
        name = child.service or child.kind
        if os.WIFSIGNALED(status) and not self.shutting_down and os.WTERMSIG(status) != signal.SIGTERM:
            log.error("service(%s): child %d killed with signal %d", name, child.pid, os.WTERMSIG(status))
        elif os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0 and not self.shutting_down:
            log.error("service(%s): child %d returned error %d", name, child.pid, os.WEXITSTATUS(status))
        for waiter in child.replies.values():
            waiter.send_nowait(None)
        if changes := self.perip.child_gone(child.pid):
            assert self._nursery is not None
            self._nursery.start_soon(self._tell_ip_limits, changes)
        self.changed.notify()

    async def _on_report(self, child: Child, message: Report) -> None:
        match message:
            case Status(clients=clients, accepting=accepting, prelogin_since=prelogin_since):
                child.prelogin_since = prelogin_since
                if not accepting and self._auth_releasing.pop(child.pid, None) is not None:
                    self.changed.notify()  # the old auth process let go: new logins may start
                accepting = accepting and not child.stopping
                # the waiters look at whether processes take clients; the client count
                # matters to idle_kill alone, which maintain() checks every second anyway
                # (at light load a login reports twice: waking every loop for it cost
                # more master CPU per login than reading the reports)
                wake = accepting != child.accepting
                child.clients = clients
                child.accepting = accepting
                if clients:
                    child.idle_since = time.monotonic()
                if wake:
                    self.changed.notify()
            case PreloginCount(ip=ip, delta=delta) if child.pid in self.children:
                await self._tell_ip_limits(self.perip.report(child.pid, child.service, ip, delta))
            case PreloginCount():
                pass  # read after its process was reaped: child_gone() counted it out
            case WhoReply() | CountReply() | LastLoginReply():
                waiter = child.replies.pop(message.id, None)
                if waiter is not None:
                    waiter.send_nowait(message)
            case _:
                assert_never(message)

    async def _tell_ip_limits(self, changes: list[LimitChange]) -> None:
        """proxyd_prelogin_per_ip_limit: an address reached it (or is below it again)."""
        for change in changes:
            if change.log:
                log.warning(
                    "service(%s): %s has %d pre-login connections (proxyd_prelogin_per_ip_limit): "
                    "its new connections are refused",
                    change.service, change.ip, self.perip.limit,
                )
            for child in self._pool(change.service):
                if not child.stopping:
                    await self.tell(child, IpLimit(change.ip, change.over))

    async def tell(self, child: Child, message: Command) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await child.control.send(message)

    async def ask(self, child: Child, message: Question, within: float = _REPLY_TIMEOUT) -> Reply | None:
        """Send a command and wait (bounded) for the child's reply; None if none came."""
        self._request_id += 1
        request_id = self._request_id
        send, receive = trio.open_memory_channel[Reply | None](1)
        child.replies[request_id] = send
        await self.tell(child, dataclasses.replace(message, id=request_id))
        with trio.move_on_after(within):
            return await receive.receive()
        child.replies.pop(request_id, None)
        if within < _REPLY_TIMEOUT:
            return None  # the caller wanted an answer soon rather than complete
        log.warning(
            "service(%s): child %d did not answer %r within %d secs",
            child.service or child.kind, child.pid, message.TAG, _REPLY_TIMEOUT,
        )
        return None

    async def ask_all(
        self, kinds: tuple[str, ...], message: Question, *, live_only: bool = False,
        within: float = _REPLY_TIMEOUT,
    ) -> list[tuple[Child, Reply]]:
        """``ask`` every child of one of ``kinds`` at once: one slow child must not
        make the others' answers wait (or miss the admin client's deadline)."""
        answers: list[tuple[Child, Reply]] = []

        async def one(child: Child) -> None:
            if (reply := await self.ask(child, message, within)) is not None:
                answers.append((child, reply))

        async with trio.open_nursery() as nursery:
            for child in list(self.children.values()):
                if child.kind in kinds and not (live_only and child.stopping):
                    nursery.start_soon(one, child)
        return answers

    # ------------------------------------------------------------------ accounting
    async def maintain(self) -> None:
        """Keep every pool and the auth process at their targets; runs until shutdown."""
        while not self.shutting_down:
            # taken first: a report that comes while _maintain_once() awaits (its spawns and
            # messages) wakes the next round at once instead of after the 1 s tick (in HP
            # mode a ServiceFull(True) then came a second late, and with nobody accepting
            # meanwhile new connections waited that second)
            changed = self.changed.pending()
            await self._maintain_once()
            with trio.move_on_after(1):  # idle_kill is checked at least once a second
                await changed.wait()

    async def _maintain_once(self) -> None:
        for kind, wanted in self.support_services().items():
            running = sum(1 for c in self.children.values() if c.kind == kind and not c.stopping)
            for _ in range(wanted - running):
                if await self.spawn(kind, "") is None:
                    await trio.sleep(1)
                    break
        if self._auth_handing_over():
            return  # maintain() runs again when it has (or at least once a second)
        for svc in self.services():
            pool = self._counted(svc.name)
            available = sum(1 for c in pool if c.accepting)
            want = svc.process_min_avail
            waiting = sum(waiting_connections(b.sock) for b in self.bound if b.service == svc.name)
            if svc.service_count == 1:
                # one client per process: a burst waiting in the accept queue gets its
                # processes forked at once, not one after the other as each is taken
                want += waiting
            if waiting and available == 0:
                want = max(want, 1)  # a client waits and nobody accepts
            # processes of an older configuration that are finishing their sessions do not
            # count (Dovecot's old services neither): after a reload with every slot held by
            # proxied sessions, nobody could log in until they ended
            while available < want and len(pool) < svc.process_limit:
                if await self.spawn("login", svc.name) is None:
                    await trio.sleep(1)
                    break
                available += 1
                pool = self._counted(svc.name)
            full = available == 0 and len(pool) >= svc.process_limit
            await self._tell_full(svc.name, full and svc.service_count == 0, pool)
            if full:
                if svc.name not in self._limit_logged:
                    log.warning(
                        "service(%s): process_limit (%d) reached, client connections are being dropped",
                        svc.name, svc.process_limit,
                    )
                    self._limit_logged.add(svc.name)
            else:
                self._limit_logged.discard(svc.name)
            await self._idle_kill(svc, pool)

    def _auth_handing_over(self) -> bool:
        """An old auth process may still accept on the shared auth socket: a login process
        started now could connect to it (and log its users in with the old configuration
        for as long as it lives), so none is started until it said it stopped accepting."""
        now = time.monotonic()
        for pid, deadline in list(self._auth_releasing.items()):
            if now >= deadline:
                log.warning("auth process %d did not stop accepting within %.0f secs after the reload", pid, _AUTH_HANDOVER_TIMEOUT)
                del self._auth_releasing[pid]
        return bool(self._auth_releasing)

    async def _idle_kill(self, svc: EffectiveService, pool: list[Child]) -> None:
        if svc.idle_kill <= 0:
            return
        idle = [c for c in pool if c.clients == 0 and c.accepting]
        now = time.monotonic()
        for child in sorted(idle, key=lambda c: c.idle_since)[: max(0, len(pool) - svc.process_min_avail)]:
            if len(idle) <= svc.process_min_avail:
                break
            if now - child.idle_since >= svc.idle_kill:
                child.stopping = True
                idle.remove(child)
                await self.tell(child, Stop())

    async def _tell_full(self, service: str, full: bool, pool: list[Child]) -> None:
        """High-performance mode at its limits: the login processes displace their own
        oldest pre-login client for each new one (Dovecot tells its login processes the
        same: MASTER_LOGIN_STATE_FULL), with no round trip through the master."""
        if self._told_full.get(service, False) == full:
            return
        self._told_full[service] = full
        for child in pool:
            await self.tell(child, ServiceFull(full))

    async def queue_full_watch(self, bound: BoundSocket) -> None:
        """A listener nobody accepts on.  Below process_limit a waiting client gets a
        process forked for it (``process_min_avail = 0`` keeps none idle: the master watches
        the socket itself, as Dovecot's does).  At process_limit with ``service_count`` != 0
        each waiting client displaces the oldest pre-login one at once: that process is
        told to destroy it and no longer counts toward the limit, so the waiting client's
        process is forked right away, without waiting for the other to exit.  One task per
        socket: only one may wait for it to become readable.

        High-performance processes evict by themselves (``ServiceFull``); here the master
        chooses, since each of these processes holds only a few clients: each reports
        since when its oldest pre-login client waits (``Status.prelogin_since``).
        """
        while not self.shutting_down:
            changed = self.changed.pending()  # before the state is read (see maintain())
            svc = self._service(bound.service)
            pool = self._counted(bound.service)
            if any(c.accepting for c in pool):
                await changed.wait()
                continue
            if len(pool) < svc.process_limit:
                with trio.move_on_after(1):
                    await trio.lowlevel.wait_readable(bound.sock)
                    self.changed.notify()  # maintain() counts the waiting connections
                    with trio.move_on_after(_DEMAND_SETTLE):
                        await self.changed.wait()  # the new process is up (or failed)
                continue
            if svc.service_count == 0:
                await changed.wait()
                continue
            with trio.move_on_after(_EVICTION_GRACE):
                await trio.lowlevel.wait_readable(bound.sock)
                if changed.is_set():
                    continue  # a process may have come free meanwhile: look again
                # one displacement per waiting connection
                victims = self._oldest_prelogin(pool, max(waiting_connections(bound.sock), 1))
                now = time.monotonic()
                for victim in victims:
                    victim.evicted_at = now
                    await self.tell(victim, QueueFull())
                if victims:
                    self.changed.notify()  # maintain() forks their successors now
                await changed.wait()

    @staticmethod
    def _oldest_prelogin(pool: list[Child], count: int) -> list[Child]:
        """The ``count`` processes whose longest-waiting pre-login clients came first."""
        waiting = [c for c in pool if c.prelogin_since is not None]
        return sorted(waiting, key=lambda c: c.prelogin_since or 0.0)[:count]

    # ------------------------------------------------------------------ admin
    async def who(self, mask: str, within: float = _REPLY_TIMEOUT) -> list[WhoRow]:
        answers = await self.ask_all(_SESSION_HOLDERS, Who(mask), within=within)
        return [row for _, reply in answers if isinstance(reply, WhoReply) for row in reply.sessions]

    async def metrics_snapshot(self) -> Snapshot:
        """What ``/metrics`` shows: the shared counters, the sessions, the login processes."""
        # a scrape answers in time: a process too busy (or still starting) to answer
        # within a few seconds is left out of this scrape's session gauge
        sessions = await self.who("*", within=_SCRAPE_TIMEOUT)
        processes = {svc.name: len(self._pool(svc.name)) for svc in self.services()}
        return Snapshot(totals=counters.totals(), sessions=sessions, login_processes=processes)

    async def kick(self, masks: Sequence[str], host: str | None = None) -> int:
        """End the sessions of users matching one of ``masks``; with ``host`` only those
        proxied to that backend."""
        answers = await self.ask_all(_SESSION_HOLDERS, Kick(tuple(masks), host))
        return _count(answers)

    async def last_login(self, user: str) -> tuple[str | None, float | None]:
        """Where ``user``'s last login went, as the auth process remembers it."""
        answers = await self.ask_all(("auth",), LastLogin(user), live_only=True)
        latest: tuple[str | None, float | None] = (None, None)
        for _, reply in answers:
            if isinstance(reply, LastLoginReply) and reply.at is not None and (latest[1] is None or reply.at > latest[1]):
                latest = (reply.host, reply.at)
        return latest

    async def flush_cache(self, users: list[str]) -> int:
        """``proxyctl auth cache flush``: the auth process owns the cache."""
        # an old auth process still finishing its requests after a reload is not asked
        answers = await self.ask_all(("auth",), CacheFlush(tuple(users)), live_only=True)
        return _count(answers)

    async def reload(self) -> str:
        """SIGHUP: new settings for new logins; proxied sessions keep running."""
        self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        try:
            return await self._reload()
        finally:
            self.notifier.notify("READY=1")

    async def _reload(self) -> str:
        try:
            settings = load_settings(self.settings.config_path)
            await self.zygote.reload()
        except (ConfigError, OSError) as exc:
            log.error("SIGHUP: reload failed, keeping the old configuration: %s", exc)
            return f"reload failed: {exc}"
        if settings.services != self.settings.services or settings.listen != self.settings.listen:
            log.warning("SIGHUP: listener changes need a restart; other settings were reloaded")
        self.settings = settings
        await self._tell_ip_limits(self.perip.relimit(settings.proxyd_prelogin_per_ip_limit))
        self.generation += 1
        old = [c for c in self.children.values() if c.generation < self.generation and not c.stopping]
        for child in old:
            child.stopping = True
            child.accepting = False
            if child.kind == "auth":
                self._auth_releasing[child.pid] = time.monotonic() + _AUTH_HANDOVER_TIMEOUT
            await self.tell(child, Stop())
        log.info("SIGHUP received - configuration reloaded")
        self.changed.notify()
        return "reloaded"

    async def shutdown(self) -> None:
        """Stop every child; with ``shutdown_clients = no`` the login and relay processes
        only stop accepting and live on, unwatched, until their clients have gone (Dovecot's
        upgrade without dropping connections)."""
        self.shutting_down = True
        for child in list(self.children.values()):
            if not self.settings.shutdown_clients and child.kind in ("login", "relay"):
                child.stopping, child.accepting = True, False
                await self.tell(child, Stop())
                # left to finish on their own: they notice the master is gone and take nothing new
                del self.children[child.pid]
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
        with trio.move_on_after(_STOP_TIMEOUT):
            while self.children:
                await self.changed.wait()
        for child in list(self.children.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
        with trio.move_on_after(1):
            while self.children:
                await self.changed.wait()

    # ------------------------------------------------------------------ main
    async def run(self, early_signals: list[int] | None = None) -> None:
        """Supervise until SIGTERM/SIGINT.  ``early_signals`` are those that came before Trio
        ran (the caller's handler recorded them): the listeners accept from the moment they
        are bound, so a stop may arrive at any point of the start-up and must not kill us."""
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            for signum in early_signals or []:
                if signum != signal.SIGHUP:  # nothing to reload yet: the settings are fresh
                    self.stop_requested.set()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.zygote.run)
                nursery.start_soon(self._watch_zygote)
                async with trio.open_nursery() as services:
                    services.start_soon(self.maintain)
                    for bound in self.bound:
                        services.start_soon(self.queue_full_watch, bound)
                    await services.start(serve_admin, self)
                    for bound in self.http_bound:
                        await services.start(serve_master_http, self, bound, self.http_tls)
                    log.info("proxyd starting up (%d listeners)", len(self.bound))
                    async with trio.open_nursery() as waiters:
                        waiters.start_soon(self._signals, signals, waiters)
                        waiters.start_soon(self._announce_ready)
                        await self.stop_requested.wait()
                        waiters.cancel_scope.cancel()
                    self.notifier.notify("STOPPING=1")
                    log.info("Shutting down")
                    services.cancel_scope.cancel()
                await self.shutdown()
                nursery.cancel_scope.cancel()

    def _serving(self) -> bool:
        """Every login service has a process to take its listeners' connections, and the
        auth process has said it is up: a client that connects now is served."""
        auth_up = any(c.kind == "auth" and c.accepting for c in self.children.values())
        return auth_up and all(self._pool(svc.name) for svc in self.services())

    async def _announce_ready(self) -> None:
        """``READY=1`` for systemd (``Type=notify``) once every listener is served; the
        listeners themselves accept from the moment they are bound, before Trio ran."""
        with trio.move_on_after(_READY_TIMEOUT):
            while not self._serving():
                await self.changed.wait()
        if not self._serving():
            log.warning("not every service has a process after %d secs; telling systemd we are ready anyway", _READY_TIMEOUT)
        self.announced_ready = True
        self.notifier.notify("READY=1", f"STATUS=serving {len(self.bound)} listeners", f"MAINPID={os.getpid()}")

    async def _watch_zygote(self) -> None:
        """Without the zygote no process can be started: stop, as Dovecot's master would."""
        await self.zygote.dead.wait()
        if not self.shutting_down:
            log.error("zygote (pid %d) died: no new processes can be started, shutting down", self.zygote.pid)
            self.failed = True
            self.stop_requested.set()

    async def _signals(self, signals: Any, scope_owner: trio.Nursery) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                await self.reload()
            else:
                self.stop_requested.set()
                return


def _count(answers: list[tuple[Child, Reply]]) -> int:
    return sum(reply.count for _, reply in answers if isinstance(reply, CountReply))


async def _wait_exit(pid: int, on_exit: Callable[[int], None]) -> None:
    """Wait for an orphan (ours through the subreaper) to exit, without a SIGCHLD handler."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        on_exit(0)
        return
    exited = False
    try:
        while True:
            try:
                waited, status = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG never blocks
            except ChildProcessError:
                # Not ours (yet): the zygote's end reaches us through its socket before the
                # kernel hands its children to us, the subreaper.  Taking that for an exit
                # left live login processes out of the shutdown, relaying on as orphans.
                if exited:
                    on_exit(0)  # it has exited and someone else reaped it
                    return
                waited = 0
            if waited == pid:
                on_exit(status)
                return
            await trio.lowlevel.wait_readable(fd)  # readable once the process has exited
            exited = True
    finally:
        os.close(fd)
