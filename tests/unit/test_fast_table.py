"""FastTable keeps what it is given, at its own size, and logs it to the changelog."""

from __future__ import annotations

import tracemalloc
from typing import Any

import faust
import orjson

from streams.agents.state import fast_table


class _Producer:
    def __init__(self) -> None:
        self.records: list[tuple[str, int, bytes, bytes | None]] = []

    def changelog(self, topic: str, partitions: int, key: bytes, value: bytes | None) -> int:
        self.records.append((topic, partitions, key, value))
        return 0


def test_values_are_stored_at_their_own_size() -> None:
    app = faust.App("fast-table-test", broker="kafka://127.0.0.1:1", topic_partitions=4)
    producer: Any = _Producer()
    table = fast_table(app, "identity", producer, "test")
    n = 2000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            # what the identify stage stores: a few dozen bytes of orjson output
            table[f"phone:{i}".encode()] = orjson.dumps({"c": f"C{i}", "h": []})
        per_value = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    # orjson.dumps alone allocates >= 4 KiB per result; kept as given, 2,000 values cost 8 MB
    assert per_value < 1024, per_value
    assert table[b"phone:7"] == b'{"c":"C7","h":[]}'
    assert len(producer.records) == n
    topic, partitions, key, value = producer.records[7]
    assert (key, value) == (b"phone:7", b'{"c":"C7","h":[]}')
    assert topic.endswith("identity-changelog") and partitions == 4
