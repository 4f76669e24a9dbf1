"""The per-login copies of the auth records keep every field (they are made by the
constructor, not ``dataclasses.replace``, so a field added later must be added there too)."""

from __future__ import annotations

import dataclasses

from proxyd.auth.request import AuthReply, AuthRequest, AuthStatus, FailCode
from proxyd.secret import Secret
from tests.auth.util import make_conn

_REQUEST = AuthRequest(
    conn=make_conn(client_id='"name" "x"', forward_fields={"a": "b"}),
    mech="PLAIN",
    user="alice",
    password=Secret("pw"),
    login_user="bob",
    passdb_fields={"tenant": "t1"},
    credentials_scheme="CRAM-MD5",
)


def _every_field_set(record: object) -> None:
    for spec in dataclasses.fields(record):  # type: ignore[arg-type]
        if spec.default is not dataclasses.MISSING or spec.default_factory is not dataclasses.MISSING:
            default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()  # type: ignore[misc]
            assert getattr(record, spec.name) != default, f"set {spec.name} in this test"


def test_request_copies_keep_every_other_field() -> None:
    _every_field_set(_REQUEST)
    password = Secret("other")
    assert _REQUEST.with_names("carol", "dave", password) == dataclasses.replace(
        _REQUEST, user="carol", login_user="dave", password=password
    )
    assert _REQUEST.for_passdb("carol", {"x": "y"}, "") == dataclasses.replace(
        _REQUEST, user="carol", passdb_fields={"x": "y"}, credentials_scheme=""
    )


def test_reply_copies_keep_every_other_field() -> None:
    reply = AuthReply(AuthStatus.FAIL, "alice", {"a": "b"}, FailCode.USER_DISABLED, "gone")
    _every_field_set(reply)
    assert reply.with_fields({"c": ""}) == dataclasses.replace(reply, fields={"c": ""})
