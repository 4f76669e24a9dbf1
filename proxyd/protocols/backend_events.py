"""Events shared by every backend login engine (IMAP, POP3).

Theory of operation
-------------------
A backend engine (``proxyd.protocols.imap.backend.ImapBackendLogin``) logs in to
one backend connection the way Dovecot's ``imap-proxy.c`` / ``pop3-proxy.c``
do.  The driver connects, then loops: ``receive_data()`` with the backend's
bytes, ``next_event()`` until ``NEED_DATA``, ``data_to_send()`` to the backend.
The engine answers everything inside the login dialogue itself and reports:

* :class:`BackendUntagged`: a line for the client, to be sent right away;
* :class:`BackendNeedsTLS`: do the TLS handshake now (feeding it the engine's
  ``trailing_data()``), then call ``tls_started()``;
* :class:`BackendLoggedIn`: the final reply for the client; from here on the
  driver relays raw bytes (``trailing_data()`` holds backend bytes that came
  after the reply);
* :class:`BackendFailed`: the attempt is over; ``kind`` says whether Dovecot
  would retry (``RETRYABLE_FAILURES``) and which client text applies;
* :class:`BackendIgnored`: an unexpected line was dropped (log it).

``ProxyFailure`` mirrors Dovecot's ``enum login_proxy_failure_type``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, TypeAlias


class ProxyFailure(enum.Enum):
    """Dovecot's ``login_proxy_failure_type``."""

    CONNECT = "connect"  # connect failed, backend disconnected, timed out
    INTERNAL = "internal"  # our own problem (TLS setup, unsupported proxy_mech)
    INTERNAL_CONFIG = "internal_config"
    REMOTE = "remote"  # backend failed a step (STARTTLS refused)
    REMOTE_CONFIG = "remote_config"  # backend set up wrong for us (no STARTTLS, LOGINDISABLED)
    PROTOCOL = "protocol"  # backend talked nonsense (bad banner, line too long)
    AUTH = "auth"  # backend refused the login; client reply is final
    AUTH_TEMPFAIL = "auth_tempfail"  # backend refused with [UNAVAILABLE]; may retry


#: Failures after which Dovecot reconnects (``proxy_try_reconnect()``), time permitting.
RETRYABLE_FAILURES: Final = frozenset(
    {ProxyFailure.CONNECT, ProxyFailure.REMOTE, ProxyFailure.PROTOCOL, ProxyFailure.AUTH_TEMPFAIL}
)


@dataclass(frozen=True, slots=True)
class BackendNeedsTLS:
    """The backend accepted STARTTLS/STLS: do the handshake, then call ``tls_started()``."""


@dataclass(frozen=True, slots=True)
class BackendUntagged:
    """An untagged backend line to forward to the client now; ``line`` ends with CRLF."""

    line: bytes


@dataclass(frozen=True, slots=True)
class BackendLoggedIn:
    """Logged in; send ``client_reply`` (client's tag, capabilities injected) and start relaying."""

    client_reply: bytes


@dataclass(frozen=True, slots=True)
class BackendFailed:
    """The backend login failed.

    ``log_text`` is Dovecot's log reason.  ``client_reply`` is set for ``AUTH``
    (send it; the client may retry) and ``AUTH_TEMPFAIL`` (send it only when no
    reconnect follows); for every other kind it is None and the driver answers
    with the generic text for the kind.  ``local`` is the failed connection's own
    ``IP:PORT`` (connect errors and timeouts only; Dovecot's ``local=``).
    """

    kind: ProxyFailure
    log_text: str
    client_reply: bytes | None = None
    local: str = ""


@dataclass(frozen=True, slots=True)
class BackendIgnored:
    """An unexpected backend line was ignored; ``log_text`` is Dovecot's error log text."""

    log_text: str


#: everything a backend login engine reports (a ``match`` over it can be exhaustive)
BackendEvent: TypeAlias = (
    BackendNeedsTLS | BackendUntagged | BackendLoggedIn | BackendFailed | BackendIgnored
)
