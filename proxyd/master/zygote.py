"""The zygote: a pre-imported, never-Trio process that forks the master's children.

Trio must not be running in a process that forks (style.md §4.4), and a fresh
interpreter per login process would cost tens of milliseconds.  So before the
master starts Trio it forks this zygote, which has every module imported and
its heap frozen (``gc.freeze()``), and asks it over a socketpair for each new
child.  (It runs Trio a few times at its start, each run to its end, so that what a
child's ``trio.run`` goes through is warm; it never forks while Trio runs.)  The zygote forks once per child and reaps its children itself: each
exit goes to the master as an ``exit`` event with the wait status, so the
master supervises processes it did not fork (``ps --forest`` shows them under
the zygote).  Should the zygote die, the master is a child subreaper and
inherits the orphans.

The messages on the socket between the two are ``proxyd.ipc.zygote``'s
records: ``Spawn`` (with the child's control socket attached) and ``Reload``,
answered by ``Spawned``, ``Reloaded`` or ``ZygoteError``; ``Exited`` at any time.
"""

from __future__ import annotations

import array
import ctypes
import gc
import logging
import operator
import os
import select
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NoReturn, assert_never

import trio

from proxyd import counters
from proxyd.config.load import load_settings
from proxyd.config.settings import Settings
from proxyd.errors import ConfigError
from proxyd.ipc.channel import ControlError
from proxyd.ipc.zygote import (
    EXITED_WIRE,
    SEQ_MARK,
    SPAWNED_WIRE,
    Exited,
    Reload,
    Reloaded,
    Spawn,
    Spawned,
    ZygoteError,
    ZygoteReply,
    ZygoteRequest,
    encode,
    read_report,
    read_request,
)
from proxyd.master import privileges

_PR_SET_CHILD_SUBREAPER: Final = 36
#: enough for CPython to specialize Trio's start-up and run loop (it does so after 8 calls)
_TRIO_WARM_RUNS: Final = 10

log = logging.getLogger("proxyd")

#: (settings, kind, service, control socket, inherited sockets) -> never returns
ChildMain = Callable[[Settings, str, str, socket.socket, "InheritedSockets"], NoReturn]
#: (settings, kind, service, inherited sockets): run in the zygote before each fork
BeforeFork = Callable[[Settings, str, str, "InheritedSockets"], None]


@dataclass(slots=True)
class InheritedSockets:
    """Sockets bound by the master before the zygote was forked."""

    #: service name -> listening sockets of that service, with their listener config index
    listeners: dict[str, list[tuple[socket.socket, int, str]]]
    auth: socket.socket
    #: the built-in tcpwrap access service's socket, when login_access_sockets names it
    tcpwrap: socket.socket | None = None
    #: the relay process's hand-off socket, when some login service is in high-security mode
    relay: socket.socket | None = None


def become_subreaper() -> None:
    """Orphaned descendants are re-parented to us, not to init."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


class ZygoteHandle:
    """The master's end: ask for children (one request at a time), learn of their exits.

    ``run()`` must be running (in the master's nursery): it reads everything the
    zygote sends and routes replies to the pending request, exits to ``wait_exit``.
    """

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.pid = pid
        self._sock = trio.socket.from_stdlib_socket(sock)
        self._lock = trio.Lock()
        self._seq = 0
        self._replies_in, self._replies = trio.open_memory_channel[ZygoteReply](1)
        #: exit statuses not yet collected, and what wakes the waiter for each
        self._statuses: dict[int, int] = {}
        self._exit_waiters: dict[int, Callable[[], None]] = {}
        self.dead = trio.Event()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while data := await self._sock.recv(65536):
                report = read_report(data)
                match report:
                    case Exited(pid=pid, status=status):
                        self._statuses[pid] = status
                        if (wake := self._exit_waiters.pop(pid, None)) is not None:
                            wake()
                    case Spawned() | Reloaded() | ZygoteError():
                        await self._replies_in.send(report)
                    case _:
                        assert_never(report)
        except (OSError, ControlError):
            pass
        finally:
            # the waiters learn it before this task's last checkpoint
            self.dead.set()
            for wake in self._exit_waiters.values():
                wake()
            self._exit_waiters.clear()
            await self._replies_in.aclose()

    def close(self) -> None:
        self._sock.close()

    def when_exited(self, pid: int, wake: Callable[[], None]) -> None:
        """Call ``wake()`` (from ``run``'s task) once child ``pid`` has exited or the zygote
        died; at once if that is already so.  One waker per child: a later one replaces it."""
        if pid in self._statuses or self.dead.is_set():
            wake()
        else:
            self._exit_waiters[pid] = wake

    async def wait_exit(self, pid: int) -> int | None:
        """The wait status of child ``pid`` once it has exited; None if the zygote died first."""
        if pid not in self._statuses and not self.dead.is_set():
            exited = trio.Event()
            self._exit_waiters[pid] = exited.set
            await exited.wait()
        return self._statuses.pop(pid, None)

    async def _request(self, request: Callable[[int], ZygoteRequest], fds: list[int]) -> ZygoteReply:
        """Send ``request(seq)`` and wait for the reply with that ``seq``."""
        async with self._lock:
            self._seq += 1
            data = encode(request(self._seq))
            try:
                if fds:
                    await self._sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())])
                else:
                    await self._sock.send(data)
                while True:
                    reply = await self._replies.receive()
                    # a reply to a request whose caller was cancelled meanwhile is dropped
                    if reply.seq == self._seq:
                        return reply
            except (OSError, trio.EndOfChannel, trio.ClosedResourceError):
                raise OSError("zygote died") from None

    async def spawn(self, kind: str, service: str, control_fd: int) -> int:
        reply = await self._request(lambda seq: Spawn(seq, kind, service), [control_fd])
        match reply:
            case Spawned(pid=pid):
                return pid
            case ZygoteError(error=error):
                raise OSError(error)
            case Reloaded():
                raise OSError("spawn failed")
            case _:
                assert_never(reply)

    async def reload(self) -> None:
        reply = await self._request(Reload, [])
        if isinstance(reply, ZygoteError):
            raise ConfigError(None, reply.error)


#: blocked in the master across the zygote's fork (see start_zygote)
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def start_zygote(
    settings: Settings,
    inherited: InheritedSockets,
    child_main: ChildMain,
    on_reload: Callable[[Settings], None] | None = None,
    before_fork: BeforeFork | None = None,
) -> ZygoteHandle:
    """Fork the zygote (call before ``trio.run``); ``on_reload`` rebuilds derived state there,
    ``before_fork`` may prepare (once, and keep) what a kind of child starts from."""
    master_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # the stop signals stay blocked across the fork until the zygote has its own
    # dispositions: the master's start-up handler (which only records a stop) must never
    # swallow the SIGTERM that ends the zygote
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        raise
    if pid == 0:  # the zygote
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        master_end.close()
        try:
            _zygote_loop(settings, inherited, zygote_end, child_main, on_reload, before_fork)
        finally:
            os._exit(0)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    zygote_end.close()
    return ZygoteHandle(master_end, pid)


#: a request is a short JSON object; a few descriptors at most come with it
_MAX_REQUEST: Final = 4096
_MAX_FDS: Final = 16


def _zygote_loop(
    settings: Settings,
    inherited: InheritedSockets,
    sock: socket.socket,
    child_main: ChildMain,
    on_reload: Callable[[Settings], None] | None,
    before_fork: BeforeFork | None = None,
) -> None:
    """Serve the master's requests, fork, reap, until the master is gone.

    Every ``fork()`` write-protects all of this process's pages, so each page its loop writes
    afterwards (a reference count, a freelist, a fresh object) faults and is copied, once
    per fork.  The path of a spawn and of a reaping therefore touches few objects, all made
    here beforehand: bound methods, a preallocated buffer, the wire formats, and the spawn
    requests already seen (known by their bytes before the seq, ``SEQ_MARK``), whose
    ``before_fork`` has already run -- no request record and no JSON in the parent's path;
    the slot book's three small methods are its only Python calls (kept: one tested
    implementation is worth more than the few faults inlining them saved).
    """
    from setproctitle import setproctitle

    setproctitle("proxyd: zygote")
    _warm_trio()
    # the environment every child starts with (import_environment), made once here; the
    # master's own is kept for re-reading the configuration, which may name $ENV:NAME
    master_environment = dict(os.environ)
    privileges.import_environment(settings.import_environment)
    # SIGCHLD wakes the loop through a pipe; the handler itself does nothing (a C function:
    # a Python one's call would write its function's and code's pages at every exit)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, operator.is_)
    slots = counters.SlotAllocator()
    take_slot, own_slot, release_slot = slots.take, slots.owned, slots.release
    fork, waitpid, close, readv, wnohang = os.fork, os.waitpid, os.close, os.readv, os.WNOHANG
    send, recvmsg, fileno = sock.send, sock.recvmsg, sock.fileno()
    poller = select.poll()
    poller.register(fileno, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    poll = poller.poll
    drain = [bytearray(512)]
    ancillary = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)
    fds = array.array("i")
    sol_socket, scm_rights = socket.SOL_SOCKET, socket.SCM_RIGHTS
    spawned_wire, exited_wire, seq_mark = SPAWNED_WIRE, EXITED_WIRE, SEQ_MARK
    #: spawn requests by their bytes before the seq -> (kind, service), once ``before_fork``
    #: has run for them without failing (since the start or the last reload)
    prepared: dict[bytes, tuple[str, str]] = {}
    gc.collect()
    gc.freeze()  # children share these pages instead of copying them on the first GC
    while True:
        for ready, _event in poll():
            if ready == wake_r:
                try:  # noqa: SIM105 - not contextlib.suppress: no context manager per exit
                    readv(wake_r, drain)
                except BlockingIOError:
                    pass
                # reap every child that has exited and tell the master (its slot is free again)
                while True:
                    try:
                        pid, status = waitpid(-1, wnohang)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    release_slot(pid)
                    send(exited_wire % (pid, status))
                continue
            try:
                data, ancdata, _flags, _addr = recvmsg(_MAX_REQUEST, ancillary)
            except InterruptedError:
                continue
            if not data:
                return  # the master is gone
            del fds[:]
            for level, cmsg_type, fd_data in ancdata:
                if level == sol_socket and cmsg_type == scm_rights:
                    fds.frombytes(fd_data[: len(fd_data) - len(fd_data) % fds.itemsize])
            head, _mark, tail = data.rpartition(seq_mark)
            known = prepared.get(head)
            if known is None or tail[-1:] != b"}" or not tail[:-1].isdigit():
                # a request not seen before: read it in full
                request = read_request(data)
                match request:
                    case Reload(seq=seq):
                        for fd in fds:
                            close(fd)
                        prepared.clear()
                        settings = _reload(settings, seq, master_environment, sock, on_reload)
                        continue
                    case Spawn(seq=seq, kind=kind, service=service):
                        if _prepare(before_fork, settings, kind, service, inherited):
                            prepared[head] = (kind, service)
                    case _:
                        assert_never(request)
            else:
                seq = int(tail[:-1])
                kind, service = known
            slot = take_slot()
            pid = -1
            try:
                pid = fork()
                if pid == 0:
                    _child(settings, kind, service, slot, fds, inherited, sock, (wake_r, wake_w), child_main)
                own_slot(pid, slot)
                send(spawned_wire % (pid, seq))
            except OSError as exc:
                if pid < 0:  # fork() failed: nobody has the slot
                    slots.give_back(slot)
                sock.send(encode(ZygoteError(seq, str(exc))))
            finally:
                for fd in fds:
                    close(fd)


def _prepare(
    before_fork: BeforeFork | None, settings: Settings, kind: str, service: str, inherited: InheritedSockets
) -> bool:
    """Run ``before_fork`` (at the first spawn of a kind and service); False if it failed."""
    if before_fork is not None:
        # a failure here is the child's own to meet (and log) when it starts; it is tried
        # again at the next spawn
        try:
            before_fork(settings, kind, service, inherited)
        except Exception:
            return False
    return True


def _reload(
    settings: Settings,
    seq: int,
    master_environment: dict[str, str],
    sock: socket.socket,
    on_reload: Callable[[Settings], None] | None,
) -> Settings:
    """Re-read the configuration, answer the master; the settings from now on."""
    _set_environment(master_environment)
    try:
        settings = load_settings(settings.config_path)
        if on_reload is not None:
            on_reload(settings)
    except (ConfigError, OSError, ValueError) as exc:
        sock.send(encode(ZygoteError(seq, str(exc))))
        return settings
    finally:
        privileges.import_environment(settings.import_environment)
    sock.send(encode(Reloaded(seq)))
    return settings


def _set_environment(environment: dict[str, str]) -> None:
    for name in list(os.environ):
        if name not in environment:
            del os.environ[name]
    os.environ.update(environment)


def _warm_trio() -> None:
    """Run Trio here a few times, each run to its end (no Trio ever runs while we fork).

    What every child's ``trio.run`` goes through is then done once here instead of in
    each child: CPython's specialization of that code and its caches filled.  A child
    writes fewer of the pages it shares with us, and each page it writes first is
    copied (in high-security mode once per connection).
    """

    async def one_step() -> None:
        await trio.lowlevel.checkpoint()

    for _ in range(_TRIO_WARM_RUNS):
        trio.run(one_step)


def _child(
    settings: Settings,
    kind: str,
    service: str,
    slot: int,
    fds: array.array[int],
    inherited: InheritedSockets,
    zygote_sock: socket.socket,
    wake_pipe: tuple[int, int],
    child_main: ChildMain,
) -> NoReturn:
    """In a fresh child: leave the zygote's loop behind and become the child asked for."""
    try:
        counters.set_slot(slot)  # the child counts into its own slot
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in wake_pipe:
            os.close(fd)
        zygote_sock.close()
        control = socket.socket(fileno=fds[0])
        child_main(settings, kind, service, control, inherited)
    finally:
        os._exit(1)  # child_main never returns
