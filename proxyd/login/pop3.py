"""POP3's plug-in to the shared login machinery."""

from __future__ import annotations

from proxyd.login.protocol import BackendLogin, BackendLoginEngine, LoginServerEngine, ProtocolSpec
from proxyd.login.proxyfields import Referral
from proxyd.protocols.pop3.backend import Pop3BackendLogin, Pop3BackendParams
from proxyd.protocols.pop3.server import Pop3LoginServer


def _new_backend(login: BackendLogin, client: LoginServerEngine) -> BackendLoginEngine:
    # the client engine has nothing the POP3 backend login needs (no tag, no capabilities)
    params = Pop3BackendParams(
        user=login.user,
        password=login.password,
        master_user=login.master_user,
        mech=login.mech,
        starttls=login.starttls,
        not_trusted=login.not_trusted,
        remote_ip=login.remote_ip,
        remote_port=login.remote_port,
        session_id=login.session_id,
        proxy_ttl=login.proxy_ttl,
        forward_fields=login.forward_fields,
    )
    return Pop3BackendLogin(params)


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
    new_server=Pop3LoginServer,
    new_backend=_new_backend,
    goodbye=_goodbye,
    referral=_referral,
)
