"""A separate package registers a passdb driver through the ``proxyd.passdb`` entry points.

The test writes a tiny project (its own PEP 517 build backend, so pip needs no
network and no build tools), installs it with ``pip install --target``, and
then logs in through the new driver, both in-process and through ``proxyd -c
FILE`` in front of a real Dovecot backend.  Nothing is installed into the
test's own environment: the target directory is put on the path.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxyd.auth.registry import available_drivers
from proxyd.auth.request import AuthStatus
from tests.auth.util import make_request
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.proxyd import ProxydRunner
from tests.helpers.clients import IMAP4, fetch_subjects
from tests.passdb_drivers.util import authenticator, passdb

DRIVER_NAME = "demo-directory"

# The driver: args = "user:password:host:port ..."; it uses only the documented interface.
DRIVER_SOURCE = '''\
"""A third-party proxyd passdb: users listed in the passdb's args."""

from contextlib import asynccontextmanager

from proxyd.auth.passdb import PassdbReply, PassdbResult
from proxyd.errors import ConfigError


class DirectoryPassdb:
    default_pass_scheme = "PLAIN"
    cache_key = "%u"

    def __init__(self, users):
        self.users = users

    async def lookup(self, request):
        entry = self.users.get(request.user)
        if entry is None:
            return PassdbReply(PassdbResult.USER_UNKNOWN)
        password, host, port = entry
        return PassdbReply(
            PassdbResult.OK,
            (("password", password), ("proxy", "y"), ("host", host), ("port", port)),
        )


def create(settings):
    users = {}
    for item in settings.args.split():
        parts = item.split(":")
        if len(parts) != 4:
            raise ConfigError(settings.location, f"demo-directory: bad entry {item!r}")
        users[parts[0]] = tuple(parts[1:])

    @asynccontextmanager
    async def opened():
        yield DirectoryPassdb(users)

    return opened()
'''

# A complete PEP 517 backend that writes the wheel by hand (no setuptools, no network).
BACKEND_SOURCE = """\
import base64, hashlib, os, zipfile

NAME, VERSION = "proxyd_demo_driver", "1.0"
DIST = f"{NAME}-{VERSION}.dist-info"
FILES = {
    f"{NAME}/__init__.py": open(os.path.join(os.path.dirname(__file__), NAME, "__init__.py"), "rb").read(),
    f"{DIST}/METADATA": f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n".encode(),
    f"{DIST}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: tinybackend\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    f"{DIST}/entry_points.txt": b"[proxyd.passdb]\\n%s = proxyd_demo_driver:create\\n",
}


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        for path, data in FILES.items():
            wheel.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append(f"{DIST}/RECORD,,")
        wheel.writestr(f"{DIST}/RECORD", "\\n".join(record) + "\\n")
    return name
"""

PYPROJECT = """\
[build-system]
requires = []
build-backend = "tinybackend"
backend-path = ["."]

[project]
name = "proxyd_demo_driver"
version = "1.0"
"""


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build and install the plugin; returns the directory it was installed into."""
    base = tmp_path_factory.mktemp("plugin")
    project = base / "project"
    (project / "proxyd_demo_driver").mkdir(parents=True)
    (project / "proxyd_demo_driver" / "__init__.py").write_text(DRIVER_SOURCE)
    (project / "tinybackend.py").write_text(BACKEND_SOURCE.replace("%s", DRIVER_NAME))
    (project / "pyproject.toml").write_text(PYPROJECT)
    target = base / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet",
         "--target", str(target), str(project)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (target / "proxyd_demo_driver-1.0.dist-info" / "entry_points.txt").exists()
    return target


async def test_driver_is_found_and_used_in_process(
    installed_plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert DRIVER_NAME not in available_drivers()
    monkeypatch.syspath_prepend(str(installed_plugin))
    assert DRIVER_NAME in available_drivers()
    settings = passdb(DRIVER_NAME, "zed:zedpw:10.0.0.7:1143")
    async with authenticator([settings], auth_cache_size=1 << 16) as auth:
        reply = await auth.authenticate(make_request("zed", "zedpw"))
        assert reply.status is AuthStatus.OK
        assert reply.fields == {"proxy": "", "host": "10.0.0.7", "port": "1143", "pass": "zedpw"}
        assert (await auth.authenticate(make_request("zed", "wrong"))).status is AuthStatus.FAIL


@pytest.mark.e2e
@pytest.mark.proxyd_only
def test_login_through_proxyd_with_the_plugin(
    installed_plugin: Path,
    monkeypatch: pytest.MonkeyPatch,
    proxyd: ProxydRunner,
    backend_a: DovecotBackend,
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(installed_plugin))
    config = proxyd.config()
    config.passdbs.append(
        {
            "driver": DRIVER_NAME,
            "args": f"alice:alicepw:{backend_a.address}:{backend_a.imap_port}",
        }
    )
    running = proxyd.start(config)
    with IMAP4(running.address(), running.port()) as client:
        assert client.login("alice", "alicepw")[0] == "OK"
        assert fetch_subjects(client) == [backend_a.subject_for("alice")]
        client.logout()
    check = proxyd.run("-c", str(running.config_path), "-n")
    assert check.returncode == 0, check.stderr
    assert f"driver = {DRIVER_NAME}" in check.stdout
