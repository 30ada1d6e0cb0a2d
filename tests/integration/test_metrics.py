"""The worker's /metrics: every family operations need is there, parsed by the official
Prometheus parser, named by the conventions (``touchpath_`` prefix, ``_total`` counters,
base units), and moving with the traffic; /health and /ready answer."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.simulator import SimConfig, simulate
from tests.integration.conftest import wait_until
from tests.integration.helpers import counter, publish_customers, publish_records

pytestmark = pytest.mark.integration

#: family -> type, what issue "Observability" asks the worker to expose
REQUIRED = {
    "touchpath_events_in": "counter",
    "touchpath_events_valid": "counter",
    "touchpath_events_dead_lettered": "counter",
    "touchpath_event_lag_seconds": "histogram",
    "touchpath_consumer_lag_messages": "gauge",
    "touchpath_journey_updates": "counter",
    "touchpath_pain_points": "counter",
    "touchpath_care_actions": "counter",
    "touchpath_sink_rows": "counter",
    "touchpath_sink_flush_seconds": "histogram",
    "touchpath_sink_backlog_rows": "gauge",
    "touchpath_state_keys": "gauge",
    "touchpath_identity_held_events": "gauge",
    "touchpath_journey_watermark_seconds": "gauge",
    "touchpath_journey_waiting_events": "gauge",
    "touchpath_dispatch_seconds": "histogram",
    "touchpath_dispatch_retries": "counter",
    "touchpath_worker_ready": "gauge",
}


def test_metrics_are_complete_conventional_and_moving(worker_factory):
    sim = simulate(SimConfig(customers=150, days=10, seed=51))
    worker = worker_factory()
    http = worker.client.http
    assert http.get("/health").json() == {"status": "ok"}
    assert http.get("/ready").status_code == 200
    publish_customers(worker, sim.customers)
    publish_records(worker, sim.records)
    valid = sim.manifest["events_valid"]
    wait_until(
        lambda: worker.query("landed_totals")[0]["touchpoints"] >= valid, 120, "landing", worker
    )
    wait_until(
        lambda: counter(worker, "touchpath_journey_updates_total") > 0, 60, "journeys", worker
    )
    families = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
    missing = {n for n in REQUIRED if n not in families}
    assert not missing, f"missing metric families: {sorted(missing)}"
    for name, kind in REQUIRED.items():
        assert families[name].type == kind, name
    for fam in families.values():
        if not fam.name.startswith("touchpath_"):
            continue
        assert fam.documentation, f"{fam.name} has no help text"
        for s in fam.samples:
            if fam.type == "counter":
                assert s.name.endswith(("_total", "_created")), s.name
            assert "_ms" not in s.name and "_milliseconds" not in s.name, s.name  # base units

    def value(name: str, **labels: str) -> float:
        return sum(
            s.value
            for s in families[name].samples
            if s.name in (name, f"{name}_total", f"{name}_count")
            and all(s.labels.get(k) == v for k, v in labels.items())
        )

    assert value("touchpath_events_in") == len(sim.records)
    assert value("touchpath_events_valid") == valid
    assert value("touchpath_events_dead_lettered") == sim.manifest["events_malformed"]
    assert value("touchpath_event_lag_seconds") > 0  # observations counted
    assert value("touchpath_journey_updates") > 0
    assert value("touchpath_state_keys", table="customers") > 0
    assert value("touchpath_sink_rows", table="touchpoints") >= valid
