"""The checkpassword passdb: a small checkpassword program (the interface's fd 3 / fd 4 and
exit codes), through the driver, the chain and proxyd end to end."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from passdb_drivers.checkpassword import CheckpasswordPassdb, create, parse_reply
from proxyd.auth import schemes
from proxyd.auth.passdb import PassdbResult, PassdbTempFail
from proxyd.auth.request import AuthStatus, FailCode
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError
from proxyd.secret import Secret
from tests.auth.fakes import make_chain
from tests.auth.util import make_request
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.proxyd import ProxydRunner
from tests.helpers.clients import IMAP4, fetch_subjects

#: a checkpassword program (bash: the unprivileged auth process may not reach the test's
#: Python): alice's password and extra fields are in the script; "crash" exits 111, "sleepy"
#: never answers, "silent" succeeds without running the reply helper
PROGRAM = """#!/bin/bash
IFS= read -r -d '' user <&3
IFS= read -r -d '' password <&3
case "$user" in
  crash) exit 111 ;;
  sleepy) sleep 60 ;;
  silent) exit 0 ;;
  alice) ;;
  *) [ "$AUTHORIZED" = 1 ] && exit 3 || exit 1 ;;
esac
if [ "$AUTHORIZED" = 1 ]; then
  export AUTHORIZED=2
elif [ "$password" != alicepw ]; then
  exit 1
fi
export USER="$user" PROXY=y HOST={host} PORT={port} SEEN_REMOTE_IP="$TCPREMOTEIP"
export EXTRA="PROXY HOST PORT SEEN_REMOTE_IP"
exec "$@"
"""


def write_program(tmp_path: Path, host: str = "10.0.0.1", port: int = 143) -> Path:
    path = tmp_path / "checkpassword"
    path.write_text(PROGRAM.replace("{host}", host).replace("{port}", str(port)))
    path.chmod(0o755)  # the auth process may run as another user
    return path


async def test_correct_password_gives_the_helpers_fields(tmp_path: Path) -> None:
    passdb = CheckpasswordPassdb(str(write_program(tmp_path)))
    reply = await passdb.verify_plain(make_request("alice", "alicepw", remote_ip="192.0.2.7"), Secret("alicepw"))
    assert reply.result is PassdbResult.OK
    fields = dict(reply.fields)
    assert fields["user"] == "alice"
    assert (fields["proxy"], fields["host"], fields["port"]) == ("y", "10.0.0.1", "143")
    assert fields["seen_remote_ip"] == "192.0.2.7"
    assert "userdb_uid" in fields


async def test_wrong_password_and_unknown_user(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxyd.auth")
    passdb = CheckpasswordPassdb(str(write_program(tmp_path)))
    wrong = await passdb.verify_plain(make_request("alice", "x"), Secret("x"))
    assert wrong.result is PassdbResult.PASSWORD_MISMATCH
    assert "checkpassword(alice): Login failed (status=1)" in caplog.text
    assert (await passdb.lookup(make_request("nobody"))).result is PassdbResult.USER_UNKNOWN
    assert "checkpassword(nobody): User unknown" in caplog.text


async def test_lookup_without_password(tmp_path: Path) -> None:
    passdb = CheckpasswordPassdb(str(write_program(tmp_path)))
    reply = await passdb.lookup(make_request("alice"))
    assert reply.result is PassdbResult.OK
    assert dict(reply.fields)["host"] == "10.0.0.1"


@pytest.mark.parametrize(
    ("user", "message"),
    [("crash", "Child exited with status 111"), ("silent", "Received no input")],
)
async def test_internal_failures(tmp_path: Path, user: str, message: str) -> None:
    passdb = CheckpasswordPassdb(str(write_program(tmp_path)))
    with pytest.raises(PassdbTempFail, match=message):
        await passdb.verify_plain(make_request(user, "x"), Secret("x"))


async def test_a_program_that_hangs_is_killed(tmp_path: Path) -> None:
    passdb = CheckpasswordPassdb(str(write_program(tmp_path)), timeout=0.5)
    with pytest.raises(PassdbTempFail, match="timed out"):
        await passdb.verify_plain(make_request("sleepy", "x"), Secret("x"))


async def test_too_long_request(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxyd.auth")
    passdb = CheckpasswordPassdb(str(write_program(tmp_path)))
    reply = await passdb.verify_plain(make_request("alice", "x" * 600), Secret("x" * 600))
    assert reply.result is PassdbResult.PASSWORD_MISMATCH
    assert "Username+password combination too long (608 bytes)" in caplog.text


async def test_through_the_chain(tmp_path: Path) -> None:
    async with create(PassdbSettings(driver="checkpassword", args=str(write_program(tmp_path)))) as passdb:
        chain = make_chain(passdb)  # type: ignore[arg-type]
        ok = (await chain.authenticate(make_request("alice", "alicepw"))).reply
        assert ok.status is AuthStatus.OK
        assert ok.fields["host"] == "10.0.0.1"
        assert ok.fields["pass"] == "alicepw"
        bad = (await chain.authenticate(make_request("alice", "nope"))).reply
        assert bad.fail_code is FailCode.AUTH_FAILED
        down = (await chain.authenticate(make_request("crash", "x"))).reply
        assert down.status is AuthStatus.TEMPFAIL


def test_missing_program_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Checkpassword program path missing"):
        create(PassdbSettings(driver="checkpassword", args=""))


def test_reply_parsing() -> None:
    assert parse_reply(b"user=a\tproxy\thost=h\x01tx\t") == [("user", "a"), ("proxy", ""), ("host", "h\tx")]
    # a lone escape, or an escaped tab in a name, names no field (hypothesis found b"\x01")
    assert parse_reply(b"\x01\ta\x01tb=c\tproxy") == [("proxy", "")]
    with pytest.raises(ValueError, match="LF characters in checkpassword reply"):
        parse_reply(b"a=b\n")
    with pytest.raises(ValueError, match="NUL characters in checkpassword reply"):
        parse_reply(b"a=\0")


@pytest.mark.e2e
def test_proxyd_logs_in_through_checkpassword(
    proxyd: ProxydRunner, backend_a: DovecotBackend, tmp_path: Path
) -> None:
    """proxyd's auth process runs the program; alice reaches backend-a with her password."""
    program = write_program(proxyd.workdir, backend_a.address, backend_a.imap_port)
    config = proxyd.config(None)
    config.passdbs = [{"driver": "checkpassword", "args": str(program)}]
    running = proxyd.start(config)
    with IMAP4(running.address(), running.port()) as client:
        assert client.login("alice", "alicepw")[0] == "OK"
        assert fetch_subjects(client) == [backend_a.subject_for("alice")]
        client.logout()
    with IMAP4(running.address(), running.port()) as client, pytest.raises(IMAP4.error):
        client.login("alice", "wrong")


async def test_proxyds_own_reply_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Dovecot installed, proxyd's own helper answers the same way."""
    monkeypatch.setattr("passdb_drivers.checkpassword.DOVECOT_REPLY", str(tmp_path / "absent"))
    passdb = CheckpasswordPassdb(str(write_program(tmp_path)))
    reply = await passdb.verify_plain(make_request("alice", "alicepw", remote_ip="192.0.2.7"), Secret("alicepw"))
    assert reply.result is PassdbResult.OK
    fields = dict(reply.fields)
    assert (fields["user"], fields["host"], fields["seen_remote_ip"]) == ("alice", "10.0.0.1", "192.0.2.7")
    lookup = await passdb.lookup(make_request("alice"))
    assert lookup.result is PassdbResult.OK


async def test_credentials_lookup_for_cram_md5(tmp_path: Path) -> None:
    """CRAM-MD5 through checkpassword: AUTHORIZED=1, CREDENTIALS_LOOKUP=1 and SCHEME reach the
    program; its bare password= answer is taken in that scheme."""
    cram = schemes.hash_password("alicepw", "CRAM-MD5").removeprefix("{CRAM-MD5}")
    path = tmp_path / "checkpassword"
    path.write_text(
        "#!/bin/bash\n"
        'IFS= read -r -d "" user <&3\n'
        '[ "$AUTHORIZED$CREDENTIALS_LOOKUP$SCHEME" = 11CRAM-MD5 ] || exit 111\n'
        f"export USER=$user AUTHORIZED=2 PASSWORD={cram} EXTRA=PASSWORD\n"
        'exec "$@"\n'
    )
    path.chmod(0o755)
    passdb = CheckpasswordPassdb(str(path))
    chain = make_chain(passdb)  # type: ignore[arg-type]
    result = await chain.lookup_credentials(make_request("alice"), "CRAM-MD5", "alice")
    assert result.reply.status is AuthStatus.OK
    assert result.credentials == schemes.credentials("{PLAIN}alicepw", "PLAIN", "CRAM-MD5", "")


@given(st.binary(max_size=300))
def test_fuzz_reply_parser(data: bytes) -> None:
    """Any helper output: fields, or Dovecot's NUL/LF refusal, never anything else."""
    error = ""
    fields: list[tuple[str, str | None]] = []
    try:
        fields = parse_reply(data)
    except ValueError as exc:
        error = str(exc)
    assert error in ("", "NUL characters in checkpassword reply", "LF characters in checkpassword reply")
    assert all(key and "\t" not in key for key, _value in fields)
