"""Batching, retrying, idempotent ClickHouse writer. Knows nothing of Faust or Kafka.

``write(table, rows)`` appends rows (dicts) to a per-table columnar buffer; ``flush()``
sends each table's buffer as one columnar insert. A failed insert is retried with
exponential backoff and jitter for up to ``retry_for`` seconds; then
:class:`ClickHouseUnavailable` is raised and the rows stay buffered, so the caller can
flush again later (and must not commit its source offsets meanwhile).

Idempotency: a buffer is *sealed* into a batch when first sent and keeps its
``insert_deduplication_token`` (a hash of its identity columns) across retries, so an
insert that landed but whose acknowledgement was lost is dropped by ClickHouse when
retried (tables set ``non_replicated_deduplication_window``). Whatever slips through
(replays, re-batched retries) is collapsed by ReplacingMergeTree; read with ``FINAL``.
"""

from __future__ import annotations

import hashlib
import logging
import random
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import DataError, NotSupportedError, ProgrammingError

from sinks.clickhouse.errors import ClickHouseRejected, ClickHouseUnavailable, one_line
from sinks.clickhouse.tables import TABLES, TableSpec

logger = logging.getLogger(__name__)

OnFlush = Callable[[str, int, float], None]
OnError = Callable[[Exception], None]

# Errors raised while encoding a batch on the client side: the same batch fails the same
# way every time, so retrying only delays the pipeline.
_REJECTED = (
    DataError,
    ProgrammingError,
    NotSupportedError,
    TypeError,
    ValueError,
    AttributeError,
    OverflowError,
    struct.error,
)

_TRANSPOSE_STEP = 2048


@dataclass(slots=True)
class _Batch:
    columns: list[list[Any]]
    rows: int
    token: str


class ClickHouseWriter:
    """Buffer rows per table and land them with one columnar insert per table per flush.

    ``write`` may be called from another thread while ``flush`` runs (the buffer swap is
    locked); ``flush`` calls are serialized. ``on_flush(table, rows, seconds)`` is called
    after each successful insert and ``on_error(exc)`` after each failed attempt, for
    metrics; exceptions from them are logged, never raised.
    """

    def __init__(
        self,
        client: Client,
        database: str = "touchpath",
        *,
        tables: Mapping[str, TableSpec] = TABLES,
        retry_for: float = 60.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        dedup_token: bool = True,
        on_flush: OnFlush | None = None,
        on_error: OnError | None = None,
    ) -> None:
        self._client = client
        self._database = database
        self._tables = dict(tables)
        self.retry_for = retry_for
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.dedup_token = dedup_token
        self.on_flush = on_flush
        self.on_error = on_error
        self._open: dict[str, list[list[Any]]] = {}
        self._open_rows: dict[str, int] = {}
        self._sealed: dict[str, _Batch] = {}
        self._types: dict[str, Sequence[Any]] = {}
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.Lock()

    # --- buffering -----------------------------------------------------------------------

    def write(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Buffer ``rows`` (dicts with the table's columns; extra keys are ignored).

        Raises ``ValueError`` for an unknown table or a row missing a column, before
        anything of this call is buffered.
        """
        spec = self._tables.get(table)
        if spec is None:
            raise ValueError(f"unknown ClickHouse table {table!r}; known: {sorted(self._tables)}")
        if not rows:
            return
        try:
            if len(rows) <= _TRANSPOSE_STEP:
                chunk = [[row[name] for row in rows] for name in spec.columns]
            else:
                # column by column over slices that stay in CPU cache: 2.5x faster at 100k rows
                chunk = [[] for _ in spec.columns]
                for i in range(0, len(rows), _TRANSPOSE_STEP):
                    part = rows[i : i + _TRANSPOSE_STEP]
                    for column, name in zip(chunk, spec.columns, strict=True):
                        column.extend([row[name] for row in part])
        except KeyError as exc:
            raise ValueError(f"a {table} row lacks column {exc.args[0]!r}") from None
        with self._buffer_lock:
            columns = self._open.get(table)
            if columns is None:
                self._open[table] = chunk
            else:
                for column, part in zip(columns, chunk, strict=True):
                    column.extend(part)
            self._open_rows[table] = self._open_rows.get(table, 0) + len(rows)

    @property
    def pending_rows(self) -> int:
        """Rows written but not yet landed (buffered or in a batch awaiting retry)."""
        with self._buffer_lock:
            return sum(self._open_rows.values()) + sum(b.rows for b in self._sealed.values())

    def discard(self, table: str) -> list[dict[str, Any]]:
        """Drop and return the pending rows of ``table``, e.g. after :class:`ClickHouseRejected`."""
        names = self._tables[table].columns
        with self._flush_lock, self._buffer_lock:
            parts = []
            batch = self._sealed.pop(table, None)
            if batch is not None:
                parts.append(batch.columns)
            columns = self._open.pop(table, None)
            self._open_rows.pop(table, None)
            if columns is not None:
                parts.append(columns)
        return [
            dict(zip(names, values, strict=True))
            for part in parts
            for values in zip(*part, strict=True)
        ]

    # --- landing -------------------------------------------------------------------------

    def flush(self) -> int:
        """Land all pending rows: one columnar insert per table. Returns rows landed.

        A table's rows leave the buffer only once its insert succeeded. Raises
        :class:`ClickHouseUnavailable` when a table keeps failing for ``retry_for`` seconds
        and :class:`ClickHouseRejected` when its batch cannot be encoded; in both cases
        nothing is lost and tables not yet flushed keep their rows too.
        """
        landed = 0
        with self._flush_lock:
            for table in self._tables:
                # a batch that failed earlier goes first, unchanged, with its token
                if table in self._sealed:
                    landed += self._land(table, self._sealed[table])
                batch = self._seal(table)
                if batch is not None:
                    landed += self._land(table, batch)
        return landed

    def close(self) -> None:
        """Flush what is pending. The client stays open: it belongs to the caller."""
        self.flush()

    def _seal(self, table: str) -> _Batch | None:
        with self._buffer_lock:
            columns = self._open.pop(table, None)
            rows = self._open_rows.pop(table, 0)
            if columns is None or not rows:
                return None
            batch = _Batch(columns, rows, self._token(table, columns, rows))
            self._sealed[table] = batch
            return batch

    def _token(self, table: str, columns: list[list[Any]], rows: int) -> str:
        if not self.dedup_token:
            return ""
        spec = self._tables[table]
        digest = hashlib.blake2b(f"{table}\x1e{rows}".encode(), digest_size=16)
        for name in spec.identity:
            values = columns[spec.columns.index(name)]
            try:
                joined = "\x1f".join(values)
            except TypeError:
                joined = "\x1f".join(map(str, values))
            digest.update(b"\x1e")
            digest.update(joined.encode("utf-8", "surrogatepass"))
        return f"{table}-{digest.hexdigest()}"

    def _land(self, table: str, batch: _Batch) -> int:
        """Insert one sealed batch, retrying; remove it from ``_sealed`` on success."""
        names = self._tables[table].columns
        settings = {"insert_deduplication_token": batch.token} if batch.token else None
        started = time.monotonic()
        deadline = started + self.retry_for
        attempt = 0
        while True:
            attempt += 1
            t0 = time.monotonic()
            try:
                types = self._types.get(table)
                if types is None:
                    types = self._client.create_insert_context(
                        table, list(names), database=self._database
                    ).column_types
                    self._types[table] = types
                self._client.insert(
                    table,
                    batch.columns,
                    column_names=list(names),
                    column_types=types,
                    column_oriented=True,
                    database=self._database,
                    settings=settings,
                )
            except _REJECTED as exc:
                self._notify_error(exc)
                raise ClickHouseRejected(
                    f"ClickHouse rejected a batch of {batch.rows} {table} rows: {one_line(exc)}",
                    table,
                ) from exc
            except Exception as exc:
                self._notify_error(exc)
                now = time.monotonic()
                if now >= deadline:
                    raise ClickHouseUnavailable(
                        f"cannot insert {batch.rows} rows into {self._database}.{table} "
                        f"after {attempt} attempts in {now - started:.1f}s: {one_line(exc)}"
                    ) from exc
                ceiling = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
                delay = min(deadline - now, random.uniform(ceiling / 2, ceiling))
                logger.warning(
                    "insert into %s.%s failed (attempt %d, retrying in %.2fs): %s",
                    self._database,
                    table,
                    attempt,
                    delay,
                    one_line(exc),
                )
                time.sleep(delay)
                continue
            seconds = time.monotonic() - t0
            with self._buffer_lock:
                self._sealed.pop(table, None)
            if attempt > 1:
                logger.info(
                    "insert into %s.%s succeeded after %d attempts", self._database, table, attempt
                )
            if self.on_flush is not None:
                try:
                    self.on_flush(table, batch.rows, seconds)
                except Exception:
                    logger.exception("on_flush callback failed")
            return batch.rows

    def _notify_error(self, exc: Exception) -> None:
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                logger.exception("on_error callback failed")
