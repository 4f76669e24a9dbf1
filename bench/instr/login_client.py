"""A bounded login loop for bench/instr/run.sh: PROTO PORT N CONCURRENCY FIRST_USER.

Each login: greeting, IMAP LOGIN or POP3 USER/PASS as user0001..user2000 with the
rig's password, then LOGOUT/QUIT, read to the close.  Loopback only.
"""

from __future__ import annotations

import socket
import sys
import threading
from typing import BinaryIO


def _line(f: BinaryIO) -> bytes:
    line = f.readline()
    if not line:
        raise EOFError("connection closed")
    return line


def login(proto: str, port: int, user: str) -> bool:
    with socket.create_connection(("127.0.0.1", port)) as s, s.makefile("rb") as f:
        _line(f)
        if proto == "imap":
            s.sendall(b"a LOGIN %s benchpw\r\n" % user.encode())
            while not (reply := _line(f)).startswith(b"a "):
                pass
            ok = reply.startswith(b"a OK")
            s.sendall(b"b LOGOUT\r\n")
        else:
            s.sendall(b"USER %s\r\n" % user.encode())
            _line(f)
            s.sendall(b"PASS benchpw\r\n")
            ok = _line(f).startswith(b"+OK")
            s.sendall(b"QUIT\r\n")
        while f.readline():
            pass
    return ok


def main() -> None:
    proto, port, n, concurrency, first = sys.argv[1], *map(int, sys.argv[2:6])
    lock = threading.Lock()
    state = {"next": 0, "failed": 0}

    def worker() -> None:
        while True:
            with lock:
                if state["next"] >= n:
                    return
                index = first + state["next"]
                state["next"] += 1
            if not login(proto, port, f"user{1 + index % 2000:04d}"):
                with lock:
                    state["failed"] += 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"{proto}: {n} logins, {state['failed']} failed", file=sys.stderr)


if __name__ == "__main__":
    main()
