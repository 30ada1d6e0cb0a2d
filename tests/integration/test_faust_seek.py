"""After a rebalance, stream partitions go back to their committed offset — also those
with no commit yet (streams/faust_fixes.py, ``_seek_to_committed_always``).

On the real broker with a real aiokafka consumer: records fetched and then dropped (what a
generation change does to a fetched batch) must be delivered again. aiokafka alone leaves
an uncommitted partition where the fetch left it, which lost the first pain points of a
partition when a worker left and rejoined the group.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from confluent_kafka import Producer

from streams import faust_fixes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class _Thread:
    """What ``_seek_to_committed_always`` uses of Faust's aiokafka consumer thread."""

    def __init__(self, consumer: AIOKafkaConsumer, changelogs: set[str]) -> None:
        self.app = SimpleNamespace(tables=SimpleNamespace(changelog_topics=changelogs))
        self._consumer = consumer

    def _ensure_consumer(self) -> AIOKafkaConsumer:
        return self._consumer

    async def call_thread(self, fn: Any, *args: Any) -> Any:
        return await fn(*args)


def _produce(bootstrap: str, topic: str, n: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(n):
        p.produce(topic, str(i).encode(), partition=0)
    assert p.flush(10) == 0


def test_an_uncommitted_partition_is_sought_back_to_its_start(broker, topic_factory) -> None:
    stream, changelog = topic_factory(), topic_factory()
    _produce(broker.bootstrap, stream, 20)
    _produce(broker.bootstrap, changelog, 5)

    async def run() -> tuple[int, int, int, int]:
        consumer = AIOKafkaConsumer(
            stream,
            changelog,
            bootstrap_servers=broker.bootstrap,
            group_id=f"g-{stream}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            got = 0
            for _ in range(100):
                batch = await consumer.getmany(timeout_ms=500)
                got += sum(len(v) for v in batch.values())  # fetched, then "dropped"
                if got >= 25:
                    break
            s, c = TopicPartition(stream, 0), TopicPartition(changelog, 0)
            thread = _Thread(consumer, {changelog})
            await faust_fixes._original_seek_to_committed(thread)
            after_aiokafka = await consumer.position(s)
            await faust_fixes._seek_to_committed_always(thread)
            return got, after_aiokafka, await consumer.position(s), await consumer.position(c)
        finally:
            await consumer.stop()

    got, after_aiokafka, stream_pos, changelog_pos = asyncio.run(run())
    assert got == 25
    assert after_aiokafka == 20  # aiokafka alone: the fetched records are skipped
    assert stream_pos == 0  # re-read from the start: nothing committed, nothing lost
    assert changelog_pos == 5  # changelogs are positioned by recovery, not here
