"""The zygote socket's records survive their encoding; anything else is refused."""

from __future__ import annotations

import dataclasses

import pytest

from proxyd.ipc.channel import ControlError
from proxyd.ipc.zygote import (
    SEQ_MARK,
    Exited,
    Reload,
    Reloaded,
    Spawn,
    Spawned,
    ZygoteError,
    ZygoteReport,
    ZygoteRequest,
    encode,
    encode_exited,
    encode_spawned,
    read_report,
    read_request,
)


@pytest.mark.parametrize("request_", [Spawn(1, "login", "imap-login"), Spawn(2, "auth", ""), Reload(3)])
def test_a_request_survives_its_encoding(request_: ZygoteRequest) -> None:
    assert read_request(encode(request_)) == request_


@pytest.mark.parametrize(
    "report", [Spawned(1, 4242), Reloaded(3), ZygoteError(2, "fork() failed"), Exited(4242, 256)]
)
def test_a_report_survives_its_encoding(report: ZygoteReport) -> None:
    assert read_report(encode(report)) == report


@pytest.mark.parametrize("data", [b"", b"[]", b"{", b'{"op": "reload"}', b'{"ev": "exit", "pid": "1"}'])
def test_anything_else_is_a_control_error(data: bytes) -> None:
    with pytest.raises(ControlError):
        read_request(data) if b"op" in data else read_report(data)


@pytest.mark.parametrize(("seq", "pid", "status"), [(1, 4242, 0), (2**31, 1, 256), (7, 2**22, 9)])
def test_the_zygotes_own_datagrams_are_the_records_encodings(seq: int, pid: int, status: int) -> None:
    """What the zygote sends after each fork without making the records is those records."""
    assert encode_spawned(seq, pid) == encode(Spawned(seq, pid))
    assert read_report(encode_spawned(seq, pid)) == Spawned(seq, pid)
    assert encode_exited(pid, status) == encode(Exited(pid, status))
    assert read_report(encode_exited(pid, status)) == Exited(pid, status)


@pytest.mark.parametrize("request_", [Spawn(1, "login", "imap-login"), Spawn(2**40, "auth", ""), Reload(3)])
def test_a_request_ends_in_its_seq(request_: ZygoteRequest) -> None:
    """The zygote's loop knows a request again by what precedes ``SEQ_MARK``: the rest is the seq."""
    head, mark, tail = encode(request_).rpartition(SEQ_MARK)
    assert mark == SEQ_MARK
    assert tail == b"%d}" % request_.seq
    assert head == encode(dataclasses.replace(request_, seq=0)).rpartition(SEQ_MARK)[0]
