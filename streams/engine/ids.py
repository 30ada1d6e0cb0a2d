"""Deterministic ids (uuid5): a replay or a backtest produces the same ids as the live run."""

from __future__ import annotations

from hashlib import sha1

from schemas.dead_letter import TOUCHPATH_NS

_NS = TOUCHPATH_NS.bytes


def uuid5_str(name: str) -> str:
    """``str(uuid.uuid5(TOUCHPATH_NS, name))`` without building a :class:`uuid.UUID` (the
    engine makes one per journey, pain point and care action)."""
    h = sha1(_NS + name.encode())
    b = bytearray(h.digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x50  # version 5
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = b.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def journey_id(customer_id: str, first_event_id: str) -> str:
    """Id of the journey a customer started with ``first_event_id``."""
    return uuid5_str(f"journey:{customer_id}:{first_event_id}")


def pain_point_id(rule_id: str, customer_id: str, anchor_event_id: str) -> str:
    """Id of the pain point ``rule_id`` raised for ``customer_id`` at its anchor event."""
    return uuid5_str(f"pain:{rule_id}:{customer_id}:{anchor_event_id}")
