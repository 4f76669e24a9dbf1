"""The node's metrics in the Prometheus / OpenMetrics text formats (prometheus-client).

Everything is read when scraped: the counters every process adds to in shared
memory (``proxyd.counters``), the proxied sessions as ``proxyctl who`` sees them
(the master asks its children, as for ``who``), and the master's own count of
login processes.  Labels carry protocols, results, services, directions and
backend ``IP:PORT`` only: never a user name or anything a client chose.

``GET /metrics`` answers the Prometheus text format, or OpenMetrics when the
scraper's ``Accept`` asks for it; any other path is ``404 Path Not Found``.
There is no authentication, as with Dovecot's stats listener: bind it where
only the monitoring can reach it.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from proxyd import counters
from proxyd.httpd import Request, Response
from proxyd.ipc.messages import WhoRow


@dataclass(frozen=True, slots=True)
class Snapshot:
    totals: counters.Totals
    sessions: list[WhoRow]
    #: login service -> processes running now
    login_processes: Mapping[str, int]


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        totals = self.snapshot.totals
        logins = CounterMetricFamily(
            "proxyd_logins", "Logins by protocol and result", labels=["protocol", "result"]
        )
        for protocol in counters.PROTOCOLS:
            for result in counters.LoginResult:
                logins.add_metric([protocol, result.label], totals.logins(protocol, result))
        yield logins

        sessions = GaugeMetricFamily(
            "proxyd_sessions", "Proxied sessions now, by protocol and backend", labels=["protocol", "backend"]
        )
        for (protocol, backend), n in sorted(Tally((s.protocol, s.backend) for s in self.snapshot.sessions).items()):
            sessions.add_metric([protocol, backend], n)
        yield sessions

        yield _histogram(
            totals, counters.Histogram.BACKEND_LOGIN, "proxyd_backend_login_seconds",
            "Time from the backend connect to its login answer, for proxied logins",
        )
        yield _histogram(
            totals, counters.Histogram.AUTH, "proxyd_auth_seconds",
            "Time a login waited for the auth process's answer",
        )

        relayed = CounterMetricFamily("proxyd_relayed_bytes", "Bytes relayed", labels=["direction"])
        relayed.add_metric(["client_to_backend"], totals.counter(counters.Counter.BYTES_CLIENT_TO_BACKEND))
        relayed.add_metric(["backend_to_client"], totals.counter(counters.Counter.BYTES_BACKEND_TO_CLIENT))
        yield relayed

        processes = GaugeMetricFamily(
            "proxyd_login_processes", "Login processes running, by service", labels=["service"]
        )
        for service, n in sorted(self.snapshot.login_processes.items()):
            processes.add_metric([service], n)
        yield processes

        yield CounterMetricFamily(
            "proxyd_auth_cache_hits", "Auth cache hits",
            value=totals.counter(counters.Counter.AUTH_CACHE_HITS),
        )
        yield CounterMetricFamily(
            "proxyd_auth_cache_misses", "Auth cache misses (and expired entries)",
            value=totals.counter(counters.Counter.AUTH_CACHE_MISSES),
        )
        yield CounterMetricFamily(
            "proxyd_auth_penalties", "Auth requests delayed by the client IP's auth penalty",
            value=totals.counter(counters.Counter.PENALTIES),
        )
        yield CounterMetricFamily(
            "proxyd_connection_queue_full",
            "Pre-login clients destroyed to make room in a full service (Connection queue full)",
            value=totals.counter(counters.Counter.QUEUE_FULL),
        )
        yield CounterMetricFamily(
            "proxyd_prelogin_per_ip_refused",
            "Connections refused because their address had proxyd_prelogin_per_ip_limit pre-login connections",
            value=totals.counter(counters.Counter.PRELOGIN_PER_IP_REFUSED),
        )


def _histogram(totals: counters.Totals, which: counters.Histogram, name: str, documentation: str) -> Metric:
    buckets, _count, total = totals.histogram(which)
    cumulative: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip((*[str(b) for b in counters.BUCKETS], "+Inf"), buckets, strict=True):
        running += n
        cumulative.append((bound, running))
    return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=total)


def render(snapshot: Snapshot, accept: str = "") -> tuple[bytes, str]:
    """(body, content type) for the scraper's ``Accept`` header."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


class StatsHttp:
    """The request handler of the stats listener."""

    def __init__(self, snapshot: Callable[[], Awaitable[Snapshot]]) -> None:
        self.snapshot = snapshot

    async def handle(self, request: Request) -> Response:
        if request.path != "/metrics":
            return Response.text(404, "Path Not Found")
        if request.method not in ("GET", "HEAD"):
            return Response.text(405, "Method Not Allowed")
        body, content_type = render(await self.snapshot(), request.headers.get("accept", ""))
        return Response(200, "OK", body, (("Content-Type", content_type),))
