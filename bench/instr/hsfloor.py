"""The floor of a login process per connection: fork a child off proxyd's zygote heap, no proxyd work.

    PYTHONPATH=TREE python bench/instr/hsfloor.py [N] [REPEAT]

Builds the heap the zygote forks from (everything ``proxyd.cli.proxyd`` imports before the
zygote's fork, ``_preload()``, Trio warmed as the zygote warms it, ``gc.freeze()``), then
forks N children per mode and reports per child, from ``getrusage``: CPU ms of the child and
of the fork in the parent, and the page faults of the child and of the parent.

- ``exit``: the child ends at once (``os._exit``): fork, the interpreter's after-fork work
  (``threading``, ``logging``, ``random`` and Trio's at-fork hooks) and the exit;
- ``trio``: the child runs ``trio.run`` on one checkpoint: Trio's start and end;
- ``trio-conn``: the child accepts one TCP connection in Trio, writes a line, reads one.

What a high-security login adds to ``trio-conn`` is proxyd's own work (the session, the
auth and backend exchanges, the hand-off) and that of the other processes (master,
zygote, auth, relay).  CPU ms depend on the machine's load; faults do not.  The minimum of
REPEAT rounds is the figure least disturbed by other work.
"""

from __future__ import annotations

import gc
import os
import resource
import socket
import sys

import trio

from proxyd.children import ChildEntry  # noqa: F401 - what the zygote has imported
from proxyd.cli import proxyd as cli
from proxyd.master import zygote


async def _one_connection(sock: socket.socket) -> None:
    listener = trio.socket.from_stdlib_socket(sock)
    conn, _ = await listener.accept()
    with conn:
        await conn.send(b"* OK\r\n")
        await conn.recv(100)


def _child(mode: str, sock: socket.socket) -> None:
    try:
        if mode == "trio":
            trio.run(trio.lowlevel.checkpoint)
        elif mode == "trio-conn":
            trio.run(_one_connection, sock)
    finally:
        os._exit(0)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    repeat = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    cli._preload()
    zygote._warm_trio()
    gc.collect()
    gc.freeze()
    with open("/proc/self/status") as f:
        anon = next(line.split()[1] for line in f if line.startswith("RssAnon"))
    print(f"zygote heap: {anon} kB anonymous")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    best: dict[str, tuple[float, float, float, float]] = {}
    for _ in range(repeat):
        for mode in ("exit", "trio", "trio-conn"):
            c0, s0 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
            for _ in range(n):
                pid = os.fork()
                if pid == 0:
                    _child(mode, sock)
                if mode == "trio-conn":
                    with socket.create_connection(sock.getsockname()) as client:
                        client.recv(100)
                        client.sendall(b"a1 NOOP\r\n")
                os.waitpid(pid, 0)
            c1, s1 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
            child_ms = (c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime) / n * 1e3
            fork_ms = (s1.ru_stime - s0.ru_stime) / n * 1e3  # the parent's kernel time: fork() itself
            figures = (child_ms + fork_ms, fork_ms, (c1.ru_minflt - c0.ru_minflt) / n, (s1.ru_minflt - s0.ru_minflt) / n)
            if mode not in best or figures[0] < best[mode][0]:
                best[mode] = figures
    for mode, (total, fork, child_faults, parent_faults) in best.items():
        print(
            f"{mode:10s} CPU {total:5.2f} ms per child (fork in the parent {fork:4.2f}), "
            f"page faults: child {child_faults:4.0f}, parent {parent_faults:3.0f}"
        )


if __name__ == "__main__":
    main()
