"""Shared steps of the integration tests that drive a worker with simulator traffic."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from replay.backtest import BacktestResult, backtest
from schemas.validation import Validator
from streams.config import Settings
from streams.engine.care import CareEngine, load_policy
from streams.engine.rules import builtin_rules
from streams.simulator import SimResult, publish, write_outputs
from tests.integration.conftest import WorkerHandle, wait_until


def counter(worker: WorkerHandle, name: str) -> float:
    """Current value of a ``*_total`` metric of ``worker`` (labels summed)."""
    return worker.counters().get(name, 0.0)


def expected(tmp_path: Path, sim: SimResult) -> BacktestResult:
    """What the pure engine (built-in rules and care policy) makes of ``sim``."""
    write_outputs(sim, tmp_path / "sim")
    return backtest(
        [tmp_path / "sim" / "events.jsonl.gz"],
        builtin_rules(),
        validator=Validator.from_settings(Settings()),
        customers_path=tmp_path / "sim" / "customers.jsonl",
        care=CareEngine(load_policy()),
    )


def publish_customers(worker: WorkerHandle, customers: list[dict]) -> None:
    """The CRM feed to ``worker``'s customers topic; waits until all are applied.

    Compressed with lz4, as CRM connectors often are: Faust agents must read it.
    """
    s = worker.settings
    p = Producer(
        {
            "bootstrap.servers": worker.env["TOUCHPATH_KAFKA_BOOTSTRAP"],
            "compression.type": "lz4",
        }
    )
    for c in customers:
        p.produce(s.topic(s.topic_customers), orjson.dumps(c), c["customer_id"].encode())
    assert p.flush(30) == 0, "the CRM feed was not delivered to the broker"
    wait_until(
        lambda: counter(worker, "touchpath_profiles_total") >= len(customers),
        60,
        "profiles applied",
        worker,
    )


def publish_records(worker: WorkerHandle, records: list[bytes]) -> None:
    """Raw producer records to ``worker``'s raw topic (as live producers send them)."""
    s = worker.settings
    publish(
        records,
        bootstrap=worker.env["TOUCHPATH_KAFKA_BOOTSTRAP"],
        topic=s.topic(s.topic_raw),
        rate=None,
    )


class Record(NamedTuple):
    """One record read back from a topic, with where it was."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] | None
    partition: int
    offset: int


def read_topics(bootstrap: str, topics: list[str]) -> dict[str, list[Record]]:
    """Every :class:`Record` of ``topics`` from offset 0, per topic.

    A partition is done at its end (a fetch found nothing more: records come in whole
    batches, so the embedded broker's short high watermark loses none) or at a record
    written after the reading started (watermark keepalives keep coming on a live pipeline).
    """
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{time.time_ns()}",
            "enable.partition.eof": True,
        }
    )
    parts = {(t, p) for t in topics for p in md.topics[t].partitions}
    consumer.assign([TopicPartition(t, p, 0) for t, p in parts])
    out: dict[str, list[Record]] = {t: [] for t in topics}
    started_ms = time.time() * 1000
    idle = 0
    while parts and idle < 3:
        msgs = consumer.consume(1000, timeout=1.0)
        idle = 0 if msgs else idle + 1
        for m in msgs:
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    parts.discard((m.topic(), m.partition()))
                continue
            record = Record(m.key(), m.value(), m.headers(), m.partition(), m.offset())
            out[m.topic()].append(record)
            if m.timestamp()[1] >= started_ms:
                parts.discard((m.topic(), m.partition()))
    consumer.close()
    return out


def settle_pain_points(worker: WorkerHandle, want: int) -> set[str]:
    """Wait until the landed pain points reach ``want`` and stop changing; their ids.
    Gives up after 300 s, or once their count has not moved for 90 s (a loss, not slowness).
    """
    last = [-1, time.monotonic()]

    def landed() -> int:
        return len(worker.query("pain_point_ids"))

    def reached_or_stuck() -> bool:
        n = landed()
        if n != last[0]:
            last[:] = [n, time.monotonic()]
        elif time.monotonic() - last[1] > 90:
            pytest.fail(f"{n} of {want} pain points landed, and no more for 90 s")
        return n >= want

    try:
        wait_until(reached_or_stuck, 300, f"{want} pain points landed", worker)
    except BaseException:
        c = {k: v for k, v in worker.counters().items() if "{" not in k}
        print("landed", landed(), "counters", c)
        gauges = [ln for ln in worker.gauges().splitlines() if "watermark" in ln or "waiting" in ln]
        print("journey watermarks and waiting events:", *gauges, sep="\n")
        warnings = [ln for ln in worker.log().splitlines() if "WARN" in ln or "ERROR" in ln]
        print("worker warnings (last 40):", *warnings[-40:], sep="\n")
        raise
    time.sleep(2.0)  # anything extra would land by now
    return {r["pain_point_id"] for r in worker.query("pain_point_ids")}


def committed_offsets(worker: WorkerHandle, topic: str) -> dict[int, int]:
    """The worker group's committed offset of each partition of ``topic``."""
    group = Consumer(
        {
            "bootstrap.servers": worker.env["TOUCHPATH_KAFKA_BOOTSTRAP"],
            "group.id": worker.env["TOUCHPATH_APP_ID"],
        }
    )
    parts = [TopicPartition(topic, p) for p in range(worker.settings.partitions)]
    committed = {tp.partition: tp.offset for tp in group.committed(parts, timeout=10)}
    group.close()
    return committed


def journey_events(records: list[Record]) -> dict[str, list[tuple[str, float, int, int]]]:
    """Per customer, the events on the journey topic ``records``: (event id, event time,
    partition, offset)."""
    out: dict[str, list[tuple[str, float, int, int]]] = {}
    for r in records:
        for item in orjson.loads(r.value).get("items", ()) if r.value else ():
            if "ev" in item:
                ev = (item["ev"]["event_id"], item["ts"], r.partition, r.offset)
                out.setdefault(item["c"], []).append(ev)
    return out


def explain_pain_points(worker: WorkerHandle, want: list[dict], got: set[str]) -> str:
    """Why landed pain points differ from ``want`` (the backtest's): for a failure message.

    Says how many missing ones were raised (on the pain-points topic) but not landed, and
    for the first few missing ones the customer's journey-topic records of the two days
    before it (event, partition, offset) beside the group's committed offsets: an event on
    the topic that the journey stage did not apply points at the journey stage, one not on
    it at identify.
    """
    s = worker.settings
    t_events, t_pains = s.topic(s.topic_journey_events), s.topic(s.topic_pain_points)
    topics = read_topics(worker.env["TOUCHPATH_KAFKA_BOOTSTRAP"], [t_events, t_pains])
    by_id = {p["pain_point_id"]: p for p in want}
    missing = sorted((by_id[i] for i in set(by_id) - got), key=lambda p: p["detected_at"])
    raised = {orjson.loads(r.value)["pain_point_id"] for r in topics[t_pains] if r.value}
    stepped = journey_events(topics[t_events])
    committed = committed_offsets(worker, t_events)
    raised_missing = raised & {p["pain_point_id"] for p in missing}
    lines = [
        f"{len(missing)} missing, {len(got - set(by_id))} extra; "
        f"missing but raised (on {t_pains}): {len(raised_missing)}; "
        f"journey topic committed at {committed}"
    ]
    for p in missing[:5]:
        at = datetime.fromisoformat(p["detected_at"]).timestamp()
        events = stepped.get(p["customer_id"], ())
        near = sorted((e for e in events if at - 2 * 86400 <= e[1] <= at), key=lambda e: e[1])
        lines.append(f"{p['rule_id']} {p['customer_id']} {p['detected_at']}: {near[-12:]}")
    return "\n".join(lines)


def final_sent(actions: list[dict]) -> set[str]:
    """Action ids whose last decision is ``sent``: what a receiver must get, once each."""
    last: dict[str, str] = {}
    for a in actions:
        last[a["action_id"]] = a["status"]
    return {k for k, s in last.items() if s == "sent"}
