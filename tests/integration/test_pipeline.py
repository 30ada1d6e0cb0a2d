"""Simulator → real broker → worker (ingest + landing) → real ClickHouse (chDB)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import pytest
from confluent_kafka import Producer

from streams.simulator import SimConfig, publish, simulate
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration


def test_simulated_traffic_lands_exactly(worker_factory):
    worker = worker_factory()
    sim = simulate(SimConfig(customers=300, days=10, seed=11))
    m = sim.manifest
    s = worker.settings
    raw_topic = s.topic(s.topic_raw)
    now = datetime.now(UTC).isoformat()

    # Hostile extras beside the simulator's own malformed records.
    big = orjson.dumps(
        {
            "event_id": "big-1",
            "channel": "web",
            "type": "page_view",
            "occurred_at": now,
            "identifiers": {"customer_id": "C-big"},
            "url": "x" * 1_000_100,
        }
    )
    bad_utf8 = (
        b'{"event_id":"u-1","channel":"web","type":"page_view","occurred_at":"'
        + now.encode()
        + b'","identifiers":{"customer_id":"C\xff\xfe"}}'
    )
    p = Producer(
        {
            "bootstrap.servers": worker.env["TOUCHPATH_KAFKA_BOOTSTRAP"],
            "message.max.bytes": 2_000_000,
        }
    )
    p.produce(raw_topic, big)
    p.produce(raw_topic, bad_utf8)
    p.flush(10)

    n = publish(
        sim.records,
        bootstrap=worker.env["TOUCHPATH_KAFKA_BOOTSTRAP"],
        topic=raw_topic,
        rate=None,
        client_config=None,
    )
    assert n == m["events_total"]

    expected_dead = m["events_malformed"] + 2

    def landed() -> bool:
        t = worker.query("landed_totals")[0]
        return t["touchpoints"] >= m["events_valid"] and t["dead_letters"] >= expected_dead

    wait_until(landed, 120, "all rows in ClickHouse", worker)
    time.sleep(1.0)  # anything extra (a duplicate) would land by now
    totals = worker.query("landed_totals")[0]
    assert totals["touchpoints"] == m["events_valid"]
    assert totals["dead_letters"] == expected_dead

    by_reason = {r["reason"]: r["n"] for r in worker.query("dead_letters_by_reason")}
    want = dict(m["malformed_by_reason"])
    want["too_large"] = want.get("too_large", 0) + 1
    want["invalid_utf8"] = want.get("invalid_utf8", 0) + 1
    assert by_reason == want

    c = worker.counters()
    assert c["touchpath_events_in_total"] == m["events_total"] + 2
    assert c["touchpath_events_dead_lettered_total"] == expected_dead
    assert worker.alive(), "bad input must never stop the worker"
