"""The login<->auth socket's records: each survives its encoding, and bad lines are refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxyd.auth.protocol import (
    BadCall,
    Challenge,
    Done,
    Lookup,
    SaslAbort,
    SaslBegin,
    SaslContinue,
    read_answer,
    read_call,
)
from proxyd.auth.request import AuthReply, AuthStatus, FailCode, SaslStart
from proxyd.ipc.channel import ControlError, MessageDecoder, encode
from tests.auth.util import make_conn, make_request


def _line(record: Any) -> dict[str, Any]:
    (data,) = MessageDecoder().feed(encode(record.wire()))
    return data


def test_a_password_request_survives_its_encoding() -> None:
    request = make_request("alice", "secret", remote_ip="192.0.2.7")
    read = read_call(_line(Lookup(2, request)))
    assert isinstance(read, Lookup)
    assert read.id == 2
    assert read.request.user == "alice"
    assert read.request.password is not None
    assert read.request.password.reveal() == "secret"
    assert read.request.conn == request.conn


def test_an_exchange_survives_its_encoding() -> None:
    start = SaslStart(make_conn(), "CRAM-MD5", b"")
    begin = read_call(_line(SaslBegin(3, start)))
    assert isinstance(begin, SaslBegin)
    assert begin.start == start
    assert read_call(_line(SaslContinue(3, b"\x00answer"))) == SaslContinue(3, b"\x00answer")
    assert read_call(_line(SaslAbort(3))) == SaslAbort(3)
    assert read_answer(_line(Challenge(3, b"<1.2@host>"))) == Challenge(3, b"<1.2@host>")
    reply = AuthReply(AuthStatus.FAIL, "bob", {"reason": "no"}, FailCode.AUTH_FAILED, "no")
    assert read_answer(_line(Done(3, reply))) == Done(3, reply)


def test_a_call_with_an_unreadable_body_is_answered_not_dropped() -> None:
    assert read_call({"id": 4, "op": "lookup", "req": {"conn": {}}}) == BadCall(4, "TypeError")
    assert read_call({"id": 7, "op": "auth", "req": {}}) == BadCall(7, "ValueError")
    assert read_call({"id": 5, "op": "sasl"}) == BadCall(5, "KeyError")
    # a continuation that is not base64 reaches its exchange as "no answer"
    assert read_call({"id": 6, "op": "cont", "response": "!!"}) == SaslContinue(6, None)


@pytest.mark.parametrize("data", [{"op": "auth"}, {"id": "1", "op": "auth"}, {"id": True}])
def test_a_call_without_an_id_is_a_control_error(data: dict[str, Any]) -> None:
    with pytest.raises(ControlError):
        read_call(data)


@pytest.mark.parametrize(
    "data", [{"id": 1}, {"id": 1, "challenge": 3}, {"id": 1, "reply": {"status": "maybe"}}]
)
def test_a_bad_answer_is_a_control_error(data: dict[str, Any]) -> None:
    with pytest.raises(ControlError):
        read_answer(data)


_scalar = st.none() | st.booleans() | st.integers() | st.text(max_size=6)


@given(
    op=st.sampled_from(["auth", "lookup", "sasl", "cont", "abort", "", None]),
    body=st.dictionaries(
        st.sampled_from(["req", "start", "response", "challenge", "reply"]),
        _scalar | st.dictionaries(st.sampled_from(["conn", "mech", "user", "status"]), _scalar),
        max_size=3,
    ),
)
def test_any_line_is_a_record_or_a_control_error(op: str | None, body: dict[str, Any]) -> None:
    data = json.loads(json.dumps({"id": 1, "op": op, **body}))
    call = read_call(data)  # every line with an id is some call
    assert call.id == 1
    try:
        answer = read_answer(data)
    except ControlError:
        return
    assert read_answer(_line(answer)) == answer
