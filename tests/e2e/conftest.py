"""The standard end-to-end setup: proxyd in front of two real Dovecot backends.

Users in proxyd's passwd-file (passwords hashed by Dovecot's own ``doveadm pw``
where a scheme is named, so proxyd's verification is checked against the
reference implementation):

======  ===========  ===========================================
user    password     routed to
======  ===========  ===========================================
alice   alicepw      backend-a (127.0.0.2), {SHA512-CRYPT}
bob     bobpw        backend-b (127.0.0.3), {SHA512-CRYPT}
carol   carolpw      backend-a as ``destuser=dave``, {PLAIN}
======  ===========  ===========================================

Both backends hold alice, bob and dave, each INBOX with one message whose
Subject names the backend, so a misrouted login is seen, not just a failed one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.fixtures.dovecot import DovecotBackend, dovecot_hash
from tests.fixtures.proxyd import (
    PasswdEntry,
    ProxydProcess,
    ProxydRunner,
    proxy_fields,
    write_passwd_file,
)

USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}


def proxy_started(user: str, address: str) -> str:
    """A regex for the log line that says ``user``'s session is being proxied to ``address``.

    Dovecot 2.3.19 and proxyd write ``proxy(alice,127.0.0.2:143): Started proxying to
    <127.0.0.2> (0.014 secs): user=<alice>, ...``.
    """
    ip = re.escape(address)
    return rf"proxy\({re.escape(user)},{ip}:\d+\): Started proxying to <{ip}>"


def standard_entries(backend_a: DovecotBackend, backend_b: DovecotBackend) -> list[PasswdEntry]:
    """alice -> backend-a, bob -> backend-b, carol -> backend-a as dave."""
    return [
        PasswdEntry(
            "alice",
            dovecot_hash("alicepw", "SHA512-CRYPT"),
            proxy_fields(backend_a.address, backend_a.imap_port),
        ),
        PasswdEntry(
            "bob",
            dovecot_hash("bobpw", "SHA512-CRYPT"),
            proxy_fields(backend_b.address, backend_b.imap_port),
        ),
        PasswdEntry(
            "carol",
            "{PLAIN}carolpw",
            proxy_fields(backend_a.address, backend_a.imap_port, destuser="dave"),
        ),
    ]


#: writes a passwd-file with the standard entries plus ``extra`` into the runner's directory
PasswdWriter = Callable[[Sequence[PasswdEntry]], Path]


@pytest.fixture
def passwd_file(
    proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend
) -> PasswdWriter:
    """Call with extra entries to get the path of a passwd-file holding the standard users too."""

    def write(extra: Sequence[PasswdEntry] = ()) -> Path:
        entries = [*standard_entries(backend_a, backend_b), *extra]
        return write_passwd_file(proxyd.workdir / "users", entries)

    return write


@pytest.fixture
def standard_proxyd(proxyd: ProxydRunner, passwd_file: PasswdWriter) -> ProxydProcess:
    """proxyd with the default configuration and the standard users."""
    return proxyd.start(proxyd.config(passwd_file(())))
