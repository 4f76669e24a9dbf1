"""``--cluster``: one doveadm HTTP API request to every node in ``proxyd_cluster_peers``.

Each peer is asked at the same time, each in a thread with httpx's blocking
client: proxyctl is a short-lived command that makes a handful of requests, so
a thread per peer is simpler than an event loop and just as fast; httpx is
already proxyd's HTTP client (the oauth2 passdb) and does TLS verification and
timeouts properly.  Requests carry ``X-Dovecot-API`` with ``doveadm_api_key``;
they use TLS when this node's own ``service doveadm { inet_listener http }``
has ``ssl = yes`` (the nodes of a cluster share that configuration), verified
against ``ssl_client_ca_file`` / ``ssl_client_ca_dir`` / ``ssl_ca`` as backends are.

A peer that cannot be reached, refuses the key or answers nonsense is a
``PeerError`` naming it; the other peers' answers still count.
"""

from __future__ import annotations

import glob
import json
import ssl
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TextIO

import httpx

from proxyd import errtext
from proxyd.config.settings import Settings
from proxyd.doveadm.server import API_PATH, api_key_header

_TIMEOUT: Final = 30.0


class ClusterConfigError(Exception):
    """``--cluster`` cannot work with this configuration."""


@dataclass(frozen=True, slots=True)
class PeerAnswer:
    peer: str
    #: the doveadm API's answer entries, one per command sent
    entries: list[Any] | None = None
    error: str = ""


def peers(settings: Settings) -> tuple[str, ...]:
    if not settings.proxyd_cluster_peers:
        raise ClusterConfigError("--cluster needs proxyd_cluster_peers")
    if not settings.doveadm_api_key:
        raise ClusterConfigError("--cluster needs doveadm_api_key (the peers are asked with it)")
    return settings.proxyd_cluster_peers


def _uses_tls(settings: Settings) -> bool:
    return any(listener.ssl for listener in settings.service("doveadm").listeners if listener.port)


def _tls_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if settings.ssl_client_ca_file or settings.ssl_client_ca_dir:
        context.load_verify_locations(
            cafile=settings.ssl_client_ca_file or None, capath=settings.ssl_client_ca_dir or None
        )
    elif settings.ssl_ca:
        context.load_verify_locations(cadata=settings.ssl_ca)
    return context


def ask_all(settings: Settings, commands: Sequence[list[Any]]) -> list[PeerAnswer]:
    """Send ``commands`` (``[name, params, tag]``) to every peer; answers in peer order."""
    nodes = peers(settings)
    scheme = "https" if _uses_tls(settings) else "http"
    verify: ssl.SSLContext | bool = _tls_context(settings) if scheme == "https" else False
    headers = {"Authorization": api_key_header(settings.doveadm_api_key.reveal()), "User-Agent": "proxyctl"}
    body = json.dumps(list(commands)).encode()

    def one(peer: str) -> PeerAnswer:
        try:
            with httpx.Client(verify=verify, timeout=_TIMEOUT, trust_env=False) as client:
                response = client.post(f"{scheme}://{peer}{API_PATH}", content=body, headers=headers)
        except httpx.HTTPError as exc:
            return PeerAnswer(peer, error=_describe(exc))
        if response.status_code != 200:
            return PeerAnswer(peer, error=f"HTTP {response.status_code} {response.reason_phrase}")
        try:
            entries = response.json()
        except ValueError:
            return PeerAnswer(peer, error="the answer is not JSON")
        if not isinstance(entries, list) or len(entries) != len(commands):
            return PeerAnswer(peer, error="the answer does not match the request")
        return PeerAnswer(peer, entries=entries)

    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
        return list(pool.map(one, nodes))


def _describe(exc: httpx.HTTPError) -> str:
    """A connect error as Dovecot words it, without Python's reprs."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return f"SSL error: {errtext.ssl_error(cause)}"
        if isinstance(cause, OSError) and (cause.errno or cause.strerror):
            return errtext.os_error(cause)
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.TimeoutException):
        return f"Timed out after {_TIMEOUT:g} secs"
    return str(exc) or type(exc).__name__


def payload(entry: Any) -> Any:
    """The payload of a ``doveadmResponse`` entry; ValueError for an error entry."""
    if isinstance(entry, list) and len(entry) == 3 and entry[0] == "doveadmResponse":
        return entry[1]
    if isinstance(entry, list) and len(entry) == 3 and entry[0] == "error" and isinstance(entry[1], dict):
        raise ValueError(f"the command failed: {entry[1].get('type', 'error')}")
    raise ValueError("the answer is not a doveadm response")


def flush_and_kick(
    settings: Settings, users: Sequence[str], stderr: TextIO
) -> tuple[int, bool, int]:
    """Flush ``users`` from every peer's auth cache and kick their sessions there.

    Returns (sessions kicked, whether every peer did both, peers asked); a peer
    that failed is named on ``stderr``.  Raises ``ClusterConfigError``.
    """
    commands: list[list[Any]] = [
        ["authCacheFlush", {"user": list(users)}, "flush"],
        ["proxyKick", {"user": [glob.escape(user) for user in users]}, "kick"],
    ]
    answers = ask_all(settings, commands)
    total, ok = 0, True
    for answer in answers:
        try:
            if answer.entries is None:
                raise ValueError(answer.error)
            payload(answer.entries[0])
            total += int(payload(answer.entries[1])[0]["count"])
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            print(f"proxyctl: {answer.peer}: {exc}", file=stderr)
            ok = False
    return total, ok, len(answers)
