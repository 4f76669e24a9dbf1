"""The pam passdb through the system's libpam, with a PAM service of the test's own:
pam_exec runs a small script that checks the password (/etc/pam.d/proxyd-test-PID,
removed afterwards)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from passdb_drivers.pam import create
from proxyd.auth.passdb import PassdbResult
from proxyd.auth.request import AuthStatus
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError
from proxyd.secret import Secret
from tests.auth.fakes import make_chain
from tests.auth.util import make_request
from tests.fixtures.dovecot import MASTER_PASSWORD, MASTER_USER, DovecotBackend
from tests.fixtures.proxyd import ProxydRunner
from tests.helpers.clients import IMAP4, fetch_subjects

CHECK = """#!/bin/bash
IFS= read -r -d '' password
[ "$PAM_USER" = alice ] && [ "$password" = alicepw ] && exit 0
exit 1
"""


@pytest.fixture
def pam_service() -> Iterator[str]:
    if not os.access("/etc/pam.d", os.W_OK):
        pytest.skip("needs to write a PAM service into /etc/pam.d (root)")
    # outside pytest's private tmp tree: the unprivileged auth process runs the script
    directory = Path(tempfile.mkdtemp(prefix="proxyd-pam-"))
    directory.chmod(0o755)
    script = directory / "check.sh"
    script.write_text(CHECK)
    script.chmod(0o755)
    name = f"proxyd-test-{os.getpid()}"
    service = Path("/etc/pam.d") / name
    service.write_text(
        f"auth required pam_exec.so expose_authtok quiet {script}\naccount required pam_permit.so\n"
    )
    try:
        yield name
    finally:
        service.unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)


async def test_password_checked_by_pam(pam_service: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxyd.auth")
    async with create(PassdbSettings(driver="pam", args=pam_service)) as passdb:
        ok = await passdb.verify_plain(make_request("alice", "alicepw"), Secret("alicepw"))  # type: ignore[attr-defined]
        bad = await passdb.verify_plain(make_request("alice", "x"), Secret("x"))  # type: ignore[attr-defined]
        chain = make_chain(passdb)  # type: ignore[arg-type]
        assert (await chain.authenticate(make_request("alice", "alicepw"))).reply.status is AuthStatus.OK
    assert ok.result is PassdbResult.OK
    assert bad.result is PassdbResult.PASSWORD_MISMATCH
    assert "pam(alice,192.0.2.10,<sess1>): pam_authenticate() failed: System error" in caplog.text


async def test_missing_service_file_is_named(caplog: pytest.LogCaptureFixture) -> None:
    service = f"proxyd-absent-{os.getpid()}"
    async with create(PassdbSettings(driver="pam", args=service)) as passdb:
        reply = await passdb.verify_plain(make_request("alice", "x"), Secret("x"))  # type: ignore[attr-defined]
    assert reply.result is PassdbResult.PASSWORD_MISMATCH
    assert f"(/etc/pam.d/{service} missing?)" in caplog.text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("session=yes dovecot", "pam: setting 'session' is not supported yet"),
        ("max_requests=100 dovecot", "pam: setting 'max_requests' is not supported yet"),
        ("bogus=1 dovecot", "pam: Unknown setting: bogus=1"),
    ],
)
def test_configuration(args: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create(PassdbSettings(driver="pam", args=args))


@pytest.mark.e2e
def test_proxyd_logs_in_through_pam(
    proxyd: ProxydRunner, backend_a: DovecotBackend, pam_service: str
) -> None:
    """The unprivileged auth process asks PAM; the passdb after it (skip = unauthenticated
    would do too) routes alice with the master user."""
    config = proxyd.config(None)
    config.passdbs = [
        {"driver": "pam", "args": pam_service, "result_success": "continue-ok"},
        {
            "driver": "static",
            "args": f"proxy=y host={backend_a.address} port={backend_a.imap_port} "
            f"master={MASTER_USER} pass={MASTER_PASSWORD}",
        },
    ]
    running = proxyd.start(config)
    with IMAP4(running.address(), running.port()) as client:
        assert client.login("alice", "alicepw")[0] == "OK"
        assert fetch_subjects(client) == [backend_a.subject_for("alice")]
        client.logout()
    with IMAP4(running.address(), running.port()) as client, pytest.raises(IMAP4.error):
        client.login("alice", "wrong")
