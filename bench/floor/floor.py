"""The Python + Trio floor of one proxied IMAP login: the least work proxyd's login could do.

    python bench/floor/floor.py MODE IO AUTH PORT     # run by bench/floor/run.sh

Listens on 127.0.0.1:PORT and, for each client, does what proxyd does for one IMAP login
with the rig's static passdb (``nopassword=y proxy=y host=127.0.0.2``) and nothing else:
no configuration, no logging, no limits, no error texts.  It sends proxyd's greeting,
reads ``a LOGIN user pass``, connects to the backend (127.0.0.2:143), reads its banner,
sends the bytes proxyd sends (``I ID (...)`` and ``L LOGIN``, pipelined in one write),
reads up to the ``L OK`` line, answers the client with the backend's text under the
client's tag, relays both ways until one side closes, and closes.

MODE  hp: one long-lived Trio process serves every connection (service_count = 0);
      hp2: two such processes on the same listener, as process_min_avail = 2 (both wake
          on every connection, one finds nothing to accept);
      hs: a zygote that imported Trio (and ran it once, heap frozen) forks a child per
          connection; the child runs ``trio.run`` for that one connection and exits with
          ``sys.exit`` (interpreter finalization);
      hs_exit: the same, the child leaves with ``os._exit(0)``.
IO    stream: trio.SocketStream on trio sockets (what proxyd's code is written against);
      raw: non-blocking stdlib sockets and trio.lowlevel.wait_readable / wait_writable,
          the cheapest I/O Trio allows; the relay reads into a 256 KiB buffer per
          direction (``recv_into``) and writes from it;
      splice: raw's login, and a relay through a kernel pipe per direction (``splice``
          socket -> pipe -> socket, 256 KiB at a time, as proxyd's bulk path): no copy
          through Python.
      A relay direction waits for its socket, then reads until a read is short (a full
      read is tried again at once: bulk data keeps coming) and writes what it read.
AUTH  none: the login process decides itself (no separation);
      unix: a minimal auth hop as Dovecot's separation requires: a second Trio process
          answers ``ID\\tuser\\tpass`` with ``ID\\tOK\\thost=127.0.0.2`` over a UNIX socket
          (one connection per login process, kept open; HS children connect after the fork).

Measurement code: the rig's load only (one user's bytes at a time per connection, small
replies); a short read or an unexpected reply ends the connection.
"""

from __future__ import annotations

import fcntl
import gc
import mmap
import os
import signal
import socket
import sys
import tempfile
import time

import trio
from trio.lowlevel import checkpoint, wait_readable, wait_writable

BACKEND_PORT = 143
CHUNK = 256 * 1024  # a relay read, and the splice pipe's size (proxyd's CHUNK)
SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
GREETING = (
    b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN]"
    b" Dovecot ready.\r\n"
)


def id_and_login(user: bytes, password: bytes, peer: tuple[str, int], port: int) -> bytes:
    """The bytes proxyd writes to the backend after its banner (checked with strace)."""
    session = os.urandom(12).hex()[:16].encode()  # proxyd: base64 of time, port and ip
    ip = peer[0].encode()
    return (
        b'I ID ("x-session-id" "%s" "x-originating-ip" "%s" "x-originating-port" "%d"'
        b' "x-connected-ip" "%s" "x-connected-port" "%d" "x-proxy-ttl" "4")\r\n'
        b'L LOGIN "%s" "%s"\r\n' % (session, ip, peer[1], ip, port, user, password)
    )


# ---------------------------------------------------------------- the two kinds of I/O


class Raw:
    """A non-blocking stdlib socket driven by wait_readable / wait_writable."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    @classmethod
    async def connect(cls, addr: tuple[str, int]) -> Raw:
        conn = cls(socket.socket())
        try:
            conn.sock.connect(addr)
        except BlockingIOError:
            await wait_writable(conn.sock)
            if err := conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                raise OSError(err, os.strerror(err)) from None
        return conn

    async def recv(self) -> bytes:
        # waits first: in this dialogue every read waits for the peer's answer, and a
        # recv that finds nothing (Trio's SocketStream tries first) is a wasted call
        while True:
            await wait_readable(self.sock)
            try:
                return self.sock.recv(65536)
            except BlockingIOError:
                pass

    async def send(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                await wait_writable(self.sock)

    async def close(self) -> None:
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()


class Stream:
    """trio.SocketStream, the way proxyd's code uses it."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream

    @classmethod
    async def connect(cls, addr: tuple[str, int]) -> Stream:
        sock = trio.socket.socket()
        await sock.connect(addr)
        return cls(trio.SocketStream(sock))

    async def recv(self) -> bytes:
        return await self.stream.receive_some(65536)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def close(self) -> None:
        await self.stream.aclose()


class Splice(Raw):
    """Raw's I/O for the login; the relay goes through a pipe (relay_splice)."""


Conn = Raw | Stream
IO = type[Raw] | type[Stream]


def raw_conn(io: IO, sock: socket.socket) -> Raw:
    return Splice(sock) if io is Splice else Raw(sock)


async def read_line(conn: Conn, buf: bytearray) -> bytes:
    """One CRLF-terminated line (without it) from conn, buffering what follows."""
    while (end := buf.find(b"\r\n")) < 0:
        data = await conn.recv()
        if not data:
            raise EOFError
        buf += data
    line = bytes(buf[:end])
    del buf[: end + 2]
    return line


# ---------------------------------------------------------------- the auth hop


async def auth_server(path: str) -> None:
    """The auth process: answers every request with the static passdb's reply."""

    async def serve(stream: trio.SocketStream) -> None:
        buf = b""
        while data := await stream.receive_some(4096):
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                await stream.send_all(line.split(b"\t", 1)[0] + b"\tOK\thost=127.0.0.2\n")

    listener = trio.socket.socket(socket.AF_UNIX)
    await listener.bind(path)
    listener.listen(128)
    await trio.serve_listeners(serve, [trio.SocketListener(listener)])


class AuthClient:
    """A login process's one connection to the auth process; one request at a time."""

    def __init__(self, conn: Conn) -> None:
        self.conn, self.buf, self.lock, self.next_id = conn, bytearray(), trio.Lock(), 0

    @classmethod
    async def connect(cls, path: str, io: IO) -> AuthClient:
        if io is not Stream:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(path)
            return cls(Raw(sock))
        tsock = trio.socket.socket(socket.AF_UNIX)
        await tsock.connect(path)
        return cls(Stream(trio.SocketStream(tsock)))

    async def lookup(self, user: bytes, password: bytes) -> str:
        async with self.lock:
            self.next_id += 1
            await self.conn.send(b"%d\t%s\t%s\n" % (self.next_id, user, password))
            while (end := self.buf.find(b"\n")) < 0:
                self.buf += await self.conn.recv()
            reply = bytes(self.buf[:end]).split(b"\t")
            del self.buf[: end + 1]
        return reply[2].split(b"=", 1)[1].decode()  # host=...


# ---------------------------------------------------------------- one login


async def relay_stream(src: Stream, dst: Stream, done: trio.CancelScope) -> None:
    while data := await src.recv():
        await dst.send(data)
    done.cancel()


# relay_raw's read buffers: anonymous mappings (a page is only faulted in when a read first
# reaches it; a zero-filled bytearray would touch all 64 pages), kept for the next session
BUFFERS: list[mmap.mmap] = []


async def relay_raw(src: Raw, dst: Raw, done: trio.CancelScope) -> None:
    buf = BUFFERS.pop() if BUFFERS else mmap.mmap(-1, CHUNK)
    view = memoryview(buf)
    try:
        while True:
            await wait_readable(src.sock)
            while True:
                try:
                    n = src.sock.recv_into(view)
                except BlockingIOError:
                    break
                if not n:
                    done.cancel()
                    return
                await dst.send(view[:n])
                if n < CHUNK:
                    break
    finally:
        view.release()
        BUFFERS.append(buf)


async def relay_splice(src: Raw, dst: Raw, done: trio.CancelScope) -> None:
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, CHUNK)
    src_fd, dst_fd = src.sock.fileno(), dst.sock.fileno()
    try:
        while True:
            await wait_readable(src.sock)
            while True:
                try:
                    n = os.splice(src_fd, write_end, CHUNK, flags=SPLICE_FLAGS)
                except BlockingIOError:
                    break
                if not n:
                    done.cancel()
                    return
                left = n
                while left:
                    try:
                        left -= os.splice(read_end, dst_fd, left, flags=SPLICE_FLAGS)
                    except BlockingIOError:
                        await wait_writable(dst.sock)
                if n < CHUNK:
                    break
    finally:
        os.close(read_end)
        os.close(write_end)


async def relay(src: Conn, dst: Conn, done: trio.CancelScope) -> None:
    if isinstance(src, Stream) and isinstance(dst, Stream):
        await relay_stream(src, dst, done)
    elif isinstance(src, Splice) and isinstance(dst, Splice):
        await relay_splice(src, dst, done)
    elif isinstance(src, Raw) and isinstance(dst, Raw):
        await relay_raw(src, dst, done)


async def session(
    client: Conn,
    peer: tuple[str, int],
    port: int,
    auth: AuthClient | None,
    io: IO,
) -> None:
    backend: Conn | None = None
    try:
        await client.send(GREETING)
        buf = bytearray()
        tag, command, user, password = (await read_line(client, buf)).split(b" ")
        if command.upper() != b"LOGIN":
            return
        host = "127.0.0.2" if auth is None else await auth.lookup(user, password)
        backend = await io.connect((host, BACKEND_PORT))
        bbuf = bytearray()
        await read_line(backend, bbuf)  # the banner
        await backend.send(id_and_login(user, password, peer, port))
        while not (line := await read_line(backend, bbuf)).startswith(b"L "):
            pass
        await client.send(tag + line[1:] + b"\r\n")
        if bbuf:
            await client.send(bytes(bbuf))
        if buf:
            await backend.send(bytes(buf))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay, client, backend, nursery.cancel_scope)
            await relay(backend, client, nursery.cancel_scope)
    except (OSError, EOFError, ValueError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        if backend is not None:
            await backend.close()
        await client.close()


# ---------------------------------------------------------------- the two login modes


def listen(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


async def serve_hp(lsock: socket.socket, port: int, io: IO, auth_path: str | None) -> None:
    auth = None if auth_path is None else await AuthClient.connect(auth_path, io)
    async with trio.open_nursery() as nursery:
        if io is Stream:
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(lsock))
            while True:
                stream = await listener.accept()
                peer = stream.socket.getpeername()
                nursery.start_soon(session, Stream(stream), peer, port, auth, io)
        lsock.setblocking(False)
        while True:
            await wait_readable(lsock)
            try:
                while True:  # every connection already queued
                    sock, peer = lsock.accept()
                    nursery.start_soon(session, raw_conn(io, sock), peer, port, auth, io)
            except BlockingIOError:
                pass


async def child(
    sock: socket.socket,
    peer: tuple[str, int],
    port: int,
    io: IO,
    auth_path: str | None,
) -> None:
    auth = None if auth_path is None else await AuthClient.connect(auth_path, io)
    conn: Conn = (
        Stream(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
        if io is Stream
        else raw_conn(io, sock)
    )
    await session(conn, peer, port, auth, io)


def serve_hs(
    lsock: socket.socket,
    port: int,
    io: IO,
    auth_path: str | None,
    fast_exit: bool,
) -> None:
    async def nothing() -> None:
        await checkpoint()

    def reap(signum: int, frame: object) -> None:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass

    trio.run(nothing)  # Trio's first run (lazy imports, specialization) before any fork
    # reaped, not ignored: a reaped child's CPU time counts in the zygote's (the rig's /proc figure)
    signal.signal(signal.SIGCHLD, reap)
    gc.freeze()
    while True:
        sock, peer = lsock.accept()
        if os.fork() == 0:
            lsock.close()
            trio.run(child, sock, peer, port, io, auth_path)
            if fast_exit:
                os._exit(0)
            sys.exit(0)
        sock.close()


def import_proxyd() -> None:
    """What a proxyd login process has imported, unused (``FLOOR_HEAVY=1``): the floor's
    logic in a process as large as proxyd's, to tell its working set from its work."""
    import importlib

    for name in ("proxyd.master.main", "proxyd.children", "proxyd.login.worker", "proxyd.login.session",
                 "proxyd.auth.server", "proxyd.proxied.relayhost"):
        importlib.import_module(name)


def main() -> None:
    mode, io_name, auth_name, port_text = sys.argv[1:5]
    if os.environ.get("FLOOR_HEAVY") == "1":
        import_proxyd()
    port = int(port_text)
    io: IO = {"raw": Raw, "splice": Splice, "stream": Stream}[io_name]
    lsock = listen(port)
    auth_path = None
    if auth_name == "unix":
        auth_path = os.path.join(tempfile.mkdtemp(prefix="floor-auth-"), "auth")
        if os.fork() == 0:
            lsock.close()
            trio.run(auth_server, auth_path)
            os._exit(0)
        while not os.path.exists(auth_path):
            time.sleep(0.01)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if mode.startswith("hp"):
        if mode == "hp2":
            os.fork()  # two login processes, each with its own auth connection
        trio.run(serve_hp, lsock, port, io, auth_path)
    else:
        serve_hs(lsock, port, io, auth_path, fast_exit=mode == "hs_exit")


if __name__ == "__main__":
    main()
