"""Where the LMTP proxy keeps a message while it receives and delivers it.

Dovecot's LMTP writes DATA to an ``iostream-temp``: memory up to 128 KiB,
then a file ``<mail_temp_dir>/dovecot.lmtp.<host>.<pid>.<random>`` that is
unlinked as soon as it is created, so a crash leaves nothing behind; if the
file cannot be made, it logs why and goes on in memory.  ``Spool`` does the
same.  The directory is opened before the process drops its privileges and
chroots (``TempDir``), so ``mail_temp_dir`` names a directory of the real
file system, which the service's ``user`` must be able to write to.

File I/O runs in a worker thread; the backends read the spool at their own
pace with ``pread``, several at a time.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

import trio

from proxyd.lmtp import process_log

#: Dovecot's IOSTREAM_TEMP_MAX_BUF_SIZE_DEFAULT: a message up to this size stays in memory
MEMORY_LIMIT: Final = 128 * 1024
#: how much is read from the file for a backend at a time
READ_SIZE: Final = 256 * 1024



@dataclass(frozen=True, slots=True)
class TempDir:
    """``mail_temp_dir``, opened while the path could still be resolved."""

    path: str
    fd: int

    @classmethod
    def open(cls, path: str) -> TempDir | None:
        """The directory, or None (logged) when it cannot be opened: messages then stay in memory."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            process_log().error("open(%s) failed: %s", path, exc.strerror)
            return None
        return cls(path, fd)

    def prefix(self) -> str:
        """The start of a temporary file's name (Dovecot's ``mail_user_set_get_temp_prefix()``
        and ``safe_mkstemp_hostpid()``)."""
        return f"dovecot.lmtp.{socket.gethostname()}.{os.getpid()}."

    def create(self) -> int:
        """A new temporary file, already unlinked."""
        name = self.prefix() + secrets.token_hex(8)
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=self.fd)
        try:
            os.unlink(name, dir_fd=self.fd)
        except OSError:
            os.close(fd)
            raise
        return fd


class Spool:
    """One message: appended to while it arrives, then read by every backend."""

    def __init__(self, temp_dir: TempDir | None, memory_limit: int = MEMORY_LIMIT) -> None:
        self._dir = temp_dir
        self._limit = memory_limit
        #: what is not in the file (all of it while there is no file)
        self._buffer = bytearray()
        self._fd: int | None = None
        self._file_size = 0
        #: no file can be made (no directory, or it failed): the rest stays in memory
        self._file_failed = temp_dir is None
        self.size = 0

    @property
    def in_file(self) -> bool:
        return self._fd is not None

    async def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        if len(self._buffer) >= self._limit and not self._file_failed:
            await self._flush()

    async def finish(self) -> None:
        """All of the message is here: whatever is in memory goes to the file (if there is one)."""
        if self._fd is not None and self._buffer:
            await self._flush()

    async def _flush(self) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()
        try:
            if self._fd is None:
                assert self._dir is not None
                self._fd = await trio.to_thread.run_sync(self._dir.create)
            await trio.to_thread.run_sync(_write_all, self._fd, data, self._file_size)
            self._file_size += len(data)
        except OSError as exc:
            # Dovecot's iostream-temp: log it and keep the message in memory
            self._buffer[0:0] = data
            if self._fd is None:
                assert self._dir is not None
                process_log().error("safe_mkstemp(%s/%s) failed: %s", self._dir.path, self._dir.prefix(), exc.strerror)
            else:
                assert self._dir is not None
                process_log().error("iostream-temp (lmtp data): write(%s/%s*) failed: %s - moving to memory",
                          self._dir.path, self._dir.prefix(), exc.strerror)
                self._buffer[0:0] = await trio.to_thread.run_sync(_read_all, self._fd, self._file_size)
                self._close_file()
            self._file_failed = True

    async def chunks(self, prefix: bytes = b"") -> AsyncIterator[bytes]:
        """``prefix`` and then the message, in pieces of at most READ_SIZE (after ``finish()``)."""
        if prefix:
            yield prefix
        offset = 0
        while offset < self._file_size:
            assert self._fd is not None
            piece = await trio.to_thread.run_sync(os.pread, self._fd, min(READ_SIZE, self._file_size - offset), offset)
            if not piece:
                raise OSError("unexpected end of the temporary file")
            offset += len(piece)
            yield piece
        for start in range(0, len(self._buffer), READ_SIZE):
            yield bytes(self._buffer[start : start + READ_SIZE])

    def close(self) -> None:
        self._buffer = bytearray()
        self._close_file()

    def _close_file(self) -> None:
        fd, self._fd = self._fd, None
        self._file_size = 0
        if fd is not None:
            os.close(fd)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _read_all(fd: int, size: int) -> bytes:
    parts = []
    offset = 0
    while offset < size:
        piece = os.pread(fd, size - offset, offset)
        if not piece:
            break
        parts.append(piece)
        offset += len(piece)
    return b"".join(parts)
