"""The command-line contract: ``proxyd -n``, config errors, SIGTERM, ``proxyctl pw`` / ``auth test``."""

from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest

from tests.e2e.conftest import PasswdWriter
from tests.fixtures.dovecot import DOVEADM, DovecotBackend
from tests.fixtures.proxyd import ProxydRunner
from tests.fixtures.tls import TlsFiles
from tests.helpers.clients import RawImapClient

pytestmark = pytest.mark.e2e


def key_body_lines(tls: TlsFiles) -> list[str]:
    """The base64 lines of the private key (what must never be printed)."""
    lines = tls.key_pem.read_text().splitlines()
    return [line for line in lines if line and not line.startswith("-----")]


@pytest.mark.proxyd_only
def test_dash_n_prints_non_default_settings_and_hides_the_key(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, proxyd_tls: TlsFiles
) -> None:
    """``proxyd -c FILE -n`` exits 0, shows settings that differ from the defaults,
    names ssl_key but never prints the key itself."""
    config = proxyd.config(passwd_file(()), login_greeting="Hello from the e2e tests")
    path = proxyd.write_config(config)
    result = proxyd.run("-c", str(path), "-n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^login_greeting = Hello from the e2e tests$", out, re.MULTILINE), out
    assert re.search(r"^auth_failure_delay = 0", out, re.MULTILINE), out
    assert re.search(r"^ssl_key\b", out, re.MULTILINE), out
    assert "PRIVATE KEY" not in out + result.stderr
    for line in key_body_lines(proxyd_tls):
        assert line not in out + result.stderr


@pytest.mark.proxyd_only
@pytest.mark.parametrize("check_only", [True, False], ids=["-n", "run"])
def test_config_error_reports_file_and_line_and_exits_2(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, check_only: bool
) -> None:
    """An unknown setting is an error at its line, both for ``-n`` and for a real start."""
    config = proxyd.config(passwd_file(()))
    text = config.render()
    lines = text.splitlines()
    lines.insert(2, "no_such_setting_anywhere = 1")
    path = proxyd.write_config("\n".join(lines) + "\n")
    args = ["-c", str(path), *(["-n"] if check_only else [])]
    result = proxyd.run(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"{path}:3:" in result.stderr + result.stdout


@pytest.mark.proxyd_only
def test_config_error_in_an_included_file_names_that_file(
    proxyd: ProxydRunner, passwd_file: PasswdWriter
) -> None:
    """``!include`` errors point at the included file and its line."""
    included = proxyd.workdir / "included.conf"
    included.write_text("# a comment\nauth_mechanisms = plain\nthis is not a setting\n")
    config = proxyd.config(passwd_file(()))
    config.extra = f"!include {included}"
    path = proxyd.write_config(config)
    result = proxyd.run("-c", str(path), "-n")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"{included}:3:" in result.stderr + result.stdout


def test_sigterm_ends_sessions_and_exits_0(proxyd: ProxydRunner, passwd_file: PasswdWriter) -> None:
    """SIGTERM with a proxied session open: exit status 0, the client sees the connection close."""
    running = proxyd.start(proxyd.config(passwd_file(())))
    with RawImapClient(running.address(), running.port()) as client:
        assert client.command("LOGIN alice alicepw").status == "OK"
        assert client.command("NOOP").status == "OK"
        assert running.stop(signal.SIGTERM) == 0
        client.read_until_closed()
    assert not running.is_running()


@pytest.mark.proxyd_only
def test_sighup_reloads_config_and_keeps_proxied_sessions(
    proxyd: ProxydRunner, passwd_file: PasswdWriter
) -> None:
    """After SIGHUP new connections see the new settings; a session proxied before keeps working."""
    config = proxyd.config(passwd_file(()), login_greeting="Before reload.")
    running = proxyd.start(config)
    with RawImapClient(running.address(), running.port()) as old:
        assert old.greeting.endswith("Before reload.")
        assert old.command("LOGIN alice alicepw").status == "OK"
        config.set(login_greeting="After reload.")
        running.config_path.write_text(config.render())
        running.process.send_signal(signal.SIGHUP)
        running.wait_for_log(r"configuration reloaded")
        # old login processes stop accepting once they read the master's "stop"; a
        # connection that raced in before that still gets the old settings
        greetings = []
        for _ in range(20):
            with RawImapClient(running.address(), running.port()) as new:
                greetings.append(new.greeting)
            if greetings[-1].endswith("After reload."):
                break
            time.sleep(0.1)
        assert greetings[-1].endswith("After reload."), greetings
        # a session proxied after the reload is relayed too (in high-security mode by the
        # new relay process: the old one takes no more hand-offs), and both go on
        with RawImapClient(running.address(), running.port()) as new:
            assert new.command("LOGIN alice alicepw").status == "OK"
            assert new.command("NOOP").status == "OK"
            assert old.command("NOOP").status == "OK"
        assert old.command("NOOP").status == "OK"
        assert old.command("LOGOUT").status == "OK"


def doveadm_verifies(hashed: str, password: str) -> bool:
    result = subprocess.run(
        [DOVEADM, "-c", "/dev/null", "pw", "-t", hashed, "-p", password],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return result.returncode == 0 and "(verified)" in result.stdout + result.stderr


@pytest.mark.proxyd_only
@pytest.mark.parametrize(
    "scheme", [None, "SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "SSHA512", "PLAIN"]
)
def test_proxyctl_pw_hashes_are_accepted_by_doveadm(
    proxyd: ProxydRunner, scheme: str | None
) -> None:
    """``proxyctl pw`` output verifies with Dovecot's ``doveadm pw -t``; a wrong password does not."""
    password = "Correct Horse 42!"
    args = ["pw", "-p", password] if scheme is None else ["pw", "-s", scheme, "-p", password]
    result = proxyctl_ok(proxyd, *args)
    hashed = result.stdout.strip()
    assert hashed.startswith("{" + (scheme or "SHA512-CRYPT") + "}"), hashed
    assert doveadm_verifies(hashed, password)
    assert not doveadm_verifies(hashed, "wrong password")


@pytest.mark.proxyd_only
def test_proxyctl_pw_reads_the_password_from_stdin(proxyd: ProxydRunner) -> None:
    result = proxyctl_ok(proxyd, "pw", "-s", "SSHA512", stdin="from-stdin\n")
    assert doveadm_verifies(result.stdout.strip(), "from-stdin")


def proxyctl_ok(
    proxyd: ProxydRunner, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = proxyd.proxyctl(*args, input=stdin)
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result


@pytest.mark.proxyd_only
def test_proxyctl_auth_test_exit_codes_and_fields(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, backend_a: DovecotBackend
) -> None:
    """``proxyctl -c FILE auth test``: 0 and the passdb's extra fields on success,
    1 for a wrong password or an unknown user, 2 for an unusable configuration."""
    running = proxyd.start(proxyd.config(passwd_file(())))
    conf = str(running.config_path)

    ok = proxyd.proxyctl("-c", conf, "auth", "test", "alice", "alicepw")
    assert ok.returncode == 0, (ok.stdout, ok.stderr)
    fields = ok.stdout.splitlines()
    assert f"host={backend_a.address}" in fields, ok.stdout
    assert f"port={backend_a.imap_port}" in fields, ok.stdout
    assert any(line.split("=", 1)[0] == "proxy" for line in fields), ok.stdout
    assert "alicepw" not in ok.stdout + ok.stderr

    lookup = proxyd.proxyctl("-c", conf, "auth", "test", "carol")
    assert lookup.returncode == 0, (lookup.stdout, lookup.stderr)
    assert "destuser=dave" in lookup.stdout.splitlines()

    wrong = proxyd.proxyctl("-c", conf, "auth", "test", "alice", "not-alicepw")
    assert wrong.returncode == 1, (wrong.stdout, wrong.stderr)
    unknown = proxyd.proxyctl("-c", conf, "auth", "test", "nosuchuser", "x")
    assert unknown.returncode == 1, (unknown.stdout, unknown.stderr)

    missing = proxyd.proxyctl(
        "-c", str(proxyd.workdir / "missing.conf"), "auth", "test", "alice", "x"
    )
    assert missing.returncode == 2, (missing.stdout, missing.stderr)
