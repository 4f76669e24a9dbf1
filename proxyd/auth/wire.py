"""The auth records as plain JSON-able dicts, for the socket between login and auth processes."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from proxyd.auth.request import (
    AuthReply,
    AuthRequest,
    AuthStatus,
    ConnectionInfo,
    FailCode,
    SaslStart,
)
from proxyd.secret import Secret

_CONN_FIELDS = (
    "service", "local_ip", "local_port", "remote_ip", "remote_port", "real_local_ip", "real_local_port",
    "real_remote_ip", "real_remote_port", "secured", "tls", "session_id", "trusted", "client_id",
    "valid_client_cert", "cert_username",
)


def _conn_to_wire(info: ConnectionInfo) -> dict[str, Any]:
    conn = {name: getattr(info, name) for name in _CONN_FIELDS}
    conn["forward_fields"] = dict(info.forward_fields)
    return conn


def _conn_from_wire(data: dict[str, Any]) -> ConnectionInfo:
    conn = dict(data)
    conn["forward_fields"] = dict(conn.get("forward_fields") or {})
    return ConnectionInfo(**conn)


def bytes_to_wire(data: bytes) -> str:
    """SASL data travels base64-encoded, as on Dovecot's auth-client protocol."""
    return base64.b64encode(data).decode("ascii")


def bytes_from_wire(text: Any) -> bytes:
    """Raises ValueError for anything but base64 text."""
    if not isinstance(text, str):
        raise ValueError("SASL data is not a string")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError("SASL data is not base64") from exc


def sasl_start_to_wire(start: SaslStart) -> dict[str, Any]:
    initial = start.initial_response
    return {
        "conn": _conn_to_wire(start.conn),
        "mech": start.mech,
        "initial": None if initial is None else bytes_to_wire(initial),
    }


def sasl_start_from_wire(data: dict[str, Any]) -> SaslStart:
    initial = data.get("initial")
    return SaslStart(
        conn=_conn_from_wire(data["conn"]),
        mech=str(data["mech"]),
        initial_response=None if initial is None else bytes_from_wire(initial),
    )


def request_to_wire(request: AuthRequest) -> dict[str, Any]:
    return {
        "conn": _conn_to_wire(request.conn),
        "mech": request.mech,
        "user": request.user,
        "password": None if request.password is None else request.password.reveal(),
        "login_user": request.login_user,
    }


def request_from_wire(data: dict[str, Any]) -> AuthRequest:
    password = data.get("password")
    return AuthRequest(
        conn=_conn_from_wire(data["conn"]),
        mech=str(data["mech"]),
        user=str(data["user"]),
        password=None if password is None else Secret(str(password)),
        login_user=str(data.get("login_user", "")),
    )


def reply_to_wire(reply: AuthReply) -> dict[str, Any]:
    return {
        "status": reply.status.value,
        "user": reply.user,
        "fields": dict(reply.fields),
        "fail_code": None if reply.fail_code is None else reply.fail_code.value,
        "reason": reply.reason,
    }


def reply_from_wire(data: dict[str, Any]) -> AuthReply:
    code = data.get("fail_code")
    return AuthReply(
        status=AuthStatus(data["status"]),
        user=str(data.get("user", "")),
        fields={str(k): str(v) for k, v in (data.get("fields") or {}).items()},
        fail_code=None if code is None else FailCode(code),
        reason=data.get("reason"),
    )
