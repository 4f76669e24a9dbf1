"""Value types, with Dovecot 2.3's rules and error texts."""

from __future__ import annotations

import ipaddress

import pytest

from proxyd.setting import values as v


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes", True),
        ("YES", True),
        ("y", True),
        ("Y", True),
        ("1", True),
        ("no", False),
        ("No", False),
    ],
)
def test_bool(text: str, expected: bool) -> None:
    assert v.parse_bool(text) is expected


@pytest.mark.parametrize("text", ["0", "n", "true", "false", "", "maybe", "yes "])
def test_bool_invalid(text: str) -> None:
    with pytest.raises(v.InvalidValue) as info:
        v.parse_bool(text)
    assert str(info.value) == f"Invalid boolean value: {text} (use yes or no)"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("5s", 5.0),
        ("5 s", 5.0),
        ("5sec", 5.0),
        ("5 secs", 5.0),
        ("5 second", 5.0),
        ("5 seconds", 5.0),
        ("5 SECS", 5.0),
        ("2m", 120.0),
        ("2 min", 120.0),
        ("2 mins", 120.0),
        ("2 minutes", 120.0),
        ("1h", 3600.0),
        ("1 hours", 3600.0),
        ("1d", 86400.0),
        ("2 days", 172800.0),
        ("1w", 604800.0),
        ("1 weeks", 604800.0),
        ("3000ms", 3.0),
        ("2000 msecs", 2.0),
        ("1000 milliseconds", 1.0),
    ],
)
def test_time_seconds(text: str, seconds: float) -> None:
    assert v.parse_time(text) == seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300ms", 0.3), ("300 msecs", 0.3), ("5s", 5.0), ("1 min", 60.0), ("0", 0.0)],
)
def test_time_milliseconds(text: str, seconds: float) -> None:
    assert v.parse_time(text, milliseconds=True) == seconds


def test_time_needs_units() -> None:
    with pytest.raises(v.InvalidValue) as info:
        v.parse_time("30")
    assert str(info.value) == "Time interval '30' is missing units (add e.g. 's' for seconds)"


def test_time_milliseconds_not_supported_for_seconds_setting() -> None:
    with pytest.raises(v.InvalidValue) as info:
        v.parse_time("300ms")
    assert str(info.value) == "Milliseconds not supported for this setting: 300ms"


@pytest.mark.parametrize(
    "text", ["", "s", "-1s", "5x", "5 sx", "5 secsx", "1.5s", " 5s", "5 mx", "5\ts"]
)
def test_time_invalid(text: str) -> None:
    with pytest.raises(v.InvalidValue) as info:
        v.parse_time(text)
    assert str(info.value) == f"Invalid time interval: {text}"


def test_time_too_large() -> None:
    with pytest.raises(v.InvalidValue) as info:
        v.parse_time("100000 weeks")
    assert str(info.value) == "Time interval is too large: 100000 weeks"
    with pytest.raises(v.InvalidValue):
        v.parse_time("5000000 s", milliseconds=True)


@pytest.mark.parametrize(
    ("seconds", "milliseconds", "text"),
    [
        (0, False, "0"),
        (5, False, "5 secs"),
        (120, False, "2 mins"),
        (3600, False, "1 hours"),
        (86400 * 3, False, "3 days"),
        (604800, False, "1 weeks"),
        (90, False, "90 secs"),
        (0.3, True, "300 ms"),
        (30, True, "30 secs"),
        (0, True, "0"),
    ],
)
def test_format_time(seconds: float, milliseconds: bool, text: str) -> None:
    assert v.format_time(seconds, milliseconds=milliseconds) == text
    assert v.parse_time(text, milliseconds=milliseconds) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("100", 100),
        ("100B", 100),
        ("1k", 1024),
        ("1 K", 1024),
        ("1kB", 1024),
        ("1KiB", 1024),
        ("256M", 256 * 1024**2),
        ("256 M", 256 * 1024**2),
        ("2G", 2 * 1024**3),
        ("1T", 1024**4),
    ],
)
def test_size(text: str, size: int) -> None:
    assert v.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "1X", "1BB", "1 MX", "-1k"])
def test_size_invalid(text: str) -> None:
    with pytest.raises(v.InvalidValue) as info:
        v.parse_size(text)
    assert str(info.value) == f"Invalid size: {text}"


def test_size_too_large_and_format() -> None:
    with pytest.raises(v.InvalidValue, match="Size is too large"):
        v.parse_size("99999999999T")
    assert v.format_size(256 * 1024**2) == "256 M"
    assert v.format_size(1000) == "1000 B"
    assert v.format_size(0) == "0"


def test_uint() -> None:
    assert v.parse_uint("3") == 3
    assert v.parse_uint("4294967295") == 2**32 - 1
    for text, reason in [
        ("x", "Not a valid number"),
        ("-1", "Number too small"),
        ("4294967296", "Number too large"),
    ]:
        with pytest.raises(v.InvalidValue) as info:
            v.parse_uint(text)
        assert str(info.value) == f"Invalid number {text}: {reason}"


@pytest.mark.parametrize("text", ["65536", "-1", "imap", ""])
def test_port_invalid(text: str) -> None:
    with pytest.raises(v.InvalidValue) as info:
        v.parse_port(text)
    assert str(info.value) == f"Invalid port number {text}"


def test_port() -> None:
    assert v.parse_port("0") == 0
    assert v.parse_port("65535") == 65535


def test_enum() -> None:
    assert v.parse_enum("yes", ("yes", "no")) == "yes"
    with pytest.raises(v.InvalidValue) as info:
        v.parse_enum("YES", ("yes", "no"))
    assert str(info.value) == "Invalid value: YES"


def test_addresses() -> None:
    assert v.parse_addresses("*, ::") == ("*", "::")
    assert v.parse_addresses("127.0.0.1 [::1],localhost") == ("127.0.0.1", "::1", "localhost")
    assert v.parse_addresses("") == ()
    for bad in ("1.2.3.999", "[x]", "a_b"):
        with pytest.raises(v.InvalidValue) as info:
            v.parse_addresses(bad)
        assert str(info.value) == f"Invalid listen address: {bad}"


def test_networks() -> None:
    assert v.parse_networks("10.0.0.0/8, 127.0.0.1 ::1 192.168.1.7/24") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("192.168.1.0/24"),
    )
    with pytest.raises(v.InvalidValue) as info:
        v.parse_networks("10.0.0.0/8 example.com")
    assert str(info.value) == "Invalid network 'example.com'"
    with pytest.raises(v.InvalidValue):
        v.parse_networks("10.0.0.0/33")
