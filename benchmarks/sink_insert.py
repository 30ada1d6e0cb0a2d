"""ClickHouseWriter vs raw clickhouse-connect columnar insert, same rows, same chDB engine.

    python benchmarks/sink_insert.py [--rows 100000] [--batch 500] [--rounds 3]

Each measurement lands the rows in a fresh database (so deduplication never hides work):
- raw:           client.insert(columns prebuilt outside the timer, column_oriented=True)
- raw micro:     the same, one insert per ``--batch`` rows (slices prebuilt outside the timer)
- writer 1x:     writer.write(all dict rows) + one flush (dict → column transposition included)
- writer micro:  write + flush per ``--batch`` rows, as the sink agent does per micro-batch
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sinks.clickhouse.client import connect
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.tables import TABLE_COLUMNS
from sinks.clickhouse.writer import ClickHouseWriter
from streams.config import Settings

CHANNELS = ("web", "call_centre", "store", "sms")


def make_rows(n: int) -> list[dict]:
    """Touchpoint rows shaped like the ingest output (100 B JSON payload)."""
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    return [
        {
            "event_id": f"evt-{i:012d}",
            "channel": CHANNELS[i % 4],
            "type": "page_view",
            "occurred_at": t0 + timedelta(seconds=i * 7),
            "identity_key": f"cust-{i % 20_000:08d}",
            "customer_id": f"cust-{i % 20_000:08d}" if i % 3 else "",
            "anonymous_id": f"anon-{i % 50_000:08d}",
            "phone_hash": "",
            "email_hash": "",
            "loyalty_id": "",
            "payload": f'{{"url":"/products/{i}","session_id":"s-{i}","schema_version":1}}',
            "source_partition": i % 4,
            "source_offset": i,
            "ingested_at": now,
        }
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="touchpath-bench-"))
    client = connect(Settings(_env_file=None, data_dir=tmp, clickhouse_database="bench"))
    rows = make_rows(args.rows)
    names = TABLE_COLUMNS["touchpoints"]
    columns = [[r[c] for r in rows] for c in names]
    slices = [[col[i : i + args.batch] for col in columns] for i in range(0, args.rows, args.batch)]
    results: dict[str, list[float]] = {
        "raw": [],
        "raw micro": [],
        "writer 1x": [],
        "writer micro": [],
    }

    for rnd in range(args.rounds):
        for label in results:
            db = f"bench_{label.replace(' ', '_')}_{rnd}"
            migrate(client, db)
            t = time.perf_counter()
            if label == "raw":
                client.insert(
                    "touchpoints", columns, column_names=names, column_oriented=True, database=db
                )
            elif label == "raw micro":
                for part in slices:
                    client.insert(
                        "touchpoints", part, column_names=names, column_oriented=True, database=db
                    )
            elif label == "writer 1x":
                writer = ClickHouseWriter(client, db)
                writer.write("touchpoints", rows)
                writer.flush()
            else:
                writer = ClickHouseWriter(client, db)
                for i in range(0, len(rows), args.batch):
                    writer.write("touchpoints", rows[i : i + args.batch])
                    writer.flush()
            elapsed = time.perf_counter() - t
            landed = client.query(f"SELECT count() FROM {db}.touchpoints").result_rows[0][0]
            assert landed == args.rows, (label, landed)
            results[label].append(args.rows / elapsed)
            # no DROP DATABASE here: measured, a DROP ... SYNC between runs made every later
            # small insert in the process ~2x slower on chDB 26.9

    print(f"{args.rows:,} touchpoint rows, chDB {client.server_version}, {args.rounds} rounds")
    for label, rates in results.items():
        extra = f" ({args.batch} rows per insert)" if label.endswith("micro") else ""
        print(f"  {label:13s} median {statistics.median(rates):>10,.0f} rows/s{extra}")
    client.close()


if __name__ == "__main__":
    main()
