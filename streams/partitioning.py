"""Partition choice identical to Faust's (aiokafka's murmur2 DefaultPartitioner).

touchpath produces micro-batches to explicit partitions, so the partition a key lands on
must be the one Faust itself would pick for that key; confluent-kafka's default
partitioner (consistent_random / CRC32) would disagree.
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2

#: Keys whose partition is remembered. aiokafka's murmur2 is pure Python (~5 µs a key) and
#: the same customer and identity keys come back batch after batch; 64k entries of ~40-byte
#: keys hold ~10 MB.
CACHE_KEYS = 1 << 16


@lru_cache(maxsize=CACHE_KEYS)
def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's Java/aiokafka default: ``toPositive(murmur2(key)) % partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
