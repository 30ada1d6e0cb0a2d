"""The pure part of ingest: validate, route by identity key, size micro-batches, dead-letter."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from aiokafka.partitioner import DefaultPartitioner

from schemas.validation import Validator
from streams import metrics, microbatch
from streams.ingest import Ingestor, RawRecord, split_batch
from streams.partitioning import partition_for

NOW = datetime(2026, 3, 10, tzinfo=UTC)


def _event(i: int, customer: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"w-{i}",
            "channel": "web",
            "type": "page_view",
            "occurred_at": "2026-03-01T10:00:00+00:00",
            "identifiers": {"customer_id": customer},
            "url": f"/p/{i}",
        }
    )


def test_partition_matches_fausts_partitioner():
    faust_partitioner = DefaultPartitioner()
    for i in range(2000):
        key = f"customer_id:C{i}".encode()
        assert partition_for(key, 4) == faust_partitioner(key, [0, 1, 2, 3], [0, 1, 2, 3])
        assert partition_for(key, 7) == faust_partitioner(key, list(range(7)), list(range(7)))


def test_split_routes_valid_by_identity_key_and_keeps_order():
    v = Validator(b"k")
    raws = [_event(i, f"C{i % 10}") for i in range(200)]
    raws.insert(50, b"{not json")
    raws.insert(120, orjson.dumps({"event_id": "x", "channel": "fax"}))
    records = [RawRecord(r, "raw", 0, off) for off, r in enumerate(raws)]
    out = split_batch(records, v, partitions=4, now=NOW, max_items=7)
    assert sorted(out.dead_by_reason.items()) == [("invalid_json", 1), ("unknown_channel", 1)]
    assert [d.source_offset for d in out.dead_letters] == [50, 120]
    assert out.dead_letters[0].raw == b"{not json"
    assert sum(out.valid_by_channel.values()) == 200
    seen = []
    for part, chunks in out.batches.items():
        for chunk in chunks:
            assert 1 <= len(chunk) <= 7
            for item in chunk:
                assert partition_for(item["k"].encode(), 4) == part
                seen.append(item)
    assert len(seen) == 200
    # per identity key, the source order survives routing and chunking
    by_key: dict[str, list[int]] = {}
    for part in sorted(out.batches):
        for chunk in out.batches[part]:
            for item in chunk:
                by_key.setdefault(item["k"], []).append(item["o"])
    assert all(offs == sorted(offs) for offs in by_key.values())


def test_micro_batches_stay_under_the_byte_bound():
    v = Validator(b"k")
    big = [
        RawRecord(orjson.dumps({**orjson.loads(_event(i, "C1")), "note": "z" * 5000}), "raw", 0, i)
        for i in range(100)
    ]
    out = split_batch(big, v, partitions=1, now=NOW, max_items=500, max_bytes=60_000)
    chunks = out.batches[0]
    assert len(chunks) > 1
    for chunk in chunks:
        assert len(microbatch.encode(chunk, NOW.isoformat())) < 70_000
    assert sum(len(c) for c in chunks) == 100


def test_dead_letters_never_carry_raw_pii():
    v = Validator(b"k")
    raw = (
        b'{"event_id":"c-1","channel":"call_centre","type":"bogus",'
        b'"identifiers":{"phone":"+8613800000001"}}'
    )
    out = split_batch([RawRecord(raw, "raw", 3, 9)], v, partitions=4, now=NOW)
    (dl,) = out.dead_letters
    assert dl.reason == "unknown_type"  # the first error in field order
    assert b"13800000001" not in dl.raw
    assert "13800000001" not in dl.model_dump_json()
    assert (dl.source_topic, dl.source_partition, dl.source_offset, dl.raw_size) == (
        "raw",
        3,
        9,
        len(raw),
    )


def test_empty_record_is_a_dead_letter_not_a_crash():
    out = split_batch([RawRecord(None, "raw", 0, 0)], Validator(b"k"), partitions=2, now=NOW)
    assert out.dead_by_reason == {"invalid_json": 1}


def test_run_guarded_counts_and_logs_an_error_and_never_raises(caplog) -> None:
    errors = metrics.AGENT_ERRORS.labels(agent="ingest")
    before = errors._value.get()
    ingestor = Ingestor.__new__(Ingestor)  # no Kafka: only the supervision is under test

    def broken(*_: object) -> int:
        raise RuntimeError("broker on fire")

    ingestor.run_once = broken  # type: ignore[method-assign]
    assert ingestor.run_guarded() is False
    assert errors._value.get() == before + 1
    assert "ingest loop error" in caplog.text and "broker on fire" in caplog.text
    ingestor.run_once = lambda *_: 0  # type: ignore[method-assign]
    assert ingestor.run_guarded() is True
    assert errors._value.get() == before + 1


def test_the_raw_consumer_refetches_soon_after_an_alignment_pause() -> None:
    # librdkafka's default waits 1 s before fetching again for a partition whose queue was
    # full, and a rewind after an alignment pause kept that wait: a backlog paid 1 s per pause
    from confluent_kafka import Consumer

    from streams.config import Settings
    from streams.ingest import consumer_config

    conf = consumer_config(Settings(_env_file=None), "127.0.0.1:1")
    assert conf["fetch.queue.backoff.ms"] <= 50
    Consumer({**conf, "log_level": 0}).close()  # librdkafka knows every key and value
