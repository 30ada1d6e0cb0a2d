"""Identify sends a batch's events and progress before its touchpoints land, and acks the
batch only once they have landed (streams/agents/journeys.py, ``_identify_batch``).

On embedded chDB an insert takes ~60 ms; every event and both passes of the identity links
round trip used to wait for one before going on. The landing is held here for good by
fault injection (``TOUCHPATH_FAULT_HOLD_AT=land.touchpoints``), on the real worker: the
batch's events must reach the journey topic all the same, and its offsets must stay
uncommitted (what a kill -9 then re-reads, ``test_crash_consistency``).
"""

from __future__ import annotations

import orjson
import pytest

from streams.simulator import SimConfig, simulate
from tests.integration.conftest import wait_until
from tests.integration.helpers import (
    committed_offsets,
    journey_events,
    publish_records,
    read_topics,
)

pytestmark = pytest.mark.integration


def test_events_go_on_before_their_touchpoints_land_and_stay_unacked(worker_factory):
    sim = simulate(SimConfig(customers=40, days=3, seed=5))
    worker = worker_factory(TOUCHPATH_FAULT_HOLD_AT="land.touchpoints")
    s = worker.settings
    publish_records(worker, sim.records)
    wait_until(
        lambda: "fault injection: holding at land.touchpoints" in worker.log(),
        60,
        "identify's first landing held",
        worker,
    )
    t_events, t_valid = s.topic(s.topic_journey_events), s.topic(s.topic_valid)
    bootstrap = worker.env["TOUCHPATH_KAFKA_BOOTSTRAP"]

    def forwarded_some() -> bool:
        return bool(journey_events(read_topics(bootstrap, [t_events])[t_events]))

    wait_until(forwarded_some, 30, "events forwarded to the journey stage", worker)
    assert worker.query("landed_totals")[0]["touchpoints"] == 0  # still held
    # Not acked: no partition of the validated topic is committed past its first message
    # with events (progress-only messages before it were processed and acked: no rows).
    first_items: dict[int, int] = {}
    for r in read_topics(bootstrap, [t_valid])[t_valid]:
        if r.value and orjson.loads(r.value).get("items"):
            first_items[r.partition] = min(first_items.get(r.partition, r.offset), r.offset)
    committed = committed_offsets(worker, t_valid)
    assert first_items
    assert all(committed[p] <= o for p, o in first_items.items()), (committed, first_items)
    assert worker.alive()
