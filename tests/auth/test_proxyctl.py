"""proxyctl pw and proxyctl auth test: output, masking and exit codes."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proxyd.auth import schemes
from proxyd.cli.proxyctl import main

DOVEADM = shutil.which("doveadm")


def write_config(tmp_path: Path, body: str) -> Path:
    config = tmp_path / "proxyd.conf"
    config.write_text("ssl = no\n" + body)
    return config


@pytest.fixture
def config(tmp_path: Path) -> Path:
    users = tmp_path / "users"
    users.write_text(
        "alice:{PLAIN}alicepw::::::proxy=y host=10.0.0.1 destuser=alice@backend\n"
        "bob:{PLAIN}bobpw::::::nologin reason=Closed\n"
        "carol:{PLAIN}carolpw::::::proxy=y host=10.0.0.3 pass=backend-secret\n"
    )
    return write_config(
        tmp_path,
        "auth_failure_delay = 5 secs\npassdb {\n  driver = passwd-file\n  args = users\n}\n",
    )


# -- pw --------------------------------------------------------------------------------------------


def test_pw_default_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pw", "-p", "secret"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("{SHA512-CRYPT}$6$")
    assert schemes.verify("secret", out, "PLAIN", "")


@pytest.mark.skipif(DOVEADM is None, reason="doveadm (Debian's dovecot-core) is not installed")
@pytest.mark.parametrize(
    "scheme", ["SHA512-CRYPT", "ssha256", "BLF-CRYPT", "PLAIN-MD5", "SHA256.HEX"]
)
def test_pw_output_verifies_in_doveadm(capsys: pytest.CaptureFixture[str], scheme: str) -> None:
    assert DOVEADM is not None
    assert main(["pw", "-s", scheme, "-p", "pässword"]) == 0
    hashed = capsys.readouterr().out.strip()
    result = subprocess.run(
        [DOVEADM, "-c", "/dev/null", "pw", "-t", hashed, "-p", "pässword"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_pw_reads_one_line_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin\nsecond line\n"))
    assert main(["pw", "-s", "PLAIN"]) == 0
    assert capsys.readouterr().out == "{PLAIN}from stdin\n"


def test_pw_refuses_an_empty_password_unless_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pw", "-s", "PLAIN", "-p", ""]) == 2
    assert "the password is empty (--allow-empty hashes it anyway)" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert main(["pw", "-s", "PLAIN"]) == 2
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # Ctrl-D / an empty pipe
    assert main(["pw", "-s", "PLAIN"]) == 2
    assert "no password given" in capsys.readouterr().err
    assert main(["pw", "-s", "PLAIN", "-p", "", "--allow-empty"]) == 0
    assert capsys.readouterr().out == "{PLAIN}\n"


def test_pw_ctrl_c_at_the_prompt_prints_no_traceback() -> None:
    """Ctrl-C on a terminal: the prompt ends, exit 1, no Python traceback."""
    import os
    import pty
    import signal
    import time

    from tests.fixtures.proxyd import command_line

    argv, env = command_line("proxyctl")
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [*argv, "pw"], stdin=terminal, stdout=terminal, stderr=terminal, env=env, start_new_session=True
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 20
    while b"Enter new password:" not in output and time.monotonic() < deadline:
        output += os.read(controller, 1024)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20) == 1
    try:
        while chunk := os.read(controller, 1024):
            output += chunk
    except OSError:  # EIO: the terminal's other side is closed
        pass
    os.close(controller)
    assert b"Enter new password:" in output
    assert b"Traceback" not in output
    assert b"KeyboardInterrupt" not in output


def test_pw_digest_md5_needs_user(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pw", "-s", "DIGEST-MD5", "-u", "alice@example.com", "-p", "x"]) == 0
    hashed = capsys.readouterr().out.strip()
    assert schemes.verify("x", hashed, "PLAIN", "alice@example.com")
    assert not schemes.verify("x", hashed, "PLAIN", "bob@example.com")


def test_pw_rounds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pw", "-s", "SHA256-CRYPT", "-r", "6000", "-p", "x"]) == 0
    assert "$rounds=6000$" in capsys.readouterr().out


@pytest.mark.parametrize("scheme", ["NOPE", "PLAIN-TRUNC", "SHA256.ZIP"])
def test_pw_unknown_scheme(capsys: pytest.CaptureFixture[str], scheme: str) -> None:
    assert main(["pw", "-s", scheme, "-p", "x"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"Unknown scheme: {scheme}" in captured.err


def test_pw_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pw", "-l"]) == 0
    listed = capsys.readouterr().out.split()
    assert "SHA512-CRYPT" in listed
    assert "ARGON2ID" in listed


# -- auth test -------------------------------------------------------------------------------------


def test_auth_test_success_masks_password(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(config), "auth", "test", "Alice", "alicepw"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "passdb: Alice auth succeeded",
        "user=alice",
        "proxy=",
        "host=10.0.0.1",
        "destuser=alice@backend",
        "original_user=Alice",
        "pass=<hidden>",
    ]
    assert "alicepw" not in out


def test_auth_test_masks_passdb_pass(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(config), "auth", "test", "carol", "carolpw"]) == 0
    out = capsys.readouterr().out
    assert "pass=<hidden>" in out
    assert "backend-secret" not in out
    assert "carolpw" not in out


def test_auth_test_wrong_password(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # runs without the 5 s failure delay (pytest-timeout would not notice, so check the output)
    assert main(["-c", str(config), "auth", "test", "alice", "wrong"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines() == ["passdb: alice auth failed (auth_failed)", "user=alice"]


def test_auth_test_nologin(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(config), "auth", "test", "bob", "bobpw"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "passdb: bob auth failed (login_disabled)"
    assert "reason=Closed" in out


def test_auth_test_lookup(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(config), "auth", "test", "alice"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "passdb: alice lookup succeeded"
    assert "host=10.0.0.1" in out
    assert not any(line.startswith("pass=") for line in out)
    assert main(["-c", str(config), "auth", "test", "nobody"]) == 1
    assert capsys.readouterr().out.splitlines()[0] == "passdb: nobody lookup failed (auth_failed)"


def test_auth_test_connection_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(
        tmp_path,
        "passdb {\n  driver = static\n  args = nopassword host=%r-%s allow_nets=10.0.0.0/8\n}\n",
    )
    assert (
        main(
            [
                "-c",
                str(config),
                "auth",
                "test",
                "-x",
                "rip=10.1.2.3",
                "-x",
                "service=pop3",
                "u",
                "p",
            ]
        )
        == 0
    )
    assert "host=10.1.2.3-pop3" in capsys.readouterr().out
    assert main(["-c", str(config), "auth", "test", "-x", "rip=192.0.2.1", "u", "p"]) == 1
    assert main(["-c", str(config), "auth", "test", "-x", "color=blue", "u"]) == 2


def test_auth_test_tempfail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, "passdb {\n  driver = passwd-file\n  args = missing-file\n}\n")
    assert main(["-c", str(config), "auth", "test", "alice", "pw"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "passdb: alice auth failed (temp_fail)"
    assert "missing passwd file" in captured.err


def test_auth_test_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, "\npassdb {\n  driver = nosuchdriver\n}\n")
    assert main(["-c", str(config), "auth", "test", "alice"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{config}:3: Unknown passdb driver 'nosuchdriver'")
    assert main(["-c", str(tmp_path / "absent.conf"), "auth", "test", "alice"]) == 2
    assert "absent.conf" in capsys.readouterr().err


def test_usage_errors_and_admin_commands_without_proxyd(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([]) == 2
    assert main(["auth"]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["kick"]) == 2  # the mask is required
    for command in (["who"], ["kick", "alice"], ["reload"], ["stop"]):
        assert main(["-c", str(config), *command]) == 2
        assert "proxyd is not running" in capsys.readouterr().err


def test_console_script_exit_codes(config: Path) -> None:
    script = Path(sys.executable).parent / "proxyctl"
    if not script.exists():
        pytest.skip("proxyctl console script is not installed (pip install -e .)")
    ok = subprocess.run(
        [str(script), "-c", str(config), "auth", "test", "alice", "alicepw"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0
    assert "pass=<hidden>" in ok.stdout
    failed = subprocess.run(
        [str(script), "-c", str(config), "auth", "test", "alice", "bad"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode == 1
    piped = subprocess.run(
        [str(script), "pw", "-s", "SSHA"],
        input="piped\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert piped.returncode == 0
    assert schemes.verify("piped", piped.stdout.strip(), "PLAIN", "")
