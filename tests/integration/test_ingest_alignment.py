"""Watermark alignment on the real broker: a backlog whose partitions are read one after
the other by librdkafka still reaches downstream evenly in event time."""

from __future__ import annotations

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


def test_ingest_pauses_partitions_running_ahead_in_event_time(broker, topic_factory):
    raw, valid, dlq = topic_factory(2), topic_factory(4), topic_factory(4)
    per_part = 1500  # 10 days of events every 10 minutes, on each of the two partitions
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
    for part in (0, 1):
        for i in range(per_part):
            p.produce(raw, _event(i, part), partition=part)
    p.flush(30)
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_raw=raw,
        topic_valid=valid,
        topic_dlq=dlq,
        app_id=f"align-{raw}",
        batch_max_events=100,
        watermark_align_seconds=3600,
    )
    ing = Ingestor(settings, broker.bootstrap, Validator.from_settings(settings))
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
