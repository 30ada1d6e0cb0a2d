"""Ingest's consumer group on the real (embedded) broker: a worker stopped while its group
join is pending must not leave the group unusable for the next one.

Measured on Tansu 0.6: a confluent-kafka consumer that leaves while its JoinGroup is pending
wedges the group, and no later member is ever assigned a partition."""

from __future__ import annotations

import time

import orjson
import pytest
from confluent_kafka import Producer

from schemas.validation import Validator
from streams.config import Settings
from streams.ingest import Ingestor

pytestmark = pytest.mark.integration


def _settings(broker, topic_factory, name: str) -> Settings:
    raw, valid, dlq = topic_factory(2), topic_factory(4), topic_factory(4)
    return Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_raw=raw,
        topic_valid=valid,
        topic_dlq=dlq,
        app_id=f"{name}-{raw}",
    )


def _start(settings: Settings) -> Ingestor:
    return Ingestor(settings, settings.kafka_bootstrap, Validator.from_settings(settings))


def _publish(broker, raw: str, n: int) -> None:
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(n):
        event = {
            "event_id": f"e{i}",
            "channel": "web",
            "type": "page_view",
            "occurred_at": "2026-03-01T10:00:00+00:00",
            "identifiers": {"customer_id": f"C{i}"},
            "session_id": "s",
            "url": "/",
        }
        p.produce(raw, orjson.dumps(event), partition=i % 2)
    p.flush(30)


def _read(ing: Ingestor, want: int, timeout: float) -> int:
    seen, deadline = 0, time.monotonic() + timeout
    while seen < want and time.monotonic() < deadline:
        seen += ing.run_once(timeout=0.2)
    return seen


def test_an_ingestor_stopped_while_joining_leaves_the_group_usable(broker, topic_factory):
    settings = _settings(broker, topic_factory, "early-stop")
    first = _start(settings)
    for _ in range(5):  # a second of polling: its JoinGroup is sent, not yet answered
        first.run_once(timeout=0.2)
    assert not first._joined, "joined within a second: nothing pending to test"
    first.close()
    _publish(broker, settings.topic_raw, 10)
    nxt = _start(settings)
    try:
        seen = _read(nxt, 10, 60)
    finally:
        nxt.close()
    assert seen == 10, f"the next ingestor read {seen} of 10 records (group wedged?)"


def test_an_ingestor_stopped_during_a_rebalance_leaves_the_group_usable(broker, topic_factory):
    settings = _settings(broker, topic_factory, "mid-rebalance")
    first = _start(settings)
    second: Ingestor | None = None
    try:
        deadline = time.monotonic() + 60
        while len(first.consumer.assignment()) < 2:  # joined alone: both partitions
            first.run_once(timeout=0.2)
            assert time.monotonic() < deadline, "first ingestor never assigned"
        second = _start(settings)  # its join makes the group rebalance
        while first._joined and time.monotonic() < deadline:
            first.run_once(timeout=0.2)
            second.run_once(timeout=0.2)
        assert not first._joined, "no rebalance started"
        first.close()  # mid-rebalance: first's rejoin is pending
        first = None
        _publish(broker, settings.topic_raw, 10)
        seen = _read(second, 10, 60)
    finally:
        for ing in (first, second):
            if ing is not None:
                ing.close()
    assert seen == 10, f"the remaining ingestor read {seen} of 10 records (group wedged?)"
