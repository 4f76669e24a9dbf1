"""The service model with real processes: process counts, limits, privileges, admin commands.

Every test runs the real ``proxyd -c FILE`` (master, zygote, auth and login
processes) in front of a real Dovecot backend, and inspects the process tree
through /proc.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxyd.master.main import RELAY_PROCESSES
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import client_address, wait_until
from tests.fixtures.proxyd import ProxydConfig, ProxydProcess, ProxydRunner, readable_by_auth
from tests.helpers.clients import RawImapClient

pytestmark = [pytest.mark.e2e, pytest.mark.proxyd_only]


@dataclass(frozen=True)
class Proc:
    pid: int
    title: str
    uid: int
    root: str

    def limits(self) -> str:
        return Path(f"/proc/{self.pid}/limits").read_text()


def children(master: ProxydProcess, title: str) -> list[Proc]:
    """The master's processes (its zygote, and the zygote's children) titled ``title``."""
    parents = {master.pid} | {p.pid for p in _processes(master.pid, "proxyd: zygote")}
    return [p for parent in sorted(parents) for p in _processes(parent, title)]


def _processes(parent: int, title: str) -> list[Proc]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            root = os.readlink(f"/proc/{entry}/root")
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if int(fields["PPid"]) == parent and cmdline == title:
            found.append(Proc(int(entry), cmdline, int(fields["Uid"].split()[0]), root))
    return found


def static_config(proxyd: ProxydRunner, backend: DovecotBackend, **service: str) -> ProxydConfig:
    """Everyone is proxied to ``backend`` with the password they typed (no files to read)."""
    config = proxyd.config(None, imaps=False)
    config.passdbs.append(
        {"driver": "static", "args": f"nopassword=y proxy=y host={backend.address} port={backend.imap_port}"}
    )
    if service:
        body = "\n".join(f"  {key} = {value}" for key, value in service.items())
        config.extra = f"service imap-login {{\n{body}\n}}"
    return config


def wait_count(master: ProxydProcess, title: str, count: int) -> list[Proc]:
    """Wait until exactly ``count`` such children exist (and stay so for a moment)."""
    seen: list[list[Proc]] = []

    def settled() -> bool:
        seen.append(children(master, title))
        return len(seen) >= 3 and all(len(s) == count for s in seen[-3:])

    wait_until(settled, timeout=10, what=f"{count} x {title}",
               diagnostics=lambda: f"{children(master, title)}\n{master.log_text()}")
    return seen[-1]


def test_high_security_mode_one_process_per_connection_with_privileges_dropped(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    """service_count = 1 (the default): each client gets its own login process, which runs
    as the login user, chrooted, with vsz_limit; auth runs as default_internal_user.
    process_min_avail = 1 keeps one spare forked ahead."""
    config = static_config(proxyd, backend_a, vsz_limit="200M", process_min_avail="1")
    master = proxyd.start(config)
    [spare] = wait_count(master, "proxyd: imap-login", 1)
    dovecot_uid = pwd.getpwnam("dovecot").pw_uid
    # the auth process drops privileges once its passdbs are open
    wait_until(
        lambda: [p.uid for p in children(master, "proxyd: auth")] == [dovecot_uid],
        timeout=10,
        what="the auth process running as dovecot",
    )
    [auth] = children(master, "proxyd: auth")
    assert spare.uid == pwd.getpwnam("dovenull").pw_uid
    assert spare.root == str(Path(config.settings["base_dir"] or "") / "login")
    assert "Max address space         209715200" in spare.limits()
    assert auth.root == "/"

    clients = [RawImapClient(master.address(), master.port(), source_ip=client_address(40 + i)) for i in range(3)]
    try:
        procs = wait_count(master, "proxyd: imap-login", 4)  # three busy ones and one spare
        assert len({p.pid for p in procs}) == 4
        assert clients[0].command("LOGIN alice alicepw").status == "OK"
        assert clients[0].command("NOOP").status == "OK"
    finally:
        for client in clients:
            client.close()
    wait_count(master, "proxyd: imap-login", 1)  # finished processes exit


def test_high_performance_mode_spreads_clients_over_few_processes(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    """service_count = 0: process_min_avail processes serve many clients each; more
    processes come only when the others are full (client_limit)."""
    master = proxyd.start(static_config(proxyd, backend_a, service_count="0", process_min_avail="2", client_limit="4"))
    wait_count(master, "proxyd: imap-login", 2)
    clients = [RawImapClient(master.address(), master.port(), source_ip=client_address(50)) for _ in range(10)]
    try:
        for client in clients:
            assert client.greeting.startswith("* OK ")
        procs = children(master, "proxyd: imap-login")
        assert 3 <= len(procs) <= 5  # 10 clients at 4 per process, plus one available
        assert clients[-1].command("LOGIN alice alicepw").status == "OK"
    finally:
        for client in clients:
            client.close()


def test_process_limit_destroys_the_oldest_prelogin_client_never_a_proxied_one(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    """At process_limit the oldest client still logging in gets Dovecot's
    ``* BYE Connection queue full``; a proxied session is never chosen."""
    config = static_config(proxyd, backend_a, process_limit="3")
    # Dovecot's way: the proxied session keeps its login process (and its slot)
    config.set(proxyd_plaintext_handoff="no")
    master = proxyd.start(config)
    proxied = RawImapClient(master.address(), master.port(), source_ip=client_address(60))
    assert proxied.command("LOGIN alice alicepw").status == "OK"
    oldest = RawImapClient(master.address(), master.port(), source_ip=client_address(61))
    newer = RawImapClient(master.address(), master.port(), source_ip=client_address(62))
    try:
        wait_count(master, "proxyd: imap-login", 3)
        late = RawImapClient(master.address(), master.port(), source_ip=client_address(63))
        assert late.greeting.startswith("* OK ")
        assert oldest.read_until_closed() == ["* BYE Connection queue full"]
        assert newer.command("NOOP").status == "OK"
        assert proxied.command("NOOP").status == "OK"
        late.close()
    finally:
        for client in (proxied, oldest, newer):
            client.close()
    assert "process_limit (3) reached" in master.log_text()
    assert "Connection queue full" in master.log_text()


def test_high_performance_full_service_displaces_the_oldest_for_every_new_client(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    """service_count = 0 at process_limit with every process at client_limit: a burst of
    new clients is greeted at once, each displacing the oldest pre-login client in the
    process that took it (Dovecot's login processes in the "full" state), never a
    proxied session; nobody waits in the accept queue behind the burst."""
    config = static_config(
        proxyd, backend_a, service_count="0", client_limit="4", process_limit="2", process_min_avail="2"
    )
    config.set(proxyd_plaintext_handoff="no")
    master = proxyd.start(config)
    wait_count(master, "proxyd: imap-login", 2)
    source = client_address(64)
    proxied = RawImapClient(master.address(), master.port(), source_ip=source)
    assert proxied.command("LOGIN alice alicepw").status == "OK"
    idle = [RawImapClient(master.address(), master.port(), source_ip=source) for _ in range(7)]
    burst: list[RawImapClient] = []
    try:
        master.wait_for_log("process_limit \\(2\\) reached")
        for _ in range(14):  # twice the pre-login room, one after the other without a pause
            burst.append(RawImapClient(master.address(), master.port(), source_ip=source, timeout=2))
            assert burst[-1].greeting.startswith("* OK ")
        # the seven idle ones were the oldest: all displaced, with Dovecot's goodbye
        for client in idle:
            assert client.read_until_closed() == ["* BYE Connection queue full"]
        assert proxied.command("NOOP").status == "OK"
        assert burst[-1].command("LOGIN alice alicepw").status == "OK"
    finally:
        for client in (proxied, *idle, *burst):
            client.close()
    assert master.log_text().count("Disconnected: Connection queue full") >= 14


def test_high_security_full_service_displaces_the_oldest_for_every_new_client(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    """service_count = 1 at process_limit: each new client displaces the oldest pre-login
    one (the master knows which from the processes' reports, and forks the newcomer's
    process without waiting for the displaced one to exit); a proxied session in its
    login process is never chosen."""
    config = static_config(proxyd, backend_a, process_limit="4")
    config.set(proxyd_plaintext_handoff="no")  # the proxied session keeps its process and slot
    master = proxyd.start(config)
    source = client_address(65)
    proxied = RawImapClient(master.address(), master.port(), source_ip=source)
    assert proxied.command("LOGIN alice alicepw").status == "OK"
    idle = [RawImapClient(master.address(), master.port(), source_ip=source) for _ in range(3)]
    burst: list[RawImapClient] = []
    try:
        master.wait_for_log("process_limit \\(4\\) reached")
        for _ in range(6):  # twice the pre-login room, one after the other
            burst.append(RawImapClient(master.address(), master.port(), source_ip=source, timeout=5))
            assert burst[-1].greeting.startswith("* OK ")
        for client in (*idle, *burst[:3]):
            assert client.read_until_closed() == ["* BYE Connection queue full"]
        assert proxied.command("NOOP").status == "OK"
        for client in burst[3:]:
            assert client.command("NOOP").status == "OK"
        assert burst[-1].command("LOGIN alice alicepw").status == "OK"
    finally:
        for client in (proxied, *idle, *burst):
            client.close()


@pytest.mark.parametrize("mode", ["high-performance", "high-security"])
def test_prelogin_per_ip_limit_refuses_one_address_beyond_it(
    proxyd: ProxydRunner, backend_a: DovecotBackend, mode: str
) -> None:
    """proxyd_prelogin_per_ip_limit = 3: a fourth pre-login connection from one address
    is refused (over all login processes, and without displacing anyone), another
    address is not; a logged-in session no longer counts; the warning is logged once."""
    service = (
        {"service_count": "0", "client_limit": "10", "process_min_avail": "2"}
        if mode == "high-performance" else {}
    )
    config = static_config(proxyd, backend_a, **service)
    config.set(proxyd_prelogin_per_ip_limit="3")
    master = proxyd.start(config)
    greedy, other = client_address(70), client_address(71)
    first = [RawImapClient(master.address(), master.port(), source_ip=greedy) for _ in range(3)]
    late: list[RawImapClient] = []
    try:
        def refused() -> bool:
            client = RawImapClient(master.address(), master.port(), source_ip=greedy)
            late.append(client)
            if client.greeting.startswith("* OK"):
                client.close()  # the master's word was still on its way
                return False
            assert client.greeting == "* BYE Too many connections from your IP address."
            return True

        wait_until(refused, timeout=10, what="the fourth connection refused",
                   diagnostics=master.log_text)
        elsewhere = RawImapClient(master.address(), master.port(), source_ip=other)
        late.append(elsewhere)
        assert elsewhere.greeting.startswith("* OK")
        for client in first:
            assert client.command("NOOP").status == "OK"  # nobody was displaced
        # logged in, the first one stops counting: the address may connect again
        assert first[0].command("LOGIN alice alicepw").status == "OK"

        def accepted_again() -> bool:
            client = RawImapClient(master.address(), master.port(), source_ip=greedy)
            late.append(client)
            return client.greeting.startswith("* OK")

        wait_until(accepted_again, timeout=10, what="a new connection from the address",
                   diagnostics=master.log_text)
    finally:
        for client in (*first, *late):
            client.close()
    warnings = [line for line in master.log_text().splitlines() if "proxyd_prelogin_per_ip_limit" in line]
    assert len(warnings) == 1, warnings
    assert f"{greedy} has 3 pre-login connections" in warnings[0]


def test_high_security_plaintext_sessions_move_to_the_relay_process(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    """Once proxied, a plaintext session leaves its login process for the relay process
    (unprivileged, chrooted), which relays it, lists and kicks it; so proxied sessions do
    not hold process_limit's slots. A STARTTLS session keeps its login process."""
    config = static_config(proxyd, backend_a, process_limit="2", process_min_avail="1")
    master = proxyd.start(config)
    relays = wait_count(master, "proxyd: relay", RELAY_PROCESSES)
    assert {r.uid for r in relays} == {pwd.getpwnam("dovenull").pw_uid}
    assert {r.root for r in relays} == {str(Path(config.settings["base_dir"] or "") / "login")}
    relay_pids = {r.pid for r in relays}
    sessions: list[RawImapClient] = []
    tls = None
    try:
        for number in range(3):  # one after another: three pre-login clients would be too many
            client = RawImapClient(master.address(), master.port(), source_ip=client_address(80 + number))
            sessions.append(client)
            # a command pipelined behind LOGIN goes along with the hand-off
            client.send_raw(b"a LOGIN alice alicepw\r\nb SELECT INBOX\r\n")
            assert client.read_reply("a").status == "OK"
            assert client.read_reply("b").status == "OK"
            _wait_relayed_by(relay_pids, client, client_address(80 + number))
        wait_count(master, "proxyd: imap-login", 1)  # only the spare: 3 sessions, process_limit 2
        tls = RawImapClient(master.address(), master.port(), source_ip=client_address(84))
        assert tls.starttls(proxyd.tls.client_context()).status == "OK"
        assert tls.command("LOGIN bob bobpw").status == "OK"
        assert _owner_of_connection(client_address(84), tls._sock.getsockname()[1]) not in relay_pids
        wait_count(master, "proxyd: imap-login", 2)  # bob's, and a spare again

        who = proxyd.proxyctl("-c", str(master.config_path), "who").stdout
        assert sorted(line.split()[0] for line in who.splitlines()[1:]) == ["alice"] * 3 + ["bob"]
        assert sessions[0].command("NOOP").status == "OK"
        kick = proxyd.proxyctl("-c", str(master.config_path), "kick", "alice")
        assert kick.stdout.strip() == "3 connections kicked"
        for client in sessions:
            assert client.read_until_closed() == []
        assert tls.command("NOOP").status == "OK"
    finally:
        for client in sessions:
            client.close()
        if tls is not None:
            tls.close()
    master.wait_for_log(
        r"imap-login: Info: proxy\(alice,127\.[\d.]+:\d+\): Disconnected by proxy: Kicked by admin: user=<alice>"
    )


def test_high_security_a_session_stays_in_its_login_process_while_busy(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    """A plaintext session moves only once quiet: one that logs out at once ends in its
    login process (the relay processes never hold it), a busy one is listed and kicked
    there (one disconnect line, Dovecot's), and a quiet one moves and goes on."""
    master = proxyd.start(static_config(proxyd, backend_a))
    relay_pids = {r.pid for r in wait_count(master, "proxyd: relay", RELAY_PROCESSES)}
    config = str(master.config_path)
    with RawImapClient(master.address(), master.port(), source_ip=client_address(90)) as quick:
        quick.send_raw(b"a LOGIN alice alicepw\r\nb LOGOUT\r\n")
        assert quick.read_reply("a").status == "OK"
        assert quick.read_reply("b").status == "OK"
        assert quick.read_until_closed() == []
    busy = RawImapClient(master.address(), master.port(), source_ip=client_address(91))
    ended: list[str] = []

    def noops() -> None:
        # commands well within the quiet time, until the kick closes the connection
        try:
            for _ in range(3000):
                assert busy.command("NOOP").status == "OK"
                time.sleep(0.02)
        except (EOFError, OSError):
            ended.append("closed")

    try:
        assert busy.command("LOGIN alice alicepw").status == "OK"
        noop_thread = threading.Thread(target=noops)
        noop_thread.start()
        time.sleep(0.5)
        owners = _owners_of_connection(client_address(91), busy._sock.getsockname()[1])
        assert owners
        assert not owners & relay_pids  # its login process relays it still
        kick = proxyd.proxyctl("-c", config, "kick", "alice")
        assert kick.stdout.strip() == "1 connections kicked"
        noop_thread.join(timeout=30)
        assert ended == ["closed"]
    finally:
        busy.close()
    master.wait_for_log(r"proxy\(alice,[\d.]+:\d+\): Disconnected by proxy: Kicked by admin: user=<alice>")
    log = master.log_text()
    assert log.count("Disconnected by proxy: Kicked by admin") == 1
    # the quick one's, once: "Disconnected by server" or "by client"
    assert len(re.findall(r"Disconnected by (?:server|client) \(", log)) == 1
    with RawImapClient(master.address(), master.port(), source_ip=client_address(92)) as quiet:
        assert quiet.command("LOGIN alice alicepw").status == "OK"
        _wait_relayed_by(relay_pids, quiet, client_address(92))
        assert quiet.command("NOOP").status == "OK"


def test_a_killed_relay_process_is_replaced(proxyd: ProxydRunner, backend_a: DovecotBackend) -> None:
    """Its sessions end with it (only its share: the others' go on); its successor relays too."""
    master = proxyd.start(static_config(proxyd, backend_a))
    relays = {r.pid for r in wait_count(master, "proxyd: relay", RELAY_PROCESSES)}
    with RawImapClient(master.address(), master.port(), source_ip=client_address(86)) as client:
        assert client.command("LOGIN alice alicepw").status == "OK"
        holder = _wait_relayed_by(relays, client, client_address(86))
        os.kill(holder, signal.SIGKILL)
        assert client.is_closed_by_peer()
    now = {r.pid for r in wait_count(master, "proxyd: relay", RELAY_PROCESSES)}
    assert relays - {holder} <= now  # the others go on
    assert len(now - relays) == 1  # and one new process took its place
    with RawImapClient(master.address(), master.port(), source_ip=client_address(87)) as client:
        assert client.command("LOGIN alice alicepw").status == "OK"
        assert client.command("NOOP").status == "OK"
        _wait_relayed_by(now, client, client_address(87))


def test_the_zygote_forks_and_reaps_and_its_death_stops_the_master(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    """Children are forked once, by the zygote, which reports their exits; without a
    zygote nothing can be started, so the master stops (and says why)."""
    master = proxyd.start(static_config(proxyd, backend_a, process_min_avail="1"))
    [spare] = wait_count(master, "proxyd: imap-login", 1)
    [zygote] = _processes(master.pid, "proxyd: zygote")
    assert {p.pid for p in _processes(zygote.pid, "proxyd: imap-login")} == {spare.pid}
    with RawImapClient(master.address(), master.port(), source_ip=client_address(88)) as client:
        assert client.command("LOGIN alice alicepw").status == "OK"
    wait_until(lambda: spare.pid not in {p.pid for p in children(master, "proxyd: imap-login")},
               timeout=10, what="the used login process reaped")
    os.kill(zygote.pid, signal.SIGKILL)
    master.exit_code = master.process.wait(timeout=15)
    assert master.exit_code == 1
    assert f"zygote (pid {zygote.pid}) died" in master.log_text()


def test_who_kick_and_a_killed_login_process(proxyd: ProxydRunner, backend_a: DovecotBackend) -> None:
    """``proxyctl who`` lists proxied sessions, ``kick`` closes them and prints the count;
    a login process killed with SIGKILL is replaced while the other sessions go on."""
    master = proxyd.start(static_config(proxyd, backend_a, service_count="0", process_min_avail="2"))
    alice = RawImapClient(master.address(), master.port(), source_ip=client_address(70))
    bob = RawImapClient(master.address(), master.port(), source_ip=client_address(71))
    try:
        assert alice.command("LOGIN alice alicepw").status == "OK"
        assert bob.command("LOGIN bob bobpw").status == "OK"
        who = proxyd.proxyctl("-c", str(master.config_path), "who")
        assert who.returncode == 0, who.stderr
        rows = [line.split() for line in who.stdout.splitlines()[1:]]
        assert sorted(row[0] for row in rows) == ["alice", "bob"]
        assert all(row[3] == f"{backend_a.address}:{backend_a.imap_port}" for row in rows)
        assert proxyd.proxyctl("-c", str(master.config_path), "who", "b*").stdout.count("bob") == 1

        kick = proxyd.proxyctl("-c", str(master.config_path), "kick", "alice")
        assert kick.returncode == 0
        assert kick.stdout.strip() == "1 connections kicked"
        alice.read_until_closed()
        assert bob.command("NOOP").status == "OK"

        bob_port = bob._sock.getsockname()[1]
        bobs = _owner_of_connection(client_address(71), bob_port)
        spare = next(p for p in children(master, "proxyd: imap-login") if p.pid != bobs)
        os.kill(spare.pid, signal.SIGKILL)
        wait_until(
            lambda: spare.pid not in {p.pid for p in children(master, "proxyd: imap-login")}
            and len(children(master, "proxyd: imap-login")) >= 2,
            timeout=10,
            what="a replacement login process",
        )
        assert f"child {spare.pid} killed with signal 9" in master.log_text()
        assert bob.command("NOOP").status == "OK"  # bob's process was not touched
    finally:
        alice.close()
        bob.close()


def _owner_of_connection(client_ip: str, client_port: int) -> int:
    """The pid holding the server side of the TCP connection from client_ip:client_port."""
    owners = _owners_of_connection(client_ip, client_port)
    assert owners, "no process holds the connection"
    return min(owners)


def _owners_of_connection(client_ip: str, client_port: int) -> set[int]:
    """Every pid holding the server side of the TCP connection from client_ip:client_port."""
    import ipaddress

    wanted = f"{int(ipaddress.IPv4Address(client_ip)).to_bytes(4, 'little').hex().upper()}:{client_port:04X}"
    inode = ""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[2] == wanted:
            inode = parts[9]
    assert inode, "connection not found"
    owners: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") == f"socket:[{inode}]":
                    owners.add(int(entry))
            except OSError:
                continue
    return owners


def _wait_relayed_by(pids: set[int], client: RawImapClient, client_ip: str) -> int:
    """The session's server side is held by one of ``pids`` alone (its login process let
    go); that pid."""
    port = client._sock.getsockname()[1]

    def one_holder() -> bool:
        owners = _owners_of_connection(client_ip, port)
        return len(owners) == 1 and owners <= pids

    wait_until(one_holder, timeout=10, what=f"the connection held by one of {pids} only",
               diagnostics=lambda: str(_owners_of_connection(client_ip, port)))
    [holder] = _owners_of_connection(client_ip, port)
    return holder


def test_auth_cache_flush_reaches_the_auth_process(proxyd: ProxydRunner, backend_a: DovecotBackend) -> None:
    """``proxyctl auth cache flush`` goes master -> auth process, which owns the cache."""
    import sqlite3

    database = proxyd.workdir / "users.sqlite"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE proxy (user TEXT PRIMARY KEY, host TEXT, port INTEGER)")
        db.execute("INSERT INTO proxy VALUES ('alice', ?, ?)", (backend_a.address, backend_a.imap_port))
    sql_conf = proxyd.workdir / "dovecot-sql.conf.ext"
    sql_conf.write_text(
        f"driver = sqlite\nconnect = {database}\n"
        "password_query = SELECT NULL AS password, 'Y' AS nopassword, host, port, 'Y' AS proxy "
        "FROM proxy WHERE user = '%u'\n"
    )
    readable_by_auth(database)  # the auth process (dovecot) opens it after the drop
    config = proxyd.config(None, imaps=False)
    config.passdbs.append({"driver": "sql", "args": str(sql_conf)})
    config.set(auth_cache_size="1M")
    master = proxyd.start(config)
    with RawImapClient(master.address(), master.port(), source_ip=client_address(90)) as client:
        assert client.command("LOGIN alice alicepw").status == "OK"
    first = proxyd.proxyctl("-c", str(master.config_path), "auth", "cache", "flush")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "1 cache entries flushed"
    again = proxyd.proxyctl("-c", str(master.config_path), "auth", "cache", "flush", "alice")
    assert again.stdout.strip() == "0 cache entries flushed"
