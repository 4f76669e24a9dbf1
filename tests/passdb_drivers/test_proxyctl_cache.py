"""``proxyctl auth cache flush [USER]``: argument handling without a running proxyd.

The flush itself, through the master to the auth process, is tested with real
processes in tests/master/test_process_model.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proxyd.cli import proxyctl


@pytest.mark.parametrize(
    "argv", [["auth", "cache", "flush"], ["auth", "cache", "flush", "alice", "bob"]]
)
def test_cache_flush_needs_a_running_proxyd(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "proxyd.conf"
    config.write_text(f"ssl = no\nbase_dir = {tmp_path}/run\npassdb {{\n  driver = static\n  args = nopassword=y\n}}\n")
    assert proxyctl.main(["-c", str(config), *argv]) == proxyctl.EXIT_USAGE
    captured = capsys.readouterr()
    assert "proxyd is not running" in captured.err
    assert captured.out == ""


def test_cache_needs_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert proxyctl.main(["auth", "cache"]) == proxyctl.EXIT_USAGE
    assert "the following arguments are required: SUBCOMMAND" in capsys.readouterr().err
