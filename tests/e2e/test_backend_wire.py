"""What proxyd sends to a backend, byte for byte, seen by the recording backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import PasswdWriter
from tests.fixtures.net import client_address
from tests.fixtures.proxyd import PasswdEntry, ProxydProcess, ProxydRunner, proxy_fields
from tests.helpers.clients import RawImapClient
from tests.helpers.recording_backend import ImapArg, ImapScript, RecordingImapBackend

pytestmark = pytest.mark.e2e

SCRIPT = ImapScript(users={"rita-backend": "ritapw"})


@pytest.fixture
def recording_backend() -> Iterator[RecordingImapBackend]:
    with RecordingImapBackend(SCRIPT) as backend:
        yield backend


@pytest.fixture
def rita_proxyd(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, recording_backend: RecordingImapBackend
) -> ProxydProcess:
    """rita is routed to the recording backend as ``destuser=rita-backend``."""
    rita = PasswdEntry(
        "rita",
        "{PLAIN}ritapw",
        proxy_fields(recording_backend.address, recording_backend.port, destuser="rita-backend"),
    )
    return proxyd.start(proxyd.config(passwd_file([rita])))


def id_pairs(arg: ImapArg) -> dict[str, str | None]:
    assert isinstance(arg, list), arg
    keys = [str(key).lower() for key in arg[0::2]]
    values = [value if value is None else str(value) for value in arg[1::2]]
    return dict(zip(keys, values, strict=True))


def test_backend_gets_id_with_client_address_then_login_as_destuser(
    rita_proxyd: ProxydProcess, recording_backend: RecordingImapBackend
) -> None:
    """The backend banner advertises ID, so proxyd sends ``ID (...)`` with the client's
    address and port, its own address and port, a session id and TTL 4, then
    ``LOGIN rita-backend ritapw``; the backend's ``OK [CAPABILITY ...]`` reaches the
    client with the client's tag."""
    source = client_address(9)
    with RawImapClient(rita_proxyd.address(), rita_proxyd.port(), source_ip=source) as client:
        client_port = client._sock.getsockname()[1]
        reply = client.command("LOGIN rita ritapw")
        assert reply.tagged == f"OK [CAPABILITY {SCRIPT.post_login_capability}] Logged in"
        assert client.command("LOGOUT").status == "OK"

    [connection] = recording_backend.wait_for_connections(1)
    connection.closed.wait(5)
    names = connection.command_names()
    assert names[:2] == ["ID", "LOGIN"], names
    pairs = id_pairs(connection.commands[0].args[0])
    assert pairs["x-originating-ip"] == source
    assert pairs["x-originating-port"] == str(client_port)
    assert pairs["x-connected-ip"] == rita_proxyd.address()
    assert pairs["x-connected-port"] == str(rita_proxyd.port())
    assert pairs["x-proxy-ttl"] == "4"
    assert pairs.get("x-session-id")
    assert connection.commands[1].args == ("rita-backend", "ritapw")
    assert connection.commands[-1].name == "LOGOUT"


def test_client_capability_before_login_gets_untagged_capability_after(
    rita_proxyd: ProxydProcess, recording_backend: RecordingImapBackend
) -> None:
    """A client that asked CAPABILITY before logging in ignores resp-codes, so the
    backend's post-login capabilities arrive as an untagged ``* CAPABILITY`` line."""
    with RawImapClient(
        rita_proxyd.address(), rita_proxyd.port(), source_ip=client_address(10)
    ) as client:
        client.capabilities()
        reply = client.command("LOGIN rita ritapw")
        assert reply.status == "OK", reply
        assert f"* CAPABILITY {SCRIPT.post_login_capability}" in reply.untagged
    recording_backend.wait_for_connections(1)


def test_backend_unavailable_code_is_passed_through(
    proxyd: ProxydRunner, passwd_file: PasswdWriter
) -> None:
    """A backend ``NO [UNAVAILABLE] ...`` is retried and then passed to the client
    with its text; the client stays connected."""
    script = ImapScript(login_reply="NO [UNAVAILABLE] Backend busy, try later.")
    with RecordingImapBackend(script) as backend:
        rita = PasswdEntry("rita", "{PLAIN}ritapw", proxy_fields(backend.address, backend.port))
        running = proxyd.start(proxyd.config(passwd_file([rita]), login_proxy_timeout="3s"))
        with RawImapClient(
            running.address(), running.port(), source_ip=client_address(11)
        ) as client:
            reply = client.command("LOGIN rita ritapw")
            assert reply.tagged == "NO [UNAVAILABLE] Backend busy, try later."
            assert client.command("NOOP").status == "OK"
        assert backend.connection_count() >= 2, "a backend [UNAVAILABLE] is retried"
