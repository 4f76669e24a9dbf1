"""POP3's entry in the protocol registry: the ``pop3-login`` service."""

from __future__ import annotations

from typing import Any

from proxyd.protocols.events import LoginPolicy
from proxyd.protocols.pop3.backend import Pop3BackendLogin, Pop3BackendParams
from proxyd.protocols.pop3.server import Pop3LoginServer
from proxyd.protocols.pop3.settings import SETTINGS
from proxyd.protocols.spec import (
    BackendLogin,
    BackendLoginEngine,
    DefaultListener,
    LoginHooks,
    LoginServerEngine,
    ProtocolSpec,
    Referral,
)


def _new_server(policy: LoginPolicy, _settings: Any) -> LoginServerEngine:
    return Pop3LoginServer(policy)


def _new_backend(login: BackendLogin, client: LoginServerEngine) -> BackendLoginEngine:
    # the client engine has nothing the POP3 backend login needs (no tag, no capabilities)
    return Pop3BackendLogin(Pop3BackendParams.from_login(login))


def _goodbye(text: str) -> bytes:
    return b"-ERR " + text.encode() + b"\r\n"


def _referral(_client: LoginServerEngine, referral: Referral, _mech: str) -> bytes:
    """POP3 has no referrals: Dovecot answers a ``nologin`` + ``host`` login with ``-ERR <reason>``."""
    return f"-ERR {referral.reason}\r\n".encode()


POP3 = ProtocolSpec(
    name="pop3",
    service="pop3-login",
    default_port=110,
    default_ssl_port=995,
    listeners=(DefaultListener("pop3", 110), DefaultListener("pop3s", 995, ssl=True)),
    login=LoginHooks(
        new_server=_new_server, new_backend=_new_backend, goodbye=_goodbye, referral=_referral
    ),
    settings=SETTINGS,
)
