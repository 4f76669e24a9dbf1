"""Whatever the text, loading it either works or raises ConfigError, nothing else."""

from __future__ import annotations

import atexit
import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxyd.config.load import load_settings_text
from proxyd.config.settings import Settings
from proxyd.errors import ConfigError

# An empty directory, so relative !include / <FILE names find nothing real.
_DIR = tempfile.mkdtemp(prefix="proxyd-config-fuzz-")
_NAME = os.path.join(_DIR, "fuzz.conf")
atexit.register(os.rmdir, _DIR)

_WORDS = st.sampled_from(
    [
        "ssl", "no", "yes", "=", "{", "}", "#", '"', "'", "\\", "$", "<", "!include", "!include_try",
        "service", "imap-login", "inet_listener", "imap", "port", "passdb", "userdb", "driver",
        "protocols", "$protocols", "listen", "login_greeting", "auth_failure_delay", "5s",
        "namespace", "protocol", "ssl_cert", "*", "::", " ", "\t", "\n", "\r", "\\\n", "0",
        "login_trusted_networks", "10.0.0.0/8", "$ENV:HOME", "mail_location", "foo",
    ]
)  # fmt: skip
_TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(_WORDS, max_size=60).map("".join),
    st.lists(st.lists(_WORDS, max_size=8).map(" ".join), max_size=20).map("\n".join),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXT)
def test_random_text_raises_only_config_error(text: str) -> None:
    message = ""
    try:
        result = load_settings_text(text, _NAME)
    except ConfigError as error:
        message = str(error)
        assert message
    else:
        assert isinstance(result, Settings)
