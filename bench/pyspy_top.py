"""Summarise py-spy collapsed stacks (``--format raw``): self and inclusive share per function.

    python3 bench/pyspy_top.py FILE.folded [N]

Each line of the input is ``frame;frame;...;leaf COUNT`` with frames like
``func (path/to/file.py:LINE)``.  Lines are dropped, so a function is one entry
however many lines of it were sampled; paths are shortened to the package part.
With ``py-spy --subprocesses`` stacks start with ``process PID:"COMMAND"`` frames;
the share per command (the innermost such frame) is listed first, and the
function tables are repeated per command.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>[^():]*)(?::\d+)?\)$")
_MARKERS = ("site-packages/", "lib/python3.11/", "/work/main/")
_PROCESS = re.compile(r'^process \d+:"(?P<cmd>.*)"$')


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["path"]
    for marker in _MARKERS:
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def _table(title: str, counter: Counter[str], total: int, top: int) -> None:
    print(f"\n## {title}")
    for name, n in counter.most_common(top):
        print(f"{100 * n / total:6.2f}%  {name}")


def main() -> None:
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    by_cmd: Counter[str] = Counter()
    self_ct: dict[str, Counter[str]] = {}
    incl_ct: dict[str, Counter[str]] = {}
    total = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            raw = [f for f in stack.split(";") if f]
            cmd = "all"
            for frame in raw:
                match = _PROCESS.match(frame)
                if match:
                    cmd = match["cmd"]
            frames = [_short(f) for f in raw if not _PROCESS.match(f)]
            total += count
            by_cmd[cmd] += count
            if frames:
                self_ct.setdefault(cmd, Counter())[frames[-1]] += count
            for name in set(frames):
                incl_ct.setdefault(cmd, Counter())[name] += count
    print(f"# {path}: {total} on-CPU samples (percentages are of all samples)")
    _table("share by process", by_cmd, total, top)
    for cmd, _ in by_cmd.most_common():
        _table(f"{cmd}: self (leaf) share", self_ct.get(cmd, Counter()), total, top)
        _table(f"{cmd}: inclusive share", incl_ct.get(cmd, Counter()), total, top)


if __name__ == "__main__":
    main()
