"""A proxy under test in front of a real Dovecot backend, for the soak suite and bench/flood.py.

``proxy_stack()`` starts a Dovecot backend on 127.0.0.2 and a proxy on
127.0.0.1 whose passdb sends every user there (a static passdb, so the proxy's
own lookup costs nothing and the figures are the login machinery's), with the
service limits given.  The proxy is proxyd, or Dovecot's own proxy with the very
same configuration when ``PROXYD_E2E_REFERENCE=dovecot`` is set (see
tests/fixtures/proxyd.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.fixtures.dovecot import DOVECOT, DovecotBackend, DovecotFactory
from tests.fixtures.net import BACKEND_A_ADDRESS, read_banner, wait_until
from tests.fixtures.proxyd import ProxydConfig, ProxydProcess, ProxydRunner
from tests.fixtures.tls import issue_tls_files

USER = "alice"
PASSWORD = "alicepw"


@dataclass
class Stack:
    backend: DovecotBackend
    proxy: ProxydProcess
    runner: ProxydRunner
    factory: DovecotFactory

    @property
    def address(self) -> str:
        return self.proxy.address("imap")

    @property
    def port(self) -> int:
        return self.proxy.port("imap")


def kill_backend(backend: DovecotBackend) -> None:
    """SIGKILL the whole Dovecot backend (master and its processes: one process group)."""
    os.killpg(backend.process.pid, signal.SIGKILL)
    backend.process.wait(timeout=10)


def restart_backend(backend: DovecotBackend) -> None:
    """Start the backend again with its own configuration (same address and ports)."""
    with (backend.root / "stderr.log").open("ab") as stderr:
        backend.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(backend.config_path)],
            stdin=subprocess.DEVNULL, stdout=stderr, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready() -> bool:
        try:
            return read_banner(backend.address, backend.imap_port).startswith(b"* OK")
        except OSError:
            return False

    wait_until(ready, timeout=30, what=f"Dovecot {backend.name} restarted", process=backend.process)


def service_block(service_count: int, client_limit: int, process_limit: int, **extra: str) -> str:
    lines = [
        "service imap-login {",
        f"  service_count = {service_count}",
        f"  client_limit = {client_limit}",
        f"  process_limit = {process_limit}",
    ]
    lines += [f"  {key} = {value}" for key, value in extra.items()]
    return "\n".join([*lines, "}"])


@contextmanager
def proxy_stack(
    *,
    service_count: int = 0,
    client_limit: int = 50,
    process_limit: int = 2,
    settings: dict[str, str | None] | None = None,
    service_extra: dict[str, str] | None = None,
    backend_extra: str = "",
    passdb: Callable[[ProxydRunner, DovecotBackend], dict[str, str]] | None = None,
    extra: str = "",
) -> Iterator[Stack]:
    """A backend and a proxy with these limits (``extra``: more configuration, e.g. another
    service block); both stopped (and their files removed) on exit."""
    ca = trustme.CA()
    factory = DovecotFactory(ca)
    workdir = Path(tempfile.mkdtemp(prefix="proxyd-soak-"))
    workdir.chmod(0o755)
    try:
        # thousands of sessions of one user from one address (the proxy forwards 127.0.0.1)
        backend = factory.start(
            "soak-backend", BACKEND_A_ADDRESS,
            extra_config="mail_max_userip_connections = 0\ndefault_client_limit = 20000\n"
            "default_process_limit = 20000\n" + backend_extra,
        )
        runner = ProxydRunner(workdir, issue_tls_files(ca, workdir / "tls", "127.0.0.1", "localhost"))
        try:
            # imaps=False: the imaps listener is there with port 0 (not bound)
            config: ProxydConfig = runner.config(imaps=False, **(settings or {}))
            config.passdbs = [
                passdb(runner, backend) if passdb is not None else {
                    "driver": "static",
                    "args": f"nopassword=y proxy=y host={backend.address} port={backend.imap_port}",
                }
            ]
            config.extra = service_block(
                service_count, client_limit, process_limit, **(service_extra or {})
            ) + ("\n" + extra if extra else "")
            proxy = runner.start(config)
            yield Stack(backend=backend, proxy=proxy, runner=runner, factory=factory)
        finally:
            runner.close()
    finally:
        factory.close()
        shutil.rmtree(workdir, ignore_errors=True)
