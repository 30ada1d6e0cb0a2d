"""ClickHouse away for 30 s mid-run: nothing lost, nothing doubled, the outage visible.

chDB runs inside the worker and cannot be stopped from outside, so the outage is injected
at the worker's client (``TOUCHPATH_FAULT_CLICKHOUSE_FILE``: every call fails while the
file exists) — the writer, its retries and the agents' back-pressure are the real ones.
"""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.simulator import SimConfig, simulate
from tests.integration.conftest import wait_until
from tests.integration.helpers import (
    counter,
    expected,
    publish_customers,
    publish_records,
    settle_pain_points,
)

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 30.0


def _gauge(worker, name: str) -> float:
    text = worker.client.http.get("/metrics").text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                return s.value
    return 0.0


def test_clickhouse_outage_of_30s_loses_and_doubles_nothing(worker_factory, tmp_path):
    sim = simulate(SimConfig(customers=600, days=30, seed=41))
    result = expected(tmp_path, sim)
    want_pp = {p["pain_point_id"] for p in result.pain_points}
    fault = tmp_path / "clickhouse-down"
    worker = worker_factory(TOUCHPATH_FAULT_CLICKHOUSE_FILE=str(fault))
    publish_customers(worker, sim.customers)
    half = len(sim.records) // 2
    publish_records(worker, sim.records[:half])
    wait_until(lambda: counter(worker, "touchpath_sink_rows_total") > 0, 60, "landing", worker)

    fault.touch()  # ClickHouse goes away
    t0 = time.monotonic()
    publish_records(worker, sim.records[half:])
    backlog = errors = 0.0
    while time.monotonic() - t0 < OUTAGE_SECONDS:
        assert worker.alive(), worker.log()[-3000:]
        backlog = max(backlog, _gauge(worker, "touchpath_sink_backlog_rows"))
        errors = counter(worker, "touchpath_sink_errors_total")
        time.sleep(1.0)
    # ingest kept consuming the raw topic into Kafka while landing was blocked
    assert counter(worker, "touchpath_events_in_total") == len(sim.records)
    assert errors > 0, "the failed inserts must show in touchpath_sink_errors_total"
    assert backlog > 0, "the held rows must show in touchpath_sink_backlog_rows"
    assert "insert into" in worker.log() and "Connection refused" in worker.log()
    fault.unlink()  # back

    valid = sim.manifest["events_valid"]
    wait_until(
        lambda: worker.query("landed_totals")[0]["touchpoints"] >= valid,
        180,
        "every touchpoint landed after the outage",
        worker,
    )
    got = settle_pain_points(worker, len(want_pp))
    totals = worker.query("landed_totals")[0]
    print(
        f"outage {OUTAGE_SECONDS:.0f}s: peak backlog {backlog:.0f} rows, {errors:.0f} failed "
        f"inserts; after: {totals['touchpoints']} touchpoints, {len(got)} pain points"
    )
    assert totals["touchpoints"] == valid  # none lost, none doubled
    assert totals["dead_letters"] == sim.manifest["events_malformed"]
    assert got == want_pp
    assert _gauge(worker, "touchpath_sink_backlog_rows") == 0
