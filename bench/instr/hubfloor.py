"""The floor of the splice hub's per-message cost: one relay between two socket pairs.

    python bench/instr/hubfloor.py trio|raw N

A client process sends N "a NOOP" lines and waits for each echo; an echo process answers
them; this process relays both ways: ``trio``: one Trio task woken through
``trio.lowlevel.wait_readable`` on a private epoll per message (the hub's shape, without its
bookkeeping; LIGHTEN=1 with proxyd on the path: Trio's instrument registry as proxyd's
processes have it), ``raw``: a plain ``epoll`` loop.  Prints the wall time and the relay's
CPU per round trip; under ``valgrind --tool=callgrind`` (two runs, N 500 and 3000: the
difference over 2500) the relay's instructions per round trip (its file is the largest).
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time

import trio


async def trio_hub(a: socket.socket, b: socket.socket) -> None:
    if os.environ.get("LIGHTEN"):
        from proxyd import trioinstruments

        trioinstruments.lighten()
    ep = select.epoll()
    ep.register(a.fileno(), select.EPOLLIN)
    ep.register(b.fileno(), select.EPOLLIN)
    buf = bytearray(65536)
    fa, fb = a.fileno(), b.fileno()
    while True:
        await trio.lowlevel.wait_readable(ep.fileno())
        for fd, _ in ep.poll(0, 256):
            n = os.readv(fd, (buf,))
            if n == 0:
                return
            os.write(fb if fd == fa else fa, memoryview(buf)[:n])


def raw_hub(a: socket.socket, b: socket.socket) -> None:
    ep = select.epoll()
    ep.register(a.fileno(), select.EPOLLIN)
    ep.register(b.fileno(), select.EPOLLIN)
    buf = bytearray(65536)
    fa, fb = a.fileno(), b.fileno()
    while True:
        for fd, _ in ep.poll():
            n = os.readv(fd, (buf,))
            if n == 0:
                return
            os.write(fb if fd == fa else fa, memoryview(buf)[:n])


def main(mode: str, n: int) -> None:
    c1, c2 = socket.socketpair()  # client <-> relay
    s1, s2 = socket.socketpair()  # relay <-> echo
    if os.fork() == 0:
        c1.close(), c2.close(), s1.close()
        while data := s2.recv(100):
            s2.sendall(data)
        os._exit(0)
    if os.fork() == 0:
        c2.close(), s1.close(), s2.close()
        t0 = time.perf_counter()
        for _ in range(n):
            c1.sendall(b"a NOOP\r\n")
            c1.recv(100)
        print(f"{mode}: wall {(time.perf_counter() - t0) / n * 1e6:.1f} us per round trip", end="; ")
        os._exit(0)
    c1.close(), s2.close()
    c2.setblocking(False), s1.setblocking(False)
    t0 = time.process_time()
    if mode == "trio":
        trio.run(trio_hub, c2, s1)
    else:
        raw_hub(c2, s1)
    s1.close()
    os.wait(), os.wait()
    print(f"relay CPU {(time.process_time() - t0) / n * 1e6:.1f} us per round trip")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20000)
