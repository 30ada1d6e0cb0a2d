"""A workaround for a message-loss bug of faust-streaming around rebalances.

Faust skips a message fetched before a rebalance (its ``generation_id`` is stale) or while
flow control is paused — and *acks* it (``Stream._py_aiter``: "We want to ack the
filtered out message"). Acked offsets are committed, so a partition that stays with this
worker across the rebalance commits past messages nobody processed: they are lost.
Measured here: two workers, one leaving and rejoining, lost ~5% of one worker's
micro-batches. touchpath therefore refuses such acks: the message is not marked done, the
offset is not committed past it, and after the rebalance the consumer seeks back to the
committed offset and delivers it again (at-least-once; every touchpath output is
idempotent). Upstream: faust-streaming PR #223 introduced the skip; issue #527 / #604
report the same loss for noack streams.

The same rebalance leaves a second hazard: with ``stream_wait_empty=False`` a micro-batch
taken before the rebalance is still handed to the agent after it, when its partitions may
already belong to another worker. Processing it there would write table state for keys
this worker no longer owns — a zombie write that can land in the changelog after the new
owner's and win on its next recovery. Stateful agents therefore drop such events
(:func:`current`): they are not acked, so their new owner processes them.

Refusing an ack is only safe if Faust then commits below the refused message, and its gap
check misses the common cases (see :func:`_new_offset_below_holes`): found by a kill -9
right after a worker's start, which lost the pain points of a few days.

After a rebalance Faust seeks every stream partition back to its committed offset, but
aiokafka's ``seek_to_committed`` seeks only when that offset is above 0: a partition with
no commit yet keeps the position its pre-rebalance fetches left it at, and the records
those fetches had returned (dropped when the generation changed) are never delivered.
Measured: two workers, one leaving and rejoining, lost the first 45 pain points of a
partition in 2 of 5 runs. :func:`_seek_to_committed_always` seeks such partitions to 0 or
to the reset policy's offset.

At the end of a recovery Faust resumes the stream partitions and only then seeks them to
their committed offsets: the agents process what is fetched in between, the seek rewinds,
and the re-fetched messages are processed again or dropped, while the jump back and forth
looks to Faust like a gap in the offsets, which it counts as acked. Measured: after a
restart, identify processed a batch twice and announced event-time progress before its
second copy, whose events then reached the journey stage late; in other runs a journey
message was neither processed nor committed past. touchpath seeks the stream partitions
while they are still paused (:func:`_seek_then`) and skips Faust's own seek after it.

Faust's pause is its own bookkeeping: aiokafka keeps fetching a paused partition, and a
fetch that returns its records (the set of partitions asked for is Faust's live set of
active ones, changed while the fetch runs) has them dropped by Faust, unread, while
aiokafka's position has moved past them. Nothing reads them again unless a seek follows,
and the jump to the next record looks like a gap, counted as acked. Measured with the
fetches logged: records of stream partitions came back while paused at the end of a
recovery; when that happened after the seek above, a restarted identify began 7 to 10
offsets past its commit on 3 of 4 partitions, and 1,500 touchpoints (or 8 dead letters)
were never landed — in 5 of 13 crash-test runs after an unrelated change made the journey
agent a little faster, 0 of 6 before. :func:`_refetch_inactive` takes such records out of
the fetch and seeks their partition back to the first of them.

Faust creates its consumer with ``fetch_max_wait_ms=1500``, fixed. aiokafka leaves a
partition with records not yet taken out of the next fetch request, and new records on it
wait until that request returns: up to 1.5 s at each hop between stages when every
partition carries traffic (measured: a micro-batch reached identify 0.3-0.9 s after ingest
sent it). :func:`_short_fetch_wait` makes it :data:`FETCH_MAX_WAIT_MS`.

Last, Faust recovers a table by reading its changelog up to the high watermark, which the
embedded broker reports short of the end unless the partition ends in a single-record batch
(docs/design.md). Every flush ends in such a marker, but a worker killed between a flush's state
records and its markers leaves a partition without one: the next recovery stopped short and
lost state (found by holding a worker there, streams/faults.py). Recovery therefore first
seals the partitions it is about to read (:func:`seal_changelogs_before_recovery`).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.structs import TopicPartition
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

log = logging.getLogger(__name__)

_original_ack = Consumer.ack
_original_new_offset = Consumer._new_offset
_original_build_highwaters = Recovery._build_highwaters
_original_seek_to_committed = AIOKafkaConsumerThread.seek_to_committed
_original_on_recovery_completed = Recovery.on_recovery_completed
_original_resume_streams = Recovery._resume_streams
_original_perform_seek = Consumer.perform_seek
_original_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer
_original_wait_next_records = Consumer._wait_next_records
#: the longest a fetch waits for new records (Faust's own is 1,500 ms; see the module)
FETCH_MAX_WAIT_MS = 100
#: per app: the generation whose stream partitions were sought before they were resumed
_sought: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
#: per app: closes changelog partitions with a marker before recovery reads their ends
_sealers: weakref.WeakKeyDictionary[Any, Callable[[set[Any]], Awaitable[None]]] = (
    weakref.WeakKeyDictionary()
)
#: offsets whose ack was refused, per tp: the commit must stop below the lowest one
_holes: dict[Any, set[int]] = {}
#: (tp, offset) of messages whose batch failed: never acked (see :func:`refuse`)
_refused: set[tuple[Any, int]] = set()


def refuse(events: list[Any]) -> None:
    """Never ack these events: their batch failed. ``take()``/``take_events()`` ack a
    batch in a ``finally``, even when processing it raised; a failed batch must stay
    uncommitted so that it is processed again after a restart."""
    _refused.update((e.message.tp, e.message.offset) for e in events)


async def process_batch(
    app: Any, agent: str, taken: list[Any], process: Callable[[list[Any]], Awaitable[None]]
) -> None:
    """Run ``process`` on the current events of a taken micro-batch (:func:`current`); if
    it raises, the batch is never acked (:func:`refuse`), counted and logged, and the error
    propagates.

    Cancellation too: a worker stopping cancels its agents mid-batch (say, waiting for
    ClickHouse), ``take_events()`` then acks the batch in its ``finally``, and the consumer
    commits acked offsets as it stops, after the agents: the batch would be lost.
    """
    from streams import metrics  # here: metrics imports nothing of Faust's

    try:
        await process(current(app, taken))
    except asyncio.CancelledError:
        refuse(taken)
        raise
    except Exception:
        refuse(taken)
        metrics.AGENT_ERRORS.labels(agent=agent).inc()
        log.exception("%s batch failed", agent)
        raise


def _ack_unless_stale(self: Any, message: Any) -> bool:
    app = self.app
    if (_refused and (message.tp, message.offset) in _refused) or (
        message.generation_id != app.consumer_generation_id or not app.flow_control.is_active()
    ):
        # a failed batch, or fetched before the rebalance: processed again later
        _refused.discard((message.tp, message.offset))
        _holes.setdefault(message.tp, set()).add(message.offset)
        return False
    return _original_ack(self, message)


def _new_offset_below_holes(self: Any, tp: Any) -> int | None:
    """Faust's commit offset, never past a message whose ack was refused.

    Faust's own gap check misses exactly these holes: it looks for one only when the tp has
    a committed offset that is not 0, and only for gaps of two or more at the head
    (``min(acked) - committed > 1``). A refused message at the head of a fresh partition,
    or alone right at the committed offset, was committed past — and lost on the next
    restart.
    """
    holes = _holes.get(tp)
    if holes:
        committed = self._committed_offset[tp]
        acked_now = self._acked_index[tp]
        holes.difference_update(
            [h for h in holes if h in acked_now or (committed is not None and h < committed)]
        )
        if holes:
            lowest = min(holes)
            acked = self._acked[tp]
            above = [o for o in acked if o >= lowest]
            if above:
                acked[:] = [o for o in acked if o < lowest]
                try:
                    return _original_new_offset(self, tp)
                finally:
                    acked.extend(above)
                    acked.sort()
        else:
            del _holes[tp]
    return _original_new_offset(self, tp)


def is_current(app: Any, event: Any) -> bool:
    """Whether ``event`` was fetched in the consumer's current generation."""
    return bool(event.message.generation_id == app.consumer_generation_id)


def still_current(app: Any, generation: int) -> bool:
    """Whether no rebalance has begun since the consumer was in ``generation``: a batch
    taken before one may still be running (``stream_wait_empty=False``), and what it
    announces after it could reach the partitions' new owner as if it were news."""
    return bool(app.consumer_generation_id == generation and app.flow_control.is_active())


def current(app: Any, events: list[Any]) -> list[Any]:
    """The events of a micro-batch fetched since the last rebalance (see the module)."""
    gen = app.consumer_generation_id
    kept = [e for e in events if e.message.generation_id == gen]
    if len(kept) != len(events):
        log.info("dropped %d events fetched before a rebalance", len(events) - len(kept))
    return kept


def seal_changelogs_before_recovery(app: Any, seal: Callable[[set[Any]], Awaitable[None]]) -> None:
    """Have ``seal`` close the changelog partitions ``app`` is about to recover, before
    recovery reads their high watermarks (the embedded broker's is exact only when a
    partition ends in a single-record batch; see streams/producer.py)."""
    _sealers[app] = seal


async def _build_highwaters_sealed(
    self: Any, consumer: Any, tps: set[Any], destination: Any, title: str
) -> None:
    seal = _sealers.get(self.app)
    if seal is not None and tps:
        await seal({(tp.topic, tp.partition) for tp in tps})
    await _original_build_highwaters(self, consumer, tps, destination, title)


async def _seek_to_committed_always(self: Any) -> Any:
    """``seek_to_committed``, also for stream partitions committed at 0 or not at all
    (aiokafka leaves those where prefetching left them; see the module). Changelog
    partitions are left alone: recovery positions them itself."""
    committed = await _original_seek_to_committed(self)
    changelogs = self.app.tables.changelog_topics
    unseeked = {
        TopicPartition(tp.topic, tp.partition): offset
        for tp, offset in committed.items()
        if not offset and tp.topic not in changelogs
    }
    if unseeked:
        consumer = self._ensure_consumer()

        async def seek() -> None:
            fresh = [tp for tp, offset in unseeked.items() if offset is None]
            for tp, offset in unseeked.items():
                if offset is not None:
                    consumer.seek(tp, offset)
            if fresh:  # nothing committed: where the reset policy (earliest) says
                await consumer.seek_to_beginning(*fresh)

        await self.call_thread(seek)
        log.debug("sought %d partitions without a commit to their start", len(unseeked))
    return committed


async def _seek_then(original: Any, self: Any, generation_id: int = 0) -> None:
    """Seek the stream partitions to their commits while they are still paused, then run
    Faust's ``original`` end of recovery, whose own seek (after it resumed them) is skipped
    by :func:`_perform_seek_once`."""
    app = self.app
    if app.consumer_generation_id == generation_id and app.consumer.assignment():
        await _original_perform_seek(app.consumer)
        _sought[app] = generation_id
    try:
        await original(self, generation_id)
    finally:
        _sought.pop(app, None)


async def _on_recovery_completed_sought(self: Any, generation_id: int = 0) -> None:
    await _seek_then(_original_on_recovery_completed, self, generation_id)


async def _resume_streams_sought(self: Any, generation_id: int = 0) -> None:
    await _seek_then(_original_resume_streams, self, generation_id)


async def _perform_seek_once(self: Any) -> None:
    """Faust's seek to the committed offsets, unless :func:`_seek_then` did it for this
    generation already (see the module)."""
    app = self.app
    if _sought.get(app) == app.consumer_generation_id and self.flow_active:
        _sought.pop(app, None)
        return
    await _original_perform_seek(self)


async def _refetch_inactive(self: Any, timeout: float) -> tuple[Any, Any]:
    """Faust's fetch, without the records of partitions it would drop as inactive
    (paused, and not merely buffered): their partition is sought back to the first of them,
    so they are fetched again once it is resumed (see the module)."""
    records, active = await _original_wait_next_records(self, timeout)
    if records and active is not None:
        buffered = self._buffered_partitions
        skipped = {
            tp: recs[0].offset
            for tp, recs in records.items()
            if recs and tp not in active and tp not in buffered
        }
        if skipped:
            records = {tp: recs for tp, recs in records.items() if tp not in skipped}
            for tp, offset in skipped.items():
                self._thread.seek(tp, offset)
            log.debug("fetched while paused, sought back: %s", skipped)
    return records, active


def _short_fetch_wait(self: Any, transport: Any) -> Any:
    consumer = _original_create_worker_consumer(self, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
    return consumer


def apply() -> None:
    """Install the workaround (idempotent)."""
    if Consumer.ack is not _ack_unless_stale:
        Consumer.ack = _ack_unless_stale  # type: ignore[method-assign]
        Consumer._new_offset = _new_offset_below_holes  # type: ignore[method-assign]
        Recovery._build_highwaters = _build_highwaters_sealed  # type: ignore[method-assign]
        AIOKafkaConsumerThread.seek_to_committed = _seek_to_committed_always  # type: ignore[method-assign]
        Recovery.on_recovery_completed = _on_recovery_completed_sought  # type: ignore[method-assign]
        Recovery._resume_streams = _resume_streams_sought  # type: ignore[method-assign]
        Consumer.perform_seek = _perform_seek_once  # type: ignore[method-assign]
        AIOKafkaConsumerThread._create_worker_consumer = _short_fetch_wait  # type: ignore[method-assign]
        Consumer._wait_next_records = _refetch_inactive  # type: ignore[method-assign]
        log.debug("faust: refused acks hold commits back; recovery seals changelogs first")
