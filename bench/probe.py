"""Run proxyd with a profiler inside its login processes, driven by SIGUSR1 (bench/profile.sh).

    python bench/probe.py heap|cprofile|calls OUTDIR proxyd-args...

With the process model (``proxyd.children``) the probe is installed in every forked
login process (not in the master, zygote or auth process; ``PROBE_KINDS=auth`` adds the
auth process); a proxyd without it
gets the probe in its only process.  Each probed process reacts to SIGUSR1:

* ``heap``: the first signal takes a tracemalloc baseline, each later one appends
  to ``OUTDIR/heap-<service>-<pid>.txt`` the growth since the baseline by source
  line, plus live object counts by type.  ``MEMPROBE_FRAMES`` (default 1) frames
  are kept per allocation; more add a by-traceback section but slow proxyd a lot.
* ``calls``: the first signal starts counting every call by the innermost proxyd
  function on the stack (what each proxyd function costs in calls, Trio's included),
  the second writes ``OUTDIR/calls-<service>-<pid>.txt``.
* ``cprofile``: the first signal enables cProfile, the second disables it and
  writes the stats (``pstats`` format) to ``OUTDIR/cprofile-<service>-<pid>.pstats``.

Output files are opened before the login process drops privileges and chroots,
so they can be written afterwards.  Only the benchmark uses this; proxyd's code is
not changed, one function is wrapped at run time.
"""

from __future__ import annotations

import cProfile
import gc
import marshal
import os
import signal
import sys
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO, Any

_FRAMES = int(os.environ.get("MEMPROBE_FRAMES", "1"))
_TOP = 40


class _HeapProbe:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.baseline: tracemalloc.Snapshot | None = None
        tracemalloc.start(_FRAMES)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        gc.collect()
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        if self.baseline is None:
            self.baseline = snap
            return
        by_line = snap.compare_to(self.baseline, "lineno")
        total = sum(s.size_diff for s in by_line)
        lines = [f"# pid {os.getpid()}: growth since baseline {total / 1024:.1f} KiB (tracemalloc, Python heap only)"]
        lines.append("\n## by line")
        lines += [str(s) for s in by_line[:_TOP]]
        if _FRAMES > 1:
            lines.append("\n## by traceback (innermost last)")
            for stat in snap.compare_to(self.baseline, "traceback")[:15]:
                lines.append(f"\n{stat.size_diff / 1024:.1f} KiB in {stat.count_diff} blocks:")
                lines += ["    " + str(f) for f in stat.traceback.format()[-2 * _FRAMES :]]
        lines.append("\n## live objects by type")
        counts = Counter(type(o).__qualname__ for o in gc.get_objects())
        lines += [f"{n:8d} {name}" for name, n in counts.most_common(60)]
        self.out.write("\n".join(lines) + "\n\n")
        self.out.flush()


class _CProfileProbe:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.profile: cProfile.Profile | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        if self.profile is None:
            self.profile = cProfile.Profile()
            self.profile.enable()
            return
        self.profile.disable()
        self.profile.create_stats()
        marshal.dump(self.profile.stats, self.out)
        self.out.flush()


class _CallsProbe:
    """Every Python and C call, counted against the innermost proxyd function on the stack
    (the calls a proxyd function causes, through Trio and the standard library included);
    calls with no proxyd frame on the stack are the scheduler's (``(trio scheduler)``)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.counts: Counter[str] = Counter()
        self.on = False

    def _hook(self, frame: FrameType, event: str, arg: object) -> None:
        if event not in ("call", "c_call"):
            return
        f: FrameType | None = frame
        while f is not None:
            code = f.f_code
            if "/proxyd/" in code.co_filename:
                self.counts[f"{code.co_filename.rpartition('/proxyd/')[2]}:{code.co_name}"] += 1
                return
            f = f.f_back
        self.counts["(trio scheduler)"] += 1

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        if not self.on:
            self.on = True
            sys.setprofile(self._hook)
            return
        sys.setprofile(None)
        for name, n in self.counts.most_common():
            self.out.write(f"{n}\t{name}\n")
        self.out.flush()


def _install(mode: str, outdir: Path, label: str) -> None:
    pid = os.getpid()
    handler: Callable[[int, FrameType | None], None]
    if mode == "heap":
        handler = _HeapProbe(open(outdir / f"heap-{label}-{pid}.txt", "a", encoding="utf-8")).on_signal  # noqa: SIM115
    elif mode == "cprofile":
        handler = _CProfileProbe(open(outdir / f"cprofile-{label}-{pid}.pstats", "wb")).on_signal  # noqa: SIM115
    elif mode == "calls":
        handler = _CallsProbe(open(outdir / f"calls-{label}-{pid}.txt", "w", encoding="utf-8")).on_signal  # noqa: SIM115
    else:
        raise SystemExit(f"unknown probe mode {mode!r}")
    signal.signal(signal.SIGUSR1, handler)


def main() -> None:
    mode, outdir, argv = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    outdir.mkdir(parents=True, exist_ok=True)
    try:
        from proxyd import children
    except ImportError:
        _install(mode, outdir, "proxyd")
    else:
        original = children._child_main
        # PROBE_KINDS: which children get the probe besides login processes ("auth", ...)
        extra = set(os.environ.get("PROBE_KINDS", "").split())

        def child_main(*args: Any, **kwargs: Any) -> Any:
            # (settings, kind, service, control, inherited, tls): login processes by default
            kind, service = args[1], args[2]
            if kind in extra or kind not in ("auth", "tcpwrap", "relay"):
                _install(mode, outdir, service or kind)
            return original(*args, **kwargs)

        children._child_main = child_main  # type: ignore[assignment]
    from proxyd.cli.proxyd import main as proxyd_main

    raise SystemExit(proxyd_main(argv))


if __name__ == "__main__":
    main()
