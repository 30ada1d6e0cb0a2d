"""Rebalance: two workers in one consumer group; one stops and starts again mid-run.

Partitions move to the remaining worker and back, their table state moves with them
(changelog recovery, exact on the embedded broker thanks to the end-of-flush markers), and
the results equal a single uninterrupted run: the backtest's pain points, every valid event
landed. (Journey segmentation is not compared: see RELIABILITY.md, "journeys".) Each
embedded worker owns its own chDB directory, so results
are the union over the two workers' ClickHouse.
"""

from __future__ import annotations

import time

import orjson
import pytest

from streams.runtime import stop_process
from streams.simulator import SimConfig, simulate
from tests.integration.conftest import wait_until
from tests.integration.helpers import (
    committed_offsets,
    counter,
    expected,
    journey_events,
    publish_customers,
    publish_records,
    read_topics,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _union(workers, query: str, key: str) -> set:
    return {r[key] for w in workers for r in w.query(query)}


def test_worker_leaves_and_rejoins_the_group_results_equal_one_worker(worker_factory, tmp_path):
    sim = simulate(SimConfig(customers=1200, days=30, seed=71))
    result = expected(tmp_path, sim)
    want_pp = {p["pain_point_id"] for p in result.pain_points}
    dir_b = str(tmp_path / "data-b")
    a = worker_factory()
    publish_customers(a, sim.customers)  # the CRM feed first, then b joins the group
    b = worker_factory(TOUCHPATH_DATA_DIR=dir_b)
    third = len(sim.records) // 3
    publish_records(a, sim.records[:third])
    wait_until(lambda: counter(b, "touchpath_sink_rows_total") > 0, 120, "b working", b)

    stop_process(b.proc, timeout=30)  # b leaves: a takes over all partitions
    publish_records(a, sim.records[third : 2 * third])
    time.sleep(5.0)
    b2 = worker_factory(TOUCHPATH_DATA_DIR=dir_b)  # b rejoins: partitions move back
    publish_records(a, sim.records[2 * third :])

    workers = (a, b2)
    valid_ids = _valid_ids(sim.records)
    try:
        wait_until(
            lambda: _union(workers, "touchpoint_ids", "event_id") >= valid_ids,
            100,  # ~60 s when it passes; a stall (RELIABILITY.md) need not cost CI 5 minutes
            "every touchpoint landed",
            a,
        )
    except BaseException:
        missing_tp = valid_ids - _union(workers, "touchpoint_ids", "event_id")
        print(f"{len(missing_tp)} of {len(valid_ids)} touchpoints never landed")
        for w in workers:
            print(f"gauges of {w.base_url}:\n{w.gauges()}")
        raise
    deadline = time.monotonic() + 75  # idle partitions release the last events after 30 s
    while time.monotonic() < deadline:
        if _union(workers, "pain_point_ids", "pain_point_id") >= want_pp:
            break
        time.sleep(1.0)
    time.sleep(3.0)
    got_pp = _union(workers, "pain_point_ids", "pain_point_id")
    split = [int(w.query("landed_totals")[0]["touchpoints"]) for w in workers]
    print(f"two workers, one restarted: touchpoints landed per worker {split}")
    assert _union(workers, "touchpoint_ids", "event_id") == valid_ids
    missing = sorted(
        (p["detected_at"], p["rule_id"], p["customer_id"])
        for p in result.pain_points
        if p["pain_point_id"] not in got_pp
    )
    if got_pp != want_pp:  # where were they lost? (the topic, or landing)
        s = a.settings
        t_pains, t_events = s.topic(s.topic_pain_points), s.topic(s.topic_journey_events)
        topics = read_topics(a.env["TOUCHPATH_KAFKA_BOOTSTRAP"], [t_pains, t_events])
        pains = [orjson.loads(r.value) for r in topics[t_pains]]
        on_topic = {p["pain_point_id"] for p in pains}
        late = [counter(w, "touchpath_events_late_total") for w in workers]
        extra = sorted(
            (p["detected_at"], p["rule_id"], p["customer_id"], p.get("anchor_event_id"))
            for p in pains
            if p["pain_point_id"] in got_pp - want_pp
        )
        stepped = {ev[0] for evs in journey_events(topics[t_events]).values() for ev in evs}
        pytest.fail(
            f"{len(missing)} missing: {missing}; {len(got_pp - want_pp)} extra: {extra}; "
            f"missing but on the pain-points topic: {len(want_pp - got_pp & on_topic)}; "
            f"late events per worker {late}; "
            f"valid events never sent to the journey stage: {len(valid_ids - stepped)}; "
            f"journey partitions: {[_journey_progress(w) for w in workers]}; "
            f"missing (partition, offset) vs the group's commits: "
            f"{_positions(a, topics[t_pains], want_pp - got_pp)}"
        )
    assert all(n > 0 for n in split), "both workers must have had partitions"


def _positions(worker, records: list, ids: set[str]) -> tuple[list, dict]:
    """Where the ``ids`` are among the pain-point ``records`` (partition, offset), and the
    Faust group's committed offset per partition: committed past a missing one = acked,
    never landed."""
    committed = committed_offsets(worker, worker.settings.topic(worker.settings.topic_pain_points))
    found = [
        (r.partition, r.offset) for r in records if orjson.loads(r.value)["pain_point_id"] in ids
    ]
    return sorted(found), committed


def _journey_progress(worker) -> dict[str, tuple[str, float]]:
    """Per journey partition of ``worker``: its watermark (ISO) and waiting events."""
    from datetime import UTC, datetime

    from prometheus_client.parser import text_string_to_metric_families

    text = worker.client.http.get("/metrics").text
    wm: dict[str, float] = {}
    waiting: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "touchpath_journey_watermark_seconds":
                wm[s.labels["partition"]] = s.value
            elif s.name == "touchpath_journey_waiting_events":
                waiting[s.labels["partition"]] = s.value
    return {
        p: (datetime.fromtimestamp(wm[p], UTC).isoformat() if p in wm else "-", waiting.get(p, 0))
        for p in sorted(wm.keys() | waiting.keys(), key=int)
    }


def _valid_ids(records: list[bytes]) -> set[str]:
    from datetime import UTC, datetime

    from schemas.validation import Rejection, Validator
    from streams.config import Settings

    v, now = Validator.from_settings(Settings()), datetime.now(UTC)
    return {tp.event_id for raw in records if not isinstance(tp := v.validate(raw, now), Rejection)}
