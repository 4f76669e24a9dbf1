"""The admin socket's records survive their encoding; odd requests are answered, not dropped."""

from __future__ import annotations

import json

import pytest

from proxyd.ipc.admin import (
    AdminCacheFlush,
    AdminKick,
    AdminReload,
    AdminReply,
    AdminRequest,
    AdminStop,
    AdminUnknown,
    AdminWho,
    read_admin_reply,
    read_admin_request,
)
from proxyd.ipc.channel import ControlError
from proxyd.ipc.messages import WhoRow


@pytest.mark.parametrize(
    "request_",
    [AdminWho("al*"), AdminKick("bob"), AdminKick("*", "10.0.0.1"), AdminCacheFlush(("a", "b")),
     AdminCacheFlush(), AdminReload(), AdminStop()],
    ids=repr,
)
def test_a_request_survives_its_encoding(request_: AdminRequest) -> None:
    assert read_admin_request(json.loads(json.dumps(request_.wire()))) == request_


def test_a_reply_survives_its_encoding() -> None:
    reply = AdminReply(ok=True, count=2, sessions=(WhoRow("alice", "imap", "192.0.2.7", "10.0.0.1:143", 5),))
    assert read_admin_reply(json.loads(json.dumps(reply.wire()))) == reply


def test_old_style_requests_are_read_leniently() -> None:
    assert read_admin_request({"cmd": "who"}) == AdminWho("*")
    assert read_admin_request({"cmd": "kick", "mask": "bob"}) == AdminKick("bob")
    assert read_admin_request({"cmd": "cache-flush"}) == AdminCacheFlush()
    assert read_admin_request({"cmd": "frobnicate"}) == AdminUnknown("'frobnicate'")


def test_a_malformed_request_or_reply_is_a_control_error() -> None:
    with pytest.raises(ControlError):
        read_admin_request({"cmd": "cache-flush", "users": "alice"})
    with pytest.raises(ControlError):
        read_admin_reply({"ok": True, "sessions": [{"user": "x"}]})
