"""The inter-process records: each one survives its encoding, and nothing else is read."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxyd.ipc.channel import ControlError, MessageDecoder, encode
from proxyd.ipc.messages import (
    CacheFlush,
    Command,
    CountReply,
    IpLimit,
    Kick,
    LastLogin,
    LastLoginReply,
    PreloginCount,
    QueueFull,
    Report,
    ServiceFull,
    Status,
    Stop,
    Who,
    WhoReply,
    WhoRow,
    read_command,
    read_report,
)

COMMANDS: list[Command] = [
    Stop(),
    QueueFull(),
    ServiceFull(True),
    ServiceFull(False),
    IpLimit("192.0.2.7", True),
    IpLimit("2001:db8::1", False),
    Who("al*", id=4),
    Kick(("alice",), id=5),
    Kick(("a*", "bob"), host="10.0.0.1", id=6),
    CacheFlush(id=7),
    CacheFlush(("alice", "bob"), id=8),
    LastLogin("alice", id=9),
]
REPORTS: list[Report] = [
    Status(clients=0, accepting=True),
    Status(clients=12, accepting=False),
    Status(clients=1, accepting=False, prelogin_since=1796649491.25),
    PreloginCount("192.0.2.7", 1),
    PreloginCount("192.0.2.7", -1),
    WhoReply(4, ()),
    WhoReply(4, (WhoRow("alice", "imap", "192.0.2.7", "127.0.0.2:143", 9),)),
    CountReply(5, 2),
    LastLoginReply(9, None, None),
    LastLoginReply(9, "10.0.1.12", 1796649491.25),
]


def _through_the_wire(record: Command | Report) -> dict[str, Any]:
    (data,) = MessageDecoder().feed(encode(record.wire()))
    return data


@pytest.mark.parametrize("command", COMMANDS, ids=repr)
def test_a_command_survives_its_encoding(command: Command) -> None:
    assert read_command(_through_the_wire(command)) == command


@pytest.mark.parametrize("report", REPORTS, ids=repr)
def test_a_report_survives_its_encoding(report: Report) -> None:
    assert read_report(_through_the_wire(report)) == report


def test_a_report_is_not_a_command_and_back() -> None:
    with pytest.raises(ControlError):
        read_command(_through_the_wire(Status(clients=1, accepting=True)))
    with pytest.raises(ControlError):
        read_report(_through_the_wire(Stop()))


@pytest.mark.parametrize(
    "data",
    [
        {"cmd": "who", "id": 1},  # no mask
        {"cmd": "kick", "id": "1", "mask": "*"},
        {"cmd": "cache-flush", "id": 1, "users": "alice"},
        {"ev": "status", "clients": 1, "accepting": "yes"},
        {"ev": "status", "clients": True, "accepting": True},
        {"ev": "who", "id": 1, "sessions": [{"user": "a"}]},
        {"ev": "oldest-prelogin", "id": 1, "since": "now"},
        {"cmd": "service-full"},
        {"cmd": "service-full", "full": 1},
        {"cmd": "ip-limit", "ip": "192.0.2.7"},
        {"ev": "prelogin", "ip": "192.0.2.7", "delta": 2},
    ],
)
def test_a_malformed_record_is_a_control_error(data: dict[str, Any]) -> None:
    with pytest.raises(ControlError):
        (read_command if "cmd" in data else read_report)(data)


_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
_json = _scalar | st.lists(_scalar, max_size=2) | st.lists(
    st.dictionaries(st.sampled_from(["user", "protocol", "ip", "backend", "age"]), _scalar), max_size=2
)
_tags = st.sampled_from(["stop", "queue-full", "service-full", "ip-limit", "prelogin", "oldest-prelogin", "who", "kick", "cache-flush",
                         "status", "count", "reply", ""])


@given(
    key=st.sampled_from(["cmd", "ev"]),
    tag=_tags,
    fields=st.dictionaries(
        st.sampled_from(["id", "mask", "host", "users", "clients", "accepting", "sessions",
                         "count", "since", "full", "ip", "over", "delta"]),
        _json,
        max_size=5,
    ),
)
def test_any_json_object_is_a_record_or_a_control_error(
    key: str, tag: str, fields: dict[str, Any]
) -> None:
    data = json.loads(json.dumps({key: tag, **fields}))
    for read in (read_command, read_report):
        try:
            record = read(data)
        except ControlError:
            continue
        assert read(_through_the_wire(record)) == record
