"""docker-compose.yml: valid against the Compose specification, and in step
with the local twin (scripts/demo.sh) and the shared demo/ configuration.

No Docker engine runs here, so the file is checked with
``check-jsonschema --builtin-schema vendor.compose-spec`` (the schema ships
with check-jsonschema: no network) and by cross-checks: the files it mounts
exist, the proxyd nodes publish the ports demo/proxyd.conf listens on, the
backend addresses given to the database are the backends' addresses, every
``$ENV:`` the shared configuration reads is set for both nodes in both forms,
no password is written into the file, and the shared configuration loads
(``proxyd -n``, which reads the sql passdb's args too) with the compose
environment and connect line.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.dovecot import DovecotBackend, DovecotFactory
from tests.fixtures.mariadb import MariadbFactory
from tests.fixtures.net import PROXYD_ADDRESS, free_port, port_accepts, wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE = REPO_ROOT / "docker-compose.yml"
DEMO_SH = REPO_ROOT / "scripts" / "demo.sh"
PROXYD_CONF = REPO_ROOT / "demo" / "proxyd.conf"
NODES = ("proxyd-a", "proxyd-b")
#: the third node of profile "mariadb", its passdb on MariaDB
MARIADB_NODE = "proxyd-m"
#: the third node of profile "openldap", its passdb in LDAP
LDAP_NODE = "proxyd-l"
LONG_RUNNING = (
    *("postgres", "backend-a", "backend-b", *NODES, "haproxy"),
    *("mariadb", MARIADB_NODE, "openldap", LDAP_NODE),
)
ENTRYPOINT = REPO_ROOT / "docker" / "proxyd" / "entrypoint.sh"
MARIADB_INIT = REPO_ROOT / "docker" / "mariadb" / "init-demo.sh"
SLAPD_START = REPO_ROOT / "docker" / "openldap" / "start.sh"


def _bin(name: str) -> str:
    """A console script of the running interpreter's environment."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install proxyd[test])")
    return found


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("ruamel.yaml")
    loaded: dict[str, Any] = yaml.YAML(typ="safe").load(COMPOSE.read_text())
    return loaded


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"][name]
    return service


def _bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (relative to the repository) of ./ mounts."""
    mounts: dict[str, str] = {}
    for item in service.get("volumes", []):
        source, target = str(item).split(":")[:2]
        if source.startswith("./"):
            mounts[target] = source[2:]
    return mounts


def test_valid_against_the_compose_spec() -> None:
    result = subprocess.run(
        [_bin("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mounted_files_exist_and_the_dockerfile_too(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for target, source in _bind_mounts(service).items():
            assert (REPO_ROOT / source).exists(), f"{name}: {source} (for {target}) is missing"
        build = service.get("build")
        if build:
            assert (REPO_ROOT / build["context"] / build["dockerfile"]).is_file()


def test_both_nodes_mount_the_files_the_twin_copies(compose: dict[str, Any]) -> None:
    script = DEMO_SH.read_text()
    # the twin's copies, byte for byte
    assert 'cp "$REPO_ROOT/demo/proxyd.conf" "$REPO_ROOT/demo/dovecot-sql.conf.ext"' in script
    assert 'cp "$REPO_ROOT/demo/passdb-sql.conf" "$dir/etc/passdb.conf"' in script
    for node in NODES:
        mounts = _bind_mounts(_service(compose, node))
        assert mounts["/etc/proxyd/proxyd.conf"] == "demo/proxyd.conf"
        assert mounts["/etc/proxyd/passdb.conf"] == "demo/passdb-sql.conf"
        assert mounts["/etc/proxyd/dovecot-sql.conf.ext"] == "demo/dovecot-sql.conf.ext"
        # the form-specific connect line that dovecot-sql.conf.ext includes
        assert mounts["/etc/proxyd/pgsql-connect.conf.ext"] == "demo/docker/pgsql-connect.conf.ext"
    assert (
        "!include pgsql-connect.conf.ext" in (REPO_ROOT / "demo/dovecot-sql.conf.ext").read_text()
    )


def test_nodes_publish_the_configured_ports_on_the_twins_addresses(
    compose: dict[str, Any],
) -> None:
    listener_ports = {int(port) for port in re.findall(r"port = (\d+)", PROXYD_CONF.read_text())}
    assert listener_ports == {10143, 10993, 10110, 10995}
    script = DEMO_SH.read_text()
    twin = dict(re.findall(r'"(proxyd-[ab]):\$NET\.(\d+)"', script))
    for node in NODES:
        published = [str(item).split(":") for item in _service(compose, node)["ports"]]
        assert {int(container) for _, _, container in published} == listener_ports
        assert all(host == container for _, host, container in published)
        # the same addresses as the twin with the default PROXYD_DEMO_NET (127.0.0)
        assert {address for address, _, _ in published} == {f"127.0.0.{twin[node]}"}


def test_database_gets_the_backends_addresses(compose: dict[str, Any]) -> None:
    postgres = _service(compose, "postgres")
    for letter in ("a", "b"):
        backend = _service(compose, f"backend-{letter}")
        address = backend["networks"]["mail"]["ipv4_address"]
        assert postgres["environment"][f"DEMO_BACKEND_{letter.upper()}"] == address
        assert backend["environment"]["BACKEND_ADDRESS"] == address
    init = (REPO_ROOT / "docker/postgres/init-demo.sh").read_text()
    assert "/sql/pgsql.sql" in init
    assert "/sql/pgsql-demo-cluster.sql" in init
    assert _bind_mounts(postgres)["/sql"] == "sql"


def test_every_env_variable_of_the_shared_config_is_set_in_both_forms(
    compose: dict[str, Any],
) -> None:
    settings = "\n".join(
        line for line in PROXYD_CONF.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    wanted = set(re.findall(r"\$ENV:([A-Z_]+)", settings))
    assert wanted == {"PROXYD_NODE", "PROXYD_LISTEN", "PROXYD_BASE_DIR"}
    script = DEMO_SH.read_text()
    for node in (*NODES, MARIADB_NODE, LDAP_NODE):
        environment = _service(compose, node)["environment"]
        assert wanted <= set(environment)
        assert environment["PROXYD_NODE"] == node
    for name in wanted:
        assert f'"{name}=' in script, f"scripts/demo.sh does not set {name}"


def test_no_passwords_in_the_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key in service.get("environment", {}):
            if "PASSWORD" in key:
                assert key.endswith("_FILE"), f"{name}: {key} must name a file, not hold a secret"
    for secret in compose["secrets"].values():
        assert set(secret) == {"file"}
    assert "password=" not in (REPO_ROOT / "demo/docker/pgsql-connect.conf.ext").read_text()
    assert "password=" not in (REPO_ROOT / "demo/docker/dovecot-sql-mysql.conf.ext").read_text()
    ldap_ext = (REPO_ROOT / "demo/docker/dovecot-ldap.conf.ext").read_text().splitlines()
    assert not [line for line in ldap_ext if line.startswith("dnpass")]


def test_long_running_services_have_health_checks(compose: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        assert _service(compose, name)["healthcheck"]["test"], name
    proxyd = _service(compose, "proxyd-a")
    assert proxyd["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert proxyd["depends_on"]["certs"]["condition"] == "service_completed_successfully"


def test_haproxy_feeds_the_haproxy_listeners_of_proxyd_b(compose: dict[str, Any]) -> None:
    haproxy = _service(compose, "haproxy")
    assert haproxy["profiles"] == ["haproxy"]
    config = (REPO_ROOT / _bind_mounts(haproxy)["/usr/local/etc/haproxy/haproxy.cfg"]).read_text()
    servers = re.findall(r"server \S+ ([\d.]+):(\d+) send-proxy-v2", config)
    node_b = _service(compose, "proxyd-b")
    listeners = (REPO_ROOT / _bind_mounts(node_b)["/etc/proxyd/conf.d/haproxy.conf"]).read_text()
    haproxy_ports = re.findall(r"port = (\d+)\s+haproxy = yes", listeners)
    assert sorted(port for _, port in servers) == sorted(haproxy_ports)
    assert {address for address, _ in servers} == {node_b["networks"]["mail"]["ipv4_address"]}
    trusted = re.search(r"haproxy_trusted_networks = (\S+)", listeners)
    assert trusted
    assert trusted.group(1) == haproxy["networks"]["mail"]["ipv4_address"] + "/32"
    # proxyd-b lists its volumes itself (YAML merge keys do not merge lists)
    assert set(_service(compose, "proxyd-a")["volumes"]) < set(node_b["volumes"])


def _container_etc(
    compose: dict[str, Any], tmp_path: Path, node: str
) -> tuple[Path, dict[str, str]]:
    """/etc/proxyd as the node's container sees it, after the image's entry point ran
    with the compose environment; returns it and that environment (secrets: made up)."""
    service = _service(compose, node)
    etc = tmp_path / "etc"
    (etc / "tls").mkdir(parents=True)
    (etc / "conf.d").mkdir()
    for target, source in _bind_mounts(service).items():
        if target.startswith("/etc/proxyd/"):
            shutil.copy(REPO_ROOT / source, etc / target.removeprefix("/etc/proxyd/"))
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(etc / "tls/key.pem"),
         "-out", str(etc / "tls/cert.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    environment = dict(os.environ)
    for key, value in service["environment"].items():
        environment[key] = str(value)
        if key.endswith("_FILE") and str(value).startswith("/run/secrets/"):
            secret = secrets / str(value).removeprefix("/run/secrets/")
            secret.write_text("made-up-secret\n")
            environment[key] = str(secret)
    environment["PROXYD_BASE_DIR"] = str(tmp_path / "run")
    environment["PROXYD_ETC"] = str(etc)
    subprocess.run(["sh", str(ENTRYPOINT), "true"], check=True, env=environment, timeout=60)
    return etc, environment


@pytest.mark.parametrize("node", [*NODES, MARIADB_NODE, LDAP_NODE])
def test_shared_config_loads_with_the_compose_environment(
    compose: dict[str, Any], tmp_path: Path, node: str
) -> None:
    """/etc/proxyd as the containers see it, checked by ``proxyd -n``."""
    etc, environment = _container_etc(compose, tmp_path, node)
    result = subprocess.run(
        [_bin("proxyd"), "-c", str(etc / "proxyd.conf"), "-n"],
        capture_output=True, text=True, timeout=60, env=environment,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "listen = *" in result.stdout
    assert f"login_greeting = {node} ready." in result.stdout
    assert ("driver = ldap" if node == LDAP_NODE else "driver = sql") in result.stdout
    assert ("haproxy = yes" in result.stdout) == (node == "proxyd-b")
    # the entry point wrote the mysql connect line for proxyd-m only, dnpass for proxyd-l
    assert (etc / "mysql-connect.conf.ext").exists() == (node == MARIADB_NODE)
    assert (etc / "ldap-dnpass.conf.ext").exists() == (node == LDAP_NODE)


def test_mariadb_profile_is_a_third_node_on_the_same_table(compose: dict[str, Any]) -> None:
    mariadb = _service(compose, "mariadb")
    node = _service(compose, MARIADB_NODE)
    assert mariadb["profiles"] == node["profiles"] == ["mariadb"]
    assert node["depends_on"]["mariadb"]["condition"] == "service_healthy"
    assert "postgres" not in node["depends_on"]
    mounts = _bind_mounts(node)
    assert mounts["/etc/proxyd/proxyd.conf"] == "demo/proxyd.conf"
    assert mounts["/etc/proxyd/passdb.conf"] == "demo/passdb-sql.conf"
    ext = (REPO_ROOT / mounts["/etc/proxyd/dovecot-sql.conf.ext"]).read_text()
    assert "driver = mysql" in ext.splitlines()
    assert "!include mysql-connect.conf.ext" in ext.splitlines()
    assert "password" not in node["environment"]["SQL_CONNECT"]
    assert node["environment"]["SQL_CONNECT"].startswith("host=mariadb ")
    # the same password_query as the pgsql nodes
    shared = (REPO_ROOT / "demo/dovecot-sql.conf.ext").read_text()
    assert ext[ext.index("password_query") :] == shared[shared.index("password_query") :]
    for letter in ("a", "b"):
        backend = _service(compose, f"backend-{letter}")
        address = backend["networks"]["mail"]["ipv4_address"]
        assert mariadb["environment"][f"DEMO_BACKEND_{letter.upper()}"] == address
    assert _bind_mounts(mariadb)["/sql"] == "sql"
    assert _bind_mounts(mariadb)["/docker-entrypoint-initdb.d/10-proxyd-demo.sh"] == (
        "docker/mariadb/init-demo.sh"
    )
    # executed, not sourced, by the image's entry point
    assert os.access(MARIADB_INIT, os.X_OK)
    published = {str(item).split(":")[0] for item in node["ports"]}
    others = {
        str(item).split(":")[0] for name in NODES for item in _service(compose, name)["ports"]
    }
    assert published == {"127.0.0.8"}
    assert not published & others


#: where the real-server tests put the demo's backends and the proxyd node: addresses
#: of their own, since the passdb rows name the demo's fixed ports (10143, 10110)
DEMO_BACKEND_ADDRESSES = {"a": "127.0.77.2", "b": "127.0.77.3"}
DEMO_NODE_ADDRESS = "127.0.77.1"


@pytest.fixture(scope="module")
def demo_backends(dovecot_factory: DovecotFactory) -> dict[str, DovecotBackend]:
    """Two Dovecot backends that also listen on the demo's IMAP and POP3 ports."""
    backends: dict[str, DovecotBackend] = {}
    for letter, address in DEMO_BACKEND_ADDRESSES.items():
        extra = (
            f"service imap-login {{\n  inet_listener imap_demo {{\n    address = {address}\n"
            "    port = 10143\n  }\n}\n"
            f"service pop3-login {{\n  inet_listener pop3_demo {{\n    address = {address}\n"
            "    port = 10110\n  }\n}\n"
        )
        backends[letter] = dovecot_factory.start(f"compose-{letter}", address, extra_config=extra)
    for address in DEMO_BACKEND_ADDRESSES.values():
        wait_until(lambda a=address: port_accepts(a, 10143) and port_accepts(a, 10110),
                   timeout=30, what=f"the demo ports on {address}")  # fmt: skip
    return backends


def _imap_subject(port: int, user: str, password: str) -> str:
    with imaplib.IMAP4(DEMO_NODE_ADDRESS, port, timeout=30) as imap:
        imap.login(user, password)
        imap.select("INBOX", readonly=True)
        status, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert status == "OK", data
        first = data[0]
        assert isinstance(first, tuple)
        return first[1].decode().strip()


def _pop3_subject(port: int, user: str, password: str) -> str:
    pop = poplib.POP3(DEMO_NODE_ADDRESS, port, timeout=30)
    try:
        pop.user(user)
        pop.pass_(password)
        _, lines, _ = pop.retr(1)
    finally:
        pop.quit()
    return next(line.decode() for line in lines if line.startswith(b"Subject:"))


def _run_node(
    etc: Path, environment: dict[str, str], protocols: dict[str, int]
) -> subprocess.Popen[bytes]:
    """proxyd with the node's /etc/proxyd on DEMO_NODE_ADDRESS, once its ports accept."""
    log = etc / "proxyd.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [_bin("proxyd"), "-c", str(etc / "proxyd.conf")], env=environment,
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    wait_until(
        lambda: all(port_accepts(DEMO_NODE_ADDRESS, port) for port in protocols.values()),
        timeout=30, what="proxyd", process=process,  # type: ignore[arg-type]
        diagnostics=lambda: log.read_text(errors="replace"),
    )  # fmt: skip
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_mariadb_init_and_passdb_against_a_real_server(
    compose: dict[str, Any],
    tmp_path: Path,
    mariadb_factory: MariadbFactory,
    demo_backends: dict[str, DovecotBackend],
) -> None:
    """docker/mariadb/init-demo.sh loads a private MariaDB as the image would; the
    proxyd-m configuration (entry point included) then finds alice and bob there."""
    server = mariadb_factory.create()
    # a new server's database as the image makes it: empty
    server.sql("DROP DATABASE mail; CREATE DATABASE mail;", database="mysql")
    secrets = tmp_path / "init-secrets"
    secrets.mkdir()
    (secrets / "mariadb_root_password").write_text("")  # the fixture's root has none
    (secrets / "mysql_proxyd_password").write_text("5e1f0c2a9b7d4e36\n")
    mariadb = _service(compose, "mariadb")
    environment = dict(os.environ)
    environment.update(
        {
            "PROXYD_DEMO_SECRETS_DIR": str(secrets),
            "PROXYD_DEMO_SQL_DIR": str(REPO_ROOT / "sql"),
            "PROXYD_DEMO_SOCKET": str(server.socket),
            "DEMO_BACKEND_A": DEMO_BACKEND_ADDRESSES["a"],
            "DEMO_BACKEND_B": DEMO_BACKEND_ADDRESSES["b"],
        }
    )
    assert set(mariadb["environment"]) >= {"DEMO_BACKEND_A", "DEMO_BACKEND_B"}
    result = subprocess.run(
        ["sh", str(MARIADB_INIT)], capture_output=True, text=True, timeout=120, env=environment
    )
    assert result.returncode == 0, result.stderr
    assert server.sql("SELECT username, host FROM cluster_accounts ORDER BY username") == (
        "alice\t127.0.77.2\nbob\t127.0.77.3\n"
    )

    node = dict(_service(compose, MARIADB_NODE))
    node["environment"] = dict(node["environment"])
    node["environment"]["SQL_CONNECT"] = node["environment"]["SQL_CONNECT"].replace(
        "host=mariadb port=3306", f"host={server.address} port={server.port}"
    )
    etc, node_environment = _container_etc(
        {"services": {MARIADB_NODE: node}}, tmp_path, MARIADB_NODE
    )
    # the proxyd user's password, as the secret holds it
    shutil.copy(secrets / "mysql_proxyd_password", node_environment["SQL_PASSWORD_FILE"])
    subprocess.run(["sh", str(ENTRYPOINT), "true"], check=True, env=node_environment, timeout=60)
    for user, password, host, port, service in (
        ("alice", "alicepw", DEMO_BACKEND_ADDRESSES["a"], "10143", "imap"),
        ("bob", "bobpw", DEMO_BACKEND_ADDRESSES["b"], "10110", "pop3"),
    ):
        result = subprocess.run(
            [_bin("proxyctl"), "-c", str(etc / "proxyd.conf"), "auth", "test",
             "-x", f"service={service}", user, password],
            capture_output=True, text=True, timeout=60, env=node_environment,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == f"passdb: {user} auth succeeded"
        assert {f"host={host}", f"port={port}", "proxy="} <= set(lines), lines
    wrong = subprocess.run(
        [_bin("proxyctl"), "-c", str(etc / "proxyd.conf"), "auth", "test", "alice", "bobpw"],
        capture_output=True, text=True, timeout=60, env=node_environment,
    )  # fmt: skip
    assert wrong.returncode == 1
    assert wrong.stdout.startswith("passdb: alice auth failed")
    # and logins through proxyd-m's configuration reach the backend the row names
    node_environment["PROXYD_LISTEN"] = DEMO_NODE_ADDRESS
    process = _run_node(etc, node_environment, {"imap": 10143, "pop3": 10110})
    try:
        assert _imap_subject(10143, "alice", "alicepw").endswith(
            demo_backends["a"].subject_for("alice")
        )
        assert _pop3_subject(10110, "bob", "bobpw").endswith(demo_backends["b"].subject_for("bob"))
    finally:
        _stop(process)


def _settings_without_comments(text: str) -> list[str]:
    return [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def test_openldap_profile_is_a_third_node_with_the_shared_settings(
    compose: dict[str, Any],
) -> None:
    openldap = _service(compose, "openldap")
    node = _service(compose, LDAP_NODE)
    assert openldap["profiles"] == node["profiles"] == ["openldap"]
    assert node["depends_on"]["openldap"]["condition"] == "service_healthy"
    assert "postgres" not in node["depends_on"]
    mounts = _bind_mounts(node)
    # demo/proxyd.conf, with a passdb.conf that holds only what differs
    assert mounts["/etc/proxyd/proxyd.conf"] == "demo/proxyd.conf"
    assert "!include passdb.conf" in _settings_without_comments(PROXYD_CONF.read_text())
    ldap_passdb = _settings_without_comments(
        (REPO_ROOT / mounts["/etc/proxyd/passdb.conf"]).read_text()
    )
    assert ldap_passdb == [
        "passdb {", "  driver = ldap", "  args = dovecot-ldap.conf.ext", "}", "protocols = imap",
    ]  # fmt: skip
    ext = (REPO_ROOT / mounts["/etc/proxyd/dovecot-ldap.conf.ext"]).read_text()
    assert "!include ldap-dnpass.conf.ext" in ext.splitlines()
    assert "dnpass" not in "\n".join(_settings_without_comments(ext)).replace(
        "!include ldap-dnpass.conf.ext", ""
    )
    # IMAP only: the listeners of imap-login are published
    published = [str(item).split(":") for item in node["ports"]]
    assert {int(container) for _, _, container in published} == {10143, 10993}
    assert {address for address, _, _ in published} == {"127.0.0.9"}
    for letter in ("a", "b"):
        backend = _service(compose, f"backend-{letter}")
        address = backend["networks"]["mail"]["ipv4_address"]
        assert openldap["environment"][f"DEMO_BACKEND_{letter.upper()}"] == address
    assert openldap["environment"]["PROXY_PASSWORD_FILE"].startswith("/run/secrets/")
    dockerfile = (
        REPO_ROOT / openldap["build"]["context"] / openldap["build"]["dockerfile"]
    ).read_text()
    assert "COPY docker/openldap/start.sh" in dockerfile
    assert "COPY demo/ldap/ /ldap/" in dockerfile
    assert os.access(SLAPD_START, os.X_OK)


def test_openldap_start_and_passdb_against_a_real_slapd(
    compose: dict[str, Any], tmp_path: Path, demo_backends: dict[str, DovecotBackend]
) -> None:
    """docker/openldap/start.sh loads ldap/demo-cluster.ldif into Debian's slapd (the
    image's server) and runs it; proxyd-l's configuration then finds alice and bob."""
    if not Path("/usr/sbin/slapd").exists():
        pytest.skip("slapd is not installed (apt-get install slapd ldap-utils)")
    # slapd runs as openldap: its directory must be reachable (pytest's tmp_path is not)
    base = Path(tempfile.mkdtemp(prefix="proxyd-compose-slapd-"))
    base.chmod(0o755)
    secret = base / "ldap_proxyd_password"
    secret.write_text("3b9e61f0c4d2a875\n")
    secret.chmod(0o644)
    port = free_port(PROXYD_ADDRESS)
    uri = f"ldap://{PROXYD_ADDRESS}:{port}"
    environment = dict(os.environ)
    environment.update(
        {
            "LDAP_DIR": str(base / "slapd"),
            "LDAP_SOURCE": str(REPO_ROOT / "demo" / "ldap"),
            "PROXY_PASSWORD_FILE": str(secret),
            "LDAP_URLS": f"{uri}/",
            "DEMO_BACKEND_A": DEMO_BACKEND_ADDRESSES["a"],
            "DEMO_BACKEND_B": DEMO_BACKEND_ADDRESSES["b"],
        }
    )
    assert set(_service(compose, "openldap")["environment"]) >= {
        "DEMO_BACKEND_A", "DEMO_BACKEND_B", "PROXY_PASSWORD_FILE",
    }  # fmt: skip
    log = base / "slapd.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            ["sh", str(SLAPD_START)], env=environment, stdin=subprocess.DEVNULL,
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(
            lambda: subprocess.run(
                ["ldapsearch", "-x", "-H", uri, "-b", "dc=example,dc=test", "-s", "base"],
                capture_output=True, check=False, timeout=30,
            ).returncode == 0,
            timeout=30, what=f"slapd on {uri}", process=process,  # type: ignore[arg-type]
            diagnostics=lambda: log.read_text(errors="replace"),
        )  # fmt: skip
        node = dict(_service(compose, LDAP_NODE))
        node["environment"] = dict(node["environment"])
        etc, node_environment = _container_etc({"services": {LDAP_NODE: node}}, tmp_path, LDAP_NODE)
        ext = etc / "dovecot-ldap.conf.ext"
        ext.write_text(ext.read_text().replace("uris = ldap://openldap", f"uris = {uri}"))
        shutil.copy(secret, node_environment["LDAP_DNPASS_FILE"])
        subprocess.run(
            ["sh", str(ENTRYPOINT), "true"], check=True, env=node_environment, timeout=60
        )
        for user, password, host in (
            ("alice", "alicepw", DEMO_BACKEND_ADDRESSES["a"]),
            ("bob", "bobpw", DEMO_BACKEND_ADDRESSES["b"]),
        ):
            result = subprocess.run(
                [_bin("proxyctl"), "-c", str(etc / "proxyd.conf"), "auth", "test", user, password],
                capture_output=True, text=True, timeout=60, env=node_environment,
            )  # fmt: skip
            assert result.returncode == 0, result.stdout + result.stderr
            lines = result.stdout.splitlines()
            assert lines[0] == f"passdb: {user} auth succeeded"
            assert {f"host={host}", "port=10143", "proxy="} <= set(lines), lines
        wrong = subprocess.run(
            [_bin("proxyctl"), "-c", str(etc / "proxyd.conf"), "auth", "test", "alice", "bobpw"],
            capture_output=True, text=True, timeout=60, env=node_environment,
        )  # fmt: skip
        assert wrong.returncode == 1
        assert wrong.stdout.startswith("passdb: alice auth failed")
        # anonymous clients never see a password hash
        anonymous = subprocess.run(
            ["ldapsearch", "-x", "-LLL", "-H", uri, "-b", "dc=example,dc=test", "userPassword"],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        assert "userPassword" not in anonymous.stdout
        # and an IMAP login through proxyd-l's configuration reaches bob's backend
        node_environment["PROXYD_LISTEN"] = DEMO_NODE_ADDRESS
        node = _run_node(etc, node_environment, {"imap": 10143})
        try:
            assert _imap_subject(10143, "bob", "bobpw").endswith(
                demo_backends["b"].subject_for("bob")
            )
        finally:
            _stop(node)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)


def test_loads_in_debian_12_docker_compose_1_29_too(compose: dict[str, Any]) -> None:
    """docker-compose 1.29 (Debian 12) validates against the v3 schema, which has no
    top-level ``name``; the project name comes from ``.env`` for both versions."""
    assert "name" not in compose
    env = (REPO_ROOT / ".env").read_text()
    assert "COMPOSE_PROJECT_NAME=proxyd-demo" in env.splitlines()
    if shutil.which("docker-compose"):
        result = subprocess.run(
            ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
            capture_output=True, text=True, timeout=60, check=False, cwd=REPO_ROOT,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
