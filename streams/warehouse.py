"""The worker's ClickHouse: the batching writer and dashboard queries, each on its own thread.

chDB is not an async library, so calls run on dedicated threads that agents and web views
``await`` without blocking Faust's loop. Writes go through one connection and one thread;
dashboard queries through a second connection and thread, so that a query does not wait
behind every insert the agents have queued (during a backlog that was seconds). chDB
serves any number of connections to the engine its process hosts; the same code talks to
a ClickHouse server when one is configured.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from clickhouse_connect.driver import Client

from sinks.clickhouse.client import connect
from sinks.clickhouse.errors import ClickHouseRejected, ClickHouseUnavailable
from sinks.clickhouse.faults import FaultInjectingClient
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.queries import run_query
from sinks.clickhouse.writer import ClickHouseWriter
from streams import faults, metrics
from streams.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class Warehouse:
    """Owns the ClickHouse client of a worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="clickhouse")
        self._read_executor = ThreadPoolExecutor(1, thread_name_prefix="clickhouse-read")
        self.client: Client | None = None
        self.reader: Client | None = None
        self.writer: ClickHouseWriter | None = None

    # -- lifecycle (blocking; call from the CLI or through `call`) -------------------------
    def open(self) -> list[int]:
        """Connect and migrate; returns the migration versions applied now."""
        return self._executor.submit(self._open).result()

    def _open(self) -> list[int]:
        self.client = connect(self.settings)
        applied = migrate(self.client, self.settings.clickhouse_database)
        self.reader = connect(self.settings)
        if self.settings.fault_clickhouse_file is not None:
            fault_file = self.settings.fault_clickhouse_file
            self.client = FaultInjectingClient(self.client, fault_file)  # type: ignore[assignment]
            self.reader = FaultInjectingClient(self.reader, fault_file)  # type: ignore[assignment]
        self.writer = ClickHouseWriter(
            self.client,
            database=self.settings.clickhouse_database,
            on_flush=_on_flush,
            on_error=_on_error,
            # Short: the long wait for an outage to end is land()'s async backoff, which
            # leaves the write thread free for the other agents' batches meanwhile.
            retry_for=2.0,
        )
        return applied

    def close(self) -> None:
        """Flush what is buffered and close both connections."""

        def _close() -> None:
            if self.writer is not None:
                self.writer.close()
            if self.client is not None:
                self.client.close()

        # The final flush first: a long query still running must not delay it.
        flushed = self._executor.submit(_close)
        self._read_executor.shutdown(wait=True)
        if self.reader is not None:
            self.reader.close()
        flushed.result()
        self._executor.shutdown(wait=True)

    # -- async API for agents and web views -------------------------------------------------
    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the write thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def land(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Write rows and flush them; returns only once they are in ClickHouse.

        While ClickHouse is away this keeps retrying (the writer keeps the rows), so the
        calling agent does not ack its messages: back-pressure instead of loss.
        """
        assert self.writer is not None, "Warehouse.open() first"
        await faults.hold(f"land.{table}")
        writer = self.writer
        await self.call(writer.write, table, rows)
        metrics.SINK_BACKLOG.set(writer.pending_rows)
        delay = 0.5
        while True:
            try:
                await self.call(writer.flush)
                break
            except ClickHouseRejected as exc:
                # A batch ClickHouse can never accept is a bug, not an outage: retrying
                # would stall the stream forever. Count it, log it loudly, move on.
                lost = writer.discard(exc.table)
                metrics.SINK_REJECTED_ROWS.labels(table=exc.table).inc(len(lost))
                log.error("ClickHouse rejected %d %s rows: %s", len(lost), exc.table, exc)
            except ClickHouseUnavailable as exc:
                log.error(
                    "ClickHouse unavailable, %d rows held, retrying: %s", writer.pending_rows, exc
                )
                metrics.SINK_BACKLOG.set(writer.pending_rows)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        metrics.SINK_BACKLOG.set(writer.pending_rows)

    async def query(self, name: str, params: dict[str, Any] | None = None) -> list[dict]:
        """Run a named dashboard query on the read connection (not behind queued inserts)."""
        assert self.reader is not None, "Warehouse.open() first"
        reader, db = self.reader, self.settings.clickhouse_database

        def run() -> list[dict]:
            return run_query(reader, name, params, database=db)

        return await asyncio.get_running_loop().run_in_executor(self._read_executor, run)


def _on_flush(table: str, rows: int, seconds: float) -> None:
    metrics.SINK_ROWS.labels(table=table).inc(rows)
    metrics.SINK_FLUSH_SECONDS.labels(table=table).observe(seconds)


def _on_error(exc: BaseException) -> None:
    metrics.SINK_ERRORS.inc()
