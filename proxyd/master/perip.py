"""``proxyd_prelogin_per_ip_limit``: pre-login connections per client address, per service.

Beyond Dovecot, which caps only logged-in connections per user and address
(``mail_max_userip_connections``): one address must not fill a service's room
for clients that are still logging in, and so displace everyone else's.

Login processes report each pre-login connection's start and end
(``PreloginCount``, only while the setting is on); the master adds them up per
service here.  When an address reaches the limit, every login process of the
service is told (``IpLimit``) and refuses its new connections until it is below
the limit again.  A login process that dies takes its counts with it.  The
login processes act on what they were last told, so a burst may overshoot by
the connections accepted while the news travels.

Sans-IO: the master feeds reports and exits in, and gets back what to tell and
what to log.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

#: a warning about one address is repeated at most this often (seconds)
LOG_INTERVAL: Final = 60.0


@dataclass(frozen=True, slots=True)
class LimitChange:
    """Tell the service's login processes that ``ip`` is over the limit (or not)."""

    service: str
    ip: str
    over: bool
    #: write the "reached the limit" warning for this change (at most once a minute per address)
    log: bool = False


@dataclass(slots=True)
class PreloginPerIp:
    """The counts of one proxyd; ``limit`` 0 counts nothing."""

    limit: int = 0
    #: service -> address -> pre-login connections
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    #: child pid -> (service, address -> its pre-login connections)
    by_child: dict[int, tuple[str, Counter[str]]] = field(default_factory=dict)
    #: service -> addresses the login processes were told are over the limit
    over: dict[str, set[str]] = field(default_factory=dict)
    #: address -> when its last warning was logged
    logged: dict[str, float] = field(default_factory=dict)
    #: how many times an address reached the limit, per service (for the metrics)
    limit_reached: Counter[str] = field(default_factory=Counter)

    def report(self, pid: int, service: str, ip: str, delta: int) -> list[LimitChange]:
        """A login process's ``PreloginCount``."""
        _, mine = self.by_child.setdefault(pid, (service, Counter()))
        mine[ip] += delta
        if mine[ip] <= 0:
            del mine[ip]
        counts = self.counts.setdefault(service, Counter())
        counts[ip] = max(0, counts[ip] + delta)
        return self._check(service, ip)

    def child_gone(self, pid: int) -> list[LimitChange]:
        """A login process exited: its pre-login connections are gone with it."""
        entry = self.by_child.pop(pid, None)
        if entry is None:
            return []
        service, mine = entry
        counts = self.counts.setdefault(service, Counter())
        changes: list[LimitChange] = []
        for ip, count in mine.items():
            counts[ip] = max(0, counts[ip] - count)
            changes += self._check(service, ip)
        return changes

    def relimit(self, limit: int) -> list[LimitChange]:
        """A reload changed the setting: who is over the new limit (0: nobody)."""
        self.limit = limit
        changes: list[LimitChange] = []
        for service, counts in self.counts.items():
            for ip in set(counts) | self.over.get(service, set()):
                changes += self._check(service, ip)
        return changes

    def over_limit(self, service: str) -> set[str]:
        """The addresses a new login process of ``service`` must be told about."""
        return set(self.over.get(service, ()))

    def _check(self, service: str, ip: str) -> list[LimitChange]:
        counts = self.counts.setdefault(service, Counter())
        if counts.get(ip, 0) <= 0:
            counts.pop(ip, None)
        over = self.over.setdefault(service, set())
        now_over = self.limit > 0 and counts.get(ip, 0) >= self.limit
        if now_over == (ip in over):
            return []
        if not now_over:
            over.discard(ip)
            return [LimitChange(service, ip, over=False)]
        over.add(ip)
        self.limit_reached[service] += 1
        now = time.monotonic()
        log = now - self.logged.get(ip, -LOG_INTERVAL) >= LOG_INTERVAL
        if log:
            self.logged[ip] = now
            if len(self.logged) > 10_000:  # forget the oldest; a flood of addresses must not grow this
                for old in sorted(self.logged, key=self.logged.__getitem__)[:5_000]:
                    del self.logged[old]
        return [LimitChange(service, ip, over=True, log=log)]
