"""``service doveadm { inet_listener http { } }``: routes, authentication, the access log.

As Dovecot's ``client-connection-http.c``: ``OPTIONS`` (any path) answers the
CORS headers without authentication; ``GET /`` lists the mounts, ``GET
/doveadm/v1`` the commands, ``POST /doveadm/v1`` runs them; any other path is
``404 Path Not Found``.  Authentication is ``Authorization: X-Dovecot-API
<base64(doveadm_api_key)>`` or ``Basic <base64(doveadm:doveadm_password)>``;
anything else is ``401 Authentication required`` with a ``WWW-Authenticate``
per enabled scheme, and with neither setting configured every request is a
500.  The comparison is constant-time (Dovecot's is ``strcmp``).
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import Callable
from typing import Any, Final

from proxyd.config.settings import Settings
from proxyd.doveadm import protocol
from proxyd.doveadm.commands import COMMANDS, Node, run_call
from proxyd.httpd import Request, Response
from proxyd.log import sanitize

log = logging.getLogger("proxyd.doveadm")

API_PATH: Final = "/doveadm/v1"
_JSON: Final = (("Content-Type", "application/json; charset=utf-8"),)
#: (method, path); None = any (Dovecot's doveadm_http_server_mounts)
_MOUNTS: Final = (("OPTIONS", None), ("GET", "/"), ("GET", API_PATH), ("POST", API_PATH))
_CORS: Final = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
    ("Access-Control-Allow-Request-Headers", "Content-Type, X-API-Key, Authorization"),
    ("Access-Control-Allow-Headers", "Content-Type, WWW-Authenticate"),
)


class DoveadmHttp:
    """The request handler; ``settings`` is asked on every request (a reload may change the key)."""

    def __init__(self, node: Node, settings: Callable[[], Settings]) -> None:
        self.node = node
        self.settings = settings

    async def handle(self, request: Request) -> Response:
        response = await self._route(request)
        agent = sanitize(request.headers.get("user-agent", ""), 200)
        log.info(
            'doveadm: %s - - "%s %s HTTP/%s" %d %d "%s"',
            request.remote_ip, sanitize(request.method, 20), sanitize(request.path, 200),
            request.http_version, response.status, len(response.body), agent,
        )
        return response

    async def _route(self, request: Request) -> Response:
        mount = next(
            (m for m in _MOUNTS if m[0] == request.method and m[1] in (None, request.path)), None
        )
        if mount is None:
            return Response.text(404, "Path Not Found")
        if request.method == "OPTIONS":
            return Response(200, "OK", headers=_CORS)
        denied = self._authorize(request)
        if denied is not None:
            return denied
        if request.method == "GET" and request.path == "/":
            mounts = [{"method": m or "*", "path": p or "*"} for m, p in _MOUNTS]
            return _json(mounts)
        if request.method == "GET":
            return _json(protocol.describe(COMMANDS))
        try:
            calls = protocol.parse_request(request.body, COMMANDS)
        except protocol.BadRequest as exc:
            return Response.text(400, "Bad Request", str(exc))
        return _json([await run_call(self.node, call, request.remote_ip) for call in calls])

    def _authorize(self, request: Request) -> Response | None:
        settings = self.settings()
        key = settings.doveadm_api_key.reveal()
        password = settings.doveadm_password.reveal()
        if not key and not password:
            log.error("No authentication defined in configuration. Add API key or password")
            return Response.text(500, "Internal Server Error")
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        token = token.strip()
        if scheme and _verify(scheme, token, key, password):
            return None
        challenges: list[tuple[str, str]] = []
        if key:
            challenges.append(("WWW-Authenticate", "X-Dovecot-API"))
        if password:
            challenges.append(("WWW-Authenticate", 'Basic Realm="doveadm"'))
        return Response(401, "Authentication required", headers=tuple(challenges))


def _verify(scheme: str, token: str, key: str, password: str) -> bool:
    if scheme.lower() == "basic":
        if not password:
            log.error("Invalid authentication attempt to HTTP API: Basic authentication scheme not enabled")
            return False
        if _same(token, _b64(f"doveadm:{password}")):
            return True
        log.error("Invalid authentication attempt to HTTP API (using Basic authentication scheme)")
        return False
    if scheme.lower() == "x-dovecot-api":
        if not key:
            log.error(
                "Invalid authentication attempt to HTTP API: X-Dovecot-API authentication scheme not enabled"
            )
            return False
        if _same(token, _b64(key)):
            return True
        log.error("Invalid authentication attempt to HTTP API (using X-Dovecot-API authentication scheme)")
        return False
    log.error("Unsupported authentication scheme to HTTP API: %s", sanitize(scheme, 128))
    return False


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _json(document: Any) -> Response:
    return Response(200, "OK", protocol.encode(document), _JSON)


def api_key_header(key: str) -> str:
    """The ``Authorization`` value a client sends with ``doveadm_api_key`` (proxyctl --cluster)."""
    return f"X-Dovecot-API {_b64(key)}"
