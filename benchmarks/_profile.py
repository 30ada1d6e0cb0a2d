"""Read py-spy's collapsed-stack output (``--format raw``): functions by own time."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_REPO = str(Path(__file__).resolve().parent.parent) + "/"
_OWN = {"streams", "schemas", "sinks", "replay"}
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*)\)$")


def _short(frame: str) -> str:
    """``func (path/to/site-packages/pkg/mod.py)`` → ``func (pkg/mod.py)``."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "/lib/python3.11/", _REPO):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def top_functions(collapsed: str, n: int = 10) -> dict[str, Any]:
    """Top ``n`` functions by own (leaf) samples and by inclusive samples.

    Each line of ``collapsed`` is ``frame;frame;...;leaf count`` (py-spy ``--format raw``,
    thread names as the first frame when present; idle threads are not sampled).
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += k
        own[frames[-1]] += k
        for f in set(frames):
            inclusive[f] += k
    return {
        "samples": total,
        "top_own": [
            {"function": f, "samples": c, "share": c / total} for f, c in own.most_common(n)
        ],
        # inclusive time of touchpath's own code (the framework frames above it are ~100%)
        "top_inclusive_touchpath": [
            {"function": f, "samples": c, "share": c / total}
            for f, c in inclusive.most_common()
            if f.endswith(".py)") and f.rsplit("(", 1)[1].split("/")[0] in _OWN
        ][: n + 5],
    }
