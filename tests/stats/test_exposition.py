"""The /metrics exposition without processes, and the Grafana dashboard against it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from proxyd import counters
from proxyd.ipc.messages import WhoRow
from proxyd.stats.metrics import Snapshot, render

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana" / "proxyd-dashboard.json"


def _snapshot() -> Snapshot:
    sessions = [WhoRow("alice", "imap", "192.0.2.1", "10.0.0.1:143", 5), WhoRow("bob", "imap", "192.0.2.2", "10.0.0.1:143", 1)]
    return Snapshot(totals=counters.totals(), sessions=sessions, login_processes={"imap-login": 3})


def test_sessions_are_counted_per_backend_without_user_names() -> None:
    text, content_type = render(_snapshot())
    assert content_type.startswith("text/plain")
    body = text.decode()
    assert 'proxyd_sessions{backend="10.0.0.1:143",protocol="imap"} 2.0' in body
    assert "alice" not in body
    assert "bob" not in body
    families = {family.name for family in text_string_to_metric_families(body)}
    assert {"proxyd_logins", "proxyd_sessions", "proxyd_backend_login_seconds", "proxyd_auth_seconds",
            "proxyd_relayed_bytes", "proxyd_login_processes"} <= families  # fmt: skip


def test_the_dashboard_asks_only_for_metrics_that_exist() -> None:
    body = render(_snapshot())[0].decode()
    names = {sample.name for family in text_string_to_metric_families(body) for sample in family.samples}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"proxyd_[a-z_]+", expr)}
    assert used
    assert used <= names, used - names
