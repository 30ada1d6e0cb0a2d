"""Replay at a multiple of real time, on an absolute schedule.

The record with event time ``t`` is due at ``wall_start + (t - t_first) / speed``. Each
wait is computed from that schedule, never as "sleep the gap since the previous record",
so sleep overshoot, GC pauses and producer stalls do not accumulate: a late record is sent
at once and the ones after it are back on time. Event time that goes backwards (logs not
strictly ordered) never pulls the schedule back: such records are due immediately.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    """Due times for records at ``speed`` × real time; the clock is injectable for tests."""

    def __init__(self, speed: float, clock: Callable[[], float] = time.monotonic) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.clock = clock
        self._t0: float | None = None
        self._w0 = 0.0
        self._due = 0.0

    def due(self, ts: float | None) -> float:
        """Wall-clock (``clock()``) time at which the record of event time ``ts`` is due.

        ``None`` (no readable event time) is due with the record before it.
        """
        if self._t0 is None:
            if ts is None:
                return self.clock()
            self._t0, self._w0 = ts, self.clock()
            self._due = self._w0
            return self._due
        if ts is not None:
            due = self._w0 + (ts - self._t0) / self.speed
            if due > self._due:
                self._due = due
        return self._due

    def delay(self, ts: float | None) -> float:
        """Seconds to wait before sending the record of event time ``ts`` (<= 0: now)."""
        return self.due(ts) - self.clock()
