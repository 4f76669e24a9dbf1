"""Cross-check against the real doveconf: the same text is accepted or rejected at the same line.

Skipped where Dovecot is not installed.  Only settings and syntax that proxyd
implements are used, so both sides must agree.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from proxyd.config.load import load_settings
from proxyd.errors import ConfigError

DOVECONF = shutil.which("doveconf")
pytestmark = pytest.mark.skipif(DOVECONF is None, reason="doveconf (Dovecot) is not installed")

CASES = [
    "auth_failure_delay = 0",
    "auth_failure_delay = 3",
    "auth_failure_delay = 3s",
    "auth_failure_delay = 3000ms",
    "auth_failure_delay = 300ms",
    "auth_failure_delay = 2 mins",
    "auth_failure_delay = 1 weeks",
    "auth_failure_delay = 5 sx",
    "login_proxy_timeout = 300ms",
    "login_proxy_timeout = 1.5s",
    "login_proxy_max_reconnects = 5",
    "login_proxy_max_reconnects = x",
    "auth_verbose = Y",
    "auth_verbose = 1",
    "auth_verbose = 0",
    "auth_verbose = maybe",
    "imap_id_retain = YES",
    "ssl = maybe",
    "foo = bar",
    "login_greeting = x $default_login_user y",
    "login_greeting = $nope",
    'login_greeting = "quoted # not comment"',
    "login_greeting = a \\\n  b",
    "passdb {\n  driver = static\n  result_success = maybe\n}",
    "passdb {\n  driver = static\n  skip = authenticated\n}",
    "passdb a {\n  driver = static\n}\npassdb a {\n  driver = static\n}",
    "passdb {\n  driver = static\n  foo = 1\n}",
    "service imap-login {\n  inet_listener imap {\n    port = 70000\n  }\n}",
    "service imap-login {\n  inet_listener imap {\n    port = 1143\n  }\n}",
    "service imap-login {\n  inet_listener imap {\n    foo = 1\n  }\n}",
    "service imap-login { port = 1 }",
    "service imap-login",
    "}",
    "ssl_cert = <missing.pem",
    "!include missing.conf",
    "!include_try missing.conf",
]


def doveconf_result(path: Path) -> tuple[bool, int | None]:
    assert DOVECONF is not None
    done = subprocess.run(
        [DOVECONF, "-x", "-c", str(path), "-n"], capture_output=True, text=True, check=False
    )
    match = re.search(r"Error in configuration file \S+ line (\d+)", done.stderr)
    return done.returncode == 0, int(match.group(1)) if match else None


def proxyd_result(path: Path) -> tuple[bool, int | None]:
    try:
        load_settings(str(path))
    except ConfigError as error:
        return False, error.location.line if error.location else None
    return True, None


@pytest.mark.parametrize("case", CASES)
def test_same_verdict_as_doveconf(tmp_path: Path, case: str) -> None:
    path = tmp_path / "dovecot.conf"
    path.write_text(f"ssl = no\n{case}\n")
    assert proxyd_result(path) == doveconf_result(path)
