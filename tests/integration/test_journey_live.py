"""The journey engine live in Faust on the real broker: same pain points as the backtest and
the simulator's ground truth found exactly."""

from __future__ import annotations

import time

import orjson
import pytest
from confluent_kafka import Producer

from replay.backtest import backtest
from schemas.validation import Validator
from streams.config import Settings
from streams.engine.rules import builtin_rules
from streams.simulator import SimConfig, publish, simulate, write_outputs
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration


def _publish_customers(worker, customers) -> None:
    s = worker.settings
    p = Producer({"bootstrap.servers": worker.env["TOUCHPATH_KAFKA_BOOTSTRAP"]})
    for c in customers:
        p.produce(s.topic(s.topic_customers), orjson.dumps(c), c["customer_id"].encode())
    p.flush(10)


def _counter(worker, name: str) -> float:
    return worker.counters().get(name, 0.0)


def _expected(tmp_path, sim):
    write_outputs(sim, tmp_path / "sim")
    return backtest(
        [tmp_path / "sim" / "events.jsonl.gz"],
        builtin_rules(),
        validator=Validator.from_settings(Settings()),
        customers_path=tmp_path / "sim" / "customers.jsonl",
    )


def _settle(worker, want: int) -> set[str]:
    """Wait until the landed pain points reach ``want`` and stop changing."""

    def landed() -> int:
        return len(worker.query("pain_point_ids"))

    try:
        wait_until(lambda: landed() >= want, 300, f"{want} pain points landed", worker)
    except BaseException:
        c = {k: v for k, v in worker.counters().items() if "{" not in k}
        print("landed", landed(), "counters", c)
        raise
    time.sleep(2.0)  # anything extra would land by now
    return {r["pain_point_id"] for r in worker.query("pain_point_ids")}


def test_live_worker_equals_backtest_and_ground_truth(worker_factory, tmp_path):
    sim = simulate(SimConfig(customers=2000, days=30, seed=21))
    expected = _expected(tmp_path, sim)
    worker = worker_factory()
    _publish_customers(worker, sim.customers)
    wait_until(
        lambda: _counter(worker, "touchpath_profiles_total") >= len(sim.customers),
        60,
        "profiles",
        worker,
    )
    s = worker.settings
    publish(
        sim.records,
        bootstrap=worker.env["TOUCHPATH_KAFKA_BOOTSTRAP"],
        topic=s.topic(s.topic_raw),
        rate=None,
    )
    want = {p["pain_point_id"] for p in expected.pain_points}
    got = _settle(worker, len(want))
    assert got == want, f"missing {len(want - got)}, extra {len(got - want)}"
    assert _counter(worker, "touchpath_events_late_total") == 0

    truth = {(g["customer_id"], g["rule_id"], g["anchor_event_id"]) for g in sim.ground_truth}
    live = {
        (r["customer_id"], r["rule_id"], r["anchor_event_id"])
        for r in worker.query("pain_point_ids")
    }
    recall = len(truth & live) / len(truth)
    precision = len(truth & live) / len(live)
    print(
        f"live worker: {len(truth)} injected, {len(live)} found: "
        f"recall={recall:.3f} precision={precision:.3f}"
    )
    assert recall == 1.0 and precision == 1.0
