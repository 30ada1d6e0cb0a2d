"""The journey engine live in Faust on the real broker: same pain points as the backtest and
the simulator's ground truth found exactly."""

from __future__ import annotations

import os
import signal
import time

import orjson
import pytest
from confluent_kafka import Producer

from replay.backtest import backtest
from schemas.validation import Validator
from streams.config import Settings
from streams.engine.rules import builtin_rules
from streams.simulator import SimConfig, publish, simulate, write_outputs

pytestmark = pytest.mark.integration


def _wait(pred, timeout: float, what: str, worker) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        assert worker.alive(), f"worker died:\n{worker.log()[-3000:]}"
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


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
        _wait(lambda: landed() >= want, 300, f"{want} pain points landed", worker)
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
    _wait(
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


def test_kill_9_mid_stream_then_restart_recovers_state_exactly(worker_factory, tmp_path):
    """Tables recover from their changelogs after a kill -9: the final pain points equal
    an uninterrupted run (the backtest), and every touchpoint lands exactly once."""
    sim = simulate(SimConfig(customers=1000, days=30, seed=22))
    expected = _expected(tmp_path, sim)
    want = {p["pain_point_id"] for p in expected.pain_points}
    first = worker_factory()
    _publish_customers(first, sim.customers)
    _wait(
        lambda: _counter(first, "touchpath_profiles_total") >= len(sim.customers),
        60,
        "profiles",
        first,
    )
    s = first.settings
    half = len(sim.records) // 2
    publish(
        sim.records[:half],
        bootstrap=first.env["TOUCHPATH_KAFKA_BOOTSTRAP"],
        topic=s.topic(s.topic_raw),
        rate=None,
    )
    # Kill while state has been written: some pain points out, the stream not drained.
    _wait(lambda: _counter(first, "touchpath_pain_points_total") > 0, 120, "progress", first)
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(10)

    second = worker_factory()  # same topics, group, tables and ClickHouse directory
    publish(
        sim.records[half:],
        bootstrap=second.env["TOUCHPATH_KAFKA_BOOTSTRAP"],
        topic=s.topic(s.topic_raw),
        rate=None,
    )
    got = _settle(second, len(want))
    assert got == want, f"missing {len(want - got)}, extra {len(got - want)}"
    _wait(
        lambda: second.query("landed_totals")[0]["touchpoints"] >= sim.manifest["events_valid"],
        120,
        "all touchpoints",
        second,
    )
    assert second.query("landed_totals")[0]["touchpoints"] == sim.manifest["events_valid"]
