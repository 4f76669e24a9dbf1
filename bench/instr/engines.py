"""The sans-IO engines' share of a login, alone: what compiling them (mypyc) changes.

    python bench/instr/engines.py N

runs N IMAP and N POP3 logins through the client-side login engine and the backend
login engine, with the bytes of bench/instr/run.sh's logins (the client's LOGIN / USER
and PASS, Dovecot's banner and replies), checking each result.  Under
``valgrind --tool=callgrind`` twice with different N, the difference divided by the
logins is the engines' instructions per login, without the rest of proxyd around them:
bench/instr/engines.sh does that for a tree and for its compiled build.
"""

from __future__ import annotations

import sys
from datetime import datetime

from proxyd.protocols.backend_events import BackendLoggedIn
from proxyd.protocols.events import NEED_DATA, AuthBegin, LoginPolicy
from proxyd.protocols.imap.backend import ImapBackendLogin, ImapBackendParams
from proxyd.protocols.imap.server import ImapLoginServer
from proxyd.protocols.pop3.backend import Pop3BackendLogin, Pop3BackendParams
from proxyd.protocols.pop3.server import Pop3LoginServer

#: the rig's password (bench/instr/login_client.py)
PASSWORD = "benchpw"  # noqa: S105
POLICY = LoginPolicy(mechanisms=("PLAIN", "LOGIN"), disable_plaintext_auth=False)
WHEN = datetime(2026, 12, 7, 12, 0, 0)
IMAP_BANNER = (
    b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS "
    b"AUTH=PLAIN AUTH=LOGIN] Dovecot (Debian) ready.\r\n"
)
IMAP_LOGGED_IN = b"L OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT MOVE] Logged in\r\n"
IDS = (
    ("x-session-id", "k3/oAdZgiKJ/AAAB"), ("x-originating-ip", "127.0.0.1"),
    ("x-originating-port", "40000"), ("x-connected-ip", "127.0.0.1"),
    ("x-connected-port", "20071"), ("x-proxy-ttl", "5"),
)  # fmt: skip


def drain(engine: ImapLoginServer | Pop3LoginServer | ImapBackendLogin | Pop3BackendLogin) -> list[object]:
    events: list[object] = []
    while (event := engine.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def imap_login(n: int) -> None:
    client = ImapLoginServer(POLICY, hostname=lambda: "proxy", clock=lambda: WHEN)
    drain(client)
    assert client.data_to_send().startswith(b"* OK")
    client.receive_data(b"a LOGIN user%04d benchpw\r\n" % n)
    (begin,) = drain(client)
    assert isinstance(begin, AuthBegin)
    backend = ImapBackendLogin(
        ImapBackendParams(user=f"user{n:04d}", password=PASSWORD, client_tag="a", id_pairs=IDS)
    )
    drain(backend)
    backend.receive_data(IMAP_BANNER)
    assert drain(backend) == []
    assert backend.data_to_send().startswith(b"I ID (")
    backend.receive_data(b'* ID ("name" "Dovecot")\r\nI OK ID completed.\r\n')
    drain(backend)
    backend.receive_data(IMAP_LOGGED_IN)
    (done,) = drain(backend)
    assert isinstance(done, BackendLoggedIn)
    client.login_succeeded(done.client_reply)
    drain(client)
    assert client.data_to_send().startswith(b"a OK")


def pop3_login(n: int) -> None:
    client = Pop3LoginServer(POLICY, hostname=lambda: "proxy", clock=lambda: WHEN)
    drain(client)
    assert client.data_to_send().startswith(b"+OK")
    client.receive_data(b"USER user%04d\r\n" % n)
    drain(client)
    client.data_to_send()
    client.receive_data(b"PASS benchpw\r\n")
    (begin,) = drain(client)
    assert isinstance(begin, AuthBegin)
    backend = Pop3BackendLogin(
        Pop3BackendParams(
            user=f"user{n:04d}", password=PASSWORD, remote_ip="127.0.0.1", remote_port=40000,
            session_id="k3/oAdZgiKJ/AAAB", proxy_ttl=5,
        )
    )  # fmt: skip
    drain(backend)
    backend.receive_data(b"+OK [XCLIENT] Dovecot (Debian) ready.\r\n")
    drain(backend)
    assert backend.data_to_send().startswith(b"XCLIENT ")
    backend.receive_data(b"+OK\r\n+OK\r\n")
    drain(backend)
    assert backend.data_to_send() == b"PASS benchpw\r\n"
    backend.receive_data(b"+OK Logged in.\r\n")
    (done,) = drain(backend)
    assert isinstance(done, BackendLoggedIn)
    client.login_succeeded(done.client_reply)
    drain(client)
    assert client.data_to_send() == b"+OK Logged in.\r\n"


def main() -> None:
    for n in range(int(sys.argv[1])):
        imap_login(n)
        pop3_login(n)


if __name__ == "__main__":
    main()
