"""ManageSieve's entry in the protocol registry: the ``managesieve-login`` service (``protocols = sieve``)."""

from __future__ import annotations

from typing import Any

from proxyd.protocols.events import LoginPolicy
from proxyd.protocols.managesieve import replies
from proxyd.protocols.managesieve.backend import ManageSieveBackendLogin, SieveBackendParams
from proxyd.protocols.managesieve.replies import SieveOptions, Status
from proxyd.protocols.managesieve.server import ManageSieveLoginServer
from proxyd.protocols.managesieve.settings import SETTINGS, ManageSieveSettings
from proxyd.protocols.spec import (
    BackendLogin,
    BackendLoginEngine,
    DefaultListener,
    LoginHooks,
    LoginServerEngine,
    ProtocolSpec,
    Referral,
)

#: Pigeonhole's ``login_binary.default_port``
DEFAULT_PORT = 4190


def _new_server(policy: LoginPolicy, settings: Any) -> LoginServerEngine:
    own: ManageSieveSettings = settings.of(ManageSieveSettings)
    options = SieveOptions(
        implementation=own.managesieve_implementation_string,
        sieve_capability=own.managesieve_sieve_capability,
        notify_capability=own.managesieve_notify_capability,
    )
    return ManageSieveLoginServer(policy, options)


def _new_backend(login: BackendLogin, _client: LoginServerEngine) -> BackendLoginEngine:
    return ManageSieveBackendLogin(SieveBackendParams.from_login(login))


def _goodbye(text: str) -> bytes:
    return replies.reply_line(Status.BYE, text)


def _referral(_client: LoginServerEngine, referral: Referral, mech: str) -> bytes:
    """``NO (REFERRAL sieve://user;AUTH=mech@host[:port]) "reason"`` (``managesieve_client_auth_result()``)."""
    url = f"sieve://{referral.destuser};AUTH={mech}@{referral.host}"
    if referral.port != DEFAULT_PORT:
        url += f":{referral.port}"
    return replies.reply_line(Status.NO, referral.reason, f"REFERRAL {url}")


SIEVE = ProtocolSpec(
    name="sieve",
    service="managesieve-login",
    default_port=DEFAULT_PORT,
    default_ssl_port=DEFAULT_PORT,
    listeners=(DefaultListener("sieve", DEFAULT_PORT),),
    login=LoginHooks(
        new_server=_new_server, new_backend=_new_backend, goodbye=_goodbye, referral=_referral
    ),
    settings=SETTINGS,
)
