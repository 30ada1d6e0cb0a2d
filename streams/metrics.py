"""Every Prometheus metric touchpath exports, declared in one place.

Names follow Prometheus conventions: ``touchpath_<thing>_<unit>`` / ``_total``, base units.
Metrics are incremented per batch, never per event on the hot path.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_IN = Counter(
    "touchpath_events_in_total", "Raw records consumed by ingest.", registry=REGISTRY
)
EVENTS_VALID = Counter(
    "touchpath_events_valid_total",
    "Records that passed validation, per channel.",
    ["channel"],
    registry=REGISTRY,
)
EVENTS_DEAD_LETTERED = Counter(
    "touchpath_events_dead_lettered_total",
    "Records sent to the dead-letter topic, per reason.",
    ["reason"],
    registry=REGISTRY,
)
INGEST_BATCH_SECONDS = Histogram(
    "touchpath_ingest_batch_seconds",
    "Time to validate, forward, flush and commit one ingest batch.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
INGEST_ERRORS = Counter(
    "touchpath_ingest_errors_total",
    "Ingest batches that failed to forward and were re-read.",
    registry=REGISTRY,
)
SINK_ROWS = Counter(
    "touchpath_sink_rows_total",
    "Rows landed in ClickHouse, per table.",
    ["table"],
    registry=REGISTRY,
)
SINK_FLUSH_SECONDS = Histogram(
    "touchpath_sink_flush_seconds",
    "Duration of one ClickHouse flush, per table.",
    ["table"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
SINK_ERRORS = Counter(
    "touchpath_sink_errors_total", "Failed ClickHouse insert attempts.", registry=REGISTRY
)
SINK_REJECTED_ROWS = Counter(
    "touchpath_sink_rejected_rows_total",
    "Rows ClickHouse refused to accept (encoding errors: a bug, logged loudly).",
    ["table"],
    registry=REGISTRY,
)
SINK_BACKLOG = Gauge(
    "touchpath_sink_backlog_rows",
    "Rows buffered, not yet landed in ClickHouse.",
    registry=REGISTRY,
)
AGENT_ERRORS = Counter(
    "touchpath_agent_errors_total",
    "Unexpected exceptions caught in agents, per agent (the agent keeps running).",
    ["agent"],
    registry=REGISTRY,
)
WORKER_READY = Gauge(
    "touchpath_worker_ready",
    "1 once the worker has started all its services.",
    registry=REGISTRY,
)

IDENTITY_EXPIRED = Counter(
    "touchpath_identity_expired_total",
    "Anonymous events released unidentified (buffer count or age bound reached).",
    registry=REGISTRY,
)
PAIN_POINTS = Counter(
    "touchpath_pain_points_total",
    "Pain points detected, per rule.",
    ["rule"],
    registry=REGISTRY,
)
EVENTS_RELEASED_EARLY = Counter(
    "touchpath_events_released_early_total",
    "Buffered events applied before the watermark passed them: their customer's state "
    "outgrew what one changelog record may hold while waiting for a slower input.",
    registry=REGISTRY,
)
EVENTS_LATE = Counter(
    "touchpath_events_late_total",
    "Events later than the allowed lateness: landed, not evaluated.",
    registry=REGISTRY,
)
EVENTS_DUPLICATE = Counter(
    "touchpath_events_duplicate_total",
    "Events seen twice (same event_id), processed once.",
    registry=REGISTRY,
)
PROFILES = Counter(
    "touchpath_profiles_total",
    "CRM profiles applied (identity links + tier/consents).",
    registry=REGISTRY,
)
CARE_ACTIONS = Counter(
    "touchpath_care_actions_total",
    "Care decisions recorded, per action kind and status (sent, held, suppressed).",
    ["kind", "status"],
    registry=REGISTRY,
)
CARE_REDELIVERY_SKIPPED = Counter(
    "touchpath_care_redelivery_skipped_total",
    "Sent care actions seen again (restart, rebalance, replay) and not delivered twice.",
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "touchpath_consumer_lag_messages",
    "Raw-topic messages not yet consumed, per partition (high watermark - position).",
    ["topic", "partition"],
    registry=REGISTRY,
)
EVENT_LAG = Histogram(
    "touchpath_event_lag_seconds",
    "Wall time from an event's occurred_at to its evaluation by the journey stage.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400, 604800),
    registry=REGISTRY,
)
JOURNEY_UPDATES = Counter(
    "touchpath_journey_updates_total",
    "Journey records emitted (on change and on close), per outcome (open, completed, abandoned).",
    ["outcome"],
    registry=REGISTRY,
)
STATE_KEYS = Gauge(
    "touchpath_state_keys",
    "Keys held in this worker's state tables (identity keys, customers).",
    ["table"],
    registry=REGISTRY,
)
HELD_EVENTS = Gauge(
    "touchpath_identity_held_events",
    "Anonymous events buffered until their customer is known (this worker).",
    registry=REGISTRY,
)
JOURNEY_WATERMARK = Gauge(
    "touchpath_journey_watermark_seconds",
    "Event-time low watermark of each journey partition this worker owns (Unix seconds): "
    "events before it are applied, the stream clock is it minus the allowed lateness.",
    ["partition"],
    registry=REGISTRY,
)
JOURNEY_WAITING = Gauge(
    "touchpath_journey_waiting_events",
    "Events in the journey stage's reorder buffers, waiting for the watermark to pass them.",
    ["partition"],
    registry=REGISTRY,
)
INGEST_PAUSED = Gauge(
    "touchpath_ingest_paused_partitions",
    "Raw partitions paused by watermark alignment (ahead of the slowest in event time).",
    registry=REGISTRY,
)


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for every value, one lock round per bucket hit instead of
    three per value (a batch's event lags: observing each was 3% of the worker's time).

    Relies on prometheus-client's per-bucket (non-cumulative) ``_buckets`` and ``_sum``,
    unchanged since 0.4; without them it observes one by one.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for v in values:
            histogram.observe(v)
        return
    counts = [0] * len(bounds)
    for v in values:
        if v == v:  # NaN fits no bucket in observe() either (its sum still takes it)
            counts[bisect_left(bounds, v)] += 1  # the first bound >= v, as observe() picks
    _add_to_buckets(buckets, total, counts, sum(values))


def _add_to_buckets(buckets: Sequence[Any], total: Any, counts: Sequence[float], s: float) -> None:
    for bucket, n in zip(buckets, counts, strict=True):
        if n:
            bucket.inc(n)
    if s:
        total.inc(s)


# --- metrics of a child process (ingest) -----------------------------------------------------
#: What ingest updates. With ``ingest_mode=process`` ingest runs in a child process with its
#: own copy of these; the worker mirrors them into its registry, so ``/metrics`` is one page
#: (the child counts only its own errors, ``agent="ingest"``: the deltas add to the worker's).
INGEST_METRICS: tuple[Counter | Gauge | Histogram, ...] = (
    AGENT_ERRORS,
    EVENTS_IN,
    EVENTS_VALID,
    EVENTS_DEAD_LETTERED,
    INGEST_BATCH_SECONDS,
    INGEST_ERRORS,
    CONSUMER_LAG,
    INGEST_PAUSED,
)

Samples = list[tuple[str, dict[str, str], float]]
Snapshot = dict[str, Samples]


def snapshot(collectors: Sequence[Counter | Gauge | Histogram] = INGEST_METRICS) -> Snapshot:
    """The current samples of ``collectors``: metric name → ``(sample name, labels, value)``
    (JSON-able, sent by the child process)."""
    out: Snapshot = {}
    for c in collectors:
        for family in c.collect():
            out[family.name] = [
                (s.name, s.labels, s.value)
                for s in family.samples
                if not s.name.endswith("_created")  # set by the child's clock: not mirrored
            ]
    return out


class Mirror:
    """Applies a child process's :func:`snapshot` s to this process's metrics.

    Counters and histograms move by the difference to the child's previous snapshot (a new
    child counts from zero: call :meth:`reset`, and nothing counted before is lost); gauges
    take the child's values, and a labelled gauge the child no longer has (a revoked
    partition's lag) is removed.
    """

    def __init__(self, collectors: Sequence[Counter | Gauge | Histogram] = INGEST_METRICS) -> None:
        self._by_name = {family.name: c for c in collectors for family in c.describe()}
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def reset(self) -> None:
        """The next snapshot comes from a new child (its counters start at zero)."""
        self._last.clear()

    def apply(self, snap: Snapshot) -> None:
        for name, samples in snap.items():
            metric = self._by_name.get(name)
            if isinstance(metric, Gauge):
                self._gauge(metric, samples)
            elif isinstance(metric, Counter):
                for sname, labels, value in samples:
                    if sname.endswith("_total") and (d := self._delta(sname, labels, value)) > 0:
                        (metric.labels(**labels) if labels else metric).inc(d)
            elif isinstance(metric, Histogram):
                self._histogram(metric, samples)

    def _delta(self, sname: str, labels: dict[str, str], value: float) -> float:
        key = (sname, tuple(sorted(labels.items())))
        before = self._last.get(key, 0.0)
        self._last[key] = value
        return value - before

    @staticmethod
    def _gauge(metric: Gauge, samples: Samples) -> None:
        names = metric._labelnames
        if not names:
            for _, _, value in samples:
                metric.set(value)
            return
        seen = set()
        for _, labels, value in samples:
            metric.labels(**labels).set(value)
            seen.add(tuple(labels[n] for n in names))
        for values in list(metric._metrics):
            if values not in seen:
                metric.remove(*values)

    def _histogram(self, metric: Histogram, samples: Samples) -> None:
        # unlabelled histograms only (all ingest has); buckets are cumulative in samples
        cumulative: list[float] = []
        total = 0.0
        for sname, labels, value in samples:
            d = self._delta(sname, labels, value)
            if sname.endswith("_bucket"):
                cumulative.append(d)
            elif sname.endswith("_sum"):
                total = d
        counts = [b - a for a, b in zip([0.0, *cumulative[:-1]], cumulative, strict=True)]
        buckets = getattr(metric, "_buckets", None)
        if buckets is not None and len(buckets) == len(counts):
            _add_to_buckets(buckets, metric._sum, counts, total)
