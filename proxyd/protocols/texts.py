"""The client texts every login process shares (Dovecot's ``login-common.h``, ``login-proxy.h``).

Each protocol words its replies around these in its own ``replies`` module.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

AUTH_FAILED_MSG: Final = "Authentication failed."  # AUTH_FAILED_MSG
AUTH_TEMP_FAILED_MSG: Final = "Temporary authentication failure."  # AUTH_TEMP_FAILED_MSG
AUTH_PLAINTEXT_DISABLED_MSG: Final = (
    "Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
)
PROXY_FAILURE_MSG: Final = "Account is temporarily unavailable."  # LOGIN_PROXY_FAILURE_MSG
PLAINTEXT_EXPOSED_NOTICE: Final = (
    "Plaintext authentication not allowed without SSL/TLS, but your client did it anyway. "
    "If anyone was listening, the password was exposed."
)
SSL_REQUIRED_MSG: Final = "Authentication not allowed until SSL/TLS is enabled."
MECH_PLAINTEXT_DISABLED_MSG: Final = "Plaintext authentication disabled."
UNSUPPORTED_MECH_MSG: Final = "Unsupported authentication mechanism."
AUTH_ABORTED_MSG: Final = "Authentication aborted by client."
INVALID_BASE64_RESPONSE_MSG: Final = "Invalid base64 in response"
INVALID_BASE64_INITIAL_MSG: Final = "Invalid base64 data in initial response"
INVALID_BASE64_CONTINUED_MSG: Final = "Invalid base64 data in continued response"
LOGIN_DISABLED_MSG: Final = "Login disabled for this user"
AUTHZ_FAILED_MSG: Final = "Authorization failed"


def tempfail_text(hostname: str, now: datetime) -> str:
    """``Temporary authentication failure. [<host>:<YYYY-mm-dd HH:MM:SS>]``."""
    return f"{AUTH_TEMP_FAILED_MSG} [{hostname}:{now.strftime('%Y-%m-%d %H:%M:%S')}]"
