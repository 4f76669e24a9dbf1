"""Builders shared by the auth and passdb driver tests."""

from __future__ import annotations

from typing import Any

from proxyd.auth.request import AuthRequest, ConnectionInfo
from proxyd.secret import Secret


def make_conn(**overrides: Any) -> ConnectionInfo:
    values: dict[str, Any] = {
        "service": "imap",
        "local_ip": "127.0.0.1",
        "local_port": 143,
        "remote_ip": "192.0.2.10",
        "remote_port": 50000,
        "real_local_ip": "127.0.0.1",
        "real_local_port": 143,
        "real_remote_ip": "192.0.2.10",
        "real_remote_port": 50000,
        "secured": True,
        "tls": True,
        "session_id": "sess1",
    }
    values.update(overrides)
    return ConnectionInfo(**values)


def make_request(
    user: str,
    password: str | None = None,
    *,
    mech: str = "PLAIN",
    login_user: str = "",
    **conn: Any,
) -> AuthRequest:
    return AuthRequest(
        conn=make_conn(**conn),
        mech=mech if password is not None else "",
        user=user,
        password=Secret(password) if password is not None else None,
        login_user=login_user,
    )
