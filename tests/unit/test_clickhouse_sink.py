"""ClickHouse sink on the real embedded engine (chDB): migrations, writer, queries, connect.

chDB allows one data directory per process at a time (a second directory fails while any
client is open) and one process per directory, so this module opens one engine for all its
tests and gives each test its own database.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import OperationalError

from sinks.clickhouse import (
    TABLE_COLUMNS,
    ClickHouseRejected,
    ClickHouseUnavailable,
    ClickHouseWriter,
    MigrationError,
    connect,
    migrate,
    query_names,
    run_query,
)
from sinks.clickhouse.migrate import default_ddl_dir, load_migrations
from sinks.clickhouse.sqlfiles import split_statements
from streams.config import Settings

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
CHANNELS = ("web", "call_centre", "store", "sms")


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "clickhouse_host": None,
        "clickhouse_database": "touchpath_test",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="module")
def ch_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(tmp_path_factory.mktemp("chdb"))


@pytest.fixture(scope="module")
def ch(ch_settings: Settings) -> Iterator[Client]:
    client = connect(ch_settings)
    yield client
    client.close()


@pytest.fixture
def db(ch: Client) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    migrate(ch, name)
    yield name
    ch.command(f"DROP DATABASE IF EXISTS {name} SYNC")


def touchpoints(n: int, start: int = 0, ingested_at: datetime = T0) -> list[dict[str, Any]]:
    rows = []
    for i in range(start, start + n):
        customer = f"cust-{i % 700}" if i % 4 else ""
        rows.append(
            {
                "event_id": f"evt-{i:08d}",
                "channel": CHANNELS[i % 4],
                "type": "page_view",
                "occurred_at": T0 + timedelta(minutes=i, microseconds=123_000),
                "identity_key": customer or f"anon-{i}",
                "customer_id": customer,
                "anonymous_id": f"anon-{i}",
                "phone_hash": "",
                "email_hash": "",
                "loyalty_id": "",
                "payload": '{"schema_version":1}',
                "source_partition": i % 4,
                "source_offset": i,
                "ingested_at": ingested_at,
            }
        )
    return rows


def dead_letters(n: int) -> list[dict[str, Any]]:
    reasons = ("bad_json", "unknown_channel", "oversize")
    return [
        {
            "dead_letter_id": f"dl-{i}",
            "reason": reasons[i % 3],
            "error": "boom",
            "source_topic": "touchpoints.raw",
            "source_partition": 0,
            "source_offset": i,
            "raw": b"\xff\x00{not json" + bytes([i % 256]),
            "raw_size": 12,
            "received_at": T0,
        }
        for i in range(n)
    ]


def count(ch: Client, db: str, table: str, final: bool = False) -> int:
    sql = f"SELECT count() FROM {db}.{table}{' FINAL' if final else ''}"
    return int(ch.query(sql).result_rows[0][0])


class FlakyClient:
    """The real client, except that ``insert`` fails the next ``failures`` calls.

    With ``after_insert`` the insert really happens before the error (a lost acknowledgement).
    """

    def __init__(self, client: Client, failures: int, *, after_insert: bool = False) -> None:
        self._client = client
        self.failures = failures
        self.after_insert = after_insert
        self.calls = 0

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            if self.after_insert:
                self._client.insert(*args, **kwargs)
            raise OperationalError("simulated: connection reset by peer")
        return self._client.insert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


# --- migrations --------------------------------------------------------------------------


def test_migrate_creates_tables_and_second_run_applies_nothing(ch: Client) -> None:
    name = f"m_{uuid.uuid4().hex[:12]}"
    shipped = [m.version for m in load_migrations()]
    assert shipped[:3] == [1, 2, 3]
    assert migrate(ch, name) == shipped
    tables = {r[0] for r in ch.query(f"SHOW TABLES FROM {name}").result_rows}
    assert {"touchpoints", "dead_letters", "schema_migrations"} <= tables
    assert migrate(ch, name) == []
    assert count(ch, name, "schema_migrations") == len(shipped)
    ch.command(f"DROP DATABASE {name} SYNC")


def test_migrate_applies_a_later_file_to_an_older_schema(ch: Client, tmp_path: Path) -> None:
    name = f"m_{uuid.uuid4().hex[:12]}"
    ddl = tmp_path / "ddl"
    ddl.mkdir()
    (ddl / "0001_init.sql").write_text((default_ddl_dir() / "0001_init.sql").read_text())
    (ddl / "README.txt").write_text("not a migration")
    assert migrate(ch, name, ddl_dir=ddl) == [1]

    (ddl / "0002_more.sql").write_text(
        "-- a comment; with a semicolon\n"
        "CREATE TABLE IF NOT EXISTS {db}.extra (id String) ENGINE = MergeTree ORDER BY id;\n"
        "ALTER TABLE {db}.touchpoints ADD COLUMN IF NOT EXISTS note String DEFAULT 'a;b';\n"
    )
    assert migrate(ch, name, ddl_dir=ddl) == [2]
    assert migrate(ch, name, ddl_dir=ddl) == []
    columns = [r[0] for r in ch.query(f"DESCRIBE TABLE {name}.touchpoints").result_rows]
    assert columns[-1] == "note"
    versions = ch.query(f"SELECT version, name FROM {name}.schema_migrations ORDER BY version")
    assert versions.result_rows == [(1, "init"), (2, "more")]
    ch.command(f"DROP DATABASE {name} SYNC")


def test_failed_migration_is_not_recorded_and_names_the_file(ch: Client, tmp_path: Path) -> None:
    name = f"m_{uuid.uuid4().hex[:12]}"
    (tmp_path / "0001_broken.sql").write_text("CREATE TABLE {db}.x (id String) ENGINE = Nope")
    with pytest.raises(MigrationError, match=r"0001_broken\.sql statement 1 failed"):
        migrate(ch, name, ddl_dir=tmp_path)
    assert count(ch, name, "schema_migrations") == 0
    ch.command(f"DROP DATABASE {name} SYNC")


def test_column_registry_matches_the_migrated_tables(ch: Client, db: str) -> None:
    for table, columns in TABLE_COLUMNS.items():
        described = [r[0] for r in ch.query(f"DESCRIBE TABLE {db}.{table}").result_rows]
        assert described == columns, table


def test_split_statements_ignores_semicolons_in_strings_and_comments() -> None:
    sql = "SELECT ';' -- x;y\n; /* ; */ ;\nSELECT \"a;b\", 'it''s;' ;;"
    assert split_statements(sql) == ["SELECT ';' -- x;y", "SELECT \"a;b\", 'it''s;'"]


# --- writer ------------------------------------------------------------------------------


def test_writer_round_trip_lands_every_row(ch: Client, db: str) -> None:
    flushed: list[tuple[str, int]] = []
    writer = ClickHouseWriter(ch, db, on_flush=lambda t, n, s: flushed.append((t, n)))
    rows = touchpoints(10_000)
    writer.write("touchpoints", rows[:4_000])
    writer.write("touchpoints", rows[4_000:])
    writer.write("dead_letters", dead_letters(30))
    assert writer.pending_rows == 10_030

    assert writer.flush() == 10_030
    assert writer.pending_rows == 0
    assert sorted(flushed) == [("dead_letters", 30), ("touchpoints", 10_000)]  # one insert each
    assert count(ch, db, "touchpoints") == 10_000
    assert count(ch, db, "dead_letters") == 30

    customers = len({r["customer_id"] for r in rows if r["customer_id"]})
    totals = run_query(ch, "landed_totals", database=db)
    assert totals == [{"touchpoints": 10_000, "dead_letters": 30, "customers": customers}]
    by_channel = run_query(ch, "landed_by_channel", database=db)
    assert {r["channel"]: r["events"] for r in by_channel} == {c: 2_500 for c in CHANNELS}
    by_reason = run_query(ch, "dead_letters_by_reason", database=db)
    assert {r["reason"]: r["n"] for r in by_reason} == {
        "bad_json": 10,
        "unknown_channel": 10,
        "oversize": 10,
    }

    # values come back as written: aware UTC datetimes (ms precision), raw bytes intact
    got = ch.query(
        f"SELECT occurred_at, source_offset FROM {db}.touchpoints WHERE event_id = 'evt-00000042'"
    ).result_rows
    assert got == [(rows[42]["occurred_at"], 42)]
    raw = ch.query(
        f"SELECT raw FROM {db}.dead_letters WHERE dead_letter_id = 'dl-7'",
        query_formats={"String": "bytes"},
    ).result_rows
    assert raw == [(b"\xff\x00{not json\x07",)]


def test_rewriting_the_same_batch_does_not_double_count(ch: Client, db: str) -> None:
    rows = touchpoints(2_000)
    writer = ClickHouseWriter(ch, db)
    writer.write("touchpoints", rows)
    writer.flush()
    writer.write("touchpoints", rows)  # a retry of the same batch: same token
    writer.flush()
    assert count(ch, db, "touchpoints") == 2_000  # dropped at insert by the dedup token

    # a replay re-lands the events cut into other batches (other tokens), as new versions
    replayed = touchpoints(2_000, ingested_at=T0 + timedelta(days=1))
    for part in (replayed[:700], replayed[700:]):
        writer.write("touchpoints", part)
        writer.flush()
    assert count(ch, db, "touchpoints") == 4_000
    assert count(ch, db, "touchpoints", final=True) == 2_000
    assert run_query(ch, "landed_totals", database=db)[0]["touchpoints"] == 2_000
    ch.command(f"OPTIMIZE TABLE {db}.touchpoints FINAL")
    assert count(ch, db, "touchpoints") == 2_000
    kept = ch.query(f"SELECT DISTINCT ingested_at FROM {db}.touchpoints").result_rows
    assert kept == [(T0 + timedelta(days=1),)]  # ReplacingMergeTree keeps the latest version


def test_flush_retries_until_clickhouse_answers(ch: Client, db: str) -> None:
    errors: list[Exception] = []
    flaky = FlakyClient(ch, failures=3)
    writer = ClickHouseWriter(
        cast(Client, flaky), db, retry_for=10, backoff_initial=0.01, on_error=errors.append
    )
    writer.write("touchpoints", touchpoints(500))
    assert writer.flush() == 500
    assert flaky.calls == 4
    assert len(errors) == 3
    assert count(ch, db, "touchpoints") == 500


def test_flush_gives_up_keeps_rows_and_lands_them_once_later(ch: Client, db: str) -> None:
    flaky = FlakyClient(ch, failures=10_000)
    writer = ClickHouseWriter(cast(Client, flaky), db, retry_for=0.3, backoff_initial=0.02)
    writer.write("touchpoints", touchpoints(1_000))
    writer.write("dead_letters", dead_letters(5))

    started = time.monotonic()
    with pytest.raises(ClickHouseUnavailable, match=r"cannot insert .* rows into .* after \d+"):
        writer.flush()
    assert time.monotonic() - started < 2
    assert writer.pending_rows == 1_005
    assert count(ch, db, "touchpoints") == 0

    writer.write("touchpoints", touchpoints(500, start=1_000))  # more rows during the outage
    flaky.failures = 0
    assert writer.flush() == 1_505
    assert writer.pending_rows == 0
    assert count(ch, db, "touchpoints") == 1_500
    assert count(ch, db, "dead_letters") == 5


def test_retry_after_a_lost_acknowledgement_is_dropped_by_the_dedup_token(
    ch: Client, db: str
) -> None:
    flaky = FlakyClient(ch, failures=2, after_insert=True)
    writer = ClickHouseWriter(cast(Client, flaky), db, retry_for=10, backoff_initial=0.01)
    writer.write("touchpoints", touchpoints(1_000))
    writer.flush()
    assert flaky.calls == 3  # the batch really was inserted three times
    assert count(ch, db, "touchpoints") == 1_000  # without FINAL: ClickHouse kept one copy


def test_batch_that_cannot_be_encoded_is_rejected_without_retrying(ch: Client, db: str) -> None:
    writer = ClickHouseWriter(ch, db, retry_for=30)
    bad = touchpoints(3)
    bad[1]["source_partition"] = "not a number"
    writer.write("touchpoints", bad)
    started = time.monotonic()
    with pytest.raises(ClickHouseRejected, match="rejected a batch of 3 touchpoints rows"):
        writer.flush()
    assert time.monotonic() - started < 2
    assert writer.pending_rows == 3
    assert writer.discard("touchpoints") == bad
    assert writer.pending_rows == 0


def test_write_checks_table_and_columns_before_buffering(ch: Client, db: str) -> None:
    writer = ClickHouseWriter(ch, db)
    with pytest.raises(ValueError, match="unknown ClickHouse table"):
        writer.write("nope", [{}])
    rows = touchpoints(3)
    del rows[2]["payload"]
    with pytest.raises(ValueError, match="lacks column 'payload'"):
        writer.write("touchpoints", rows)
    assert writer.pending_rows == 0


def test_close_flushes(ch: Client, db: str) -> None:
    writer = ClickHouseWriter(ch, db)
    writer.write("dead_letters", dead_letters(4))
    writer.close()
    assert count(ch, db, "dead_letters") == 4


# --- queries -----------------------------------------------------------------------------


def test_named_queries_are_listed_and_unknown_names_fail(ch: Client, db: str) -> None:
    assert {"dead_letters_by_reason", "landed_by_channel", "landed_totals"} <= set(query_names())
    assert run_query(ch, "landed_by_channel", database=db) == []
    with pytest.raises(KeyError, match="no dashboard query 'nope'"):
        run_query(ch, "nope", database=db)


# --- connect -----------------------------------------------------------------------------


def test_connect_to_a_closed_port_fails_fast_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends
    settings = make_settings(tmp_path, clickhouse_host="127.0.0.1", clickhouse_port=port)
    started = time.monotonic()
    with pytest.raises(ClickHouseUnavailable) as info:
        connect(settings)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert message.startswith(f"cannot reach ClickHouse at 127.0.0.1:{port}: ")
    assert "refused" in message.lower()
    assert "\n" not in message


def test_connect_embedded_again_shares_the_open_engine(ch: Client, ch_settings: Settings) -> None:
    other = connect(ch_settings)
    other.command("CREATE TABLE IF NOT EXISTS shared (x UInt8) ENGINE = Memory")
    assert ch.query(f"EXISTS TABLE {ch_settings.clickhouse_database}.shared").result_rows == [(1,)]
    other.close()
    assert ch.query("SELECT 1").result_rows == [(1,)]  # closing one client keeps the engine


def test_second_chdb_directory_in_one_process_fails_clearly(ch: Client, tmp_path: Path) -> None:
    with pytest.raises(ClickHouseUnavailable, match="cannot open embedded ClickHouse") as info:
        connect(make_settings(tmp_path))
    assert "already initialized with path" in str(info.value)
    assert "\n" not in str(info.value)


def test_another_process_cannot_open_the_same_chdb_directory(
    ch: Client, ch_settings: Settings
) -> None:
    script = (
        "import sys, clickhouse_connect\n"
        "try:\n"
        "    clickhouse_connect.get_client(interface='chdb', path=sys.argv[1])\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__); sys.exit(3)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(ch_settings.chdb_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Another server instance in same directory is already running" in proc.stderr


def test_a_dashboard_query_answers_while_the_write_thread_is_busy(
    ch: Client, ch_settings: Settings
) -> None:
    """A worker's named queries run on their own connection and thread: during a backlog
    they must not wait behind every insert the agents have queued on the write thread."""
    import asyncio
    import threading

    from streams.warehouse import Warehouse

    warehouse = Warehouse(ch_settings)
    release = threading.Event()

    async def query_while_writing() -> tuple[list[dict], bool]:
        writing = asyncio.ensure_future(warehouse.call(release.wait, 30))
        await asyncio.sleep(0.2)  # the write thread is now inside release.wait
        rows = await asyncio.wait_for(warehouse.query("landed_totals"), 10)
        still_writing = not writing.done()
        release.set()
        await writing
        return rows, still_writing

    try:
        warehouse.open()
        # a connection of its own too: one client serializes its calls on a lock
        assert warehouse.reader is not None and warehouse.reader is not warehouse.client
        rows, still_writing = asyncio.run(query_while_writing())
    finally:
        release.set()
        warehouse.close()
    assert still_writing
    assert rows[0]["touchpoints"] == 0 and rows[0]["dead_letters"] == 0
    assert ch.query("SELECT 1").result_rows == [(1,)]  # closing the warehouse keeps the engine
