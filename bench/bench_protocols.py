"""ManageSieve and Submission logins/s and LMTP deliveries/s, proxyd against Dovecot's own proxy, in one run.

One Dovecot 2.3 backend with Pigeonhole's ManageSieve and Dovecot's
Submission (127.0.0.2), one with LMTP (127.0.0.3); proxyd (``protocols =
sieve submission lmtp``, its default high-security login processes and
``service lmtp { process_min_avail = 4 }``) and Dovecot as a proxy (127.0.0.7,
its default services, ``lmtp_proxy = yes``) from the same passwd-file.  For
each protocol the two proxies are measured back to back (``ROUNDS`` rounds,
the order swapped every round; the median is reported), with the clients of
protoclients.py (fresh connection, greeting, AUTH PLAIN, LOGOUT/QUIT; a fresh
LMTP connection per message, two recipients).  CPU per
operation is user+system time of each proxy's process tree, reaped children
included.  Printed: both proxies' figures and the ratios proxyd/Dovecot, which
compare within one run on a shared machine where absolute numbers do not.

    bench/run-protocols.sh       # as root; ~2 min with the defaults

Bounded: LOGINS logins per protocol, MESSAGES messages, per target and round;
all traffic on 127.0.0.0/8.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.protoclients import RECIPIENTS, deliver, sieve_login, submission_login, tree_cpu
from tests.fixtures.dovecot import (
    DovecotFactory,
    start_lmtp_backend,
    start_sieve_submission_backend,
)
from tests.fixtures.net import free_ports, port_accepts, wait_until
from tests.fixtures.proxyd import (
    Listener,
    PasswdEntry,
    ProxydRunner,
    proxy_fields,
    write_passwd_file,
)
from tests.fixtures.tls import issue_tls_files

LOGINS = int(os.environ.get("LOGINS", "200"))
MESSAGES = int(os.environ.get("MESSAGES", "200"))
CLIENTS = int(os.environ.get("CLIENTS", "4"))
ROUNDS = int(os.environ.get("ROUNDS", "1"))

DOVECOT_PROXY = """\
protocols = imap pop3 sieve submission lmtp
lmtp_proxy = yes
hostname = proxy.test
login_trusted_networks = 127.0.0.0/8
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
service lmtp {{
  inet_listener lmtp {{
    address = {address}
    port = {lmtp}
  }}
}}
passdb {{
  driver = passwd-file
  args = {users}
}}
"""

#: (ops done, seconds, CPU seconds of the tree, errors)
Sample = tuple[int, float, float, int]


def measure(work: Callable[[int, list[str]], None], total: int, root: int) -> Sample:
    """``total`` operations over CLIENTS threads; ``work(count, errors)`` does ``count`` of them."""
    work(3, [])  # warm up: processes forked, caches filled
    errors: list[str] = []
    per_client = total // CLIENTS
    cpu0, t0 = tree_cpu(root), time.monotonic()
    threads = [threading.Thread(target=work, args=(per_client, errors)) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.monotonic() - t0, tree_cpu(root) - cpu0
    if errors:
        print(f"  {len(errors)} errors, first: {errors[0]}", file=sys.stderr)
    return per_client * CLIENTS, elapsed, cpu, len(errors)


def logins(login: Callable[[str, int], bool], address: str, port: int) -> Callable[[int, list[str]], None]:
    def work(count: int, errors: list[str]) -> None:
        for _ in range(count):
            try:
                if not login(address, port):
                    errors.append("refused")
            except OSError as exc:
                errors.append(repr(exc))

    return work


def deliveries(address: str, port: int) -> Callable[[int, list[str]], None]:
    def work(count: int, errors: list[str]) -> None:
        deliver(port, address, count, errors)

    return work


def main() -> None:
    ca = trustme.CA()
    factory = DovecotFactory(ca)
    workdir = Path(tempfile.mkdtemp(prefix="proxyd-bench-protocols-"))
    workdir.chmod(0o755)
    runner = ProxydRunner(workdir, issue_tls_files(ca, workdir / "tls", "127.0.0.1", "localhost"))
    try:
        mail = start_sieve_submission_backend(factory, "bench-mail", "127.0.0.2")
        lmtp = start_lmtp_backend(factory, "bench-lmtp", "127.0.0.3")
        entries = [
            PasswdEntry("sieve-user", "{PLAIN}alicepw", proxy_fields(mail.address, mail.sieve_port, destuser="alice")),
            PasswdEntry("subm-user", "{PLAIN}bobpw", proxy_fields(mail.address, mail.submission_port, destuser="bob")),
            *(PasswdEntry(rcpt, "", proxy_fields(lmtp.address, lmtp.lmtp_port)) for rcpt in RECIPIENTS),
        ]
        users = write_passwd_file(workdir / "users", entries)
        config = runner.config(
            users, imaps=False, protocols="sieve submission lmtp", lmtp_proxy="yes", hostname="proxy.test"
        )
        p_sieve, p_submission, p_lmtp = free_ports("127.0.0.1", 3)
        config.listeners = [
            Listener("managesieve-login", "sieve", "127.0.0.1", p_sieve),
            Listener("submission-login", "submission", "127.0.0.1", p_submission),
            Listener("lmtp", "lmtp", "127.0.0.1", p_lmtp),
        ]
        config.extra = "service lmtp {\n  process_min_avail = 4\n}\n"
        proxyd = runner.start(config)
        users.chmod(0o644)
        d_sieve, d_submission, d_lmtp = free_ports("127.0.0.7", 3)
        dovecot = factory.start("bench-dovecot-proxy", "127.0.0.7", extra_config=DOVECOT_PROXY.format(
            address="127.0.0.7", sieve=d_sieve, submission=d_submission, lmtp=d_lmtp, users=users))
        wait_until(lambda: all(port_accepts("127.0.0.7", p) for p in (d_sieve, d_submission, d_lmtp)),
                   timeout=30, what="Dovecot's proxy")
        targets = {"proxyd": ("127.0.0.1", proxyd.pid), "Dovecot": ("127.0.0.7", dovecot.process.pid)}
        cases: list[tuple[str, str, int, dict[str, Callable[[int, list[str]], None]]]] = [
            ("ManageSieve", "logins", LOGINS, {
                "proxyd": logins(sieve_login, "127.0.0.1", p_sieve),
                "Dovecot": logins(sieve_login, "127.0.0.7", d_sieve)}),
            ("Submission", "logins", LOGINS, {
                "proxyd": logins(submission_login, "127.0.0.1", p_submission),
                "Dovecot": logins(submission_login, "127.0.0.7", d_submission)}),
            ("LMTP", "deliveries", MESSAGES, {
                "proxyd": deliveries("127.0.0.1", p_lmtp),
                "Dovecot": deliveries("127.0.0.7", d_lmtp)}),
        ]
        rates: dict[tuple[str, str], list[float]] = {}
        cpus: dict[tuple[str, str], list[float]] = {}
        failed: dict[tuple[str, str], int] = {}
        for round_ in range(ROUNDS):
            order = ["proxyd", "Dovecot"] if round_ % 2 == 0 else ["Dovecot", "proxyd"]
            for protocol, _unit, total, work in cases:
                for target in order:
                    print(f"round {round_ + 1}: {protocol} through {target}", file=sys.stderr)
                    done, elapsed, cpu, errors = measure(work[target], total, targets[target][1])
                    # an LMTP message is one delivery per recipient
                    ops = done * (len(RECIPIENTS) if protocol == "LMTP" else 1)
                    rates.setdefault((protocol, target), []).append(ops / elapsed)
                    cpus.setdefault((protocol, target), []).append(1000 * cpu / ops)
                    failed[(protocol, target)] = failed.get((protocol, target), 0) + errors
        print(f"{LOGINS} logins per protocol, {MESSAGES} messages x {len(RECIPIENTS)} recipients, "
              f"{CLIENTS} parallel clients, per target and round; {ROUNDS} round(s), medians")
        print("| protocol | operation | proxyd ops/s | Dovecot ops/s | ratio | proxyd CPU ms/op "
              "| Dovecot CPU ms/op | ratio | errors |")
        print("|---|---|---|---|---|---|---|---|---|")
        for protocol, unit, _total, _work in cases:
            p_rate, d_rate = (statistics.median(rates[(protocol, t)]) for t in ("proxyd", "Dovecot"))
            p_cpu, d_cpu = (statistics.median(cpus[(protocol, t)]) for t in ("proxyd", "Dovecot"))
            errors = failed[(protocol, "proxyd")] + failed[(protocol, "Dovecot")]
            cpu_ratio = f"{p_cpu / d_cpu:.2f}" if d_cpu else "n/a"  # under one clock tick
            print(f"| {protocol} | {unit} | {p_rate:.0f} | {d_rate:.0f} | {p_rate / d_rate:.2f} "
                  f"| {p_cpu:.2f} | {d_cpu:.2f} | {cpu_ratio} | {errors} |")
    finally:
        runner.close()
        factory.close()


if __name__ == "__main__":
    main()
