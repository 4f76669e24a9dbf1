"""Logins per second through proxyd with each passdb driver, the auth cache off and on.

    /tmp/venv/bin/python bench/bench_passdb.py [--rounds 3] [--seconds 6] [--clients 8] [--users 200]

Runs as root on the test machine (it uses the test fixtures' private
PostgreSQL, MariaDB and slapd servers on loopback, from the Debian packages)
and the shared rig's load generator (``../shared/bench/setup.sh`` builds it into
``/tmp/bench-run/bin/loadgen``; ``LOADGEN=`` overrides the path).

Every login is a full proxied IMAP login: connect to proxyd, greeting, ``LOGIN
userNNNN benchpw``, passdb lookup and password check, login to the backend,
``LOGOUT`` relayed.  The backend is a minimal IMAP server in a process of its
own (this script with ``--backend``), the same for every run, so that the
differences come from the passdbs and not from Dovecot's per-login imap
processes.  Passwords are ``{SSHA}`` everywhere (cheap to verify), so the
hash does not hide the lookup either; ``ldap-bind`` checks them by binding.

proxyd runs in Dovecot's high-performance mode (``service_count = 0``, two
login processes) with the passdb in its auth process.  Bounded: each of the
10 cells runs ``--rounds`` times for ``--seconds`` (interleaved; medians are
reported); the load generator has its own wall-clock limit.
Results: a Markdown table on stdout and in ``bench/RESULTS-passdb.md``
(``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BACKEND_BANNER = b"* OK [CAPABILITY IMAP4rev1 LITERAL+] bench backend ready.\r\n"


# -- the backend ------------------------------------------------------------------


def run_backend(port: int) -> None:
    """A tiny IMAP server: accepts any LOGIN, answers CAPABILITY/NOOP/LOGOUT."""
    import trio

    async def session(stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            await stream.send_all(BACKEND_BANNER)
            while True:
                while b"\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                line, buffer = buffer.split(b"\n", 1)
                tag, _, rest = line.rstrip(b"\r").partition(b" ")
                command = rest.split(b" ", 1)[0].upper()
                if command == b"LOGIN":
                    reply = tag + b" OK [CAPABILITY IMAP4rev1 LITERAL+] Logged in\r\n"
                elif command == b"CAPABILITY":
                    reply = b"* CAPABILITY IMAP4rev1 LITERAL+\r\n" + tag + b" OK done\r\n"
                elif command == b"LOGOUT":
                    await stream.send_all(
                        b"* BYE Logging out\r\n" + tag + b" OK Logout completed.\r\n"
                    )
                    return
                elif command == b"NOOP":
                    reply = tag + b" OK NOOP completed.\r\n"
                else:
                    reply = tag + b" BAD Error in IMAP command\r\n"
                await stream.send_all(reply)
        except trio.BrokenResourceError:
            return
        finally:
            await trio.aclose_forcefully(stream)

    async def main() -> None:
        await trio.serve_tcp(session, port, host="127.0.0.1")

    trio.run(main)


# -- the servers and passdbs --------------------------------------------------------


@dataclass
class Case:
    name: str
    #: the passdb block's lines
    passdb: dict[str, str]


def build_cases(work: Path, users: int, backend_port: int) -> tuple[list[Case], list[object]]:
    from proxyd.auth.schemes import hash_password
    from tests.fixtures.mariadb import MariadbFactory
    from tests.fixtures.postgres import PostgresFactory
    from tests.fixtures.slapd import PEOPLE, SERVICE_DN, SERVICE_PASSWORD, SlapdFactory

    names = [f"user{i:04d}" for i in range(1, users + 1)]
    hashes = {name: hash_password("benchpw", "SSHA") for name in names}

    passwd = work / "users"
    passwd.write_text(
        "".join(f"{n}:{hashes[n]}::::::proxy=y host=127.0.0.1 port={backend_port}\n" for n in names)
    )
    rows = ", ".join(f"('{n}', '{hashes[n]}', '127.0.0.1', {backend_port})" for n in names)
    insert = f"INSERT INTO proxy_accounts (username, password, host, port) VALUES {rows}"  # noqa: S608 - generated names
    query = "SELECT password, host, port, 'Y' AS proxy FROM proxy_accounts WHERE username = '%u'"

    print("starting PostgreSQL, MariaDB and slapd ...", file=sys.stderr)
    factories: list[object] = []
    pg_factory = PostgresFactory()
    factories.append(pg_factory)
    pg = pg_factory.create()
    pg.sql(insert)
    my_factory = MariadbFactory()
    factories.append(my_factory)
    my = my_factory.create()
    my.sql(insert)
    ldap_factory = SlapdFactory()
    factories.append(ldap_factory)
    ldap = ldap_factory.create()
    ldif_users = "".join(
        f"dn: uid={n},{PEOPLE}\nobjectClass: top\nobjectClass: inetOrgPerson\n"
        f"objectClass: proxyUser\nuid: {n}\ncn: {n}\nsn: {n}\nuserPassword: {hashes[n]}\n"
        f"proxyMailHost: 127.0.0.1\nproxyMailPort: {backend_port}\n\n"
        for n in names
    )
    ldap.add_ldif(ldif_users)

    def sql_conf(driver: str, connect: str) -> str:
        path = work / f"dovecot-sql-{driver}.conf.ext"
        path.write_text(
            f"driver = {driver}\nconnect = {connect}\ndefault_pass_scheme = SSHA\n"
            f"password_query = {query}\n"
        )
        return str(path)

    def ldap_conf(name: str, *extra: str) -> str:
        path = work / f"dovecot-ldap-{name}.conf.ext"
        path.write_text(
            "\n".join(
                [
                    f"uris = {ldap.uri}",
                    f"dn = {SERVICE_DN}",
                    f"dnpass = {SERVICE_PASSWORD}",
                    f"base = {PEOPLE}",
                    "pass_filter = (&(objectClass=inetOrgPerson)(uid=%u))",
                    "pass_attrs = userPassword=password, =proxy=y, "
                    "proxyMailHost=host, proxyMailPort=port",
                    "default_pass_scheme = SSHA",
                    *extra,
                ]
            )
            + "\n"
        )
        return str(path)

    cases = [
        Case("passwd-file", {"driver": "passwd-file", "args": str(passwd)}),
        Case("pgsql", {"driver": "sql", "args": sql_conf("pgsql", pg.connect_string())}),
        Case("mysql", {"driver": "sql", "args": sql_conf("mysql", my.connect_string())}),
        Case("ldap", {"driver": "ldap", "args": ldap_conf("search")}),
        Case("ldap-bind", {"driver": "ldap", "args": ldap_conf("bind", "auth_bind = yes")}),
    ]
    return cases, factories


# -- proxyd ----------------------------------------------------------------------------


def proxyd_config(work: Path, port: int, case: Case, cache: bool) -> Path:
    from tests.fixtures.tls import issue_tls_files

    tls = getattr(proxyd_config, "tls", None)
    if tls is None:
        import trustme

        tls = issue_tls_files(trustme.CA(), work / "tls", "127.0.0.1")
        proxyd_config.tls = tls  # type: ignore[attr-defined]
    lines = [
        "protocols = imap",
        "listen = 127.0.0.1",
        f"base_dir = {work / ('run-' + case.name + ('-cache' if cache else ''))}",
        "default_internal_user = root",
        "ssl = yes",
        f"ssl_cert = <{tls.cert_pem}",
        f"ssl_key = <{tls.key_pem}",
        "disable_plaintext_auth = no",
        "auth_failure_delay = 0",
        f"auth_cache_size = {'10M' if cache else '0'}",
        "service imap-login {",
        "  service_count = 0",
        "  process_min_avail = 2",
        "  inet_listener imap {",
        "    address = 127.0.0.1",
        f"    port = {port}",
        "  }",
        "  inet_listener imaps {",
        "    port = 0",
        "  }",
        "}",
        "passdb {",
        *[f"  {key} = {value}" for key, value in case.passdb.items()],
        "}",
    ]
    path = work / f"proxyd-{case.name}-{'cache' if cache else 'nocache'}.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_port(port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not ready")


def run_case(
    work: Path, loadgen: str, case: Case, cache: bool, args: argparse.Namespace
) -> dict[str, str]:
    from tests.fixtures.net import free_port

    port = free_port("127.0.0.1")
    config = proxyd_config(work, port, case, cache)
    log = config.with_suffix(".log")
    with log.open("wb") as out:
        proxyd = subprocess.Popen(
            [str(Path(sys.executable).parent / "proxyd"), "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_port(port)
        time.sleep(1.0)  # let process_min_avail login processes come up
        # warm-up: connections, caches (with the cache on, every user once)
        subprocess.run(
            [loadgen, "-mode", "login", "-addr", f"127.0.0.1:{port}", "-c", "4", "-d", "2s",
             "-users", str(args.users), "-max-wall", "60s"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        result = subprocess.run(
            [loadgen, "-mode", "login", "-addr", f"127.0.0.1:{port}", "-c", str(args.clients),
             "-d", f"{args.seconds}s", "-users", str(args.users), "-roots", str(proxyd.pid),
             "-label", f"{case.name}/{'cache' if cache else 'nocache'}", "-max-wall", "120s"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    finally:
        proxyd.send_signal(signal.SIGTERM)
        try:
            proxyd.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proxyd.pid, signal.SIGKILL)
            proxyd.wait()
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("mode=login")), "")
    if not line:
        raise RuntimeError(
            f"loadgen failed: {result.stdout}\n{result.stderr}\n{log.read_text()[-2000:]}"
        )
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=6, help="length of each measured run")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--users", type=int, default=200, help="distinct users")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--out", default=str(REPO / "bench" / "RESULTS-passdb.md"))
    parser.add_argument("--backend", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend:
        run_backend(args.backend)
        return 0
    if not (
        1 <= args.seconds <= 60
        and 1 <= args.clients <= 64
        and 1 <= args.users <= 2000
        and 1 <= args.rounds <= 5
    ):
        parser.error("bounded: 1-60 s, 1-64 clients, 1-2000 users, 1-5 rounds")
    loadgen = os.environ.get("LOADGEN", "/tmp/bench-run/bin/loadgen")  # noqa: S108 - the rig's path
    if not os.access(loadgen, os.X_OK):
        parser.error(f"no load generator at {loadgen}: run ../shared/bench/setup.sh or set LOADGEN")

    from tests.fixtures.net import free_port

    work = Path(tempfile.mkdtemp(prefix="proxyd-bench-passdb-"))
    backend_port = free_port("127.0.0.1")
    backend = subprocess.Popen(
        [sys.executable, __file__, "--backend", str(backend_port)], start_new_session=True
    )
    factories: list[object] = []
    runs: dict[tuple[str, str], list[dict[str, str]]] = {}
    loads: list[float] = []
    try:
        wait_port(backend_port)
        cases, factories = build_cases(work, args.users, backend_port)
        # rounds interleave the cells, so that a burst of load elsewhere on the
        # machine hits one run of each cell rather than every run of one cell
        for round_number in range(1, args.rounds + 1):
            for case in cases:
                for cache in (False, True):
                    label = "on" if cache else "off"
                    print(f"round {round_number}: {case.name} cache={label} ...", file=sys.stderr)
                    loads.append(os.getloadavg()[0])
                    result = run_case(work, loadgen, case, cache, args)
                    runs.setdefault((case.name, label), []).append(result)
    finally:
        backend.send_signal(signal.SIGTERM)
        backend.wait(timeout=10)
        for factory in factories:
            factory.close()  # type: ignore[attr-defined]

    def median(key: tuple[str, str], field: str) -> float:
        return statistics.median(float(r[field]) for r in runs[key])

    table = [
        "| passdb | auth cache | logins/s (median) | min..max | vs passwd-file | p50 ms | p99 ms "
        "| proxyd CPU ms/login | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, cache), results in runs.items():
        rates = [float(r["rate"]) for r in results]
        rate = statistics.median(rates)
        base = median(("passwd-file", "off"), "rate")
        errors = sum(int(r["errors"]) for r in results)
        table.append(
            f"| {name} | {cache} | {rate:.0f} | {min(rates):.0f}..{max(rates):.0f} "
            f"| {rate / base:.2f} | {median((name, cache), 'p50_ms'):.1f} "
            f"| {median((name, cache), 'p99_ms'):.1f} "
            f"| {median((name, cache), 'cpu_ms_per_login'):.2f} | {errors} |"
        )
    head = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    report = "\n".join(
        [
            "# Passdb benchmark: proxied IMAP logins per second",
            "",
            f"`bench/bench_passdb.py --rounds {args.rounds} --seconds {args.seconds} "
            f"--clients {args.clients} --users {args.users}`, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()} "
            f"({os.cpu_count()} cores, shared with other work: 1-minute load average "
            f"{min(loads):.1f}..{max(loads):.1f} at the starts of the runs), "
            f"code of `{head}` plus the working tree.",
            "",
            "One login = connect, greeting, `LOGIN`, passdb lookup and `{SSHA}` password check, "
            "login to a minimal IMAP backend (the same for every row), `LOGOUT`; the shared "
            "rig's load generator (`loadgen -mode login`) runs each cell for the given seconds, "
            "after a 2 s warm-up (with the cache on, the warm-up has seen every user). proxyd "
            "runs in high-performance mode (`service_count = 0`, 2 login processes, one auth "
            "process with the passdb). CPU is proxyd's process tree (master, login and auth "
            "processes), not the database servers'. `ldap` reads `userPassword`; `ldap-bind` "
            "checks the password with a bind (`auth_bind = yes`). passwd-file has no cache key, "
            "so its two rows are the same configuration: their difference shows the noise.",
            "",
            *table,
            "",
        ]
    )
    Path(args.out).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
