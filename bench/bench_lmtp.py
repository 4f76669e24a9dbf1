"""LMTP deliveries/s and CPU per delivery: proxyd's LMTP proxy beside Dovecot's own.

Both proxies run from the same passwd-file in front of the same Dovecot LMTP
backend (127.0.0.2); smtplib.LMTP clients deliver ``MESSAGES`` messages, each
to two recipients on that backend, over ``CLIENTS`` parallel connections (a
fresh connection per message, as an MTA's LMTP client mostly does).  CPU is
the user+system time of every process of the proxy's tree (master, auth,
lmtp processes) before and after, read from /proc.

    PYTHONPATH=. .venv/bin/python bench/bench_lmtp.py      # as root; ~1 min

Bounded: at most MESSAGES messages per target; all traffic on 127.0.0.0/8.
"""

from __future__ import annotations

import os
import smtplib
import sys
import tempfile
import threading
import time
from pathlib import Path

import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.dovecot import DovecotFactory, start_lmtp_backend
from tests.fixtures.net import free_port, port_accepts, wait_until
from tests.fixtures.proxyd import (
    Listener,
    PasswdEntry,
    ProxydRunner,
    proxy_fields,
    write_passwd_file,
)
from tests.fixtures.tls import issue_tls_files

MESSAGES = int(os.environ.get("MESSAGES", "400"))
CLIENTS = int(os.environ.get("CLIENTS", "4"))
RECIPIENTS = ("alice@example.org", "bob@example.org")
BODY = b"From: bench@example.net\r\nSubject: bench\r\n\r\n" + b"x" * 70 + b"\r\n" * 40


def tree_cpu(root: int) -> dict[str, float]:
    """User+system seconds of ``root`` and its live descendants, by process title."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            data = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2 :].split()
        pid = int(entry)
        stats[pid] = fields
        children.setdefault(int(fields[1]), []).append(pid)
    totals: dict[str, float] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                title = "?"
            title = title.split(" -c ")[0].rsplit("/", 1)[-1]
            totals[title] = totals.get(title, 0.0) + (int(stats[pid][11]) + int(stats[pid][12])) / ticks
        todo.extend(children.get(pid, []))
    return totals


def deliver(port: int, address: str, count: int, errors: list[str]) -> None:
    """``count`` messages, one connection each; LMTP answers DATA once per recipient."""
    stuffed = BODY.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    for _ in range(count):
        try:
            with smtplib.LMTP(address, port, timeout=30) as client:
                client.ehlo_or_helo_if_needed()
                client.mail("bench@example.net")
                errors.extend(f"RCPT {rcpt} refused" for rcpt in RECIPIENTS if client.rcpt(rcpt)[0] != 250)
                if client.docmd("DATA")[0] != 354:
                    errors.append("DATA refused")
                    continue
                client.send(stuffed)
                for rcpt in RECIPIENTS:
                    code, text = client.getreply()
                    if code != 250:
                        errors.append(f"{rcpt}: {code} {text!r}")
        except (OSError, smtplib.SMTPException) as exc:
            errors.append(repr(exc))


def run(name: str, address: str, port: int, root_pid: int) -> dict[str, float]:
    deliver(port, address, 5, [])  # warm up: processes forked, caches filled
    errors: list[str] = []
    cpu0, t0 = tree_cpu(root_pid), time.monotonic()
    threads = [threading.Thread(target=deliver, args=(port, address, MESSAGES // CLIENTS, errors))
               for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed, cpu1 = time.monotonic() - t0, tree_cpu(root_pid)
    deliveries = (MESSAGES // CLIENTS) * CLIENTS * len(RECIPIENTS)
    by_title = {t: (cpu1[t] - cpu0.get(t, 0.0)) * 1000 / deliveries for t in cpu1}
    cpu = sum(cpu1.values()) - sum(cpu0.values())
    print(f"{name}: CPU ms per delivery by process: "
          + ", ".join(f"{t} {v:.2f}" for t, v in sorted(by_title.items(), key=lambda kv: -kv[1]) if v >= 0.01))
    if errors:
        print(f"{name}: {len(errors)} errors, first: {errors[0]}", file=sys.stderr)
    return {"deliveries/s": deliveries / elapsed, "cpu_ms/delivery": 1000 * cpu / deliveries,
            "errors": float(len(errors))}


DOVECOT_PROXY = """\
protocols = imap pop3 lmtp
lmtp_proxy = yes
hostname = proxy.test
login_trusted_networks = 127.0.0.0/8
service lmtp {{
  inet_listener lmtp {{
    address = {address}
    port = {port}
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
    workdir = Path(tempfile.mkdtemp(prefix="proxyd-bench-lmtp-"))
    workdir.chmod(0o755)
    runner = ProxydRunner(workdir, issue_tls_files(ca, workdir / "tls", "127.0.0.1", "localhost"))
    try:
        backend = start_lmtp_backend(factory, "bench-backend", "127.0.0.2")
        entries = [PasswdEntry(user, "", proxy_fields(backend.address, backend.lmtp_port)) for user in RECIPIENTS]
        users = write_passwd_file(workdir / "users", entries)
        config = runner.config(users, protocols="imap lmtp", lmtp_proxy="yes", hostname="proxy.test")
        proxyd_port = free_port("127.0.0.1")
        config.listeners.append(Listener("lmtp", "lmtp", "127.0.0.1", proxyd_port))
        config.extra = "service lmtp {\n  client_limit = 1\n  process_min_avail = 4\n}\n"
        proxyd = runner.start(config)
        users.chmod(0o644)
        dovecot_port = free_port("127.0.0.7")
        dovecot = factory.start("bench-dovecot-proxy", "127.0.0.7", extra_config=DOVECOT_PROXY.format(
            address="127.0.0.7", port=dovecot_port, users=users))
        wait_until(lambda: port_accepts("127.0.0.7", dovecot_port), timeout=30, what="Dovecot's LMTP proxy")
        results = {
            "proxyd": run("proxyd", "127.0.0.1", proxyd_port, proxyd.pid),
            "dovecot": run("dovecot", "127.0.0.7", dovecot_port, dovecot.process.pid),
        }
        print(f"{MESSAGES} messages x {len(RECIPIENTS)} recipients, {CLIENTS} parallel MTA connections")
        print("| target | deliveries/s | CPU ms per delivery | errors |")
        print("|---|---|---|---|")
        for name, row in results.items():
            print(f"| {name} | {row['deliveries/s']:.0f} | {row['cpu_ms/delivery']:.2f} | {row['errors']:.0f} |")
    finally:
        runner.close()
        factory.close()


if __name__ == "__main__":
    main()
