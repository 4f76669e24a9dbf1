"""Every plain proxied session of a process on one private epoll, served by one task.

A relay between two plain sockets used to be two Trio tasks (one per direction)
in a nursery: each message woke a task, and each login paid for a nursery, two
task spawns and their cancellation at the end.  The hub instead registers both
sockets of each session in one ``epoll`` of its own, waits for that (one fd in
Trio's poller), and moves whatever is ready.  The session's task only waits for
the end of its relay; a kick cancels that wait, which takes the session off the
hub.  So does the deadline of a caller that relays only until the session is quiet
(``relay(pause_after=...)``): the session leaves with what it holds
(``_Direction.out``), and may come back or be handed to another process with it.

The hub moves the few bytes of a command or a short reply with one ``read`` into
the process's 64 KiB buffer and one ``write`` of them: two system calls per message and
direction, where ``splice`` (socket -> pipe -> socket) took three (the third to
learn that the socket was empty; the hub's epoll is level-triggered, so a short
read needs no such check).  A per-command round trip of a proxied session is
what this path costs.

Flow control per direction: bytes the destination did not take wait in the
direction (``_Direction.out``) while the hub watches the destination for
``EPOLLOUT`` and stops reading the source, so a slow reader throttles its
writer, and the other direction keeps flowing meanwhile.

A read of ``BULK`` bytes or more means a bulk transfer (a large FETCH or
APPEND); there a round through the hub per few dozen KiB costs more than a task
that waits on its own socket, and copying through Python more than ``splice``,
so the session leaves the hub (``HubRelay.bulk``) and ``relay`` goes on with a
task per direction (``splice_loop``), starting with what the hub still holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import socket
from collections.abc import Callable
from typing import Final

import trio

from proxyd import counters
from proxyd.errtext import os_error

log = logging.getLogger("proxyd")

CHUNK: Final = 256 * 1024
#: a read this large is a bulk transfer: commands and replies are far smaller, and a fast
#: sender over loopback hands the hub 64-192 KiB per read, almost never a whole ``CHUNK``
BULK: Final = 64 * 1024
_PIPE_SIZE: Final = 256 * 1024
_SPLICE_FLAGS: Final = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


class _PipePool:
    """Kernel pipes for splice, borrowed only while bytes are in flight.

    An idle session holds no pipe: Linux caps the pipe memory of an unprivileged
    user (pipe-user-pages-soft), and thousands of idle proxied sessions must not
    use it up, or every new pipe shrinks to one page.
    """

    def __init__(self, keep: int = 32) -> None:
        self._free: list[tuple[int, int]] = []
        self._keep = keep

    def take(self) -> tuple[int, int]:
        if self._free:
            return self._free.pop()
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # EPERM past the per-user limit: keep the default size
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        return read_end, write_end

    def give_back(self, pipe: tuple[int, int], *, empty: bool) -> None:
        if empty and len(self._free) < self._keep:
            self._free.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])


_PIPES = _PipePool()


def _splice_in(src_fd: int, write_end: int) -> int | None:
    """Bytes moved from the socket into the pipe; None when there is nothing to read now."""
    try:
        return os.splice(src_fd, write_end, CHUNK, flags=_SPLICE_FLAGS)
    except BlockingIOError:
        return None


def _splice_out(read_end: int, dst_fd: int, count: int) -> int:
    """Bytes moved from the pipe to the socket; 0 when the socket cannot take more now."""
    try:
        return os.splice(read_end, dst_fd, count, flags=_SPLICE_FLAGS)
    except BlockingIOError:
        return 0


_IN: Final = select.EPOLLIN
_OUT: Final = select.EPOLLOUT
#: a source's end or failure is read like data (splice then returns 0 or raises)
_READ_EVENTS: Final = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR
_GONE: Final = select.EPOLLHUP | select.EPOLLERR
_OUT_OR_GONE: Final = select.EPOLLOUT | _GONE


def _write(dst_fd: int, data: bytes | memoryview) -> int:
    """Bytes written; 0 when the socket cannot take more now."""
    try:
        return os.write(dst_fd, data)
    except BlockingIOError:
        return 0


class _Direction:
    """One way of a session: bytes from ``src`` to ``dst``."""

    __slots__ = ("count", "counter", "dst", "dst_sock", "name", "out", "src")

    def __init__(self, name: str, src: int, dst: int, dst_sock: trio.socket.SocketType) -> None:
        self.name = name
        self.src = src
        self.dst = dst
        self.dst_sock = dst_sock
        #: bytes read from ``src`` that ``dst`` has not taken yet
        self.out = b""
        #: bytes the hub moved this way (``relay`` adds them to the session's stats)
        self.count = 0
        self.counter = (
            counters.Counter.BYTES_CLIENT_TO_BACKEND if name == "client" else counters.Counter.BYTES_BACKEND_TO_CLIENT
        )


class HubRelay:
    """One session on the hub.  The hub counts bytes in ``dirs`` (and the process's
    counters) itself; ``on_count`` is for the tasks that go on after a hand-over."""

    __slots__ = (
        "bulk", "client_mask", "closed_by", "dirs", "error", "last_activity", "on_count", "server_mask", "task",
    )

    def __init__(
        self,
        client: trio.socket.SocketType,
        server: trio.socket.SocketType,
        on_count: Callable[[str, int], None],
    ) -> None:
        cfd, sfd = client.fileno(), server.fileno()
        self.dirs = (_Direction("client", cfd, sfd, server), _Direction("server", sfd, cfd, client))
        self.on_count = on_count
        self.closed_by = ""
        self.error = ""
        #: a bulk read came: the session left the hub for a task per direction (``relay``)
        self.bulk = False
        self.task: trio.lowlevel.Task | None = None
        #: what each side's fd is registered for
        self.client_mask = self.server_mask = _IN
        #: Trio's clock when the hub last moved bytes of this session (0: never)
        self.last_activity = 0.0

    @property
    def fds(self) -> tuple[int, int]:
        return self.dirs[0].src, self.dirs[1].src

    def take_held(self) -> tuple[bytes, bytes]:
        """What a session off the hub had read and not written yet (to the server, to the
        client), taken out of it and of the counts: whoever sends it counts it."""
        held = []
        for direction in self.dirs:
            out, direction.out = direction.out, b""
            if out:
                direction.count -= len(out)
                counters.add(direction.counter, -len(out))
            held.append(out)
        return held[0], held[1]


class SpliceHub:
    """The process's hub (``hub()``): started at its first session, runs until Trio ends."""

    def __init__(self) -> None:
        self._epoll: select.epoll | None = None
        #: fd -> its session
        self._relays: dict[int, HubRelay] = {}
        #: every read lands here and is written on at once (one task: one buffer); a read
        #: that fills it is a bulk transfer
        self._buf = bytearray(BULK)
        self._view = memoryview(self._buf)
        self._bufs = (self._buf,)
        #: Trio's clock at this wake-up of the hub
        self._now = 0.0

    async def relay(self, relay: HubRelay) -> None:
        """Run ``relay`` until either side ends it (``relay.closed_by``); cancellable."""
        if self._epoll is None:
            self._epoll = select.epoll()
            trio.lowlevel.spawn_system_task(self._serve, self._epoll, name="splice hub")
        epoll = self._epoll
        a, b = relay.dirs
        # a session back on the hub (``relay`` paused it while quiet and kept it) may
        # hold bytes: each fd waits for what ``_update`` would register
        relay.client_mask, relay.server_mask = _masks(relay)
        self._relays[a.src] = self._relays[b.src] = relay
        epoll.register(a.src, relay.client_mask)
        epoll.register(b.src, relay.server_mask)
        relay.task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            # a kick or the caller's deadline: the session leaves the hub at once, with
            # what it holds (``dirs[i].out``: the caller may pass it on)
            self._detach(relay)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _detach(self, relay: HubRelay) -> None:
        assert self._epoll is not None
        for fd in relay.fds:
            if self._relays.pop(fd, None) is relay:
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(fd)

    def _remove(self, relay: HubRelay) -> None:
        self._detach(relay)
        for direction in relay.dirs:
            direction.out = b""

    def _finish(self, relay: HubRelay, closed_by: str) -> None:
        if not relay.closed_by:
            relay.closed_by = closed_by
        self._remove(relay)
        self._wake(relay)

    def _hand_over(self, relay: HubRelay) -> None:
        """A bulk transfer: the session goes on in a task per direction, which is cheaper
        per byte than a round through the hub; what the hub holds goes with it."""
        relay.bulk = True
        self._detach(relay)
        self._wake(relay)

    @staticmethod
    def _wake(relay: HubRelay) -> None:
        if relay.task is not None:
            task, relay.task = relay.task, None
            trio.lowlevel.reschedule(task)

    async def _serve(self, epoll: select.epoll) -> None:
        # (the hot loop of every proxied session's command and reply: kept lean)
        wait_readable, poll, relays, fileno = trio.lowlevel.wait_readable, epoll.poll, self._relays, epoll.fileno()
        while True:
            await wait_readable(fileno)
            self._now = trio.current_time()
            for fd, events in poll(0, 256):
                relay = relays.get(fd)
                if relay is not None:
                    try:
                        self._on_events(relay, fd, events)
                    except Exception:  # never the whole process's relays for one session
                        log.exception("splice relay failed")
                        self._finish(relay, "server")

    def _on_events(self, relay: HubRelay, fd: int, events: int) -> None:
        """One fd's events: first what waits to be written to it, then what it has to read."""
        a, b = relay.dirs
        reading, writing = (a, b) if fd == a.src else (b, a)
        held = bool(a.out or b.out)
        acted = False
        if writing.out and events & _OUT_OR_GONE:
            acted = True
            self._move(relay, writing)
            if relay.closed_by or relay.bulk:
                return
        if not reading.out and events & _READ_EVENTS:
            acted = True
            self._move(relay, reading)
            if relay.closed_by or relay.bulk:
                return
        if not acted and events & _GONE:
            # a side failed or hung up while the hub waits on the other one for it
            sock = writing.dst_sock
            with contextlib.suppress(OSError):
                if err := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    relay.error = relay.error or os.strerror(err)
            self._finish(relay, reading.name)
            return
        if held or a.out or b.out:
            try:
                self._update(relay)
            except OSError as exc:
                relay.error = relay.error or os_error(exc)
                self._finish(relay, "server")

    def _move(self, relay: HubRelay, d: _Direction) -> None:
        """Move what ``d`` can move now; ends the relay at an EOF or an error."""
        try:
            if d.out:
                sent = _write(d.dst, d.out)
                if sent < len(d.out):
                    d.out = d.out[sent:]
                    return
                d.out = b""
            # one read: a short one emptied the socket, and if more came since, the
            # level-triggered epoll says so again
            try:
                moved = os.readv(d.src, self._bufs)
            except BlockingIOError:
                return
            if moved == 0:
                if d.name == "client":
                    # the client's EOF goes on to the backend; a backend's EOF does not
                    # go to the client (the session may keep it a while longer)
                    with contextlib.suppress(OSError):
                        d.dst_sock.shutdown(socket.SHUT_WR)
                self._finish(relay, d.name)
                return
            d.count += moved
            counters.add(d.counter, moved)
            relay.last_activity = self._now
            try:
                sent = os.write(d.dst, self._view[:moved])
            except BlockingIOError:
                sent = 0
            if sent < moved:
                d.out = bytes(self._view[sent:moved])
            if moved >= BULK:
                self._hand_over(relay)
        except OSError as exc:
            relay.error = relay.error or os_error(exc)
            self._finish(relay, d.name)

    def _update(self, relay: HubRelay) -> None:
        """Register each fd for what its session waits for on it now: a direction holding
        bytes waits for its destination to take them, and reads nothing meanwhile."""
        assert self._epoll is not None
        a, b = relay.dirs
        client_mask, server_mask = _masks(relay)
        if client_mask != relay.client_mask:
            relay.client_mask = client_mask
            self._epoll.modify(a.src, client_mask)
        if server_mask != relay.server_mask:
            relay.server_mask = server_mask
            self._epoll.modify(b.src, server_mask)


def _masks(relay: HubRelay) -> tuple[int, int]:
    """What the client's and the server's fd wait for: a direction holding bytes waits
    for its destination to take them, and reads nothing meanwhile."""
    a, b = relay.dirs
    return (0 if a.out else _IN) | (_OUT if b.out else 0), (0 if b.out else _IN) | (_OUT if a.out else 0)


async def splice_loop(
    src: trio.socket.SocketType,
    dst: trio.socket.SocketType,
    direction: _Direction,
    on_count: Callable[[str, int], None],
) -> None:
    """One direction of a session in a task of its own (after a bulk transfer began):
    first what the hub held of it, then socket -> pipe -> socket until the source ends."""
    src_fd, dst_fd, name = src.fileno(), dst.fileno(), direction.name
    out, direction.out = direction.out, b""
    while out:
        out = out[_write(dst_fd, out) :]
        if out:
            await trio.lowlevel.wait_writable(dst)
    pipe: tuple[int, int] | None = None
    pending = 0
    try:
        while True:
            if pipe is None:
                await trio.lowlevel.wait_readable(src)
                pipe = _PIPES.take()
            # drain what is there; a short read means the socket is empty for now
            while True:
                while pending:
                    pending -= _splice_out(pipe[0], dst_fd, pending)
                    if pending:
                        await trio.lowlevel.wait_writable(dst)
                moved = _splice_in(src_fd, pipe[1])
                if moved is None:
                    break
                if moved == 0:
                    if name == "client":
                        # the client's EOF goes on to the backend; a backend's EOF does
                        # not go to the client (the session may keep it a while longer)
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                    return
                on_count(name, moved)
                pending = moved
                if moved < CHUNK:
                    pending -= _splice_out(pipe[0], dst_fd, pending)
                    if not pending:
                        break
                else:
                    # data keeps coming: let other sessions run between chunks
                    await trio.lowlevel.checkpoint()
            _PIPES.give_back(pipe, empty=True)
            pipe = None
    finally:
        if pipe is not None:
            _PIPES.give_back(pipe, empty=pending == 0)


_HUB: trio.lowlevel.RunVar[SpliceHub] = trio.lowlevel.RunVar("proxyd_splice_hub")


def hub() -> SpliceHub:
    """This Trio run's hub (one per process; a new run, as in tests, gets its own)."""
    try:
        return _HUB.get()
    except LookupError:
        found = SpliceHub()
        _HUB.set(found)
        return found
