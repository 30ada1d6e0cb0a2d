"""Event-time watermarks: how far the input has certainly progressed.

A stage that merges several partitions must not let the fastest one drive its stream
clock, or a backlog read partition by partition (a replay, a restart) turns every event of
the slower partitions "late". So, as Flink and Kafka Streams do, progress flows with the
data: ingest publishes a *low watermark* (the minimum, over its source partitions, of the
largest event time each has delivered; partitions idle for a while stop holding it back)
in every micro-batch, each stage forwards the minimum over what it receives, and the
journey stage's stream clock is that watermark minus the allowed lateness. Pure; wall
time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NEG_INF = float("-inf")


@dataclass
class SourceWatermarks:
    """Low watermark over named inputs (partitions or upstream instances).

    ``observe(src, ts, now)`` records progress; inputs silent for ``idle_after`` seconds of
    wall time stop holding the watermark back (they have nothing in flight); when every
    input is idle the watermark also follows wall time, so timers fire on a quiet system.
    The result never goes backwards.

    The end of a partition (``at_end``) is weaker than silence: a partition read to its end
    while others still deliver may be one the producer has simply not reached yet (a
    backlog being published, a restart), so it keeps holding the watermark at its own
    progress until every input is at its end or idle. With ``wake_on_data``, the first data
    after a quiet spell gives every other input ``idle_after`` seconds to show up again
    before it stops holding the watermark back: a burst reaches partitions one by one.
    """

    idle_after: float = 30.0
    follow_wall_time: bool = False
    wake_on_data: bool = False
    expected: set[str] = field(default_factory=set)
    _max: dict[str, float] = field(default_factory=dict)
    _seen_at: dict[str, float] = field(default_factory=dict)
    _at_end: set[str] = field(default_factory=set)
    _last_data: float = NEG_INF
    _value: float = NEG_INF

    def observe(self, src: str, ts: float, now: float) -> None:
        """Input ``src`` delivered (or promised) event time ``ts`` at wall time ``now``."""
        if self.wake_on_data and self._quiet(now):
            for other in self.expected | self._max.keys():
                self._seen_at[other] = now
        if ts > self._max.get(src, NEG_INF):
            self._max[src] = ts
        self._seen_at[src] = now
        self._at_end.discard(src)
        self._last_data = now

    def touch(self, src: str, now: float) -> None:
        """Input ``src`` is alive (assigned) even if it delivered nothing yet."""
        self._seen_at.setdefault(src, now)
        self.expected.add(src)

    def resume(self, src: str, now: float) -> None:
        """Input ``src`` is being read again though it delivered nothing yet: wait for it
        (at what it promised before, if anything), even if it was idle."""
        self._seen_at[src] = now
        self._at_end.discard(src)
        self.expected.add(src)

    def caught_up(self, src: str, now: float) -> None:
        """Input ``src`` is idle at once (its upstream says so): it does not hold the
        watermark back until it delivers again."""
        self._seen_at[src] = now - self.idle_after

    def at_end(self, src: str, now: float) -> None:
        """Input ``src`` was read to its end: idle once every input is at its end or idle."""
        self._seen_at.setdefault(src, now)
        self._at_end.add(src)

    def _silent(self, src: str, now: float) -> bool:
        return now - self._seen_at.get(src, now) >= self.idle_after

    def _quiet(self, now: float) -> bool:
        """Every input is at its end or silent: nothing is in flight anywhere."""
        return all(
            s in self._at_end or self._silent(s, now) for s in self.expected | self._max.keys()
        )

    def is_idle(self, src: str, now: float) -> bool:
        """Whether ``src`` has stopped holding the watermark back (silent, or caught up)."""
        if self._silent(src, now):
            return True
        return src in self._at_end and self._quiet(now)

    def progress(self, src: str) -> float:
        """Largest event time ``src`` has delivered (``-inf``: nothing yet)."""
        return self._max.get(src, NEG_INF)

    def forget(self, src: str) -> None:
        """Input ``src`` is gone (revoked, or an upstream instance left)."""
        self._max.pop(src, None)
        self._seen_at.pop(src, None)
        self._at_end.discard(src)
        self.expected.discard(src)

    def value(self, now: float) -> float:
        """The current low watermark (``-inf`` until every active input has progressed)."""
        active = [s for s in (self.expected | self._max.keys()) if not self.is_idle(s, now)]
        if active:
            wm = min(self._max.get(s, NEG_INF) for s in active)
        elif self._max:
            wm = max(self._max.values())
            if self.follow_wall_time and self._last_data != NEG_INF:
                wm += max(0.0, now - self._last_data - self.idle_after)
        else:
            wm = NEG_INF
        if wm > self._value:
            self._value = wm
        return self._value
