"""IMAP's plug-in to the shared login machinery."""

from __future__ import annotations

from proxyd.login.protocol import BackendLogin, BackendLoginEngine, LoginServerEngine, ProtocolSpec
from proxyd.protocols.imap.backend import ImapBackendLogin, ImapBackendParams
from proxyd.protocols.imap.server import ImapLoginServer


def _id_pairs(login: BackendLogin) -> tuple[tuple[str, str | None], ...]:
    """The ID pairs Dovecot sends to the backend (``proxy_write_id()``), in its order."""
    if login.not_trusted:
        return ()
    pairs: list[tuple[str, str | None]] = [
        ("x-session-id", login.session_id),
        ("x-originating-ip", login.remote_ip),
        ("x-originating-port", str(login.remote_port)),
        ("x-connected-ip", login.local_ip),
        ("x-connected-port", str(login.local_port)),
        ("x-proxy-ttl", str(login.proxy_ttl)),
    ]
    pairs += [(f"x-forward-{key}", value) for key, value in login.forward_fields]
    return tuple(pairs)


def _new_backend(login: BackendLogin, client: LoginServerEngine) -> BackendLoginEngine:
    assert isinstance(client, ImapLoginServer)
    params = ImapBackendParams(
        user=login.user,
        password=login.password,
        master_user=login.master_user,
        mech=login.mech,
        id_pairs=_id_pairs(login),
        client_id=login.client_id or "",
        client_tag=client.current_tag,
        client_ignores_capability_resp_code=client.client_ignores_capability_resp_code,
        starttls=login.starttls,
        tls_active=login.tls_active,
        nopipelining=login.nopipelining,
    )
    return ImapBackendLogin(params)


def _goodbye(text: str) -> bytes:
    return b"* BYE " + text.encode() + b"\r\n"


IMAP = ProtocolSpec(
    name="imap",
    service="imap-login",
    default_port=143,
    default_ssl_port=993,
    new_server=ImapLoginServer,
    new_backend=_new_backend,
    goodbye=_goodbye,
)
