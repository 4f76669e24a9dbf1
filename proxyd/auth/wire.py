"""The auth records as plain JSON-able dicts, for the socket between login and auth processes."""

from __future__ import annotations

from typing import Any

from proxyd.auth.request import AuthReply, AuthRequest, AuthStatus, ConnectionInfo, FailCode
from proxyd.secret import Secret

_CONN_FIELDS = (
    "service", "local_ip", "local_port", "remote_ip", "remote_port", "real_local_ip", "real_local_port",
    "real_remote_ip", "real_remote_port", "secured", "tls", "session_id", "trusted", "client_id",
)


def request_to_wire(request: AuthRequest) -> dict[str, Any]:
    conn = {name: getattr(request.conn, name) for name in _CONN_FIELDS}
    conn["forward_fields"] = dict(request.conn.forward_fields)
    return {
        "conn": conn,
        "mech": request.mech,
        "user": request.user,
        "password": None if request.password is None else request.password.reveal(),
        "login_user": request.login_user,
    }


def request_from_wire(data: dict[str, Any]) -> AuthRequest:
    conn = dict(data["conn"])
    conn["forward_fields"] = dict(conn.get("forward_fields") or {})
    password = data.get("password")
    return AuthRequest(
        conn=ConnectionInfo(**conn),
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
