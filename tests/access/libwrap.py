"""The real libwrap (Debian's libwrap0, which Dovecot's tcpwrap links) as a test oracle.

``hosts_ctl(daemon, "unknown", addr, "unknown")`` is asked in a child process,
because libwrap keeps global state and some options act on the calling process
(``umask``; Debian's ``user`` even calls setuid() in dry-run mode).  The child
sets ``dry_run`` so that ``spawn`` runs nothing; ``twist`` in dry-run mode
grants access, which is why the tests never send it here.
"""

from __future__ import annotations

import base64
import ctypes
import json
import subprocess
import sys
import tempfile
from pathlib import Path

LIBRARY = "libwrap.so.0"

_CHILD = r"""
import base64, ctypes, json, os, sys
lib = ctypes.CDLL(sys.argv[1])
lib.hosts_ctl.argtypes = [ctypes.c_char_p] * 4
lib.hosts_ctl.restype = ctypes.c_int
allow = ctypes.c_char_p.in_dll(lib, "hosts_allow_table")
deny = ctypes.c_char_p.in_dll(lib, "hosts_deny_table")
dry_run = ctypes.c_int.in_dll(lib, "dry_run")
directory = sys.argv[2].encode()
paths = (directory + b"/hosts.allow", directory + b"/hosts.deny")
allow.value, deny.value = paths
for line in sys.stdin:
    q = json.loads(line)
    for path, key in zip(paths, ("allow", "deny")):
        if q[key] is None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        else:
            with open(path, "wb") as f:
                f.write(base64.b64decode(q[key]))
    dry_run.value = 1
    result = lib.hosts_ctl(q["daemon"].encode("latin-1"), b"unknown", q["addr"].encode(), b"unknown")
    print(result, flush=True)
"""


def available() -> bool:
    try:
        ctypes.CDLL(LIBRARY)
    except OSError:
        return False
    return True


class Libwrap:
    """A child process answering hosts_ctl() questions against given table contents."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="proxyd-libwrap-")
        self._proc: subprocess.Popen[str] | None = None

    @property
    def directory(self) -> Path:
        return Path(self._dir.name)

    def _start(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, LIBRARY, self._dir.name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        return self._proc

    def allowed(self, allow: bytes | None, deny: bytes | None, daemon: str, addr: str) -> bool:
        """libwrap's verdict for ``daemon`` and client address ``addr`` (None: no such file)."""
        proc = self._start()
        assert proc.stdin is not None
        assert proc.stdout is not None
        query = {
            "allow": None if allow is None else base64.b64encode(allow).decode(),
            "deny": None if deny is None else base64.b64encode(deny).decode(),
            "daemon": daemon,
            "addr": addr,
        }
        proc.stdin.write(json.dumps(query) + "\n")
        proc.stdin.flush()
        answer = proc.stdout.readline()
        if not answer:
            raise RuntimeError("the libwrap child died")
        return answer.strip() == "1"

    def close(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(timeout=10)
            assert self._proc.stdout is not None
            self._proc.stdout.close()
        self._dir.cleanup()
