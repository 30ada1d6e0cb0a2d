"""Watermark alignment on the real broker: a backlog whose partitions are read one after
the other by librdkafka still reaches downstream evenly in event time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from confluent_kafka import Producer

from schemas.validation import Validator
from streams.config import Settings
from streams.ingest import Ingestor

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, tzinfo=UTC)


def _event(i: int, part: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"p{part}-{i}",
            "channel": "web",
            "type": "page_view",
            "occurred_at": (START + timedelta(minutes=10 * i)).isoformat(),
            "identifiers": {"customer_id": f"C{part}"},
            "session_id": "s",
            "url": "/",
        }
    )


def _ingestor(broker, topic_factory, name: str, **overrides) -> tuple[Ingestor, str]:
    """An ingestor on a fresh 2-partition raw topic (returned) and its own group."""
    raw, valid, dlq = topic_factory(2), topic_factory(4), topic_factory(4)
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_raw=raw,
        topic_valid=valid,
        topic_dlq=dlq,
        app_id=f"{name}-{raw}",
        **overrides,
    )
    return Ingestor(settings, broker.bootstrap, Validator.from_settings(settings)), raw


def test_ingest_pauses_partitions_running_ahead_in_event_time(broker, topic_factory):
    ing, raw = _ingestor(
        broker, topic_factory, "align", batch_max_events=100, watermark_align_seconds=3600
    )
    per_part = 1500  # 10 days of events every 10 minutes, on each of the two partitions
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
    for part in (0, 1):
        for i in range(per_part):
            p.produce(raw, _event(i, part), partition=part)
    p.flush(30)
    src = [f"{raw}:0", f"{raw}:1"]
    worst = 0.0
    seen = 0
    try:
        for _ in range(3000):
            seen += ing.run_once(max_messages=200, timeout=0.2)
            a, b = (ing.watermarks.progress(s) for s in src)
            if min(a, b) > float("-inf") and seen < 2 * per_part:
                worst = max(worst, abs(a - b))
            if seen >= 2 * per_part:
                break
    finally:
        ing.close()
    assert seen == 2 * per_part
    print(f"largest event-time lead of one raw partition over the other: {worst / 3600:.1f} h")
    # the window plus what one fetch can carry past it (200 events 10 minutes apart)
    assert worst <= 3600 + 200 * 600


def test_a_partition_paused_before_a_rebalance_is_read_after_it(broker, topic_factory):
    """A partition alignment paused is read again after a rebalance gives it back (librdkafka
    can keep a paused partition paused across one: confluent-kafka-go #193; a stall if so)."""
    from confluent_kafka import Consumer, TopicPartition

    ing, raw = _ingestor(broker, topic_factory, "resume")
    other = None
    try:
        for _ in range(100):  # joined, both partitions assigned
            ing.run_once(timeout=0.2)
            if len(ing.consumer.assignment()) == 2:
                break
        ing.consumer.pause([TopicPartition(raw, 0)])  # as alignment does
        ing._paused.add((raw, 0))
        # another member joins and leaves: two rebalances give partition 0 back to ingest
        other = Consumer(
            {"bootstrap.servers": broker.bootstrap, "group.id": f"resume-{raw}-ingest"}
        )
        other.subscribe([raw])
        deadline = time.monotonic() + 60
        while len(ing.consumer.assignment()) == 2 and time.monotonic() < deadline:
            other.poll(0.2)
            ing.run_once(timeout=0.2)
        other.close()
        other = None
        p = Producer({"bootstrap.servers": broker.bootstrap})
        for i in range(20):
            p.produce(raw, _event(i, 0), partition=0)
        p.flush(30)
        seen = 0
        while seen < 20 and time.monotonic() < deadline + 60:
            seen += ing.run_once(timeout=0.2)
    finally:
        if other is not None:
            other.close()
        ing.close()
    assert seen == 20, f"{seen} of 20 records on partition 0 read after the rebalance"


def test_a_partition_with_nothing_read_promises_nothing_while_others_deliver(broker, topic_factory):
    """A restarted worker finds raw partition 0 read to its end, and the producer's next
    backlog reaches partition 1 first: while 1 delivers, 0 must not promise 1's progress,
    or 0's records (older than that) reach the journey stage late."""
    ing, raw = _ingestor(broker, topic_factory, "hold", end_grace_seconds=0.2)
    src0 = f"{raw}:0"
    promised: list[float] = []
    try:
        deadline = time.monotonic() + 60
        while (
            not ing.watermarks.is_idle(src0, time.monotonic()) or len(ing.consumer.assignment()) < 2
        ):  # joined, and partition 0 read to its end
            ing.run_once(timeout=0.2)
            assert time.monotonic() < deadline, "partition 0 never reported its end"
        p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
        for i in range(2000):  # two weeks of events every 10 minutes
            p.produce(raw, _event(i, 1), partition=1)
        p.flush(30)
        read = 0
        while read < 500:  # partition 1 delivers, in small batches; 0 stays idle
            read += ing.run_once(max_messages=50, timeout=0.2)
            time.sleep(0.05)
            if (v := ing.progress().get("0")) is not None:
                promised.append(v)
        assert ing.watermarks.is_idle(src0, time.monotonic())
        assert ing.watermarks.progress(f"{raw}:1") > START.timestamp() + 3 * 86400
    finally:
        ing.close()
    # the producer's next records for partition 0 (_event(0, 0) on) are at START
    assert promised, "partition 0 was never reported while partition 1 delivered"
    assert max(promised) <= START.timestamp(), (
        f"partition 0 promised {max(promised) - START.timestamp():.0f} s past its next record"
    )
