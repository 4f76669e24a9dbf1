"""Per-process proxy state: backend records, source-IP round robin, disconnect pacing.

Theory of operation
-------------------
Dovecot keeps this in each login process (``login-proxy-state.c``,
``login_source_ips`` in ``main.c``), so with several login processes every
process paces and rotates on its own (spec §11, "Per-process state").  One
:class:`ProxyState` lives in each login process; sessions share it.

* **Source IPs** (``login_source_ips``): a random start, then round robin per
  proxied connection; a passdb ``source_ip`` wins (:meth:`next_source_ip`).
* **Backend records**, keyed by (ip, port): successes and failures (for
  ``proxy_host_immediate_failure_after``: "Host is down" when the last failure
  is newer than the last success by more than that many seconds and another
  connection is already waiting), the number of connections being set up and
  being proxied, and the disconnect bookkeeping below.
* **Disconnect delay** (``login_proxy_max_disconnect_delay``, spec §5.3): when a
  backend drops a proxied session (or an admin kicks it) the client is not
  disconnected at once if many clients of that backend are going the same
  way; :meth:`disconnect_delay` gives each one a slot on a 100 ms grid spread
  over ``max_delay`` seconds, so that they do not all reconnect together.
  The first second's worth of clients go at once.

All times are ``trio.current_time()`` so that tests can use a mock clock.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Final

import trio

#: PROXY_DISCONNECT_INTERVAL_MSECS
DISCONNECT_INTERVAL: Final = 0.1


@dataclass(slots=True)
class BackendRecord:
    """``struct login_proxy_record`` for one (ip, port)."""

    last_success: float | None = None
    last_failure: float | None = None
    num_waiting_connections: int = 0
    num_proxying_connections: int = 0
    #: disconnects since ``disconnect_timestamp`` (reset by a new proxied connection)
    num_disconnects_since_ts: int = 0
    disconnect_timestamp: float = 0.0
    num_delayed_client_disconnects: int = 0


@dataclass(slots=True)
class ProxyState:
    """One login process's proxy state."""

    source_ips: tuple[str, ...] = ()
    max_disconnect_delay: float = 0.0
    records: dict[tuple[str, int], BackendRecord] = field(default_factory=dict)
    _source_index: int = -1
    rng: random.Random = field(default_factory=random.Random)

    # -- source addresses ------------------------------------------------------------

    def next_source_ip(self, passdb_source_ip: str = "") -> str:
        """The address to connect from: passdb ``source_ip``, else the next of ``login_source_ips``."""
        if passdb_source_ip:
            return passdb_source_ip
        if not self.source_ips:
            return ""
        if self._source_index < 0:
            self._source_index = self.rng.randrange(len(self.source_ips))
        address = self.source_ips[self._source_index]
        self._source_index = (self._source_index + 1) % len(self.source_ips)
        return address

    # -- backend records ------------------------------------------------------------

    def record(self, ip: str, port: int) -> BackendRecord:
        """The record for ``ip:port``, created on first use."""
        return self.records.setdefault((ip, port), BackendRecord())

    def host_is_down(self, record: BackendRecord, immediate_failure_after: float) -> bool:
        """Dovecot's "Host is down" fast failure (call after counting this connection as waiting)."""
        now = trio.current_time()
        if record.last_success is None:
            # first connect to this backend: don't start failing at once
            record.last_success = now - 1
        return (
            immediate_failure_after > 0
            and record.last_failure is not None
            and record.last_failure > record.last_success
            and record.last_failure - record.last_success > immediate_failure_after
            and record.num_waiting_connections > 1
        )

    @staticmethod
    def connect_failed(record: BackendRecord) -> None:
        record.last_failure = trio.current_time()

    @staticmethod
    def connected(record: BackendRecord) -> None:
        """A TCP connection to the backend is up (counted as proxying from now on)."""
        record.last_success = trio.current_time()
        record.num_proxying_connections += 1
        record.num_disconnects_since_ts = 0

    @staticmethod
    def disconnected(record: BackendRecord) -> None:
        """A connection counted by :meth:`connected` is gone."""
        record.num_proxying_connections = max(0, record.num_proxying_connections - 1)

    # -- disconnect pacing ------------------------------------------------------------

    def disconnect_delay(self, record: BackendRecord) -> float:
        """Seconds to keep the client open after its backend side went away (0: close now).

        Dovecot's ``login_proxy_delay_disconnect()``; call after
        :meth:`disconnected`, and call :meth:`delayed_disconnect_done` when a
        positive delay is over.
        """
        now = trio.current_time()
        if record.num_disconnects_since_ts == 0:
            # a slightly random start, so that processes do not disconnect in step
            record.disconnect_timestamp = now + self.rng.randrange(100) / 1000
        record.num_disconnects_since_ts += 1
        max_delay = math.floor(self.max_disconnect_delay)
        if max_delay <= 0:
            return 0.0
        max_conns = record.num_proxying_connections + record.num_disconnects_since_ts
        max_per_sec = (max_conns + max_delay - 1) // max_delay
        if (
            record.num_disconnects_since_ts <= max_per_sec
            and record.num_delayed_client_disconnects == 0
        ):
            # the first second's worth go at once
            return 0.0
        steps = max_delay * record.num_disconnects_since_ts * 10 // max_conns
        target = record.disconnect_timestamp + DISCONNECT_INTERVAL * steps
        delay = target - now
        if delay <= 0:
            return 0.0
        record.num_delayed_client_disconnects += 1
        return delay

    @staticmethod
    def delayed_disconnect_done(record: BackendRecord) -> None:
        """A delayed client disconnect happened; the last one resets the count."""
        record.num_delayed_client_disconnects -= 1
        if record.num_delayed_client_disconnects <= 0:
            record.num_delayed_client_disconnects = 0
            record.num_disconnects_since_ts = 0
