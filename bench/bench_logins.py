"""ManageSieve and Submission logins/s and CPU per login: proxyd beside Dovecot's own proxy.

Both proxies run from the same passwd-file (``sieve-user`` -> alice on the
backend's ManageSieve port, ``subm-user`` -> bob on its Submission port, the
password forwarded) in front of one Dovecot backend with Pigeonhole's
ManageSieve and Dovecot's Submission (127.0.0.2).  ``CLIENTS`` parallel
clients log in ``LOGINS`` times per protocol, a fresh connection each
(greeting, AUTHENTICATE PLAIN / EHLO + AUTH PLAIN, LOGOUT / QUIT).  CPU is the
user+system time of every process of the proxy's tree, read from /proc before
and after (processes that end within the run are counted through their parent's
children times).  Both use their default (high-security) login processes.

    PYTHONPATH=. .venv/bin/python bench/bench_logins.py      # as root; ~1 min

Bounded: at most LOGINS logins per protocol and target; all traffic on 127.0.0.0/8.
"""

from __future__ import annotations

import base64
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.dovecot import DovecotFactory, start_sieve_submission_backend
from tests.fixtures.net import free_ports, port_accepts, wait_until
from tests.fixtures.proxyd import (
    Listener,
    PasswdEntry,
    ProxydRunner,
    proxy_fields,
    write_passwd_file,
)
from tests.fixtures.tls import issue_tls_files

LOGINS = int(os.environ.get("LOGINS", "300"))
CLIENTS = int(os.environ.get("CLIENTS", "4"))


def tree_cpu(root: int) -> float:
    """User+system seconds of ``root``'s tree: live processes plus what they reaped."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                data = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = data[data.rindex(")") + 2 :].split()
            stats[int(entry)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            fields = stats[pid]
            total += sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks
            todo.extend(children.get(pid, []))
    return total


def _read_until(sock: socket.socket, done: Callable[[bytes], bool]) -> bytes:
    data = b""
    while not done(data):
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError(f"closed after {data!r}")
        data += chunk
    return data


def _sieve_final(data: bytes) -> bool:
    if not data.endswith(b"\r\n"):
        return False
    last = data[:-2].rsplit(b"\r\n", 1)[-1]
    return last.startswith((b"OK", b"NO", b"BYE"))


def _smtp_final(data: bytes) -> bool:
    if not data.endswith(b"\r\n"):
        return False
    last = data[:-2].rsplit(b"\r\n", 1)[-1]
    return last[3:4] == b" "


def sieve_login(address: str, port: int) -> bool:
    ir = base64.b64encode(b"\0sieve-user\0alicepw")
    with socket.create_connection((address, port), 20) as sock:
        _read_until(sock, _sieve_final)
        sock.sendall(b'AUTHENTICATE "PLAIN" "' + ir + b'"\r\n')
        ok = _read_until(sock, _sieve_final).startswith(b"OK")
        sock.sendall(b"LOGOUT\r\n")
        _read_until(sock, _sieve_final)
    return ok


def submission_login(address: str, port: int) -> bool:
    ir = base64.b64encode(b"\0subm-user\0bobpw")
    with socket.create_connection((address, port), 20) as sock:
        _read_until(sock, _smtp_final)
        sock.sendall(b"EHLO bench.example\r\n")
        _read_until(sock, _smtp_final)
        sock.sendall(b"AUTH PLAIN " + ir + b"\r\n")
        ok = _read_until(sock, _smtp_final).startswith(b"235")
        sock.sendall(b"QUIT\r\n")
        _read_until(sock, _smtp_final)
    return ok


def run(login: Callable[[str, int], bool], address: str, port: int, root: int) -> tuple[float, float, int]:
    for _ in range(3):
        login(address, port)  # warm up
    errors: list[str] = []

    def worker(count: int) -> None:
        for _ in range(count):
            try:
                if not login(address, port):
                    errors.append("refused")
            except OSError as exc:
                errors.append(repr(exc))

    per_client = LOGINS // CLIENTS
    cpu0, t0 = tree_cpu(root), time.monotonic()
    threads = [threading.Thread(target=worker, args=(per_client,)) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.monotonic() - t0, tree_cpu(root) - cpu0
    logins = per_client * CLIENTS
    return logins / elapsed, 1000 * cpu / logins, len(errors)


DOVECOT_PROXY = """\
protocols = imap pop3 sieve submission
hostname = proxy.test
service managesieve-login {{
  inet_listener sieve {{
    address = {address}
    port = {sieve}
  }}
}}
service submission-login {{
  inet_listener submission {{
    address = {address}
    port = {submission}
  }}
}}
passdb {{
  driver = passwd-file
  args = {users}
}}
"""


def main() -> None:
    ca = trustme.CA()
    factory = DovecotFactory(ca)
    workdir = Path(tempfile.mkdtemp(prefix="proxyd-bench-logins-"))
    workdir.chmod(0o755)
    runner = ProxydRunner(workdir, issue_tls_files(ca, workdir / "tls", "127.0.0.1", "localhost"))
    try:
        backend = start_sieve_submission_backend(factory, "bench-backend", "127.0.0.2")
        entries = [
            PasswdEntry("sieve-user", "{PLAIN}alicepw",
                        proxy_fields(backend.address, backend.sieve_port, destuser="alice")),
            PasswdEntry("subm-user", "{PLAIN}bobpw",
                        proxy_fields(backend.address, backend.submission_port, destuser="bob")),
        ]
        users = write_passwd_file(workdir / "users", entries)
        config = runner.config(users, imaps=False, protocols="sieve submission", hostname="proxy.test")
        sieve_port, submission_port = free_ports("127.0.0.1", 2)
        config.listeners = [
            Listener("managesieve-login", "sieve", "127.0.0.1", sieve_port),
            Listener("submission-login", "submission", "127.0.0.1", submission_port),
        ]
        proxyd = runner.start(config)
        users.chmod(0o644)
        d_sieve, d_submission = free_ports("127.0.0.7", 2)
        dovecot = factory.start("bench-dovecot-proxy", "127.0.0.7", extra_config=DOVECOT_PROXY.format(
            address="127.0.0.7", sieve=d_sieve, submission=d_submission, users=users))
        wait_until(lambda: port_accepts("127.0.0.7", d_submission), timeout=30, what="Dovecot's proxy")
        rows = []
        for protocol, login, (p_port, d_port) in (
            ("ManageSieve", sieve_login, (sieve_port, d_sieve)),
            ("Submission", submission_login, (submission_port, d_submission)),
        ):
            rows.append((protocol, "proxyd", *run(login, "127.0.0.1", p_port, proxyd.pid)))
            rows.append((protocol, "Dovecot 2.3 proxy", *run(login, "127.0.0.7", d_port, dovecot.process.pid)))
        print(f"{LOGINS} logins per protocol and target, {CLIENTS} parallel clients")
        print("| protocol | target | logins/s | CPU ms per login | errors |")
        print("|---|---|---|---|---|")
        for protocol, target, rate, cpu, errors in rows:
            print(f"| {protocol} | {target} | {rate:.0f} | {cpu:.2f} | {errors} |")
    finally:
        runner.close()
        factory.close()


if __name__ == "__main__":
    main()
