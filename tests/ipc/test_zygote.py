"""The zygote socket's records survive their encoding; anything else is refused."""

from __future__ import annotations

import pytest

from proxyd.ipc.channel import ControlError
from proxyd.ipc.zygote import (
    Exited,
    Reload,
    Reloaded,
    Spawn,
    Spawned,
    ZygoteError,
    ZygoteReport,
    ZygoteRequest,
    encode,
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
