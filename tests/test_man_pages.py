"""The man pages render without groff warnings and name every proxyctl command."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

MAN = Path(__file__).parents[1] / "man"


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
@pytest.mark.parametrize("page", ["proxyd.8", "proxyctl.8", "proxyd.conf.5"])
def test_renders_without_warnings(page: str) -> None:
    result = subprocess.run(
        ["groff", "-man", "-ww", "-z", str(MAN / page)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert result.stderr == ""


def test_proxyctl_page_names_every_command() -> None:
    from proxyd.cli.proxyctl import _parser

    text = (MAN / "proxyctl.8").read_text()
    commands = next(a for a in _parser()._actions if a.dest == "command").choices
    assert commands
    for name in commands:
        assert re.search(rf"^\.B[IR]? \"?{name}\b.*$|, \" {name}$", text, re.MULTILINE), name
