"""``proxyctl auth cache flush [USER]``: parsed, and refused until the auth process can be asked."""

from __future__ import annotations

import pytest

from proxyd.cli import proxyctl


@pytest.mark.parametrize(
    "argv", [["auth", "cache", "flush"], ["auth", "cache", "flush", "alice", "bob"]]
)
def test_cache_flush_is_not_supported_yet(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert proxyctl.main(argv) == proxyctl.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.err == "proxyctl: 'auth cache flush' is not supported yet\n"
    assert captured.out == ""


def test_cache_needs_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert proxyctl.main(["auth", "cache"]) == proxyctl.EXIT_USAGE
    assert "the following arguments are required: SUBCOMMAND" in capsys.readouterr().err
