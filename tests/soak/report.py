"""One soak scenario's figures, as a markdown table row."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.soak.load import LoginSeries
from tests.soak.procs import Resources

HEADER = (
    "| scenario | logins lost (of) | sessions lost (of, expected) | login ms before / during / after "
    "(median, worst) | RSS before -> after | fds before -> after | note |\n"
    "|---|---|---|---|---|---|---|"
)


def _ms(series: LoginSeries) -> str:
    if not series.times:
        return "-"
    return f"{series.median * 1000:.0f}, {series.worst * 1000:.0f}"


@dataclass
class SoakReport:
    name: str
    before: LoginSeries
    during: LoginSeries
    after: LoginSeries
    sessions: int
    sessions_lost: int
    sessions_expected_lost: int
    res_before: Resources
    res_after: Resources
    notes: list[str] = field(default_factory=list)

    @property
    def logins_lost(self) -> int:
        return len(self.before.failures) + len(self.during.failures) + len(self.after.failures)

    @property
    def logins(self) -> int:
        return sum(len(s.times) + len(s.failures) for s in (self.before, self.during, self.after))

    def row(self) -> str:
        cells = [
            self.name,
            f"{self.logins_lost} ({self.logins})",
            f"{self.sessions_lost} ({self.sessions}, {self.sessions_expected_lost})",
            f"{_ms(self.before)} / {_ms(self.during)} / {_ms(self.after)}",
            f"{self.res_before.rss_kb / 1024:.0f} -> {self.res_after.rss_kb / 1024:.0f} MB",
            f"{self.res_before.fds} -> {self.res_after.fds}",
            "; ".join([*self.notes, *sorted({f[:80] for s in (self.before, self.during, self.after) for f in s.failures})]),
        ]
        return "| " + " | ".join(cells) + " |"
