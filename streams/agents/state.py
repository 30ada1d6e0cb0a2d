"""Faust tables whose changelog goes through the worker's confluent-kafka producer.

Keys and values are raw bytes (the engine's own JSON), the changelog record format is
exactly what Faust writes and recovers (key bytes, value bytes, delete = null value), and
the partition is the one Faust's partitioner picks (``use_partitioner=True``), so standard
Faust recovery restores the table. What changes is the cost: no Faust producer per record,
and :meth:`WorkerProducer.flush` runs before the source messages are acked.
"""

from __future__ import annotations

from typing import Any

import faust

from streams.producer import MARKER_KEY, WorkerProducer


class FastTable(faust.Table):
    """A ``bytes -> bytes`` table with the fast changelog path (see module docstring)."""

    producer: WorkerProducer

    def __setitem__(self, key: Any, value: Any) -> None:
        # orjson.dumps returns its bytes in a buffer of at least 4 KiB, whatever their
        # length, and a table keeps its values: an exact-size copy makes a 65-byte identity
        # record cost ~100 bytes instead of 4 KiB (the worker's memory was mostly this).
        if type(value) is bytes:
            value = memoryview(value).tobytes()
        super().__setitem__(key, value)

    def on_key_set(self, key: Any, value: Any) -> None:
        self.producer.changelog(self._changelog_name, self._n_partitions, key, value)

    def on_key_del(self, key: Any) -> None:
        self.producer.changelog(self._changelog_name, self._n_partitions, key, None)

    @property
    def _changelog_name(self) -> str:
        return self.changelog_topic.get_topic_name()

    @property
    def _n_partitions(self) -> int:
        return self.partitions or self.app.conf.topic_partitions


def fast_table(app: faust.App, name: str, producer: WorkerProducer, help: str) -> FastTable:
    """Declare a :class:`FastTable` on ``app``."""
    table = FastTable(
        app,
        name=name,
        default=None,
        # bytes key/value types make Faust use the raw codec for the changelog topic, so
        # recovery reads back exactly the bytes the fast path wrote
        key_type=bytes,
        value_type=bytes,
        use_partitioner=True,
        beacon=app.tables.beacon,
        help=help,
    )
    table.producer = producer
    app.tables.add(table)
    return table


def live_items(table: FastTable, partition_of: Any, partition: int) -> list[tuple[bytes, bytes]]:
    """Items of ``table`` held locally whose key belongs to ``partition``."""
    return [
        (k, v)
        for k, v in table.data.items()
        if k != MARKER_KEY and v is not None and partition_of(k) == partition
    ]
