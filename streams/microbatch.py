"""Micro-batch messages: one Kafka message carries many events of one partition.

Faust pays ~100 µs per Kafka message whatever the agent does, so internal topics carry
batches (docs/design.md, Throughput design). The codec is orjson; each item keeps the event
and where it came from, so landing stays idempotent and traceable.
"""

from __future__ import annotations

from typing import Any, TypedDict

import orjson

MICROBATCH_VERSION = 1


class Item(TypedDict):
    """One event in a micro-batch: touchpoint dict, identity key, source partition/offset."""

    tp: dict[str, Any]
    k: str
    p: int
    o: int


def encode(
    items: list[Item],
    ingested_at: str,
    progress: dict[str, float | None] | None = None,
    partitions: int = 0,
) -> bytes:
    """Serialize one micro-batch with event-time progress: ``progress`` maps each raw
    partition the sender owns to how far its event time has certainly got (``None``: idle,
    nothing known), out of ``partitions`` raw partitions in all."""
    return orjson.dumps(
        {
            "v": MICROBATCH_VERSION,
            "at": ingested_at,
            "items": items,
            "wms": progress or {},
            "nr": partitions,
        }
    )


def decode(value: bytes) -> tuple[str, list[Item]]:
    """Parse one micro-batch into ``(ingested_at, items)``."""
    obj = orjson.loads(value)
    if obj.get("v") != MICROBATCH_VERSION:
        raise ValueError(f"unsupported micro-batch version {obj.get('v')!r}")
    return obj["at"], obj["items"]
