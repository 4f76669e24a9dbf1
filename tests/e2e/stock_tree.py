"""Debian's stock Dovecot 2.3 configuration tree, turned into a proxy the way an administrator does.

``stock_tree()`` copies ``/etc/dovecot`` (dovecot-core's ``dovecot.conf``,
``conf.d/*.conf`` and ``*.conf.ext``) into a test directory and makes only
the edits an administrator makes for a proxy, as small textual substitutions
on the stock files: the passdb include and its users file, the listen
address and listener ports, the certificate paths, ``base_dir``.  The
``protocols.d/*.protocol`` files of the installed protocol packages are copied
too (the test picks which), since ``/usr/share/dovecot/protocols.d`` is where
Debian's packages put them.  ``/etc/dovecot`` itself is never written.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

STOCK_DIR = Path("/etc/dovecot")
PROTOCOLS_DIR = Path("/usr/share/dovecot/protocols.d")


@dataclass(frozen=True)
class StockPorts:
    imap: int
    imaps: int
    pop3: int
    pop3s: int


def edit(path: Path, substitutions: Sequence[tuple[str, str]]) -> None:
    """Apply ``(regex, replacement)`` pairs (multiline); each must change the file."""
    text = path.read_text()
    for pattern, replacement in substitutions:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if count == 0:
            raise AssertionError(f"{path}: {pattern!r} not found in the stock file")
    path.write_text(text)


def stock_tree(
    dest: Path,
    *,
    protocols: Sequence[str],
    listen: str,
    ports: StockPorts,
    cert: Path,
    key: Path,
    users: Path,
    base_dir: Path,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Copy and edit the stock tree under ``dest``; returns the path of its ``dovecot.conf``.

    ``protocols`` names the protocols.d files present (``imapd``, ``pop3d``,
    ``lmtpd``, ``managesieved``, ``submissiond``); ``extra`` maps file names
    under ``conf.d`` to text an administrator adds (for instance a
    ``99-local.conf`` with filters).
    """
    tree = dest / "dovecot"
    shutil.copytree(STOCK_DIR, tree, ignore=shutil.ignore_patterns("private"))
    protocols_dir = dest / "protocols.d"
    protocols_dir.mkdir()
    for name in protocols:
        shutil.copy(PROTOCOLS_DIR / f"{name}.protocol", protocols_dir)
    edit(
        tree / "dovecot.conf",
        [
            (r"^!include_try /usr/share/dovecot/protocols\.d/\*\.protocol$",
             f"!include_try {protocols_dir}/*.protocol"),
            (r"^#listen = .*$", f"listen = {listen}"),
            (r"^#base_dir = .*$", f"base_dir = {base_dir}"),
        ],
    )  # fmt: skip
    edit(
        tree / "conf.d/10-auth.conf",
        [(r"^!include auth-system\.conf\.ext$",
          "#!include auth-system.conf.ext\n!include auth-passwdfile.conf.ext")],
    )  # fmt: skip
    edit(tree / "conf.d/auth-passwdfile.conf.ext", [(r"/etc/dovecot/users", str(users))])
    edit(
        tree / "conf.d/10-master.conf",
        [
            (r"#port = 143$", f"port = {ports.imap}"),
            (r"#port = 993$", f"port = {ports.imaps}"),
            (r"#port = 110$", f"port = {ports.pop3}"),
            (r"#port = 995$", f"port = {ports.pop3s}"),
        ],
    )
    edit(
        tree / "conf.d/10-ssl.conf",
        [
            (r"^ssl_cert = </etc/dovecot/private/dovecot\.pem$", f"ssl_cert = <{cert}"),
            (r"^ssl_key = </etc/dovecot/private/dovecot\.key$", f"ssl_key = <{key}"),
        ],
    )
    for name, text in (extra or {}).items():
        (tree / "conf.d" / name).write_text(text)
    for path in [dest, *dest.rglob("*")]:
        # the auth process reads the tree as default_internal_user after the drop
        path.chmod(0o755 if path.is_dir() else 0o644)
    return tree / "dovecot.conf"
