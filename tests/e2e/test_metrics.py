"""``service stats { inet_listener http { } }``: ``GET /metrics``, parsed with prometheus_client's
own parsers before and after real logins; counts are summed over every process of the node,
also those that have exited (high-security login processes serve one client each).
"""

from __future__ import annotations

import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import proxy_support as ps
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import PROXYD_ADDRESS, client_address, free_port, wait_until
from tests.fixtures.proxyd import Listener, PasswdEntry, ProxydProcess, ProxydRunner, proxy_fields
from tests.helpers.clients import RawImapClient

pytestmark = [pytest.mark.e2e, pytest.mark.proxyd_only]


def scrape(running: ProxydProcess, accept: str | None = None) -> tuple[str, str]:
    request = urllib.request.Request(f"http://{running.address('http')}:{running.port('http')}/metrics")
    if accept:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode(), response.headers["Content-Type"]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return parsed.get((name, tuple(sorted(labels.items()))), 0.0)


def sqlite_passdb(proxyd: ProxydRunner, backend: DovecotBackend) -> Path:
    database = proxyd.workdir / "metrics.db"
    db = sqlite3.connect(database)
    db.execute("create table users (username text, password text, host text, port integer)")
    db.execute("insert into users values ('alice', '{PLAIN}alicepw', ?, ?)", (backend.address, backend.imap_port))
    db.commit()
    db.close()
    conf = proxyd.workdir / "metrics-sql.conf.ext"
    conf.write_text(
        f"driver = sqlite\nconnect = {database}\n"
        "password_query = SELECT password, host, port, 'y' AS proxy FROM users WHERE username = '%u'\n"
    )
    for path in (database, conf):
        path.chmod(0o644)
    return conf


def test_metrics_before_and_after_logins(proxyd: ProxydRunner, backend_a: DovecotBackend) -> None:
    dead_port = free_port(backend_a.address)
    entries = [
        PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(backend_a.address, backend_a.imap_port)),
        PasswdEntry("bob", "{PLAIN}bobpw", proxy_fields(backend_a.address, backend_a.pop3_port)),
        PasswdEntry("dave", "{PLAIN}carolpw", proxy_fields(backend_a.address, dead_port)),
    ]
    cfg = ps.config(proxyd, entries, auth_cache_size="1M")
    # alice comes from SQLite first: SQL lookups go through the auth cache (passwd-files do not)
    cfg.passdbs.insert(0, {"driver": "sql", "args": str(sqlite_passdb(proxyd, backend_a))})
    cfg.listeners.append(Listener("stats", "http", PROXYD_ADDRESS, free_port()))
    # a spare imap-login process to count: with Dovecot's default process_min_avail = 0 the
    # start-up process may be idle-killed before the first scrape
    cfg.extra = (cfg.extra or "") + "\nservice imap-login {\n  process_min_avail = 1\n}\n"
    running = proxyd.start(cfg)

    wait_until(
        lambda: value(samples(scrape(running)[0]), "proxyd_login_processes", service="imap-login") >= 1,
        timeout=10, what="a login process counted",
    )
    before = samples(scrape(running)[0])
    assert value(before, "proxyd_logins_total", protocol="imap", result="ok") == 0
    assert not [key for key in before if key[0] == "proxyd_sessions"]

    source = client_address(14)
    for _ in range(2):  # the second one is an auth cache hit
        answer = ps.login(running, "imap", "alice", "alicepw", source_ip=source)
        assert answer.ok, answer
    assert ps.login(running, "pop3", "bob", "bobpw", source_ip=source).ok
    assert not ps.login(running, "imap", "alice", "wrong", source_ip=client_address(15)).ok
    assert not ps.login(running, "imap", "dave", "carolpw", source_ip=client_address(16)).ok
    with RawImapClient(running.address(), running.port(), source_ip=client_address(17)) as held:
        assert held.command("LOGIN alice alicepw").status == "OK"
        assert held.command("SELECT INBOX").status == "OK"
        text, content_type = scrape(running)
        assert content_type.startswith("text/plain; version=0.0.4")
        after = samples(text)
        backend = f"{backend_a.address}:{backend_a.imap_port}"
        assert value(after, "proxyd_sessions", protocol="imap", backend=backend) == 1

    assert value(after, "proxyd_logins_total", protocol="imap", result="ok") == 3
    assert value(after, "proxyd_logins_total", protocol="pop3", result="ok") == 1
    assert value(after, "proxyd_logins_total", protocol="imap", result="auth_failed") == 1
    assert value(after, "proxyd_logins_total", protocol="imap", result="backend_failed") == 1
    assert value(after, "proxyd_backend_login_seconds_count") == 4
    assert value(after, "proxyd_backend_login_seconds_bucket", le="+Inf") == 4
    assert value(after, "proxyd_auth_seconds_count") == 6
    assert value(after, "proxyd_auth_seconds_sum") > 0
    assert value(after, "proxyd_relayed_bytes_total", direction="client_to_backend") > 0
    assert value(after, "proxyd_relayed_bytes_total", direction="backend_to_client") > 0
    assert value(after, "proxyd_auth_cache_hits_total") >= 1
    assert value(after, "proxyd_auth_cache_misses_total") >= 1
    assert ("proxyd_auth_penalties_total", ()) in after
    # no user name, password or other client-chosen value in any label or value
    for secret in ("alice", "alicepw", "bob", "dave", "carolpw", "wrong"):
        assert secret not in text

    # OpenMetrics when asked for it
    text, content_type = scrape(running, accept="application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    families = {family.name: family for family in openmetrics_families(text)}
    assert families["proxyd_logins"].type == "counter"
    assert families["proxyd_backend_login_seconds"].type == "histogram"

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://{running.address('http')}:{running.port('http')}/other", timeout=10)
    with info.value:  # an HTTPError holds the response open
        assert info.value.code == 404
