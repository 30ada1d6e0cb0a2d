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
    An input read to its end (``caught_up``) is idle sooner: ``end_grace`` seconds after it
    said so, unless it delivers meanwhile (``None``: at once). The result never goes
    backwards.
    """

    idle_after: float = 30.0
    follow_wall_time: bool = False
    end_grace: float | None = None
    expected: set[str] = field(default_factory=set)
    _max: dict[str, float] = field(default_factory=dict)
    _seen_at: dict[str, float] = field(default_factory=dict)
    _end_at: dict[str, float] = field(default_factory=dict)
    #: per input that delivered nothing: the low watermark when every input was last quiet,
    #: and when (what it promises once others deliver again, see :meth:`promise`)
    _floor: dict[str, tuple[float, float]] = field(default_factory=dict)
    _last_data: float = NEG_INF
    _value: float = NEG_INF

    def observe(self, src: str, ts: float, now: float) -> None:
        """Input ``src`` delivered (or promised) event time ``ts`` at wall time ``now``."""
        if ts > self._max.get(src, NEG_INF):
            self._max[src] = ts
        self._seen_at[src] = now
        self._last_data = now
        self._end_at.pop(src, None)

    def touch(self, src: str, now: float) -> None:
        """Input ``src`` is alive (assigned) even if it delivered nothing yet; it is read
        to its end again before it counts as such."""
        self._seen_at.setdefault(src, now)
        self._end_at.pop(src, None)
        self.expected.add(src)

    def caught_up(self, src: str, now: float) -> None:
        """Input ``src`` has nothing more right now (end of partition): it stops holding the
        watermark back soon (see the class), not after ``idle_after``.

        Not at once with an ``end_grace``: a producer writes partitions in separate
        batches, so a partition read to its end can still receive records older than the
        others' progress, and the embedded broker's short high watermark (docs/design.md) can
        report an end with records still to come; for ``end_grace`` seconds it keeps
        holding the watermark at its own progress."""
        if self.end_grace is None:
            self._seen_at[src] = now - self.idle_after
        else:
            self._end_at.setdefault(src, now)

    def is_idle(self, src: str, now: float) -> bool:
        """Whether ``src`` has stopped holding the watermark back (silent, or caught up)."""
        end_at = self._end_at.get(src)
        if end_at is not None and now - end_at >= (self.end_grace or 0.0):
            return True
        return now - self._seen_at.get(src, now) >= self.idle_after

    def progress(self, src: str) -> float:
        """Largest event time ``src`` has delivered (``-inf``: nothing yet)."""
        return self._max.get(src, NEG_INF)

    def forget(self, src: str) -> None:
        """Input ``src`` is gone (revoked, or an upstream instance left)."""
        self._max.pop(src, None)
        self._seen_at.pop(src, None)
        self._end_at.pop(src, None)
        self._floor.pop(src, None)
        self.expected.discard(src)

    def _active(self, now: float) -> list[str]:
        return [s for s in (self.expected | self._max.keys()) if not self.is_idle(s, now)]

    def promise(self, src: str, now: float) -> float:
        """How far input ``src`` has certainly progressed, to announce downstream
        (``-inf``: nothing can be promised, hold event time back).

        Its own progress while it delivers. Once idle, the low watermark (it has nothing in
        flight) — but while other inputs still deliver, no further than its own progress
        plus the wall time it has been silent: its next record may be older than theirs (a
        producer reaches partitions one after another, and a backlog's batch spans days of
        event time), while live records, whose event time follows the wall clock, are
        never behind that. An input that delivered nothing has no progress of its own: the
        low watermark of the last moment every input was quiet stands for it, and if there
        was none it holds event time back until it has been silent ``idle_after`` seconds.
        """
        v = self.progress(src)
        if not self.is_idle(src, now):
            return v
        low = self.value(now)
        if not self._active(now):
            if v == NEG_INF:
                self._floor[src] = (low, now)
            return max(v, low)
        if v != NEG_INF:
            base, since = v, self._seen_at.get(src, now)
        else:
            base, since = self._floor.get(src, (NEG_INF, now))
        if base != NEG_INF:
            return max(base, min(low, base + max(0.0, now - since)))
        if now - self._seen_at.get(src, now) >= self.idle_after:
            return low  # silent for long: a partition that gets no data must not stall
        return NEG_INF

    def quiet(self, now: float) -> bool:
        """Whether no input delivers (every one is idle)."""
        return not self._active(now)

    def value(self, now: float) -> float:
        """The current low watermark (``-inf`` until every active input has progressed).
        Idle inputs do not hold it back (see :meth:`promise` for what they announce)."""
        active = self._active(now)
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
