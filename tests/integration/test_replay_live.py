"""A simulator log replayed through the live worker with `touchpath replay`: the same pain
points and care decisions (same ids) as `touchpath backtest` on the same log; replaying it
again doubles nothing in ClickHouse and delivers no care action twice; without
`--live-actions` a replay records care and delivers nothing."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from streams.simulator import SimConfig, simulate
from tests.integration.conftest import wait_until
from tests.integration.helpers import (
    counter,
    expected,
    final_sent,
    publish_customers,
    settle_pain_points,
)
from tests.integration.receiver import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SECRET = "replay-test-secret"


def _replay(worker, log, *extra: str) -> None:
    env = {**worker.env, "TOUCHPATH_DATA_DIR": str(log.parent / "replay-state")}
    r = subprocess.run(
        [sys.executable, "-m", "streams.cli", "replay", str(log), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr + r.stdout


def _decisions(worker) -> set[tuple[str, str]]:
    rows = worker.query("care_status_totals")
    return {(r["status"], int(r["actions"])) for r in rows}


def test_replayed_log_equals_backtest_and_a_second_replay_changes_nothing(worker_factory, tmp_path):
    sim = simulate(SimConfig(customers=500, days=30, seed=81))
    result = expected(tmp_path, sim)  # writes tmp_path/sim/events.jsonl.gz
    log = tmp_path / "sim" / "events.jsonl.gz"
    want_pp = {p["pain_point_id"] for p in result.pain_points}
    want_sent = final_sent(result.care_actions)
    want_ids = {a["action_id"] for a in result.care_actions}
    with Receiver(SECRET) as rec:
        worker = worker_factory(
            TOUCHPATH_CARE_ENDPOINTS=f"*={rec.url}", TOUCHPATH_CARE_SIGNING_SECRET=SECRET
        )
        publish_customers(worker, sim.customers)
        _replay(worker, log, "--live-actions")
        got_pp = settle_pain_points(worker, len(want_pp))
        wait_until(lambda: set(rec.processed) >= want_sent, 120, "care delivered", worker)
        time.sleep(2.0)
        assert got_pp == want_pp
        assert set(rec.processed) == want_sent
        totals = worker.query("landed_totals")[0]
        decisions = _decisions(worker)
        landed_ids = {r["action_id"] for r in worker.query("care_action_ids")}
        assert landed_ids == want_ids  # the same care decisions, by id

        # the same log again: nothing new anywhere, nothing delivered twice
        events_in = counter(worker, "touchpath_events_in_total")
        _replay(worker, log, "--live-actions")
        wait_until(
            lambda: counter(worker, "touchpath_events_in_total") >= 2 * events_in,
            120,
            "second replay consumed",
            worker,
        )
        time.sleep(5.0)
        assert worker.query("landed_totals")[0] == totals
        assert {r["pain_point_id"] for r in worker.query("pain_point_ids")} == want_pp
        assert _decisions(worker) == decisions
        assert sum(rec.requests.values()) - sum(rec.refused.values()) == len(want_sent)
        assert not rec.refused, "a replay re-sent a delivered action"
        assert counter(worker, "touchpath_events_duplicate_total") > 0


def test_replay_without_live_actions_records_care_and_delivers_nothing(worker_factory, tmp_path):
    sim = simulate(SimConfig(customers=150, days=30, seed=82))
    result = expected(tmp_path, sim)
    with Receiver(SECRET) as rec:
        worker = worker_factory(
            TOUCHPATH_CARE_ENDPOINTS=f"*={rec.url}", TOUCHPATH_CARE_SIGNING_SECRET=SECRET
        )
        publish_customers(worker, sim.customers)
        _replay(worker, tmp_path / "sim" / "events.jsonl.gz")
        want = {a["action_id"] for a in result.care_actions}
        wait_until(
            lambda: {r["action_id"] for r in worker.query("care_action_ids")} >= want,
            120,
            "care decisions recorded",
            worker,
        )
        time.sleep(2.0)
        assert sum(rec.requests.values()) == 0
