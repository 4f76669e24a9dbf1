"""proxyd's process tree from /proc: who is who, what it holds, which process holds a connection."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    title: str


def _read(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return None
    ppid = int(stat.rsplit(")", 1)[1].split()[1])
    return Proc(pid, ppid, title)


def tree(root: int) -> list[Proc]:
    """``root`` and every process below it."""
    procs = [p for entry in os.listdir("/proc") if entry.isdigit() and (p := _read(int(entry)))]
    by_parent: dict[int, list[Proc]] = {}
    for proc in procs:
        by_parent.setdefault(proc.ppid, []).append(proc)
    found: list[Proc] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        found += by_parent.get(pid, [])
        todo += [p.pid for p in by_parent.get(pid, [])]
    me = _read(root)
    return ([me] if me else []) + found


def titled(root: int, title: str) -> list[Proc]:
    """The processes below ``root`` whose title is ``title`` (``proxyd: relay``, ...)."""
    return [p for p in tree(root) if p.title == title]


@dataclass(frozen=True)
class Resources:
    rss_kb: int
    fds: int
    processes: int

    def text(self) -> str:
        return f"{self.rss_kb / 1024:.1f} MB RSS, {self.fds} fds, {self.processes} processes"


def resources(root: int) -> Resources:
    """RSS (kB) and open descriptors summed over ``root``'s tree."""
    rss = fds = count = 0
    for proc in tree(root):
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            fds += len(os.listdir(f"/proc/{proc.pid}/fd"))
        except OSError:
            continue
        count += 1
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
    return Resources(rss, fds, count)


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def peer_ports_held(pid: int, server_port: int) -> set[int]:
    """The client ports of the connections to ``server_port`` whose server side ``pid`` holds."""
    inodes = _socket_inodes(pid)
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], int(fields[9])
            if inode in inodes and int(local.rsplit(":", 1)[1], 16) == server_port:
                ports.add(int(remote.rsplit(":", 1)[1], 16))
    return ports
