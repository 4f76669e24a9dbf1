"""IMAP's entry in the protocol registry: the ``imap-login`` service."""

from __future__ import annotations

from typing import Any, Final

from proxyd.protocols.events import LoginPolicy
from proxyd.protocols.imap.backend import ImapBackendLogin, ImapBackendParams
from proxyd.protocols.imap.server import ImapLoginServer, ImapOptions
from proxyd.protocols.imap.settings import SETTINGS, ImapSettings
from proxyd.protocols.spec import (
    BackendLogin,
    BackendLoginEngine,
    DefaultListener,
    LoginHooks,
    LoginServerEngine,
    ProtocolSpec,
    Referral,
)


def _new_server(policy: LoginPolicy, settings: Any) -> LoginServerEngine:
    own: ImapSettings = settings.of(ImapSettings)
    options = ImapOptions(
        capability=own.imap_capability,
        id_retain=own.imap_id_retain,
        id_send=own.imap_id_send,
        id_log=own.imap_id_log,
        literal_minus=own.imap_literal_minus,
    )
    return ImapLoginServer(policy, options)


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


#: RFC 3986 unreserved and sub-delims (Dovecot's _uri_char_lookup bits 0 and 1)
_URI_SAFE: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;="
)


def _uri_encode(text: str, allowed: frozenset[int], escape: bytes = b"") -> str:
    """Dovecot's ``uri_data_encode()``: other bytes (and ``escape``) as lower-case ``%xx``."""
    return "".join(
        chr(byte) if byte in allowed and byte not in escape else f"%{byte:02x}"
        for byte in text.encode("utf-8")
    )


def referral_url(user: str, mech: str, host: str, port: int) -> str:
    """``imap://<user>;AUTH=<mech>@<host>[:port]/`` as Dovecot's ``imap_url_create()`` writes it."""
    # userid and auth type are "uchar" data (":" allowed) with ";" and ":" escaped
    userinfo = _uri_encode(user, _URI_SAFE | {ord(":")}, b";:")
    if mech:
        userinfo += ";AUTH=" + _uri_encode(mech, _URI_SAFE | {ord(":")}, b";:")
    if host.startswith("["):
        hostpart = host
    elif ":" in host:
        hostpart = f"[{host}]"  # an IPv6 address
    else:
        hostpart = _uri_encode(host, _URI_SAFE)
    port_part = f":{port}" if port != 143 else ""
    return f"imap://{userinfo}@{hostpart}{port_part}/"


def _referral(client: LoginServerEngine, referral: Referral, mech: str) -> bytes:
    """``<tag> NO [REFERRAL imap://...] <reason>`` (Dovecot's ``imap_client_auth_result()``)."""
    assert isinstance(client, ImapLoginServer)
    url = referral_url(referral.destuser, mech, referral.host, referral.port)
    return f"{client.current_tag} NO [REFERRAL {url}] {referral.reason}\r\n".encode()


IMAP = ProtocolSpec(
    name="imap",
    service="imap-login",
    default_port=143,
    default_ssl_port=993,
    listeners=(DefaultListener("imap", 143), DefaultListener("imaps", 993, ssl=True)),
    login=LoginHooks(
        new_server=_new_server, new_backend=_new_backend, goodbye=_goodbye, referral=_referral
    ),
    settings=SETTINGS,
)
