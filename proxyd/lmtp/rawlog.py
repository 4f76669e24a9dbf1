"""Dovecot's rawlog for the LMTP service: every byte of a connection, written to files.

``lmtp_rawlog_dir`` records the MTA connections (lib-smtp's server),
``lmtp_proxy_rawlog_dir`` the connections to the backends (its client).  As
``iostream_rawlog_create()`` does it: only when the directory exists, two
files per connection, ``<dir>/<YYYYmmdd-HHMMSS>.<pid>.<n>.in`` (what was
read) and ``.out`` (what was written), mode 0600, each line opened by the
time it was seen (``<seconds>.<microseconds> ``).  What is logged is the
protocol in the clear: a connection that turns to TLS gets a new pair of
files from there on (lib-smtp recreates its rawlog after STARTTLS).

The directory is opened when the process starts, before it chroots and drops
its privileges, so the service's ``user`` must be able to create files in it.
File writes run in a worker thread.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import trio

from proxyd.lmtp import process_log


@dataclass(slots=True)
class RawlogDir:
    """A rawlog directory, opened while its path could still be resolved."""

    path: str
    fd: int
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def open(cls, path: str) -> RawlogDir | None:
        """The directory, or None when it does not exist (then there is no rawlog, as in Dovecot)."""
        if not path:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            process_log().error("rawlog: stat(%s) failed: %s", path, exc.strerror)
            return None
        return cls(path, fd)

    def _create(self) -> tuple[int, int] | None:
        prefix = f"{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}.{next(self._counter)}"
        flags = os.O_CREAT | os.O_APPEND | os.O_WRONLY | os.O_CLOEXEC
        try:
            in_fd = os.open(f"{prefix}.in", flags, 0o600, dir_fd=self.fd)
        except OSError as exc:
            process_log().error("creat(%s/%s.in) failed: %s", self.path, prefix, exc.strerror)
            return None
        try:
            out_fd = os.open(f"{prefix}.out", flags, 0o600, dir_fd=self.fd)
        except OSError as exc:
            process_log().error("creat(%s/%s.out) failed: %s", self.path, prefix, exc.strerror)
            os.close(in_fd)
            os.unlink(f"{prefix}.in", dir_fd=self.fd)
            return None
        return in_fd, out_fd

    async def wrap(self, stream: trio.abc.Stream) -> trio.abc.Stream:
        """``stream`` with its traffic logged (``stream`` itself if the files cannot be made)."""
        fds = await trio.to_thread.run_sync(self._create)
        if fds is None:
            return stream
        return RawlogStream(stream, _RawlogFile(fds[0], self.path), _RawlogFile(fds[1], self.path))


class _RawlogFile:
    """One direction's file: a timestamp at the start of every line."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd: int | None = fd
        self.path = path
        #: the last write ended inside a line
        self._continued = False

    def _format(self, data: bytes, now: float) -> bytes:
        stamp = b"%d.%06d " % (int(now), int(now % 1 * 1_000_000))
        parts = data.split(b"\n")
        out = bytearray()
        for i, part in enumerate(parts):
            line = part + b"\n" if i < len(parts) - 1 else part
            if not line:
                continue
            if i > 0 or not self._continued:
                out += stamp
            out += line
        self._continued = not data.endswith(b"\n")
        return bytes(out)

    async def write(self, data: bytes) -> None:
        fd = self.fd
        if fd is None or not data:
            return
        record = self._format(data, time.time())
        try:
            await trio.to_thread.run_sync(_write_all, fd, record)
        except OSError as exc:
            # Dovecot's iostream_rawlog_write(): logged, and this rawlog ends
            process_log().error("write(%s) failed: %s", self.path, exc.strerror)
            self.close()

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


class RawlogStream(trio.abc.Stream):
    """A stream that copies what passes through it to its rawlog files."""

    def __init__(self, inner: trio.abc.Stream, received: _RawlogFile, sent: _RawlogFile) -> None:
        self.inner = inner
        self._received = received
        self._sent = sent

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        await self._received.write(bytes(data))
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._sent.write(bytes(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    def detach(self) -> trio.abc.Stream:
        """Close the rawlog files and give back the stream underneath (e.g. to start TLS on)."""
        self._received.close()
        self._sent.close()
        return self.inner

    async def aclose(self) -> None:
        self.detach()
        await self.inner.aclose()


def unwrapped(stream: trio.abc.Stream) -> trio.abc.Stream:
    """The stream under a rawlog (the rawlog ends), or the stream itself."""
    return stream.detach() if isinstance(stream, RawlogStream) else stream


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
