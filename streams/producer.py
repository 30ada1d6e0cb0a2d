"""One confluent-kafka producer per worker for agent outputs and table changelogs.

Faust's own producer path costs ~70–80 µs per record (docs/design.md, Throughput design); agents
here send micro-batches and changelog records through librdkafka instead, and flush them
before their source messages are acked (so before Faust commits the source offsets).

The embedded broker (Tansu 0.6) reports a partition's high watermark as the base offset of
its *last record batch* + 1, so Faust's changelog recovery, which reads "up to the high
watermark", would miss the tail of the last batch. :meth:`WorkerProducer.flush` therefore
closes every flush with a single-record marker batch on each changelog partition it wrote:
the marker is a delete of a key no table uses, which recovery applies harmlessly, and the
high watermark is then exact on Tansu and Apache Kafka alike.

Order within a flush matters when the worker dies half-way (kill -9, OOM): outputs first,
then the state changelog, then the markers. State that says "done" must never be durable
while the outputs it stands for are not: a pain point recorded as fired in a customer's
state but never delivered would be lost for good, because the replayed input is then a
duplicate. The other way round a crash only repeats outputs, which every consumer
deduplicates by id. Agents therefore queue a batch's outputs before they write its state,
and a flush delivers what was queued before the state records it takes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams import faults
from streams.partitioning import partition_for

log = logging.getLogger(__name__)

#: Key of the end-of-flush marker record (a delete; no table ever holds this key).
MARKER_KEY = b"__touchpath_flush_marker__"


class WorkerProducer:
    """Produce outputs and changelog records; flush durably with changelog markers."""

    def __init__(self, bootstrap: str, client_config: dict[str, Any] | None = None) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                **(client_config or {}),
                "linger.ms": 5,
                "acks": "all",
                "message.max.bytes": 1_000_000,
            }
        )
        self._errors: list[KafkaError] = []
        self._changelog_parts: set[tuple[str, int]] = set()
        #: changelog records held back until the outputs queued before them are delivered
        self._changelog: list[tuple[str, int, bytes, bytes | None]] = []
        self._changelog_lock = threading.Lock()  # appends (event loop) vs flush (executor)
        self._lock = asyncio.Lock()

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._errors.append(err)

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue one record (an explicit partition, or murmur2 of the key as Faust does)."""
        if partition is None and key is not None:
            raise ValueError("give an explicit partition: confluent's partitioner is not Faust's")
        kwargs = {} if partition is None else {"partition": partition}
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self._on_delivery, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)

    def changelog(self, topic: str, partitions: int, key: bytes, value: bytes | None) -> int:
        """Hold a changelog record for the next :meth:`flush`, on the partition Faust's
        partitioner gives ``key`` (it goes out after the outputs, see the module docstring)."""
        part = partition_for(key, partitions)
        with self._changelog_lock:
            self._changelog.append((topic, part, key, value))
        return part

    async def flush(self, timeout: float = 30.0) -> None:
        """Deliver everything queued, then the changelog markers; raise if anything failed."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._flush_blocking, timeout)

    def _flush_blocking(self, timeout: float) -> None:
        # State records taken now have their outputs queued already (agents queue outputs
        # first); records written while this flush runs wait for the next one.
        with self._changelog_lock:
            records, self._changelog = self._changelog, []
        self._deliver(timeout)  # outputs
        if records:
            for topic, part, key, value in records:
                self.produce(topic, value, key, part)
                self._changelog_parts.add((topic, part))
            self._deliver(timeout)  # state
        if self._changelog_parts:
            faults.hold_sync("flush.before-markers")
            parts, self._changelog_parts = self._changelog_parts, set()
            self._mark(parts, timeout)

    async def seal(self, partitions: Iterable[tuple[str, int]], timeout: float = 30.0) -> None:
        """Close each (changelog topic, partition) with a marker batch, so that its high
        watermark is exact before recovery reads it: a worker killed between a flush's state
        records and its markers left the partition ending in a multi-record batch, and
        recovery up to the embedded broker's high watermark would stop short of its end."""
        parts = set(partitions)
        async with self._lock:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._seal_blocking, parts, timeout)

    def _seal_blocking(self, parts: set[tuple[str, int]], timeout: float) -> None:
        self._deliver(timeout)  # whatever is queued goes first: each marker is then alone
        self._mark(parts, timeout)

    def _mark(self, parts: set[tuple[str, int]], timeout: float) -> None:
        for topic, part in sorted(parts):
            self._producer.produce(
                topic, None, MARKER_KEY, partition=part, on_delivery=self._on_delivery
            )
        # Each marker is alone in its partition's batch: the caller emptied the queue first.
        self._deliver(timeout)

    def _deliver(self, timeout: float) -> None:
        # A slow or briefly unreachable broker is back-pressure, not an error: raising here
        # would fail the batch, and Faust's take() acks a failed batch's messages anyway
        # (in a finally), which would commit past outputs that never went out. librdkafka
        # keeps retrying the queued records; keep waiting for them, loudly.
        while remaining := self._producer.flush(timeout):
            log.warning("%d records not delivered after %.0f s; still trying", remaining, timeout)
        if self._errors:
            err, self._errors = self._errors[0], []
            raise KafkaException(err)
