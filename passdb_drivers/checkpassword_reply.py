"""The checkpassword reply helper (Dovecot's ``checkpassword-reply``).

A checkpassword program runs this after it accepted a login; it writes the
extra fields to fd 4, tab-separated: ``user=$USER``, ``userdb_home=$HOME``,
every variable named in ``$EXTRA`` (``key=value``, the key lower-cased), and
``userdb_uid``/``userdb_gid``.  Exit status 0 after an authentication, 2
after a lookup (``AUTHORIZED=2``), 111 when it cannot run safely.
"""

from __future__ import annotations

import os
import sys


def _escape(value: str) -> str:
    """Dovecot's ``str_append_tabescaped()``."""
    return (
        value.replace("\x01", "\x011")
        .replace("\t", "\x01t")
        .replace("\r", "\x01r")
        .replace("\n", "\x01n")
    )


def _error(message: str) -> None:
    print(f"checkpassword: {message}", file=sys.stderr)


def main() -> int:
    orig_uid_env = os.environ.get("ORIG_UID")
    orig_uid = int(orig_uid_env) if orig_uid_env and orig_uid_env.isdigit() else None
    # a program that changed the UID could let another process of that UID write our reply
    if (
        "INSECURE_SETUID" not in os.environ
        and orig_uid != os.getuid()
        and os.getuid() == os.geteuid()
        and os.getgid() == os.getegid()
    ):
        if orig_uid_env is None:
            _error("ORIG_UID environment was dropped by checkpassword. Can't verify if we're safe to run.")
        else:
            _error("The checkpassword couldn't be run securely.")
        return 111
    parts: list[str] = []
    user = os.environ.get("USER")
    if user is not None:
        if "\t" in user:
            _error("USER contains TAB")
            return 1
        parts.append(f"user={_escape(user)}")
    home = os.environ.get("HOME")
    if home is not None:
        if "\t" in home:
            _error("HOME contains TAB")
            return 1
        parts.append(f"userdb_home={_escape(home)}")
    seen: set[str] = set()
    for name in os.environ.get("EXTRA", "").split(" "):
        value = os.environ.get(name) if name else None
        if value is not None:
            key = name.lower()
            seen.add(key)
            parts.append(f"{_escape(key)}={_escape(value)}")
    if "userdb_uid" not in seen:
        parts.append(f"userdb_uid={os.getuid()}")
    if "userdb_gid" not in seen:
        parts.append(f"userdb_gid={os.getgid()}")
    data = ("\t".join(parts) + "\t").encode("utf-8")
    try:
        while data:
            data = data[os.write(4, data) :]
    except OSError as exc:
        _error(f"write_full() failed: {exc.strerror}")
        return 111
    authorized = os.environ.get("AUTHORIZED")
    if authorized is None:
        return 0  # authentication
    if authorized == "2":
        return 2  # a successful passdb lookup
    _error("Script doesn't support passdb/userdb lookup")
    return 111


if __name__ == "__main__":
    sys.exit(main())
