"""Hostile input through a real worker: >10k mixed records on the raw topic.

Every bad record must be dead-lettered with its reason (ClickHouse and the counters agree),
every valid one must land, the worker must stay up and its memory bounded.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from tests import hostile
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

SEED = 7_2026
MIXED = 10_000
#: peak resident memory (VmHWM) of the worker process over the whole test
RSS_LIMIT_MB = 750
#: growth of the worker's peak RSS from "ready" to "all 10k records processed"
RSS_GROWTH_LIMIT_MB = 300


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def _big_cases(rng: random.Random, now: datetime) -> list[hostile.Case]:
    """A few records of 0.9-1.3 MB: over the limit as sent or once validated, or holding a
    900 kB string."""
    big = []
    for i in range(15):
        raw, reason = hostile.BAD["too_large"](rng, 900_000 + i, now)
        big.append(hostile.Case(raw, reason, "too_large"))
    for i in range(5):
        rec = hostile._base(rng, 910_000 + i, now)
        rec["note"] = "z" * 900_000
        big.append(hostile.Case(orjson.dumps(rec), "string_too_long", "string_too_long"))
    for i in range(3):
        # under 1 MB as sent, over it once validated ("1e5" is written "100000.0"): a
        # micro-batch holding it would be refused by the broker on every retry
        rec = hostile._base(rng, 920_000 + i, now)
        rec["note"] = [1e5] * 240_000
        raw = orjson.dumps(rec).replace(b"100000.0", b"1e5")
        big.append(hostile.Case(raw, "too_large", "too_large"))
    return big


def test_ten_thousand_hostile_records_each_land_or_dead_letter(worker_factory):
    worker = worker_factory()
    pid = worker.proc.pid
    rss_ready_mb = _status_kb(pid, "VmRSS") / 1024
    s = worker.settings
    now = datetime.now(UTC)
    rng = random.Random(SEED)
    cases = list(hostile.cases(MIXED, SEED, now, bad_share=0.5, big=False))
    cases += _big_cases(rng, now)
    rng.shuffle(cases)
    want_dead = Counter(c.reason for c in cases if c.reason is not None)
    n_valid = sum(c.reason is None for c in cases)
    n_dead = sum(want_dead.values())
    assert set(want_dead) == set(hostile.BAD), "every reason code is exercised"

    p = Producer(
        {
            "bootstrap.servers": worker.env["TOUCHPATH_KAFKA_BOOTSTRAP"],
            "message.max.bytes": 2_000_000,
            "linger.ms": 20,
        }
    )
    for c in cases:
        while True:
            try:
                p.produce(s.topic(s.topic_raw), c.raw)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0

    def landed() -> bool:
        # a batch that keeps failing is re-read forever: fail at once, not at the timeout
        assert worker.counters().get("touchpath_ingest_errors_total", 0) == 0, worker.log()[-3000:]
        assert "Crashed reason=" not in worker.log(), worker.log()[-3000:]
        t = worker.query("landed_totals")[0]
        return t["touchpoints"] >= n_valid and t["dead_letters"] >= n_dead

    started = time.monotonic()
    try:
        wait_until(landed, 150, f"{n_valid} touchpoints and {n_dead} dead letters landed", worker)
    except BaseException:
        print("landed", worker.query("landed_totals"), worker.query("dead_letters_by_reason"))
        print("want", dict(want_dead))
        print({k: v for k, v in worker.counters().items() if "{" not in k})
        print(worker.log()[-6000:])
        raise
    took = time.monotonic() - started
    time.sleep(1.0)  # anything extra (a duplicate) would land by now

    totals = worker.query("landed_totals")[0]
    assert (totals["touchpoints"], totals["dead_letters"]) == (n_valid, n_dead)
    by_reason = {r["reason"]: r["n"] for r in worker.query("dead_letters_by_reason")}
    assert by_reason == dict(want_dead)

    c = worker.counters()
    assert c["touchpath_events_in_total"] == len(cases)
    assert c["touchpath_events_valid_total"] == n_valid
    assert c["touchpath_events_dead_lettered_total"] == n_dead
    for reason, n in want_dead.items():
        assert c[f"touchpath_events_dead_lettered_total{{reason={reason}}}"] == n, reason
    assert c.get("touchpath_ingest_errors_total", 0) == 0

    assert worker.alive(), "bad input must never stop the worker"
    log = worker.log()
    assert "Traceback" not in log and "Crashed reason=" not in log, log[-3000:]
    peak_mb = _status_kb(pid, "VmHWM") / 1024
    print(
        f"\n{len(cases)} records ({n_dead} bad, {n_valid} valid) landed in {took:.1f}s; "
        f"worker RSS {rss_ready_mb:.0f} MB at ready, peak {peak_mb:.0f} MB"
    )
    assert peak_mb < RSS_LIMIT_MB
    assert peak_mb - rss_ready_mb < RSS_GROWTH_LIMIT_MB


def _big_valid(i: int, customer: str, now: datetime, texts: int = 8) -> bytes:
    """A valid web event of ``texts`` x 8000 characters (the limit is 8192 per string)."""
    rec = {
        "event_id": f"big-{customer}-{i}",
        "channel": "web",
        "type": "page_view",
        "occurred_at": (now - timedelta(minutes=60 - i)).isoformat(),
        "identifiers": {"customer_id": customer},
        "url": "u" * 8000,
        "attributes": {f"a{k}": chr(97 + k) * 8000 for k in range(texts - 1)},
    }
    return orjson.dumps(rec)


def _no_agent_errors(worker) -> None:
    # the log too: not every agent counts its crash in touchpath_agent_errors_total
    errors = worker.counters().get("touchpath_agent_errors_total", 0)
    log = worker.log()
    assert errors == 0 and "Crashed reason=" not in log, f"an agent failed:\n{log[-4000:]}"


def test_large_valid_events_in_one_burst_keep_flowing(worker_factory):
    worker = worker_factory()
    s = worker.settings
    now = datetime.now(UTC)
    p = Producer({"bootstrap.servers": worker.env["TOUCHPATH_KAFKA_BOOTSTRAP"]})
    for i in range(100):  # 100 customers, one 64 kB event each: 6.4 MB in one burst
        p.produce(s.topic(s.topic_raw), _big_valid(0, f"BIG{i}", now))
    assert p.flush(30) == 0

    def done() -> bool:
        _no_agent_errors(worker)
        return worker.query("overview")[0]["journeys"] >= 100

    wait_until(done, 60, "100 journeys", worker)
    _no_agent_errors(worker)


def test_many_large_events_of_one_customer_keep_flowing(worker_factory):
    """12 valid events of ~128 kB for one customer: the journey state keeps each applied
    step's rule bits, not its event, so its changelog record stays far below the 1 MB
    message limit (before slim steps: MSG_SIZE_TOO_LARGE in the journey agent)."""
    worker = worker_factory()
    s = worker.settings
    now = datetime.now(UTC)
    p = Producer({"bootstrap.servers": worker.env["TOUCHPATH_KAFKA_BOOTSTRAP"]})
    for i in range(12):  # 12 x 128 kB for one customer, one at a time: every batch small
        p.produce(s.topic(s.topic_raw), _big_valid(i, "ONE", now, texts=16))
        assert p.flush(10) == 0

        def landed(i: int = i) -> bool:
            _no_agent_errors(worker)
            return worker.query("landed_totals")[0]["touchpoints"] >= i + 1

        wait_until(landed, 30, f"touchpoint {i} landed", worker)
    time.sleep(3.0)  # the journey stage runs after landing
    _no_agent_errors(worker)
    assert worker.query("overview")[0]["journeys"] >= 1
