"""``touchpath replay`` as a subprocess against the real (embedded) broker: every record
arrives with its key and replay headers; Ctrl-C halfway then ``--resume`` delivers every
event with at most a few re-sends; ``--speed 60x`` holds the pace."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from streams.runtime import EmbeddedBroker
from streams.simulator import SimConfig, SimResult, producer_key, simulate, write_outputs
from tests.integration.conftest import TopicFactory

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "streams.cli", "replay"]


@cache
def sim() -> SimResult:
    return simulate(SimConfig(customers=300, days=10, seed=21))


def env(broker: EmbeddedBroker, tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHPATH_")}
    return {
        **base,
        "TOUCHPATH_KAFKA_BOOTSTRAP": broker.bootstrap,
        "TOUCHPATH_DATA_DIR": str(tmp_path / "data"),
    }


def consume(broker: EmbeddedBroker, topic: str, expect: int, timeout: float = 30) -> list[Message]:
    """Read ``topic`` from the start until ``expect`` records came and then a quiet second.

    Never trusts the high watermark (the embedded broker under-reports it)."""
    c = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"replay-test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    # assign, not subscribe: no consumer-group rebalance to wait for
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    quiet_since = None
    try:
        while time.monotonic() < deadline:
            batch = [m for m in c.consume(2000, timeout=0.3) if m.error() is None]
            out.extend(batch)
            if batch:
                quiet_since = None
            elif len(out) >= expect:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 1.0:
                    break
    finally:
        c.close()
    return out


def test_replay_sends_every_record_keyed_with_headers(
    broker: EmbeddedBroker, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    write_outputs(sim(), tmp_path / "sim")
    topic = topic_factory(partitions=4)
    r = subprocess.run(
        [*CLI, str(tmp_path / "sim" / "events.jsonl.gz"), "--topic", topic],
        env=env(broker, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    records = sim().records
    msgs = consume(broker, topic, len(records))
    assert Counter(m.value() for m in msgs) == Counter(records)
    keys = {m.value(): m.key() for m in msgs}
    assert all(keys[v] == (k.encode() if (k := producer_key(v)) else None) for v in records)
    run_ids = set()
    for m in msgs:
        h = dict(m.headers() or [])
        assert h["touchpath-replay"] == b"1"
        run_ids.add(h["touchpath-replay-id"])
    assert len(run_ids) == 1
    malformed = len(sim().malformed)
    assert re.search(rf"events sent\s*│\s*{len(records):,}", r.stdout), r.stdout
    assert re.search(rf"bad records\s*│\s*{malformed:,}", r.stdout), r.stdout
    assert "events.jsonl.gz:" in r.stdout  # bad records shown as file:line


def test_sigint_then_resume_delivers_everything_once_or_nearly(
    broker: EmbeddedBroker, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    write_outputs(sim(), tmp_path / "sim")
    log = str(tmp_path / "sim" / "events.jsonl.gz")
    topic = topic_factory(partitions=4)
    records = sim().records
    # 10 days of event time in ~6 s: slow enough to interrupt halfway
    speed = f"{10 * 86400 / 6:.0f}x"
    p = subprocess.Popen(
        [*CLI, log, "--topic", topic, "--speed", speed],
        env=env(broker, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        seen = consume(broker, topic, 1, timeout=10)
        assert seen, "nothing replayed yet"
        time.sleep(1.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err + out
    assert "interrupted" in out and "--resume continues" in out, out
    first = consume(broker, topic, 1)
    assert 0 < len(first) < len(records), "the interrupt did not land halfway"

    r = subprocess.run(
        [*CLI, log, "--topic", topic, "--resume"],
        env=env(broker, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert "resumed after" in r.stdout and "complete" in r.stdout
    msgs = consume(broker, topic, len(records))
    values = Counter(m.value() for m in msgs)
    assert set(values) == set(records)
    dupes = sum(values.values()) - len(records)
    print(f"interrupted after {len(first)} of {len(records)}; re-sent on resume: {dupes}")
    assert 0 <= dupes <= len(records) // 100
    run_ids = {dict(m.headers())["touchpath-replay-id"] for m in msgs}
    assert len(run_ids) == 1  # a resumed replay keeps its run id


def test_speed_60x_holds_the_pace(
    broker: EmbeddedBroker, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    span = 480.0  # event seconds: 8 s of wall time at 60x
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    offsets = [span * i / 199 for i in range(200)]
    log = tmp_path / "paced.jsonl"
    log.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "event_id": f"p{i}",
                    "channel": "web",
                    "type": "page_view",
                    "occurred_at": (t0 + timedelta(seconds=o)).isoformat(),
                    "identifiers": {"customer_id": f"C{i % 7}"},
                }
            )
            + b"\n"
            for i, o in enumerate(offsets)
        )
    )
    topic = topic_factory(partitions=2)
    r = subprocess.run(
        [*CLI, str(log), "--topic", topic, "--speed", "60x"],
        env=env(broker, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    msgs = consume(broker, topic, len(offsets))
    assert len(msgs) == len(offsets)
    # producer create times: the pace itself, without process start-up
    stamps = sorted(m.timestamp()[1] for m in msgs)
    wall = (stamps[-1] - stamps[0]) / 1000
    ideal = span / 60
    print(f"60x: {span:.0f} s of event time in {wall:.2f} s (ideal {ideal:.2f} s)")
    assert wall == pytest.approx(ideal, rel=0.10)


def test_missing_topic_is_one_clear_line(broker: EmbeddedBroker, tmp_path: Path) -> None:
    log = tmp_path / "one.jsonl"
    log.write_bytes(sim().records[0] + b"\n")
    r = subprocess.run(
        [*CLI, str(log), "--topic", f"absent-{uuid.uuid4().hex[:6]}"],
        env=env(broker, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr
