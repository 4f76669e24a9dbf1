"""The doveadm HTTP API (``service doveadm { inet_listener http { } }``) as Dovecot serves it:
authentication, ``GET /doveadm/v1``, ``proxyList`` and ``proxyKick`` against real sessions,
Dovecot's error entries and 400 texts, and TLS on the listener; real clients (urllib, curl).
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.e2e import proxy_support as ps
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import PROXYD_ADDRESS, client_address, free_port, wait_until
from tests.fixtures.proxyd import Listener, PasswdEntry, ProxydProcess, ProxydRunner, proxy_fields
from tests.helpers.clients import RawImapClient

pytestmark = pytest.mark.e2e

API_KEY = "s3cret-api-key"
PASSWORD = "doveadm-pw"
KEY_AUTH = "X-Dovecot-API " + base64.b64encode(API_KEY.encode()).decode()
BASIC_AUTH = "Basic " + base64.b64encode(f"doveadm:{PASSWORD}".encode()).decode()


def start(
    proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend, *, tls: bool = False
) -> ProxydProcess:
    entries = [
        PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(backend_a.address, backend_a.imap_port)),
        PasswdEntry("bob", "{PLAIN}bobpw", proxy_fields(backend_b.address, backend_b.imap_port)),
    ]
    cfg = ps.config(proxyd, entries, doveadm_api_key=API_KEY, doveadm_password=PASSWORD)
    cfg.listeners.append(Listener("doveadm", "http", PROXYD_ADDRESS, free_port(), ssl=tls))
    return proxyd.start(cfg)


def url(running: ProxydProcess, path: str = "/doveadm/v1", scheme: str = "http") -> str:
    return f"{scheme}://{running.address('http')}:{running.port('http')}{path}"


def call(
    running: ProxydRunner | ProxydProcess,
    body: Any = None,
    *,
    auth: str | None = KEY_AUTH,
    method: str | None = None,
    raw: bytes | None = None,
    path: str = "/doveadm/v1",
) -> tuple[int, dict[str, str], bytes]:
    assert isinstance(running, ProxydProcess)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url(running, path), data=data, method=method)
    if auth is not None:
        request.add_header("Authorization", auth)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:  # an HTTPError holds the response open
            return exc.code, dict(exc.headers), exc.read()


def test_authentication(proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend) -> None:
    running = start(proxyd, backend_a, backend_b)
    status, headers, _ = call(running, auth=None)
    assert status == 401
    challenges = [v for k, v in headers.items() if k.lower() == "www-authenticate"]
    assert challenges, headers
    for auth in ("X-Dovecot-API " + base64.b64encode(b"wrong").decode(), "Basic " + base64.b64encode(b"doveadm:wrong").decode(), "Bearer x", "garbage"):
        assert call(running, auth=auth)[0] == 401, auth
    assert call(running, auth=KEY_AUTH)[0] == 200
    assert call(running, auth=BASIC_AUTH)[0] == 200
    # curl, a client administrators use against Dovecot, with -u for Basic
    out = subprocess.run(
        ["curl", "-sS", "-u", f"doveadm:{PASSWORD}", "-o", "/dev/null", "-w", "%{http_code}", url(running)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert out.stdout == "200", out.stderr
    running.wait_for_log(r"Invalid authentication attempt to HTTP API \(using X-Dovecot-API authentication scheme\)")


@pytest.mark.proxyd_only
def test_unauthorized_answers_name_both_schemes(
    proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend
) -> None:
    running = start(proxyd, backend_a, backend_b)
    out = subprocess.run(["curl", "-sS", "-i", url(running)], capture_output=True, timeout=30, check=False)
    assert out.stdout.startswith(b"HTTP/1.1 401 Authentication required\r\n"), out.stdout
    assert b"WWW-Authenticate: X-Dovecot-API\r\n" in out.stdout
    assert b'WWW-Authenticate: Basic Realm="doveadm"\r\n' in out.stdout


def test_the_api_describes_its_commands(
    proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend
) -> None:
    running = start(proxyd, backend_a, backend_b)
    status, headers, body = call(running)
    assert status == 200
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    commands = {entry["command"]: entry["parameters"] for entry in json.loads(body)}
    kick = {param["name"]: param["type"] for param in commands["proxyKick"]}
    assert kick["host"] == "string"
    assert kick["user"] == "array"
    assert "proxyList" in commands
    status, _, body = call(running, path="/")
    assert {"method": "POST", "path": "/doveadm/v1"} in json.loads(body)
    assert call(running, path="/nothing")[0] == 404


def test_proxy_list_and_kick(proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend) -> None:
    running = start(proxyd, backend_a, backend_b)
    alice_ip, bob_ip = client_address(12), client_address(13)
    with (
        RawImapClient(running.address(), running.port(), source_ip=alice_ip) as alice,
        RawImapClient(running.address(), running.port(), source_ip=bob_ip) as bob,
    ):
        assert alice.command("LOGIN alice alicepw").status == "OK"
        assert bob.command("LOGIN bob bobpw").status == "OK"
        listed: list[dict[str, str]] = []

        def both_listed() -> bool:
            # a plaintext session is handed to a relay process right after its login
            status, _, body = call(running, [["proxyList", {}, "t1"]])
            assert status == 200
            [[kind, rows, tag]] = json.loads(body)
            assert (kind, tag) == ("doveadmResponse", "t1")
            # Dovecot 2.3.19 sends LIST-FULL's header line as a row of its own; proxyd does not
            listed[:] = [row for row in rows if row != {key: key for key in row}]
            return len(listed) == 2

        wait_until(both_listed, timeout=10, what="both sessions listed")
        rows = listed
        assert sorted(rows, key=lambda r: r["username"]) == [
            {"username": "alice", "service": "imap", "src-ip": alice_ip,
             "dest-ip": backend_a.address, "dest-port": str(backend_a.imap_port)},
            {"username": "bob", "service": "imap", "src-ip": bob_ip,
             "dest-ip": backend_b.address, "dest-port": str(backend_b.imap_port)},
        ]  # fmt: skip

        _, _, body = call(running, [["proxyKick", {"user": ["alice"]}, "k1"]])
        assert json.loads(body) == [["doveadmResponse", [{"count": "1"}], "k1"]]
        assert alice.read_until_closed() == []
        assert bob.command("NOOP").status == "OK"
        _, _, body = call(running, [["proxyKick", {"host": backend_b.address}, "k2"]], auth=BASIC_AUTH)
        assert json.loads(body) == [["doveadmResponse", [{"count": "1"}], "k2"]]
        assert bob.is_closed_by_peer()
    _, _, body = call(running, [["proxyList", {}, "t2"]])
    [[kind, rows, tag]] = json.loads(body)
    assert (kind, tag) == ("doveadmResponse", "t2")
    assert [row for row in rows if row != {key: key for key in row}] == []


@pytest.mark.proxyd_only
def test_errors_are_entries_and_the_process_lives_on(
    proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend
) -> None:
    """A bad command is its own error entry in order beside the good ones; a body that is
    not a request at all is a 400 with Dovecot's text; proxyd answers on afterwards."""
    running = start(proxyd, backend_a, backend_b)
    status, _, body = call(
        running,
        [
            ["noSuchCommand", {}, "a"],
            ["proxyList", {"socketPath": "/x"}, "b"],
            ["proxy kick", {}, "c"],  # neither user nor host: doveadm's usage error
            ["proxy-list", {}, "d"],
            ["proxyKick", {"host": "127.0.0.254", "user": "nobody"}, "e"],
        ],
    )
    assert status == 200
    assert json.loads(body) == [
        ["error", {"type": "unknownMethod", "exitCode": 0}, "a"],
        ["error", {"type": "invalidRequest", "exitCode": 0}, "b"],
        ["error", {"type": "exitCode", "exitCode": 64}, "c"],
        ["doveadmResponse", [], "d"],
        ["doveadmResponse", [{"count": "0"}], "e"],
    ]
    cases = {
        b"{": "JSON parse error: ",
        b"{}": "Request must be a JSON array",
        b"[1]": "Command must be a JSON array",
        b"[[1, {}, \"t\"]]": "Command name must be a string",
        b"[[\"proxyList\", [], \"t\"]]": "Parameters must be contained in a JSON object",
        b"[[\"proxyList\", {}]]": "Command ID must be a string",
        b"[[\"proxyList\", {}, \"t\", 1]]": "Unexpected JSON element at end of command",
        b"[[\"proxyKick\", {\"user\": [1]}, \"t\"]]": "Command parameter array can only contain string values",
        b"[[\"proxyKick\", {\"host\": \"a\", \"host\": \"b\"}, \"t\"]]": "Parameter `host' is duplicated",
        b"\xff\xfe": "JSON parse error: ",
    }
    for raw, text in cases.items():
        status, _, body = call(running, raw=raw)
        assert status == 400, raw
        assert body.decode().startswith(text), (raw, body)
        assert body.endswith(b"\r\n")
    huge = b"[" + b" " * (2 << 20) + b"]"
    assert call(running, raw=huge)[0] == 413
    assert call(running, [["proxyList", {}, "after"]])[0] == 200
    assert running.is_running()


def test_tls_listener(proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend) -> None:
    running = start(proxyd, backend_a, backend_b, tls=True)
    out = subprocess.run(
        ["curl", "-sS", "--cacert", str(proxyd.tls.ca_pem), "-H", f"Authorization: {KEY_AUTH}",
         "--data", '[["proxyList",{},"tls"]]', url(running, scheme="https")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [["doveadmResponse", [], "tls"]]
