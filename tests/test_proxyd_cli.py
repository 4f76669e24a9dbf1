"""``proxyd --version`` and ``proxyd -n -P`` (the -n output promises -P for hidden values)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxyd import __version__
from proxyd.cli.proxyd import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"proxyd {__version__}\n"


def test_dump_hides_secrets_unless_p(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "proxyd.conf"
    config.write_text(
        f"ssl = no\nbase_dir = {tmp_path}/run\ndoveadm_api_key = key-X7\n"
        "passdb {\n  driver = static\n  args = password=pw-X7\n}\n"
    )
    assert main(["-c", str(config), "-n"]) == 0
    hidden = capsys.readouterr().out
    assert "doveadm_api_key = # hidden, use -P to show it" in hidden
    assert "X7" not in hidden
    assert main(["-c", str(config), "-n", "-P"]) == 0
    shown = capsys.readouterr().out
    assert "doveadm_api_key = key-X7" in shown
    assert "args = password=pw-X7" in shown
