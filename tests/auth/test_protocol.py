"""The login<->auth socket's records: each survives its encoding, and bad lines are refused."""

from __future__ import annotations

import contextlib
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
)
from proxyd.auth.request import AuthReply, AuthStatus, FailCode, SaslStart
from proxyd.auth.wire import MAX_LINE, LineReader, encode, read_answer, read_call
from proxyd.ipc.channel import ControlError
from tests.auth.util import make_conn, make_request


def _line(record: Any) -> bytes:
    (line,) = LineReader().feed(encode(record))
    return line


def test_a_password_request_survives_its_encoding() -> None:
    request = make_request("alice", "secret", remote_ip="192.0.2.7", login_user="bob")
    read = read_call(_line(Lookup.of(2, request)))
    assert isinstance(read, Lookup)
    assert read.id == 2
    assert read.request.user == "alice"
    assert read.request.login_user == "bob"
    assert read.request.password is not None
    assert read.request.password.reveal() == "secret"
    assert read.request.conn == request.conn


def test_a_lookup_cannot_set_what_only_the_auth_process_sets() -> None:
    """``passdb_fields`` (what ``%{passdb:NAME}`` expands to) is the chain's: no field of
    the line carries it."""
    line = _line(Lookup.of(2, make_request("alice")))
    data = json.loads(line)
    data.append({"proxy": "y"})
    assert read_call(json.dumps(data).encode()) == BadCall(2, "ValidationError")


def test_an_exchange_survives_its_encoding() -> None:
    start = SaslStart(make_conn(forward_fields={"forward_x": "1"}, client_id='"name" "x"'), "CRAM-MD5", b"")
    begin = read_call(_line(SaslBegin(3, start)))
    assert isinstance(begin, SaslBegin)
    assert begin.start == start
    assert read_call(_line(SaslBegin(4, SaslStart(make_conn(), "PLAIN", None)))) == SaslBegin(
        4, SaslStart(make_conn(), "PLAIN", None)
    )
    assert read_call(_line(SaslContinue(3, b"\x00answer"))) == SaslContinue(3, b"\x00answer")
    assert read_call(_line(SaslAbort(3))) == SaslAbort(3)
    assert read_answer(_line(Challenge(3, b"<1.2@host>"))) == Challenge(3, b"<1.2@host>")
    reply = AuthReply(AuthStatus.FAIL, "bob", {"reason": "no"}, FailCode.AUTH_FAILED, "no")
    assert read_answer(_line(Done(3, reply))) == Done(3, reply)


def test_a_call_with_an_unreadable_body_is_answered_not_dropped() -> None:
    assert read_call(b'["lookup",4,{}]') == BadCall(4, "ValidationError")
    assert read_call(b'["auth",7,{}]') == BadCall(7, "ValidationError")
    assert read_call(b'["sasl",5]') == BadCall(5, "ValidationError")
    conn = json.loads(_line(SaslBegin(6, SaslStart(make_conn(), "PLAIN"))))[2]["conn"]
    conn["local_port"] = "143"
    assert read_call(json.dumps(["sasl", 6, {"conn": conn, "mech": "PLAIN"}]).encode()) == BadCall(
        6, "ValidationError"
    )
    # a continuation that is not base64 reaches its exchange as "no answer"
    assert read_call(b'["cont",6,"!!"]') == SaslContinue(6, None)


@pytest.mark.parametrize(
    "line", [b'["auth"]', b'["auth","1"]', b'["abort",true]', b'{"id":1}', b"[", b"", b"\xff"]
)
def test_a_call_without_an_id_is_a_control_error(line: bytes) -> None:
    with pytest.raises(ControlError):
        read_call(line)


@pytest.mark.parametrize(
    "line",
    [b'["done",1]', b'["challenge",1,3]', b'["done",1,{"status":"maybe","user":""}]', b"{}", b"x"],
)
def test_a_bad_answer_is_a_control_error(line: bytes) -> None:
    with pytest.raises(ControlError):
        read_answer(line)


def test_lines_are_split_across_reads_and_bounded() -> None:
    reader = LineReader(max_line=10)
    assert reader.feed(b'["abort",') == []
    assert reader.feed(bytearray(b'1]\n["abort",2]\n["ab')) == [b'["abort",1]', b'["abort",2]']
    assert reader.feed(b'ort",3]\n') == [b'["abort",3]']
    with pytest.raises(ControlError):
        reader.feed(b"x" * 11)
    assert MAX_LINE >= 1 << 16


_scalar = st.none() | st.booleans() | st.integers() | st.text(max_size=6)
_json = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(
    op=st.sampled_from(["lookup", "sasl", "cont", "abort", "challenge", "done", "", None, 1]),
    call_id=st.integers() | st.booleans() | st.none(),
    body=st.lists(_json, max_size=7),
)
def test_any_json_line_is_a_record_or_a_control_error(op: Any, call_id: Any, body: list[Any]) -> None:
    line = json.dumps([op, call_id, *body]).encode()
    try:
        call = read_call(line)
    except ControlError:
        assert not isinstance(call_id, int) or isinstance(call_id, bool)
    else:
        assert call.id == call_id
    try:
        answer = read_answer(line)
    except ControlError:
        return
    assert read_answer(_line(answer)) == answer


@given(st.binary(max_size=200))
def test_any_bytes_are_lines_of_records_or_control_errors(data: bytes) -> None:
    reader = LineReader(max_line=100)
    try:
        lines = reader.feed(data)
    except ControlError:
        return
    for line in lines:
        for read in (read_call, read_answer):
            with contextlib.suppress(ControlError):
                read(line)


def test_no_password_in_a_records_repr() -> None:
    lookup = Lookup.of(1, make_request("alice", "s3cret"))
    assert "s3cret" not in repr(lookup)
    assert "s3cret" not in repr(SaslContinue(2, b"s3cret"))
    assert "s3cret" not in repr(SaslBegin(3, SaslStart(make_conn(), "PLAIN", b"\0alice\0s3cret")))
