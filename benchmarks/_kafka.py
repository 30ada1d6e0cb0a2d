"""Kafka-side references: publishing the log, raw confluent-kafka consume, bare Faust."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from benchmarks._common import REPO, log
from streams.ingest import FETCH_SIZES
from streams.runtime import spawn, stop_process
from streams.simulator import publish


def publish_log(bootstrap: str, topic: str, records: Sequence[bytes]) -> dict[str, Any]:
    """Produce ``records`` to ``topic`` as outside producers do (``simulator.publish``:
    keyed by the strongest identifier, linger 5 ms); returns count, seconds, rate.

    Uncompressed: Faust's aiokafka consumer (the bare-Faust reference reads this topic) has
    no lz4 codec installed."""
    t0 = time.perf_counter()
    n = publish(
        records,
        bootstrap=bootstrap,
        topic=topic,
        rate=None,
        client_config={"compression.type": "none"},
    )
    seconds = time.perf_counter() - t0
    return {"records": n, "seconds": seconds, "events_per_s": n / seconds}


def publish_customers(bootstrap: str, topic: str, customers: Sequence[dict[str, Any]]) -> None:
    """The CRM feed (keyed by customer id), flushed."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})  # aiokafka reads it: no lz4
    for c in customers:
        while True:
            try:
                p.produce(topic, orjson.dumps(c), c["customer_id"].encode())
                break
            except BufferError:
                p.poll(0.05)
    if p.flush(60):
        raise RuntimeError("customers feed not delivered within 60 s")


def raw_consume(
    bootstrap: str, topic: str, expected: int, timeout: float = 300.0
) -> dict[str, Any]:
    """A fresh consumer (own group id, every partition assigned from the beginning, so no
    group join to wait for) reads ``topic`` with confluent-kafka ``consume(1000)`` and
    ``orjson.loads`` of every value, the ingest consumer's fetch settings; events/s from the
    first to the last message."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **FETCH_SIZES,
            "log_level": 0,
        }
    )
    meta = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)])
    loads = orjson.loads
    count = bad = 0
    first = last = cpu_first = cpu_last = 0.0
    deadline = time.monotonic() + timeout
    try:
        while count + bad < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw consume: {count + bad}/{expected} after {timeout:.0f}s")
            msgs = c.consume(1000, 1.0)
            if not msgs:
                continue
            for m in msgs:
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(str(m.error()))
                    continue
                if not count + bad:
                    first = time.perf_counter()
                    cpu_first = time.process_time()
                try:
                    loads(m.value())
                    count += 1
                except orjson.JSONDecodeError:
                    bad += 1  # the simulator's invalid_json / invalid_utf8 records
            last = time.perf_counter()
            cpu_last = time.process_time()
    finally:
        c.close()
    total = count + bad
    seconds = max(last - first, 1e-9)
    cpu = cpu_last - cpu_first
    return {
        "events": total,
        "seconds": seconds,
        "events_per_s": total / seconds,
        "cpu_seconds": cpu,
        "events_per_cpu_s": total / cpu if cpu > 0 else None,
    }


def bare_faust(
    bootstrap: str, topic: str, expected: int, work_dir: Path, timeout: float = 900.0
) -> dict[str, Any]:
    """Run ``benchmarks._bare_faust`` as a child over ``topic``; events/s between the first
    and the last message its agent saw."""
    out = work_dir / f"bare-faust-{uuid.uuid4().hex[:6]}.json"
    log_path = work_dir / "bare-faust.log"
    cmd = [sys.executable, "-m", "benchmarks._bare_faust", "--bootstrap", bootstrap,
           "--topic", topic, "--expected", str(expected), "--out", str(out),
           "--app-id", f"bench-bare-{uuid.uuid4().hex[:8]}"]  # fmt: skip
    started = time.monotonic()
    proc = spawn(cmd, log_path=log_path, cwd=REPO)
    try:
        while not out.exists():
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"bare Faust app exited ({proc.returncode}):\n{tail}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"bare Faust: not done within {timeout:.0f}s")
            time.sleep(0.25)
    finally:
        stop_process(proc, timeout=10)
    res = json.loads(out.read_text())
    seconds = max(res["last"] - res["first"], 1e-9)
    log(f"bare Faust: {res['count']:,} messages in {seconds:.1f}s")
    cpu = res["cpu_last"] - res["cpu_first"]
    return {
        "events": res["count"],
        "seconds": seconds,
        "events_per_s": res["count"] / seconds,
        "cpu_seconds": cpu,
        "events_per_cpu_s": res["count"] / cpu if cpu > 0 else None,
        "wall_seconds_incl_start": time.monotonic() - started,
    }
