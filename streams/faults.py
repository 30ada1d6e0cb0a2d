"""Fault injection for the reliability tests: stop a worker at a named point of its work.

A kill -9 at a random moment rarely lands inside the short windows that decide whether a
crash loses data (between landing rows and acking their messages, between a state flush
and the next one, between reading raw records and producing them). With
``TOUCHPATH_FAULT_HOLD_AT=POINT[@N]`` the N-th time (default: the first) the worker reaches
``POINT`` it logs ``fault injection: holding at POINT`` and that task stops there for good,
while the rest of the worker (Faust's offset commits included) goes on: the test then kills
it inside the window, every time. Off by default; testing only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger(__name__)

#: where a worker can be held, and what is in flight there
POINTS = {
    "ingest.before-send": "raw records read, nothing produced from them yet",
    "land.touchpoints": "identify's batch taken, its touchpoints not yet in ClickHouse",
    "journey.batch": "a journey batch taken; every earlier one flushed and acked",
    "flush.before-markers": "a flush delivered state changelog records, not yet their markers",
}

_point: str | None = None
_hit_at = 1
_hits: Counter[str] = Counter()


def parse(spec: str) -> tuple[str, int]:
    """``POINT[@N]`` → (point, n); ValueError naming the known points otherwise."""
    point, _, n = spec.partition("@")
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}; one of: {', '.join(sorted(POINTS))}")
    hit = int(n) if n.isdigit() else 0
    if hit < 1 and n:
        raise ValueError(f"the hit after @ must be a whole number ≥ 1, got {n!r}")
    return point, hit or 1


def configure(spec: str | None) -> None:
    """Arm ``POINT[@N]``; None disarms."""
    global _point, _hit_at
    _hits.clear()
    _point = None
    if spec:
        _point, _hit_at = parse(spec)
        log.warning("fault injection armed: hold at %s, hit %d", _point, _hit_at)


def _reached(point: str, where: Callable[[], str] | None = None) -> bool:
    if _point != point:
        return False
    _hits[point] += 1
    if _hits[point] != _hit_at:
        return False
    held = f" {where()}" if where else ""
    log.warning("fault injection: holding at %s (%s)%s", point, POINTS[point], held)
    return True


async def hold(point: str, where: Callable[[], str] | None = None) -> None:
    """In a coroutine: never return if this is the armed point's armed hit (``where``
    says what is held, for the log)."""
    if _point is not None and _reached(point, where):
        await asyncio.Event().wait()


def hold_sync(point: str) -> None:
    """In a thread: never return if this is the armed point's armed hit."""
    if _point is not None and _reached(point):
        while True:
            time.sleep(3600)
