"""Submission's entry in the protocol registry: the ``submission-login`` service (``protocols = submission``)."""

from __future__ import annotations

import socket
from dataclasses import replace
from typing import Any

from proxyd.protocols.events import LoginPolicy
from proxyd.protocols.spec import (
    BackendLogin,
    BackendLoginEngine,
    DefaultListener,
    LoginHooks,
    LoginServerEngine,
    ProtocolSpec,
)
from proxyd.protocols.submission.backend import SubmissionBackendLogin, SubmissionBackendParams
from proxyd.protocols.submission.replies import SubmissionOptions, reply
from proxyd.protocols.submission.server import SubmissionLoginServer
from proxyd.protocols.submission.settings import SETTINGS, SubmissionSettings


def _new_server(policy: LoginPolicy, settings: Any) -> LoginServerEngine:
    own: SubmissionSettings = settings.of(SubmissionSettings)
    options = SubmissionOptions(
        # Dovecot: hostname, else my_hostdomain() (looked up before the chroot)
        hostname=settings.hostname or settings.hostdomain or socket.gethostname(),
        backend_capabilities=frozenset(own.submission_backend_capabilities),
        max_mail_size=own.submission_max_mail_size,
        exotic_backend="exotic-backend" in own.submission_client_workarounds,
    )
    return SubmissionLoginServer(policy, options)


def _new_backend(login: BackendLogin, client: LoginServerEngine) -> BackendLoginEngine:
    assert isinstance(client, SubmissionLoginServer)
    params = replace(
        SubmissionBackendParams.from_login(login),
        hostname=client.hostname_for_backend,
        helo=client.helo,
        proto=client.proto,
        noauth=login.noauth,
        # Dovecot: a trusted proxy's XCLIENT LOGIN=, else the user who logged in
        login=client.proxy_login or login.login_user,
    )
    return SubmissionBackendLogin(params)


def _goodbye(text: str) -> bytes:
    return reply(421, "4.3.2", text)


SUBMISSION = ProtocolSpec(
    name="submission",
    service="submission-login",
    default_port=587,
    default_ssl_port=465,
    listeners=(DefaultListener("submission", 587),),
    login=LoginHooks(new_server=_new_server, new_backend=_new_backend, goodbye=_goodbye),
    settings=SETTINGS,
)
