"""``touchpath replay``: re-publish historic records to Kafka, as live producers sent them.

Each record goes out as the bytes it was (its event time is in the record), keyed by its
strongest raw identifier with the ``murmur2_random`` partitioner, exactly as
:func:`streams.simulator.publish` keys live traffic. Unless live actions are asked for,
every record carries the :data:`REPLAY_HEADER` / :data:`REPLAY_ID_HEADER` headers so the
worker records care actions without delivering them.

The per-record loop does the least it can: one orjson parse (the key needs the
identifiers), a filter check, a non-blocking ``produce``; delivery reports are counted per
epoch (:mod:`replay.state`) to know the resumable position. Bad records are sent on too
(the worker dead-letters them with a reason) unless they cannot be: a record over the size
bound, or one a filter cannot judge.
"""

from __future__ import annotations

import logging
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import orjson

from replay.filters import EventFilter, event_time
from replay.pacing import Pacer
from replay.sources import SourceError
from replay.state import AckTracker, ReplayState
from schemas.validation import Rejection, Validator

log = logging.getLogger(__name__)

#: Kafka header on every replayed record: ``b"1"``, the worker records the care actions such
#: records cause but delivers none; ``b"live"`` (``--live-actions``), it delivers them.
REPLAY_HEADER = "touchpath-replay"
#: Kafka header naming the replay run (a uuid, kept across ``--resume``).
REPLAY_ID_HEADER = "touchpath-replay-id"

#: Raw identifiers in the order live producers key by (``streams.simulator.producer_key``),
#: then the hashed forms records read back from ClickHouse carry instead.
KEY_ORDER = (
    "customer_id",
    "loyalty_id",
    "email",
    "phone",
    "anonymous_id",
    "email_hash",
    "phone_hash",
)

#: librdkafka tuning for bulk replay: big lz4 batches, a deep local queue.
PRODUCER_TUNING: dict[str, Any] = {
    "linger.ms": 20,
    "batch.num.messages": 10_000,
    "batch.size": 1_000_000,
    "compression.type": "lz4",
    "partitioner": "murmur2_random",
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 1_048_576,
}


def producer_config(bootstrap: str, client_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """confluent-kafka producer settings of a replay (security settings passed through)."""
    return {"bootstrap.servers": bootstrap, **(client_config or {}), **PRODUCER_TUNING}


def record_key(ids: dict[str, Any]) -> str | None:
    """Kafka key of a record from its ``identifiers`` object (see :data:`KEY_ORDER`)."""
    for kind in KEY_ORDER:
        value = ids.get(kind)
        if type(value) is str and value:
            return value
    return None


class Source(Protocol):
    """A replayable input: records after a position, positions as JSON and as text."""

    def records(self, start: Any) -> Iterator[tuple[Any, bytes]]: ...
    def describe(self, position: Any) -> str: ...
    def position_to_json(self, position: Any) -> Any: ...
    def position_from_json(self, data: Any) -> Any: ...


class ProducerLike(Protocol):
    def produce(self, *args: Any, **kwargs: Any) -> None: ...
    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...


@dataclass
class ReplayOptions:
    """What to send, where and how fast."""

    topic: str
    speed: float | None = None  # multiple of real time; None = as fast as possible
    filter: EventFilter = field(default_factory=EventFilter)
    limit: int | None = None  # records to send in this run
    live_actions: bool = False  # replay header "live": the worker delivers care actions
    validate: bool = True  # run the validator on every record (exact bad-record count)
    max_record_bytes: int = 1_000_000
    epoch_records: int = 5_000  # resume granularity (records re-sent at most per epoch)
    epoch_seconds: float = 0.5
    save_seconds: float = 2.0
    flush_timeout: float = 60.0


@dataclass
class Progress:
    """A snapshot for progress display; counts are this run's."""

    read: int
    sent: int
    elapsed: float


@dataclass
class ReplaySummary:
    """How a replay run went. ``totals`` are whole-replay counts (earlier resumed runs
    included); the other counts are this run's."""

    run_id: str
    sent: int = 0
    filtered: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    bad_sent: int = 0
    bad_examples: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    interrupted: bool = False
    complete: bool = False
    limit_reached: bool = False
    failures: list[str] = field(default_factory=list)
    error: str | None = None  # the input could not be read on (file:line)
    resumed_from: str | None = None
    position: str | None = None
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0


class StopFlag:
    """Set by the first SIGINT (stop after the current record, flush, save); a second one
    raises KeyboardInterrupt (stop flushing too; the saved position is still safe)."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, _signum: int = 0, _frame: FrameType | None = None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


@contextmanager
def sigint_stops(flag: StopFlag) -> Iterator[StopFlag]:
    """Route SIGINT (and SIGTERM) to ``flag`` for the duration (main thread only)."""
    previous = {s: signal.signal(s, flag) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def new_state(key: str, topic: str, sources: list[str], filters: dict[str, Any]) -> ReplayState:
    """The state of a fresh replay (a new run id)."""
    return ReplayState(
        key=key, run_id=str(uuid.uuid4()), topic=topic, sources=sources, filters=filters
    )


class Replayer:
    """Runs one replay of ``source`` through ``producer``; see the module docstring.

    ``state`` is where the replay starts (a fresh one, or the loaded state with
    ``--resume``) and is updated and saved to ``state_file`` every ``save_seconds``, on
    interrupt and at the end.
    """

    def __init__(
        self,
        producer: ProducerLike,
        source: Source,
        options: ReplayOptions,
        *,
        validator: Validator,
        state: ReplayState,
        state_file: Path | None = None,
        progress: Callable[[Progress], None] | None = None,
        stop: StopFlag | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: datetime | None = None,
    ) -> None:
        self.producer = producer
        self.source = source
        self.options = options
        self.validator = validator
        self.state = state
        self.state_file = state_file
        self.progress = progress
        self.stop = stop or StopFlag()
        self.clock = clock
        self.now = now or datetime.now(UTC)

    def run(self) -> ReplaySummary:
        """Send everything after the state's position; never raises for bad records."""
        o, src, st = self.options, self.source, self.state
        summary = ReplaySummary(run_id=st.run_id)
        start = src.position_from_json(st.position)
        if st.position:
            summary.resumed_from = src.describe(start)
        base = {k: st.counts.get(k, 0) for k in ("sent", "filtered", "bad", "bad_sent")}
        tracker = AckTracker(start, dict(base))
        # "live": care actions are delivered; still a replay (dead letters keyed by content)
        headers = [
            (REPLAY_HEADER, b"live" if o.live_actions else b"1"),
            (REPLAY_ID_HEADER, st.run_id.encode()),
        ]
        flt = o.filter.compile() if o.filter.active else None
        needs_time = o.filter.needs_time or o.speed is not None
        pacer = Pacer(o.speed, self.clock) if o.speed else None
        validate, validator, now = o.validate, self.validator, self.now
        max_bytes, limit, topic = o.max_record_bytes, o.limit, o.topic
        produce, poll = self.producer.produce, self.producer.poll
        clock, stop = self.clock, self.stop
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        bad, examples = summary.bad, summary.bad_examples

        read = sent = filtered = bad_sent = 0
        position = start
        started = last_close = last_save = last_show = clock()
        sent_at_close = 0
        exhausted = False

        def counts() -> dict[str, int]:
            return {
                "sent": base["sent"] + sent,
                "filtered": base["filtered"] + filtered,
                "bad": base["bad"] + sum(bad.values()),
                "bad_sent": base["bad_sent"] + bad_sent,
            }

        def housekeeping(t: float) -> None:
            nonlocal last_close, last_save, last_show, sent_at_close
            poll(0)
            if sent - sent_at_close >= o.epoch_records or t - last_close >= o.epoch_seconds:
                tracker.close(position, sent, counts())
                last_close, sent_at_close = t, sent
            if t - last_save >= o.save_seconds:
                self._save(tracker, complete=False)
                last_save = t
            if self.progress is not None and t - last_show >= 0.2:
                self.progress(Progress(read, sent, t - started))
                last_show = t

        records = src.records(start)
        try:
            for pos, raw in records:
                read += 1
                if not read & 1023:
                    housekeeping(clock())
                    if stop.requested or tracker.errors:
                        break
                try:
                    obj = loads(raw)
                except decode_error:
                    obj = None
                key = ts = None
                if type(obj) is dict:
                    ids = obj.get("identifiers")
                    if type(ids) is dict:
                        key = ids.get("customer_id")  # the common case, inline
                        if type(key) is not str or not key:
                            key = record_key(ids)
                    if needs_time:
                        ts = event_time(obj)
                if flt is not None:
                    verdict = flt.check(obj, ts)
                    if not verdict:
                        filtered += 1
                        if verdict is None:  # the filter cannot judge it: bad, not sent
                            self._bad(raw, pos, bad, examples)
                        position = pos
                        continue
                if len(raw) > max_bytes:  # cut at the bound by the source: cannot be sent
                    bad["too_large"] += 1
                    if len(examples) < 5:
                        examples.append(
                            f"{src.describe(pos)}: too_large: over {max_bytes} bytes, not sent"
                        )
                    position = pos
                    continue
                if pacer is not None:
                    due = pacer.due(ts)
                    while (wait := due - clock()) > 0 and not stop.requested:
                        poll(min(wait, 0.05))
                        if wait > 0.01:
                            housekeeping(clock())
                    if stop.requested:  # before counting: this record is not handled
                        break
                if validate or key is None:
                    r = validator.validate(raw, now)
                    if type(r) is Rejection:
                        bad[r.reason] += 1
                        bad_sent += 1
                        if len(examples) < 5:
                            examples.append(f"{src.describe(pos)}: {r.reason}: {r.error}")
                while True:
                    try:
                        produce(topic, raw, key, on_delivery=tracker.callback, headers=headers)
                        break
                    except BufferError:  # local queue full: serve deliveries, then retry
                        poll(0.05)
                sent += 1
                position = pos
                if sent == limit:
                    summary.limit_reached = True
                    break
            else:
                exhausted = True
        except SourceError as exc:  # unreadable input: stop here, keep what was sent
            summary.error = str(exc)
        finally:
            close = getattr(records, "close", None)
            if close is not None:
                close()
            tracker.close(position, sent, counts())
            self._flush(tracker)
            summary.complete = exhausted and not tracker.errors and not tracker.in_flight
            self._save(tracker, complete=summary.complete)
        summary.elapsed = clock() - started
        summary.sent, summary.filtered, summary.bad_sent = sent, filtered, bad_sent
        summary.interrupted = stop.requested
        summary.failures = tracker.errors[:5]
        summary.position = None if tracker.position is None else src.describe(tracker.position)
        summary.totals = dict(tracker.counts)
        if self.progress is not None:
            self.progress(Progress(read, sent, summary.elapsed))
        return summary

    def _bad(self, raw: bytes, pos: Any, bad: Counter[str], examples: list[str]) -> None:
        r = self.validator.validate(raw, self.now)
        reason, error = (r.reason, r.error) if type(r) is Rejection else ("filter", "unreadable")
        bad[reason] += 1
        if len(examples) < 5:
            examples.append(f"{self.source.describe(pos)}: {reason}: {error}")

    def _flush(self, tracker: AckTracker) -> None:
        """Deliver what was produced (bounded; a second Ctrl-C stops waiting)."""
        deadline = self.clock() + self.options.flush_timeout
        try:
            while self.producer.flush(0.5) and self.clock() < deadline:
                pass
        except KeyboardInterrupt:
            log.warning("flush interrupted; records not yet delivered will be re-sent on resume")
        tracker.acknowledged()

    def _save(self, tracker: AckTracker, *, complete: bool) -> None:
        st, src = self.state, self.source
        st.position = src.position_to_json(tracker.acknowledged())
        st.counts = dict(tracker.counts)
        st.complete = complete
        st.updated_at = datetime.now(UTC).isoformat()
        files_state = getattr(src, "files_state", None)
        if files_state is not None and tracker.position is not None:
            st.files = files_state(tracker.position, complete)
        if self.state_file is not None:
            st.save(self.state_file)
