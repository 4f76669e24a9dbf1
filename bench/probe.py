"""Run proxyd with a profiler inside its login processes, driven by SIGUSR1 (bench/profile.sh).

    python bench/probe.py heap|cprofile OUTDIR proxyd-args...

With the process model (``proxyd.master``) the probe is installed in every forked
login process (not in the master, zygote or auth process); a proxyd without it
gets the probe in its only process.  Each probed process reacts to SIGUSR1:

* ``heap``: the first signal takes a tracemalloc baseline, each later one appends
  to ``OUTDIR/heap-<service>-<pid>.txt`` the growth since the baseline by source
  line, plus live object counts by type.  ``MEMPROBE_FRAMES`` (default 1) frames
  are kept per allocation; more add a by-traceback section but slow proxyd a lot.
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


def _install(mode: str, outdir: Path, label: str) -> None:
    pid = os.getpid()
    handler: Callable[[int, FrameType | None], None]
    if mode == "heap":
        handler = _HeapProbe(open(outdir / f"heap-{label}-{pid}.txt", "a", encoding="utf-8")).on_signal  # noqa: SIM115
    elif mode == "cprofile":
        handler = _CProfileProbe(open(outdir / f"cprofile-{label}-{pid}.pstats", "wb")).on_signal  # noqa: SIM115
    else:
        raise SystemExit(f"unknown probe mode {mode!r}")
    signal.signal(signal.SIGUSR1, handler)


def main() -> None:
    mode, outdir, argv = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    outdir.mkdir(parents=True, exist_ok=True)
    try:
        from proxyd.master import children
    except ImportError:
        _install(mode, outdir, "proxyd")
    else:
        original = children.child_main

        def child_main(*args: Any, **kwargs: Any) -> Any:
            # (settings, kind, service, control, inherited): probe login processes only
            kind, service = args[1], args[2]
            if kind != "auth":
                _install(mode, outdir, service or kind)
            return original(*args, **kwargs)

        children.child_main = child_main
    from proxyd.cli.proxyd import main as proxyd_main

    raise SystemExit(proxyd_main(argv))


if __name__ == "__main__":
    main()
