"""Ingest: raw touchpoints in, validated micro-batches and dead letters out.

Outside producers write ``touchpoints.raw`` one event per message. Faust would pay ~100 µs
per message, so ingest reads the raw topic with confluent-kafka in batches instead
(docs/design.md, Throughput design), and per batch:

1. validates every record and hashes its PII (:class:`schemas.validation.Validator`),
2. groups valid events by the partition of their identity key (Faust's murmur2) and sends
   them as micro-batch messages on the internal ``touchpoints.valid`` topic,
3. sends every rejected record to ``touchpoints.dlq`` as a :class:`DeadLetter`,
4. flushes the producer and only then commits the source offsets (at-least-once; duplicates
   are removed downstream by ``event_id``).

:func:`split_batch` is the pure part; :class:`Ingestor` is the Kafka glue.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from schemas.dead_letter import MAX_RAW_KEPT, DeadLetter, dead_letter_id, replayed_dead_letter_id
from schemas.validation import Rejection, Validator
from streams import faults, metrics
from streams.config import Settings
from streams.microbatch import Item, encode
from streams.partitioning import partition_for
from streams.watermark import SourceWatermarks

log = logging.getLogger(__name__)

#: Keep each micro-batch message well below Kafka's default 1 MB message limit.
MAX_MICROBATCH_BYTES = 900_000


@dataclass(slots=True)
class RawRecord:
    """One consumed raw message, detached from the Kafka client."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    #: ``touchpath replay``'s header value: ``b"1"`` care is recorded, not sent; ``b"live"``
    #: care is sent; None: a live record
    replay: bytes | None = None


#: Kafka header ``touchpath replay`` puts on re-published records.
REPLAY_HEADER = "touchpath-replay"
#: Progress of a partition that has nothing to promise while others deliver: event time
#: 0 (1970, before any valid event) makes downstream wait for it, where ``None`` would not.
HOLD = 0.0
#: Event-time progress goes to every downstream partition at least this often (seconds).
KEEPALIVE_SECONDS = 2.0
#: How long :meth:`Ingestor.close` waits for a pending group join to finish before leaving
#: (under the worker's 20 s stop timeout for its ingest process).
JOIN_WAIT_SECONDS = 15.0
#: librdkafka's wait before fetching again for a partition whose local queue was full
#: (:func:`consumer_config`).
FETCH_QUEUE_BACKOFF_MS = 10
#: How much one fetch may bring (all partitions, one partition); the raw-consume reference
#: of the benchmarks reads with the same.
FETCH_SIZES = {"fetch.max.bytes": 16 * 1024 * 1024, "max.partition.fetch.bytes": 4 * 1024 * 1024}


def replay_mode(headers: list[tuple[str, bytes | None]] | None) -> bytes | None:
    """The replay header's value (``b"1"`` or ``b"live"``), None for a live record."""
    for k, v in headers or ():
        if k == REPLAY_HEADER and v and v != b"0":
            return v
    return None


@dataclass
class SplitResult:
    """What one ingest batch produces."""

    #: target partition -> list of micro-batch payloads (each already size-bounded)
    batches: dict[int, list[list[Item]]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    valid_by_channel: Counter[str] = field(default_factory=Counter)
    dead_by_reason: Counter[str] = field(default_factory=Counter)
    #: largest valid event time per source ``topic:partition``
    max_ts: dict[str, float] = field(default_factory=dict)


def split_batch(
    records: Iterable[RawRecord],
    validator: Validator,
    *,
    partitions: int,
    now: datetime,
    max_items: int = 500,
    max_bytes: int = MAX_MICROBATCH_BYTES,
) -> SplitResult:
    """Validate a batch of raw records and route them: pure, no I/O.

    Events keep their consumed order inside each target partition, so per-customer order
    from one source partition is preserved.
    """
    out = SplitResult()
    open_chunks: dict[int, tuple[list[Item], int]] = {}
    for rec in records:
        raw = rec.value if rec.value is not None else b""
        result = validator.validate(raw, now) if raw else Rejection("invalid_json", "empty record")
        if isinstance(result, Rejection):
            out.dead_letters.append(_dead_letter(rec, raw, result, validator, now))
            out.dead_by_reason[result.reason] += 1
            continue
        key = result.identity_key
        part = partition_for(key.encode(), partitions)
        item: Item = {
            "tp": result.model_dump(mode="json", exclude_none=True),
            "k": key,
            "p": rec.partition,
            "o": rec.offset,
        }
        if rec.replay == b"1":
            item["r"] = 1  # care decided and recorded, not delivered
        # The encoded size, not the raw one: validation can grow an event (hashes, numbers
        # like 1e15 written out), and a message over the broker's limit would fail the whole
        # batch again on every retry.
        n = len(orjson.dumps(item)) + 1
        if n > max_bytes:
            rej = Rejection("too_large", f"event is {n} bytes once validated, limit {max_bytes}")
            out.dead_letters.append(_dead_letter(rec, raw, rej, validator, now))
            out.dead_by_reason[rej.reason] += 1
            continue
        chunk, size = open_chunks.get(part, (None, 0))
        if chunk is None or len(chunk) >= max_items or size + n > max_bytes:
            chunk, size = [], 0
            out.batches.setdefault(part, []).append(chunk)
        chunk.append(item)
        open_chunks[part] = (chunk, size + n)
        out.valid_by_channel[result.channel.value] += 1
        src, ts = f"{rec.topic}:{rec.partition}", result.occurred_at.timestamp()
        if ts > out.max_ts.get(src, float("-inf")):
            out.max_ts[src] = ts
    return out


def _dead_letter(
    rec: RawRecord, raw: bytes, rej: Rejection, validator: Validator, now: datetime
) -> DeadLetter:
    return DeadLetter(
        dead_letter_id=(
            replayed_dead_letter_id(raw)
            if rec.replay is not None
            else dead_letter_id(rec.topic, rec.partition, rec.offset)
        ),
        reason=rej.reason,
        error=rej.error,
        source_topic=rec.topic,
        source_partition=rec.partition,
        source_offset=rec.offset,
        raw=validator.hasher.scrub(raw[:MAX_RAW_KEPT]),
        raw_size=len(raw),
        received_at=now,
    )


def consumer_config(settings: Settings, bootstrap: str) -> dict[str, object]:
    """librdkafka settings of ingest's raw-topic consumer."""
    return {
        "bootstrap.servers": bootstrap,
        **settings.kafka_client_config(),
        "group.id": f"{settings.app_id}-ingest",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        **FETCH_SIZES,
        # end of partition = caught up: it stops holding the watermark back soon
        "enable.partition.eof": True,
        # a short prefetch queue: less to throw back when alignment pauses a partition
        "queued.min.messages": 10_000,
        # Once a partition's queue passes that, librdkafka postpones its next fetch by this
        # (default 1 s), and a rewind after an alignment pause empties the queue without
        # ending the wait: reading a backlog, every pause cost a second (2,800 -> 4,500
        # events/s end to end at 100k events, docs/benchmarks.md).
        "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
    }


class Ingestor:
    """Runs :func:`split_batch` over the raw topic with confluent-kafka clients.

    :meth:`run_once` is synchronous and self-contained (consume → produce → flush →
    commit), so the worker can run it in a thread without blocking Faust's event loop,
    and a rebalance between two calls never finds un-committed, un-flushed work.
    """

    def __init__(self, settings: Settings, bootstrap: str, validator: Validator) -> None:
        self.settings = settings
        self.validator = validator
        self.raw_topic = settings.topic(settings.topic_raw)
        self.valid_topic = settings.topic(settings.topic_valid)
        self.dlq_topic = settings.topic(settings.topic_dlq)
        common = {"bootstrap.servers": bootstrap, **settings.kafka_client_config()}
        self.consumer = Consumer(consumer_config(settings, bootstrap))
        self.producer = Producer(
            {
                **common,
                "linger.ms": 5,
                "acks": "all",
                "enable.idempotence": False,
                "message.max.bytes": 1_000_000,
            }
        )
        self._delivery_errors: list[KafkaError] = []
        self.watermarks = SourceWatermarks(
            idle_after=settings.idle_advance_seconds,
            follow_wall_time=True,
            end_grace=settings.end_grace_seconds,
        )
        self._sent_wm: dict[int, tuple[dict[str, float | None], float]] = {}
        self.raw_partitions = self._count_partitions(settings.partitions)
        self._lag_at = 0.0
        self._paused: set[tuple[str, int]] = set()
        #: set by a rebalance; the next :meth:`run_once` resumes every assigned partition
        self._resume_assigned = False
        #: between subscribe (or a revoke) and the next assignment a group join is pending
        self._joined = False
        self.consumer.subscribe(
            [self.raw_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )

    def _count_partitions(self, default: int) -> int:
        try:
            md = self.consumer.list_topics(self.raw_topic, timeout=10)
            return len(md.topics[self.raw_topic].partitions) or default
        except Exception as exc:  # a hint only: assignments tell the count too
            log.warning("partitions of %s unknown (%s); assuming %d", self.raw_topic, exc, default)
            return default

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("ingest assigned %s", [(tp.partition, tp.offset) for tp in partitions])
        now = time.monotonic()
        owned = {f"{tp.topic}:{tp.partition}" for tp in partitions}
        for src in list(self.watermarks.expected):
            if src not in owned:  # revoked: its new owner reports it from now on
                self.watermarks.forget(src)
                topic, part = src.rsplit(":", 1)
                with contextlib.suppress(KeyError):  # its lag is the new owner's to report
                    metrics.CONSUMER_LAG.remove(topic, part)
        for tp in partitions:
            self.watermarks.touch(f"{tp.topic}:{tp.partition}", now)
            self._paused.discard((tp.topic, tp.partition))  # a new assignment starts unpaused
        # librdkafka keeps a partition paused across a rebalance (confluent-kafka-go #193): one
        # alignment paused just before would never be read again. Resumed from run_once, not
        # here: re-assigning inside this callback left a restarted worker reading nothing.
        self._resume_assigned = True
        self._joined = True
        self.raw_partitions = max([self.raw_partitions, *(tp.partition + 1 for tp in partitions)])

    def _on_revoke(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        self._joined = False  # a rejoin follows (eager protocol)

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(err)

    def run_guarded(self) -> bool:
        """:meth:`run_once` for a supervisor (thread or process): an unexpected error is
        counted (``touchpath_agent_errors_total{agent="ingest"}``) and logged, never raised;
        returns False then, and the caller waits before the next call."""
        try:
            self.run_once()
        except Exception:
            metrics.AGENT_ERRORS.labels(agent="ingest").inc()
            log.exception("ingest loop error")
            return False
        return True

    def run_once(self, max_messages: int | None = None, timeout: float | None = None) -> int:
        """Process one batch; returns the number of raw records handled (0 when idle)."""
        n = max_messages or max(self.settings.batch_max_events * 4, 500)
        if self._resume_assigned:
            self._resume_assigned = False
            if assigned := self.consumer.assignment():
                self.consumer.resume(assigned)
        msgs = self.consumer.consume(n, timeout or self.settings.batch_max_ms / 1000)
        self._report_lag()
        if not msgs:
            self._align()
            self._heartbeat(min_interval=1.0)
            return 0
        started = time.perf_counter()
        records: list[RawRecord] = []
        for m in msgs:
            if m.error() is not None:
                # Partition EOF and transient fetch errors are not data.
                if m.error().code() == KafkaError._PARTITION_EOF:
                    self.watermarks.caught_up(f"{m.topic()}:{m.partition()}", time.monotonic())
                else:
                    log.warning("consume error on %s: %s", self.raw_topic, m.error())
                continue
            records.append(
                RawRecord(m.value(), m.topic(), m.partition(), m.offset(), replay_mode(m.headers()))
            )
        self._align()
        if self._paused:
            # Already fetched before the pause: put back (re-read after resume), or pausing
            # would take effect only a prefetch queue later.
            held = [r for r in records if (r.topic, r.partition) in self._paused]
            if held:
                self._rewind(held)
                records = [r for r in records if (r.topic, r.partition) not in self._paused]
        if not records:
            return 0
        if log.isEnabledFor(logging.DEBUG):
            firsts: dict[int, int] = {}
            for r in records:
                firsts.setdefault(r.partition, r.offset)
            log.debug("ingest batch first offsets %s", firsts)
        try:
            result = split_batch(
                records,
                self.validator,
                partitions=self.settings.partitions,
                now=datetime.now(UTC),
                max_items=self.settings.batch_max_events,
            )
            faults.hold_sync("ingest.before-send")
            self._send(result)
        except Exception:
            metrics.INGEST_ERRORS.inc()
            log.exception("ingest batch failed; re-reading it")
            self._rewind(records)
            time.sleep(0.5)
            return 0
        self._commit(records)
        self._heartbeat(min_interval=0.1)
        self._count(result, len(records))
        metrics.INGEST_BATCH_SECONDS.observe(time.perf_counter() - started)
        return len(records)

    def _align(self) -> None:
        """Watermark alignment: pause raw partitions more than ``watermark_align_seconds`` of
        event time ahead of the low watermark, resume them once it has caught up.

        librdkafka drains one partition's backlog before the next; unaligned, a replay or a
        restart would run one partition weeks ahead, and everything downstream that waits
        for the watermark (care decisions, reordering) would have to hold it all.
        """
        wm = self.watermarks.value(time.monotonic())
        limit = wm + self.settings.watermark_align_seconds
        pause, resume = [], []
        for tp in self.consumer.assignment():
            key = (tp.topic, tp.partition)
            ahead = self.watermarks.progress(f"{tp.topic}:{tp.partition}") > limit
            if ahead and key not in self._paused:
                pause.append(tp)
                self._paused.add(key)
            elif not ahead and key in self._paused:
                resume.append(tp)
                self._paused.discard(key)
        if pause:
            self.consumer.pause(pause)
        if resume:
            self.consumer.resume(resume)
        if pause or resume:
            log.info(
                "alignment: paused %s, resumed %s; low watermark %.0f, progress %s",
                [tp.partition for tp in pause],
                [tp.partition for tp in resume],
                wm,
                {s: self.watermarks.progress(s) for s in sorted(self.watermarks.expected)},
            )
        metrics.INGEST_PAUSED.set(len(self._paused))

    def _report_lag(self, every: float = 5.0) -> None:
        """Consumer lag per raw partition (high watermark - position), every few seconds.

        On the embedded broker the high watermark is the last batch's base offset + 1
        (docs/design.md), so the lag there under-reads by up to one producer batch.
        """
        now = time.monotonic()
        if now - self._lag_at < every:
            return
        self._lag_at = now
        try:
            for tp in self.consumer.position(self.consumer.assignment()):
                _, high = self.consumer.get_watermark_offsets(tp, timeout=1.0)
                pos = tp.offset if tp.offset >= 0 else 0
                metrics.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, high - pos)
                )
        except KafkaException as exc:  # a metric must never stop ingest
            log.debug("consumer lag not available: %s", exc)

    def progress(self) -> dict[str, float | None]:
        """Event-time progress of each raw partition this ingest owns, as sent downstream.

        Downstream takes the minimum over *every* raw partition, whoever owns it, so a
        partition moving to another worker (rebalance, crash) holds event time back until
        its new owner reports it — never does one worker's progress on its own partitions
        run ahead of events another worker has yet to read. A partition reports what
        :meth:`SourceWatermarks.promise` allows (for an idle one at most this ingest's low
        watermark, which follows wall time when all are idle); ``None`` when nothing is
        known and nothing delivers (not to be waited for); otherwise ``HOLD``: downstream
        waits for it (again, after a ``None``).
        """
        now = time.monotonic()
        wms = self.watermarks
        out: dict[str, float | None] = {}
        for src in wms.expected:
            v = wms.promise(src, now)
            if v == float("-inf"):
                v = None if wms.is_idle(src, now) and wms.quiet(now) else HOLD
            out[src.rsplit(":", 1)[1]] = v
        return out

    def _heartbeat(self, min_interval: float, keepalive: float = KEEPALIVE_SECONDS) -> None:
        """Tell every downstream partition how far event time has progressed: on a change
        (at most every ``min_interval``) and every ``keepalive`` seconds regardless, so a
        stage that lost its state in a rebalance learns it again."""
        progress = self.progress()
        now = time.monotonic()
        at = datetime.now(UTC).isoformat()
        sent = False
        for part in range(self.settings.partitions):
            last, last_at = self._sent_wm.get(part, (None, 0.0))
            if (progress != last and now - last_at >= min_interval) or now - last_at >= keepalive:
                msg = encode([], at, progress, self.raw_partitions)
                self._produce(self.valid_topic, msg, None, part)
                self._sent_wm[part] = (progress, now)
                sent = True
        if sent:
            self.producer.flush(10)

    def _send(self, result: SplitResult) -> None:
        self._delivery_errors.clear()
        now = time.monotonic()
        for src, ts in result.max_ts.items():
            self.watermarks.observe(src, ts, now)
        progress = self.progress()
        at = datetime.now(UTC).isoformat()
        for part, chunks in result.batches.items():
            for chunk in chunks:
                msg = encode(chunk, at, progress, self.raw_partitions)
                self._produce(self.valid_topic, msg, None, part)
            self._sent_wm[part] = (progress, now)
        for dl in result.dead_letters:
            self._produce(self.dlq_topic, dl.model_dump_json().encode(), dl.dead_letter_id.encode())
        remaining = self.producer.flush(30)
        if remaining:
            raise KafkaException(f"{remaining} messages not delivered within 30 s")
        if self._delivery_errors:
            raise KafkaException(self._delivery_errors[0])

    def _produce(
        self, topic: str, value: bytes, key: bytes | None, partition: int | None = None
    ) -> None:
        kwargs = {"partition": partition} if partition is not None else {}
        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=self._on_delivery, **kwargs)
                return
            except BufferError:
                self.producer.poll(0.05)  # local queue full: let deliveries drain

    def _commit(self, records: list[RawRecord]) -> None:
        last: dict[tuple[str, int], int] = {}
        for r in records:
            last[(r.topic, r.partition)] = max(last.get((r.topic, r.partition), -1), r.offset)
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        self.consumer.commit(offsets=offsets, asynchronous=False)

    def _rewind(self, records: list[RawRecord]) -> None:
        first: dict[tuple[str, int], int] = {}
        for r in records:
            key = (r.topic, r.partition)
            first[key] = min(first.get(key, r.offset), r.offset)
        for (t, p), o in first.items():
            try:
                self.consumer.seek(TopicPartition(t, p, o))
            except KafkaException as exc:  # partition revoked meanwhile: the new owner re-reads
                log.warning("could not rewind %s[%d]: %s", t, p, exc)

    @staticmethod
    def _count(result: SplitResult, n_in: int) -> None:
        metrics.EVENTS_IN.inc(n_in)
        for ch, n in result.valid_by_channel.items():
            metrics.EVENTS_VALID.labels(channel=ch).inc(n)
        for reason, n in result.dead_by_reason.items():
            metrics.EVENTS_DEAD_LETTERED.labels(reason=reason).inc(n)

    def close(self, join_wait: float = JOIN_WAIT_SECONDS) -> None:
        """Flush pending output and leave the consumer group cleanly.

        A consumer that leaves while its group join is still pending (a worker stopped in
        its first seconds, or during a rebalance) wedges the group on the embedded broker
        (Tansu 0.6): no later member is ever assigned a partition
        (``tests/integration/test_ingest_group.py``). So a pending join is first let
        finish, for up to ``join_wait`` seconds; what is read meanwhile is not processed
        and, never committed, is read again by the partitions' next owner."""
        self.producer.flush(10)
        if not self._joined:
            log.info("ingest: letting the consumer group join finish before leaving")
            deadline = time.monotonic() + join_wait
            while not self._joined and time.monotonic() < deadline:
                self.consumer.poll(0.1)
            if not self._joined:
                log.warning("ingest: group join still pending after %.0f s; leaving", join_wait)
        self.consumer.close()
